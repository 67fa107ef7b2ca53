# Over 450 lines: fitting the map and its decoder calibrations (eye gain, eye-mouth decoupling, decoded mouth read-out) edit one fitted module and one report, in one sequence (fit_and_calibrate).
"""Fitting an actor's map: kernel (or linear) ridge regression from the actor's own landmark
features to its latent means, the eye/mouth read-out step, and its calibration on the decoder
(rule fit_retarget: :func:`fit_actor_retarget`). The fitted module is
:class:`facevae.driving.retarget_map.LandmarkRetarget`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from facevae import FacevaeError
from facevae.driving.mapfile import save_retarget
from facevae.driving.retarget_map import MAPS, LandmarkRetarget, apply_map
from facevae.driving.shapes import FEATURES, MOUTH, normalise_landmarks, shape_features, shape_openings
from facevae.sampling import evenly_spread

# expert.render.retarget.brow_weight: the brows' weight in what the map reads. 0: the map ignores them
# (docs/decisions/025-brow-weight-zero.md). Brow points are where face-api (the page) and dlib (the
# pipeline) disagree most, and through the map they moved the decoded mouth; with final-fit models
# they still did at half weight, and reading none raised the tuning set's mouth median.
BROW_WEIGHT = 0.0


@dataclasses.dataclass(frozen=True)
class RetargetSettings:
    """How an actor's landmark -> latent map is fitted (the ``render.retarget`` keys of rule fit_retarget).

    ``features``: ``local`` -- the mouth's 20 points about their own centre and each eye with its
    brow about the eye's centre (expression without head position; measured best, see README), or
    ``face`` -- all 68 normalised points (carries head pose too). ``map``: ``kernel`` -- Gaussian
    kernel ridge regression, bandwidth ``bandwidth`` x the median squared distance between the
    actor's feature vectors, on at most ``max_centres`` evenly spread faces -- or ``linear`` ridge.
    ``l2``: the ridge strength. ``folds``: contiguous blocks for the reported cross-validation.
    ``readout``: after the map, one regression step of z toward the openings of the retargeted
    shape, along the actor's eye- and mouth-opening directions (see :func:`fit_readout`; the kernel
    map alone averages rare expressions such as blinks away); an opening the actor's held-out codes
    do not carry gets no step. ``eye_gain_max``: the eye step is scaled by the inverse of how far
    the *decoded* eye opening moves per unit of step (:func:`calibrate_eye_step`, measured by dlib
    on the actor's decoded faces), at most this much; 1 leaves it unscaled. It needs the decoder, so
    :func:`fit_actor_retarget` applies it, not :func:`fit_retarget`. ``brow_weight``: the brows'
    coordinates in the features are multiplied by it (:func:`shape_features`; 0 = the map ignores
    the brows; BROW_WEIGHT says why 0). ``eye_keeps_mouth``: before the eye step is scaled, the
    share of the mouth's direction that cancels its pull on the *decoded* mouth is taken out of it
    (:func:`decouple_eye_step`, measured by dlib on the actor's decoded faces; like the eye gain,
    applied by :func:`fit_and_calibrate`, not :func:`fit_retarget`).
    """

    features: str = "local"
    map: str = "kernel"
    bandwidth: float = 1.0
    l2: float = 0.1
    max_centres: int = 2000
    folds: int = 5
    readout: bool = True
    eye_gain_max: float = 2.0
    brow_weight: float = BROW_WEIGHT
    eye_keeps_mouth: bool = True
    mouth_step: bool = True  # the read-out's mouth step (a dataclass field the bench sets; not a config key)
    mouth_readout: str = "faces"  # what the mouth step's miss is read from: "faces" or "decoded" (calibrate_mouth_readout)

    def __post_init__(self):
        if self.features not in FEATURES:
            raise FacevaeError(f"expert.render.retarget.features must be one of {', '.join(FEATURES)}, not {self.features!r}")
        if self.map not in MAPS:
            raise FacevaeError(f"expert.render.retarget.map must be one of {', '.join(MAPS)}, not {self.map!r}")
        for key in ("bandwidth", "l2"):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or not np.isfinite(value) or value <= 0:
                raise FacevaeError(f"expert.render.retarget.{key} must be a positive number, not {value!r}")
        if int(self.max_centres) < 2:
            raise FacevaeError(f"expert.render.retarget.max_centres must be >= 2, not {self.max_centres!r}")
        if int(self.folds) < 2:
            raise FacevaeError(f"expert.render.retarget.folds must be >= 2, not {self.folds!r}")
        if isinstance(self.eye_gain_max, bool) or not isinstance(self.eye_gain_max, (int, float)) \
                or not np.isfinite(self.eye_gain_max) or self.eye_gain_max < 1:
            raise FacevaeError(f"expert.render.retarget.eye_gain_max must be a number >= 1, not {self.eye_gain_max!r}")
        if not isinstance(self.eye_keeps_mouth, bool):
            raise FacevaeError(f"expert.render.retarget.eye_keeps_mouth must be true or false, not {self.eye_keeps_mouth!r}")
        if self.mouth_readout not in ("faces", "decoded"):
            raise FacevaeError(f"expert.render.retarget.mouth_readout must be faces or decoded, not {self.mouth_readout!r}")
        if not isinstance(self.readout, bool):
            raise FacevaeError(f"expert.render.retarget.readout must be true or false, not {self.readout!r}")
        if isinstance(self.brow_weight, bool) or not isinstance(self.brow_weight, (int, float)) \
                or not 0 <= self.brow_weight <= 1:
            raise FacevaeError(f"expert.render.retarget.brow_weight must be a number in [0, 1], not {self.brow_weight!r}")

    @classmethod
    def from_config(cls, section: dict | None) -> "RetargetSettings":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in (section or {}).items() if k in known})



def _blocks(n: int, folds: int) -> np.ndarray:
    """Fold of each of ``n`` frames: ``folds`` contiguous blocks (neighbouring frames are near copies,
    so a random split would reward memorising them)."""
    return np.minimum(np.arange(n) * folds // max(n, 1), folds - 1)


def feature_blocks(features: str, n_features: int) -> np.ndarray:
    """(2, F) 0/1 masks of the map's features: the mouth's coordinates, and the rest (eyes, brows, and
    with ``face`` features the jaw and nose) -- the additive map's two kernels."""
    mouth = np.zeros(n_features)
    if features == "local":  # shape_features' layout: the mouth's 20 points first
        mouth[: 2 * len(MOUTH)] = 1
    else:  # all 68 points in order
        mouth[2 * MOUTH[0] : 2 * (MOUTH[-1] + 1)] = 1
    return np.stack([mouth, 1 - mouth])


def _median_d2(a: np.ndarray) -> float:
    d2 = ((a[:, None] - a[None]) ** 2).sum(-1)
    return float(np.median(d2[d2 > 0])) if (d2 > 0).any() else 1.0


def _solve_additive(x: np.ndarray, zc: np.ndarray, settings: RetargetSettings, median_d2) -> dict:
    """The additive map: one Gaussian kernel on the mouth's features and one on the rest, each of width
    ``bandwidth`` x its own median squared distance, fitted together (subset of regressors over the
    same centres, each kernel's own ridge): z = f_mouth + f_rest, so a driver's blink reaches z only
    through what the eyes do in the actor's frames beside its mouth, not through the faces where the
    actor happened to blink while talking."""
    masks = feature_blocks(settings.features, x.shape[1])
    centres = x[evenly_spread(len(x), settings.max_centres)]
    if median_d2 is None:
        median_d2 = tuple(_median_d2(centres * m) for m in masks)
    blocks = np.stack([m * np.sqrt(1.0 / (2.0 * settings.bandwidth * d2)) for m, d2 in zip(masks, median_d2)])
    kern = lambda a, b, s: np.exp(-(((a * s)[:, None] - (b * s)[None]) ** 2).sum(-1))  # noqa: E731
    k_nm = np.concatenate([kern(x, centres, s) for s in blocks], axis=1)
    m = len(centres)
    reg = np.zeros((2 * m, 2 * m))
    for b, s in enumerate(blocks):
        reg[b * m : (b + 1) * m, b * m : (b + 1) * m] = kern(centres, centres, s)
    coef = np.linalg.solve(k_nm.T @ k_nm + settings.l2 * reg + 1e-8 * np.eye(2 * m), k_nm.T @ zc)
    return {"centres": centres, "coef": coef, "blocks": blocks, "inv_width": 1.0, "median_d2": median_d2}


def _solve_map(x: np.ndarray, z: np.ndarray, settings: RetargetSettings, median_d2: float | None = None) -> dict:
    """Fit one map (float64): returns centres, coef, x_mean, z_mean, inv_width (and ``blocks``: additive)."""
    x_mean, z_mean = x.mean(axis=0), z.mean(axis=0)
    zc = z - z_mean
    if settings.map == "additive":
        return {**_solve_additive(x, zc, settings, median_d2), "x_mean": x_mean, "z_mean": z_mean}
    if settings.map == "linear":
        xc = x - x_mean
        # l2 is relative: per frame and per unit of the features' variance.
        gram = xc.T @ xc + settings.l2 * len(x) * xc.var(axis=0).mean() * np.eye(x.shape[1])
        return {"centres": np.zeros((0, x.shape[1])), "coef": np.linalg.solve(gram, xc.T @ zc), "x_mean": x_mean,
                "z_mean": z_mean, "inv_width": 0.0}
    spread = evenly_spread(len(x), settings.max_centres)
    centres = x[spread]
    if median_d2 is None:
        median_d2 = _median_d2(centres)
    inv_width = 1.0 / (2.0 * settings.bandwidth * median_d2)
    if settings.map == "nadaraya":  # no solve: the centres' own codes, weighted at run time
        return {"centres": centres, "coef": zc[spread], "x_mean": x_mean, "z_mean": z_mean, "inv_width": inv_width,
                "median_d2": median_d2}
    k_nm = np.exp(-((x[:, None] - centres[None]) ** 2).sum(-1) * inv_width)
    if len(centres) == len(x):  # plain kernel ridge regression
        coef = np.linalg.solve(k_nm + settings.l2 * np.eye(len(x)), zc)
    else:  # subset of regressors: every face fits, the spread ones are the centres
        k_mm = np.exp(-((centres[:, None] - centres[None]) ** 2).sum(-1) * inv_width)
        lhs = k_nm.T @ k_nm + settings.l2 * k_mm + 1e-8 * np.eye(len(centres))
        coef = np.linalg.solve(lhs, k_nm.T @ zc)
    return {"centres": centres, "coef": coef, "x_mean": x_mean, "z_mean": z_mean, "inv_width": inv_width,
            "median_d2": median_d2}


def _predict(fit: dict, x: np.ndarray, kind: str) -> np.ndarray:
    """A fit's z for features ``x``, through the module's own evaluation (:func:`apply_map`)."""
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64)  # noqa: E731
    blocks = t(fit["blocks"]) if "blocks" in fit else None
    return apply_map(t(x), t(fit["centres"]), t(fit["coef"]), t(fit["x_mean"]), t(fit["z_mean"]), fit["inv_width"],
                     kind, blocks).numpy()


READOUT_MIN_R = 0.3  # an opening's step is used only when held-out mu carries it at least this well


def fit_readout(shapes: np.ndarray, mu: np.ndarray, folds: int = 5) -> dict | None:
    """The actor's linear eye/mouth read-out of z, from its own normalised shapes (N, 68, 2) and
    latent means (N, D): ``w`` (D, 2) ridge-regresses the two openings on mu, ``steps`` (2, D)
    regresses mu on the two openings together (the mean change of mu per unit of eye opening at
    fixed mouth opening, and the reverse). None when the actor's openings do not vary.

    Why: the kernel map predicts the conditional mean of mu, and an actor blinks in a handful of
    its frames, so a driver's blink maps to open eyes. One step of z along ``steps``, by what the
    read-out of z misses of the retargeted shape's openings, carries it (and extrapolates: a blink
    with the mouth closed that the actor only ever made with it open). One step, not an exact
    solve: ``steps @ w`` is below the identity by about the read-out's fit (0.89-0.96 on the
    diagonal for the bench's actors), and inverting it would amplify a poorly read opening.

    Each opening's step is kept only where mu carries that opening along it on frames the fit did
    not see: blocked cross-validation (``folds`` contiguous blocks) of the openings' coordinates in
    the steps' basis, Pearson r >= READOUT_MIN_R, else that row of ``steps`` is zero. Measured on
    the bench's four actors: held-out r 0.37-0.79, except lp_d3's mouth, 0.01 (9 s looking down:
    its mouth step turned its own held-out clip's mouth r through the map from 0.72 to -0.61 and d3 driven by d6
    from 0.69 to 0.26).

    The step's targets are held within the actor's own range of each opening (``lo``, ``hi``: its
    smallest and largest): past it the decoder has nothing to draw, and a driver who opens the eyes
    wider than the actor ever did (lp_d3 looking up) pushed z off the actor's faces -- lp_d13 driven
    by d3 lost mouth r 0.86 -> 0.54 with the calibrated eye step unbounded, 0.86 bounded (bench, face
    mesh; cross medians mouth / eye 0.698 / 0.436 -> 0.703 / 0.443; the 1st-99th percentiles as the
    range: 0.702 / 0.419). Returned: ``w``, ``y`` (mean openings), ``steps``, ``lo``, ``hi``,
    ``heldout_r`` and ``used`` (per opening: eye, mouth), ``sd``, and ``directions`` (``steps``
    before the unused rows are zeroed: :func:`decouple_eye_step`'s mouth lever)."""
    openings = shape_openings(torch.from_numpy(np.asarray(shapes, np.float64))).numpy()
    mu = np.asarray(mu, np.float64)
    ok = np.isfinite(openings).all(axis=1) & np.isfinite(mu).all(axis=1)
    y, mu = openings[ok], mu[ok]
    if len(y) < 2 * folds or not (y.std(axis=0) > 1e-9).all() or not (mu.var(axis=0) > 0).any():
        return None

    def steps_of(m, o):  # least squares: a flat or collinear opening gets a zero / minimum-norm row
        return np.linalg.lstsq(o - o.mean(axis=0), m - m.mean(axis=0), rcond=None)[0]

    coordinates = np.zeros_like(y)
    fold = _blocks(len(y), folds)
    for k in range(folds):
        train, test = fold != k, fold == k
        v = steps_of(mu[train], y[train])
        coordinates[test] = (mu[test] - mu[train].mean(axis=0)) @ np.linalg.pinv(v) + y[train].mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):  # a constant coordinate: r is NaN, unused
        heldout = [float(np.corrcoef(coordinates[:, k], y[:, k])[0, 1]) for k in range(2)]
    used = [bool(np.isfinite(r) and r >= READOUT_MIN_R) for r in heldout]
    mc, yc = mu - mu.mean(axis=0), y - y.mean(axis=0)
    # ridge 1e-3 per frame and per unit of mu's mean variance (a VAE's mu has about unit variance)
    w = np.linalg.solve(mc.T @ mc + 1e-3 * len(mu) * mc.var(axis=0).mean() * np.eye(mu.shape[1]), mc.T @ yc)
    directions = steps_of(mu, y)
    steps = directions * np.asarray(used, np.float64)[:, None]
    return {"w": w, "y": y.mean(axis=0), "steps": steps, "lo": y.min(axis=0), "hi": y.max(axis=0), "heldout_r": heldout,
            "used": used, "sd": y.std(axis=0), "directions": directions}


EYE_CALIBRATION_FACES = 48  # the actor's faces (evenly spread) the eye step is calibrated on
EYE_CALIBRATION_STEPS = (-2.0, -1.0, 0.0, 1.0)  # step sizes, in the actor's eye-opening s.d.: mostly closing


def _response(measured: np.ndarray, asked: np.ndarray) -> float:
    """Least-squares slope of ``measured`` (len(asked), faces; NaN where it failed) about each face's
    own mean on the ``asked`` change, over the faces measured at every step (NaN for fewer than two):
    how far a decoded opening moves per unit of a step (:func:`calibrate_eye_step`, :func:`decouple_eye_step`)."""
    ok = np.isfinite(measured).all(axis=0)
    if ok.sum() < 2:
        return float("nan")
    moved = measured[:, ok] - measured[:, ok].mean(axis=0)
    change = np.repeat((asked - asked.mean())[:, None], ok.sum(), axis=1)
    return float((moved * change).sum() / (change * change).sum())


def calibrate_eye_step(module: LandmarkRetarget, mu: np.ndarray, eye_sd: float, eye_opening_of, gain_max: float) -> dict:
    """Scale the read-out's eye step so the decoded face's eye moves by the asked amount.

    ``eye_opening_of(z (M, D)) -> (M,)``: the eye opening (:func:`shape_openings` units) measured on
    the decoded faces of ``z`` (NaN where it fails). Each of ``EYE_CALIBRATION_FACES`` evenly spread
    codes ``mu`` is stepped by ``EYE_CALIBRATION_STEPS`` x ``eye_sd`` along the eye row of
    ``readout_steps``; the response is the least-squares slope of the measured opening (about each
    face's own mean) on the asked change. The step is multiplied by ``1 / response`` clipped to
    [1, ``gain_max``], in place. Why: the decoder's eyes move by only 0.22-0.50 of the step on the
    bench's four actors (dlib on the decoded faces; the regression direction is shortened by the
    noise of a 64-px eye opening, and small steps fall in a dead zone where the decoded eye stays
    open), so a driver's blink came out as a flutter. Measured on the bench (16 cross pairs, face
    mesh): eye median 0.375 -> 0.436 with ``gain_max`` 2, 0.469 with 4 but mouth 0.733 -> 0.669
    (the eye direction moves the mouth too at large gains); the same calibration of the mouth step
    lowered the mouth median to 0.64, so the mouth is not scaled. Returns ``eye_response`` and
    ``eye_gain`` (NaN and 1 when there is no eye step or no measurable response)."""
    direction = module.readout_steps[0].numpy().copy() if module.has_readout else np.zeros(0)
    if not direction.size or not np.abs(direction).sum() or not np.isfinite(eye_sd) or eye_sd <= 0:
        return {"eye_response": float("nan"), "eye_gain": 1.0}
    mu = np.asarray(mu, np.float64)[evenly_spread(len(mu), EYE_CALIBRATION_FACES)]
    asked = np.asarray(EYE_CALIBRATION_STEPS) * eye_sd
    z = np.concatenate([mu + t * direction[None] for t in asked])
    response = _response(np.asarray(eye_opening_of(z), np.float64).reshape(len(asked), len(mu)), asked)
    if not np.isfinite(response):
        return {"eye_response": float("nan"), "eye_gain": 1.0}
    gain = float(np.clip(1.0 / response, 1.0, gain_max)) if response > 0 else 1.0
    module.readout_steps[0] *= gain
    return {"eye_response": response, "eye_gain": gain}


MOUTH_RESPONSE_MIN = 0.2  # the mouth direction must move the decoded mouth at least this much per unit


def decouple_eye_step(module: LandmarkRetarget, mu: np.ndarray, sd: np.ndarray, mouth_direction: np.ndarray,
                      openings_of) -> dict:
    """Take out of the read-out's eye step what it does to the *decoded* mouth, in place.

    ``openings_of(z (M, D)) -> (M, 2)``: mouth and eye opening measured on the decoded faces of ``z``
    (NaN where it fails); ``sd``: the actor's (eye, mouth) opening s.d.; ``mouth_direction``: the
    change of z per unit of mouth opening (:func:`fit_readout`'s ``directions[1]``, used or not).
    Evenly spread codes are stepped along the eye step and along the mouth direction; the slopes of
    the decoded mouth on each (``eye_mouth_response``, ``mouth_response``) give the share of the
    mouth direction that cancels the eye step's pull on the mouth, and the eye step becomes
    ``eye - eye_mouth_response / mouth_response * mouth_direction``. Why: eye and mouth co-vary in
    an actor's frames, so the regression's eye direction also opens or closes the decoded mouth,
    and a driver's eyes then move the actor's mouth -- the page, whose eye points come from another
    landmark model than the pipeline's, rendered another mouth (issue 13). Nothing is changed when
    the mouth direction barely moves the decoded mouth (below ``MOUTH_RESPONSE_MIN`` per unit: there
    is nothing to cancel with). Run it before :func:`calibrate_eye_step`, which then scales the
    decoupled step."""
    eye = module.readout_steps[0].numpy().copy() if module.has_readout else np.zeros(0)
    out = {"eye_mouth_response": float("nan"), "mouth_response": float("nan"), "eye_mouth_removed": 0.0}
    sd = np.asarray(sd, np.float64)
    mouth_direction = np.asarray(mouth_direction, np.float64)
    if not eye.size or not np.abs(eye).sum() or not np.abs(mouth_direction).sum() or not (np.isfinite(sd) & (sd > 0)).all():
        return out
    mu = np.asarray(mu, np.float64)[evenly_spread(len(mu), EYE_CALIBRATION_FACES)]
    steps = np.asarray(EYE_CALIBRATION_STEPS)
    asked_eye, asked_mouth = steps * sd[0], -steps * sd[1]  # the mouth mostly opening
    z = np.concatenate([mu + t * direction[None] for direction, asked in ((eye, asked_eye), (mouth_direction, asked_mouth))
                        for t in asked])
    measured = np.asarray(openings_of(z), np.float64)[:, 0].reshape(2, len(steps), len(mu))
    eye_mouth = _response(measured[0], asked_eye)
    mouth = _response(measured[1], asked_mouth)
    out.update(eye_mouth_response=eye_mouth, mouth_response=mouth)
    if not (np.isfinite(eye_mouth) and np.isfinite(mouth) and mouth >= MOUTH_RESPONSE_MIN):
        return out
    share = eye_mouth / mouth
    module.readout_steps[0] -= torch.as_tensor(share * mouth_direction, dtype=module.readout_steps.dtype)
    out["eye_mouth_removed"] = float(share)
    return out


MOUTH_READOUT_FACES = 96  # evenly spread codes the decoded mouth read-out is fitted around (x 4 moves each)


def calibrate_mouth_readout(module: LandmarkRetarget, mu: np.ndarray, sd: np.ndarray, openings_of, seed: int = 0) -> dict:
    """Read the mouth step's miss from what the *decoder* draws, in place: the mouth row of the read-out
    (``readout_w[:, 1]``, ``readout_y[1]``) is refitted as a ridge regression of the mouth opening
    measured on decoded faces (``openings_of(z) -> (M, 2)``, mouth first) on z, over evenly spread codes
    as they are and moved along the (final) eye step, the mouth direction and both (random amounts in
    the actor's range, seeded). Why: the read-out fitted on the actor's own faces misses what the eye
    step does to the *decoded* mouth (an actor who blinks while talking: a driver's blink opened the
    rendered mouth while the read-out said closed), so the mouth step never corrected it; the module
    then takes its mouth step after the eye step, by what this read-out sees there. Returns
    ``mouth_readout_r`` (the fit's r on its samples) and ``mouth_readout_eye`` (the decoded mouth's
    change per unit of eye step: the leak now corrected); nothing changes without a mouth step."""
    out = {"mouth_readout_r": float("nan"), "mouth_readout_eye": float("nan")}
    steps = module.readout_steps.numpy() if module.has_readout else np.zeros((2, 0))
    if not steps.size or not np.abs(steps[1]).sum():
        return out
    rng = np.random.default_rng(seed)
    base = np.asarray(mu, np.float64)[evenly_spread(len(mu), MOUTH_READOUT_FACES)]
    eye = rng.uniform(-2.5, 1.5, (len(base), 1)) * float(sd[0]) * steps[0]  # mostly closing, as blinks do
    mouth = rng.uniform(-1.5, 1.5, (len(base), 1)) * float(sd[1]) * steps[1]
    z = np.concatenate([base, base + eye, base + mouth, base + eye + mouth])
    measured = np.asarray(openings_of(z), np.float64)[:, 0]
    ok = np.isfinite(measured)
    if ok.sum() < 2 * len(base):
        return out
    zc = z[ok] - module.z_mean.numpy()
    y = measured[ok]
    ridge = 1e-2 * len(zc) * zc.var(axis=0).mean()  # per sample and unit of z's variance
    w = np.linalg.solve(zc.T @ zc + ridge * np.eye(zc.shape[1]), zc.T @ (y - y.mean()))
    module.readout_w[:, 1] = torch.as_tensor(w, dtype=module.readout_w.dtype)
    module.readout_y[1] = float(y.mean())
    module.mouth_after_eye = True  # the mouth's miss is read after the eye step has moved z
    out.update(mouth_readout_r=float(np.corrcoef(zc @ w, y)[0, 1]), mouth_readout_eye=float(w @ steps[0]))
    return out


def fit_retarget(landmarks: np.ndarray, mu: np.ndarray, settings: RetargetSettings = RetargetSettings()
                 ) -> tuple[LandmarkRetarget, dict]:
    """Fit an actor's map from its own landmarks (N, 68, 2, crop px) to its latent means (N, D).

    Also reports how well the map predicts held-out frames of the same actor: blocked
    cross-validation (``settings.folds`` contiguous blocks), ``cv_r2`` = 1 - squared error / that of
    predicting the training mean. Returns the module and the report dict. ``settings.eye_gain_max``
    is not applied here (it needs the decoder): :func:`fit_actor_retarget` calibrates the eye step
    after this fit (:func:`calibrate_eye_step`)."""
    norm = normalise_landmarks(landmarks)
    mu = np.asarray(mu, np.float64)
    ok = np.isfinite(norm).all(axis=(1, 2)) & np.isfinite(mu).all(axis=1)
    norm, mu = norm[ok], mu[ok]
    if len(norm) < 2 * settings.folds:
        raise FacevaeError(f"the retargeting map needs at least {2 * settings.folds} faces with landmarks, "
                           f"the actor has {len(norm)} (lower expert.render.retarget.folds or add footage)")
    x = shape_features(torch.from_numpy(norm), settings.features, settings.brow_weight).numpy()
    fold = _blocks(len(x), settings.folds)
    err = base = 0.0
    full = _solve_map(x, mu, settings)
    for k in range(settings.folds):
        train, test = fold != k, fold == k
        fit = _solve_map(x[train], mu[train], settings, full.get("median_d2"))
        err += float(((_predict(fit, x[test], settings.map) - mu[test]) ** 2).sum())
        base += float(((mu[train].mean(axis=0) - mu[test]) ** 2).sum())
    report = {"faces": int(len(x)), "centres": int(len(full["centres"])), "cv_mse": err / mu.size,
              "cv_r2": 1.0 - err / base if base > 0 else float("nan"), "features": settings.features,
              "map": settings.map, "bandwidth": settings.bandwidth, "l2": settings.l2, "folds": settings.folds,
              "brow_weight": settings.brow_weight}
    readout = fit_readout(norm, mu, settings.folds) if settings.readout else None
    if readout is not None and not settings.mouth_step:  # the map alone carries the mouth
        readout["used"][1] = False
        readout["steps"][1] = 0.0
    report["readout"] = readout is not None and any(readout["used"])
    if readout is not None:
        report["readout_eye_r"], report["readout_mouth_r"] = readout["heldout_r"]
        report["readout_eye"], report["readout_mouth"] = readout["used"]
        report["eye_sd"], report["mouth_sd"] = (float(v) for v in readout["sd"])
        directions = readout["directions"]
        if not any(readout["used"]):
            readout = None
    module = LandmarkRetarget(np.median(norm, axis=0), full["centres"], full["coef"], full["x_mean"], full["z_mean"],
                              full["inv_width"], settings.features, settings.map, readout, brow_weight=settings.brow_weight,
                              blocks=full.get("blocks"))
    # The mouth's regression direction even where its step is not used: decouple_eye_step's lever
    # (fit_and_calibrate takes it out of the report, which becomes a one-row table).
    report["mouth_direction"] = tuple(float(v) for v in directions[1]) if readout is not None else ()
    return module.eval(), report



def _dlib_openings(codec, faces: dict, faces_path):
    """z -> (M, 2) mouth and eye opening dlib measures on the decoded faces, as the score's dlib
    columns measure renders (:func:`facevae.instruments.dlib_ratios`: 4x upscale, unsharp mask 2.5)."""
    from facevae.faces.io import align_config_of
    from facevae.instruments import dlib_ratios

    size = int(faces["data"].shape[1])
    align = align_config_of(faces.get("attrs") or {}, size, faces_path, size)
    return lambda z: dlib_ratios(codec.decode(np.asarray(z, np.float32)), align)


def fit_and_calibrate(landmarks: np.ndarray, mu: np.ndarray, settings: RetargetSettings, openings_of):
    """:func:`fit_retarget`, then, where the settings allow it and the fit has an eye read-out, the
    eye step decoupled from the decoded mouth (:func:`decouple_eye_step`) and calibrated on the
    decoder (:func:`calibrate_eye_step`); ``openings_of``: z -> (M, 2) mouth and eye opening measured
    on the decoded faces. The one fitting sequence of rule fit_retarget and the sweeps."""
    module, report = fit_retarget(landmarks, mu, settings)
    mouth_direction = report.pop("mouth_direction")
    # the columns are always there
    report.update(eye_response=float("nan"), eye_gain=1.0, eye_mouth_response=float("nan"),
                  mouth_response=float("nan"), eye_mouth_removed=0.0)
    if settings.mouth_readout == "decoded":
        report.update(mouth_readout_r=float("nan"), mouth_readout_eye=float("nan"))
    if report.get("readout_eye"):
        if settings.eye_keeps_mouth:
            report.update(decouple_eye_step(module, mu, (report["eye_sd"], report["mouth_sd"]), mouth_direction,
                                            openings_of))
        if settings.eye_gain_max > 1:
            report.update(calibrate_eye_step(module, mu, float(report["eye_sd"]), lambda z: np.asarray(openings_of(z))[:, 1],
                                             settings.eye_gain_max))
    if settings.mouth_readout == "decoded" and report.get("readout_mouth"):
        report.update(calibrate_mouth_readout(module, mu, (report["eye_sd"], report["mouth_sd"]), openings_of))
    return module, report


def fit_actor_retarget(faces_path, model_path, outputs: dict, settings: RetargetSettings, actor: str) -> dict:
    """Rule fit_retarget: the actor's faces through its encoder, then :func:`fit_retarget` from the
    faces' landmarks to those means. ``outputs``: ``map`` (retarget.pt), ``table`` (a one-row TSV:
    settings and the cross-validated fit). Returns the report."""
    import pandas as pd

    from facevae.atomic import write_text
    from facevae.faces.io import read_faces
    from facevae.modelio import Codec, load_model

    faces = read_faces(faces_path)
    if "landmarks" not in faces:
        raise FacevaeError(f"{faces_path} has no landmarks: render.drive retarget needs faces made by the faces "
                           f"stage (actors.{actor}.dataset files hold images only; use render.drive: encoder)")
    codec = Codec(load_model(model_path))
    mu = codec.encode(faces["data"])
    module, report = fit_and_calibrate(faces["landmarks"], mu, settings, _dlib_openings(codec, faces, faces_path))
    report = {"actor": actor, **report}
    module.info = report
    save_retarget(outputs["map"], module)
    write_text(outputs["table"], pd.DataFrame([report]).to_csv(sep="\t", index=False, float_format="%.6g"))
    return report
