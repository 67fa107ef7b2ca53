"""Driving: how each frame of a driver's face becomes a point z in the actor's latent space.

Two methods, and the default choosing between them (``render.drive``):

- ``auto`` (default) -- ``blend`` (encoder and retargeting, :func:`blend_latents`; the retargeting's
  neutral transfer chosen by the encoder, :func:`transfer_nearest`) when the driver is the actor
  (their mean 128-d face descriptors within ``render.same_person_distance``:
  :func:`same_person_distance`), ``retarget`` otherwise.
  Each is the better one in its case (README, "How driving works").
- ``retarget`` -- expression retargeting through landmarks. Per actor a continuous map
  is fitted from the actor's own pose-normalised landmarks to the actor's latent means (ridge
  regression, :func:`fit_retarget`). A driver frame's landmarks are taken relative to the driver's
  own neutral shape (the median shape of the video, or of a calibration window), that change is
  added to the actor's neutral shape, and the map turns the result into z. The actor's encoder
  never sees the stranger's face, so the stranger's identity, colour and lighting cannot pull z
  into one corner of the actor's space -- which is what the plain encoder does (its encoder was
  trained on one person only).
- ``encoder`` -- the 2017 blog's way: the driver's aligned crop through the actor's encoder
  (posterior mean). Kept for reproducing the blog's videos and for self-reenactment.

Landmarks are the tracks' 68 iBUG points in aligned-crop pixels. The crops are already similarity
aligned on the rigid eyes-and-nose points, so :func:`normalise_landmarks` only moves the origin
to the midpoint of the eye centres and divides by the inter-ocular distance; what remains is
expression plus out-of-plane head pose, both of which the actor should copy.

:class:`LandmarkRetarget` holds the whole path from landmarks to z (normalisation included) as a
torch module, so one ONNX export (:func:`export_onnx`) runs it in a browser.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import numpy as np
import torch

from facevae import FACE_SIZE, FacevaeError
from facevae.expression import EYELIDS, INNER_LIPS, LEFT_EYE, RIGHT_EYE
from facevae.modelio import atomic_torch_save, read_blob
from facevae.sampling import evenly_spread

DRIVES = ("auto", "retarget", "encoder", "blend")
# render.self_blend: the retargeted z's share in the own-clip blend (see :func:`blend_latents`).
SELF_BLEND = 0.5
# render.self_transfer: the neutral transfer of the own-clip blend's retargeted z -- ``encoder`` (the
# one of TRANSFER_GRID whose z lies nearest the encoder's, :func:`transfer_nearest`) or a number.
SELF_TRANSFER = "encoder"
TRANSFER_GRID = tuple(round(0.1 * k, 1) for k in range(11))
MAPS = ("kernel", "linear")
FEATURES = ("local", "face")
RETARGET_FORMAT = "facevae-retarget"
RETARGET_VERSION = 3  # 2: the eye/mouth read-out (fit_readout); 3: its targets held in the actor's range
# (a version-2 map loads unbounded, a version-1 map without the read-out)
MOUTH = list(range(48, 68))
BROWS = list(range(17, 27))
LEFT_EYE_BROW = LEFT_EYE + list(range(17, 22))
RIGHT_EYE_BROW = RIGHT_EYE + list(range(22, 27))
log = logging.getLogger(__name__)
# render.retarget.transfer: the share of the gap between the driver's and the actor's neutral faces
# that retargeting takes away (1: the driver's change from its own neutral, put on the actor's
# neutral; 0: the driver's own shapes). Measured on the transfer bench's 16 cross pairs with the same
# models (bench/results/retarget_sweep.md, face mesh): cross medians mouth / eye r 0.731 / 0.491 at 1,
# 0.758 / 0.526 at 0.75, 0.764 / 0.567 at 0.5, 0.770 / 0.589 at 0.25; pairs within 0.05 of retrieval
# 12 / 13 / 13 / 11 of 16; but lp_d3 as the actor (9 s looking down: its shapes sit far from the
# others') falls with less transfer (d3 driven by d10 0.64 / 0.52 / 0.22 / 0.03), so 0.75.
NEUTRAL_TRANSFER = 0.75
# render.retarget.brow_weight: the brows' weight in what the map reads. The page has face-api's points
# only, and face-api's brows moved the decoded mouth through a map reading them at full weight
# (bench/page_gap.py). bench/sweep_brow_weight.py, the transfer bench's 16 cross pairs at weight
# 1 / 0.5 / 0.25 / 0: face-mesh mouth medians 0.821 / 0.834 / 0.833 / 0.841, eye 0.542 / 0.577 / 0.583 /
# 0.576, pairs within 0.05 of retrieval 16 / 16 / 15 / 15 (lp_d3, looking down, shows its expressions in
# its brows: d3 <- d10 0.50 / 0.45 / 0.37 / 0.31; d10 <- d6 0.712 / 0.714 / 0.698 / 0.688 vs retrieval's
# 0.759). The page's mouth series against the pipeline's in the CI page test (the browser's own face-api
# points): 0.628 at 1, 0.683 at 0.5 (the sweep's simulation, the port's points in boxes around dlib's,
# says 0.63 / 0.82 / 0.87 / 0.87 at the four weights: it overrates how alike the page's points are).
# 0.5: the lowest weight that keeps every pair within retrieval's reach.
BROW_WEIGHT = 0.5


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
    the brows; BROW_WEIGHT says why 0.5). ``eye_keeps_mouth``: before the eye step is scaled, the
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

    def __post_init__(self):
        if self.features not in FEATURES:
            raise FacevaeError(f"render.retarget.features must be one of {', '.join(FEATURES)}, not {self.features!r}")
        if self.map not in MAPS:
            raise FacevaeError(f"render.retarget.map must be one of {', '.join(MAPS)}, not {self.map!r}")
        for key in ("bandwidth", "l2"):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or not np.isfinite(value) or value <= 0:
                raise FacevaeError(f"render.retarget.{key} must be a positive number, not {value!r}")
        if int(self.max_centres) < 2:
            raise FacevaeError(f"render.retarget.max_centres must be >= 2, not {self.max_centres!r}")
        if int(self.folds) < 2:
            raise FacevaeError(f"render.retarget.folds must be >= 2, not {self.folds!r}")
        if isinstance(self.eye_gain_max, bool) or not isinstance(self.eye_gain_max, (int, float)) \
                or not np.isfinite(self.eye_gain_max) or self.eye_gain_max < 1:
            raise FacevaeError(f"render.retarget.eye_gain_max must be a number >= 1, not {self.eye_gain_max!r}")
        if not isinstance(self.eye_keeps_mouth, bool):
            raise FacevaeError(f"render.retarget.eye_keeps_mouth must be true or false, not {self.eye_keeps_mouth!r}")
        if not isinstance(self.readout, bool):
            raise FacevaeError(f"render.retarget.readout must be true or false, not {self.readout!r}")
        if isinstance(self.brow_weight, bool) or not isinstance(self.brow_weight, (int, float)) \
                or not 0 <= self.brow_weight <= 1:
            raise FacevaeError(f"render.retarget.brow_weight must be a number in [0, 1], not {self.brow_weight!r}")

    @classmethod
    def from_config(cls, section: dict | None) -> "RetargetSettings":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in (section or {}).items() if k in known})


# ------------------------------------------------------------------------------- normalisation


def normalise_landmarks(landmarks) -> np.ndarray:
    """(N, 68, 2) crop px -> the same points with the eye-centre midpoint at 0 and unit inter-ocular
    distance (float64). A frame without landmarks (NaN) stays NaN."""
    lm = np.asarray(landmarks, np.float64)
    if lm.ndim != 3 or lm.shape[1:] != (68, 2):
        raise FacevaeError(f"landmarks must have shape (N, 68, 2), got {lm.shape}")
    left, right = lm[:, LEFT_EYE].mean(axis=1), lm[:, RIGHT_EYE].mean(axis=1)
    iod = np.linalg.norm(right - left, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (lm - ((left + right) / 2)[:, None]) / iod[:, None, None]
    out[~(iod > 0)] = np.nan
    return out


def neutral_frames(normalised: np.ndarray, times: np.ndarray | None = None, window: tuple | None = None) -> np.ndarray:
    """(N,) bool: the frames a neutral face is taken from -- those with landmarks, and with
    ``window`` = (start, end) seconds only those whose ``times`` fall in [start, end) (a
    calibration window: a live webcam has no whole video to take the median of)."""
    lm = np.asarray(normalised, np.float64)
    ok = np.isfinite(lm).all(axis=(1, 2))
    if window is not None:
        if times is None:
            raise FacevaeError("a neutral-shape window needs the frame times")
        start, end = window
        t = np.asarray(times, np.float64)
        ok &= (t >= start) & (t < (np.inf if end is None else end))
    return ok


def neutral_shape(normalised: np.ndarray, times: np.ndarray | None = None, window: tuple | None = None) -> np.ndarray:
    """A person's neutral face: the point-wise median (68, 2) of their normalised shapes over
    :func:`neutral_frames`."""
    ok = neutral_frames(normalised, times, window)
    if not ok.any():
        where = f" between {window[0]} s and {window[1]} s" if window is not None else ""
        raise FacevaeError(f"no frame with landmarks{where} to take the neutral face from")
    return np.median(np.asarray(normalised, np.float64)[ok], axis=0)


def transferred_neutral(driver_neutral, actor_neutral, transfer: float = 1.0):
    """The neutral a driver's shapes are taken relative to: ``(1 - transfer)`` x the actor's plus
    ``transfer`` x the driver's own (see NEUTRAL_TRANSFER); numpy or torch alike."""
    if transfer == 1.0:
        return driver_neutral
    return (1.0 - transfer) * actor_neutral + transfer * driver_neutral


def retarget_shapes(driver_normalised: np.ndarray, driver_neutral: np.ndarray, actor_neutral: np.ndarray,
                    gain: float = 1.0, transfer: float = 1.0) -> np.ndarray:
    """The actor's shapes that make the driver's expressions: the actor's neutral plus ``gain``
    times each driver frame's change from the driver's neutral (all normalised, so the change is
    measured in inter-ocular distances and lands on the actor at the actor's scale). With
    ``transfer`` < 1 the change is taken from :func:`transferred_neutral` instead: at gain 1 the
    driver's own shape moved by ``transfer`` x (actor's neutral - driver's neutral)."""
    neutral = transferred_neutral(np.asarray(driver_neutral, np.float64), np.asarray(actor_neutral, np.float64), transfer)
    return actor_neutral[None] + gain * (np.asarray(driver_normalised, np.float64) - neutral[None])


# -------------------------------------------------------------------------------------- the map


def shape_features(shapes: torch.Tensor, kind: str = "local", brow_weight: float = 1.0) -> torch.Tensor:
    """(N, 68, 2) normalised shapes -> (N, F) feature vectors the map reads (see RetargetSettings),
    the brows' coordinates (about their eye's centre; ``face``: about the eyes' midpoint) multiplied
    by ``brow_weight`` (a Python float: a constant in the ONNX graph, none at 1)."""
    def weighted(block: torch.Tensor, points: list) -> torch.Tensor:
        if brow_weight != 1.0:
            weight = torch.tensor([brow_weight if p in BROWS else 1.0 for p in points], dtype=block.dtype)
            block = block * weight[None, :, None]
        return block.reshape(block.shape[0], -1)

    if kind == "face":
        return weighted(shapes, list(range(68)))
    parts = []
    for group, centre in ((MOUTH, MOUTH), (LEFT_EYE_BROW, LEFT_EYE), (RIGHT_EYE_BROW, RIGHT_EYE)):
        parts.append(weighted(shapes[:, group] - shapes[:, centre].mean(dim=1, keepdim=True), group))
    return torch.cat(parts, dim=1)


def shape_openings(shapes: torch.Tensor) -> torch.Tensor:
    """(N, 68, 2) shapes -> (N, 2): eye and mouth opening / inter-ocular distance, the same numbers as
    :func:`facevae.expression.eye_open_ratio` and ``mouth_open_ratio`` (ONNX operators only)."""
    columns = []
    for pairs in (EYELIDS, INNER_LIPS):
        upper, lower = [a for a, _ in pairs], [b for _, b in pairs]
        columns.append(torch.linalg.vector_norm(shapes[:, lower] - shapes[:, upper], dim=2).mean(dim=1))
    iod = torch.linalg.vector_norm(shapes[:, RIGHT_EYE].mean(dim=1) - shapes[:, LEFT_EYE].mean(dim=1), dim=1)
    return torch.stack(columns, dim=1) / iod[:, None]


class LandmarkRetarget(torch.nn.Module):
    """Driver landmarks (crop px) and the driver's neutral (normalised) -> the actor's z.

    ``forward(landmarks (N, 68, 2), driver_neutral (68, 2)) -> (N, latent_dim)``: normalise, move to
    the actor (:func:`retarget_shapes` with ``gain`` and ``transfer``), take :func:`shape_features`, then the fitted
    map: kernel ``exp(-|x - c|^2 * inv_width) @ coef + z_mean`` over the stored centres ``c``, or
    linear ``(x - x_mean) @ coef + z_mean``; then, with a read-out (:func:`fit_readout`), the
    correction ``z + (clip(openings(shapes), readout_lo, readout_hi) - ((z - z_mean) @ readout_w +
    readout_y)) @ readout_steps``.
    Every step is an ONNX operator.
    """

    def __init__(self, actor_neutral, centres, coef, x_mean, z_mean, inv_width: float, features: str = "local",
                 kind: str = "kernel", gain: float = 1.0, readout: dict | None = None, transfer: float = 1.0,
                 brow_weight: float = 1.0):
        super().__init__()
        # float64 inside (float32 in and out): the kernel map's coefficients are large and of both
        # signs, so float32 sums lose ~5e-4 of z (measured on the CI pipeline's d6 map, against
        # float64); in float64 PyTorch and onnxruntime-web agree to ~1e-12.
        f64 = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64)  # noqa: E731
        self.register_buffer("actor_neutral", f64(actor_neutral))
        self.register_buffer("centres", f64(centres))
        self.register_buffer("coef", f64(coef))
        self.register_buffer("x_mean", f64(x_mean))
        self.register_buffer("z_mean", f64(z_mean))
        # The read-out (empty when off): readout_w (D, 2) and readout_y (2,) predict the openings from
        # z, readout_steps (2, D) is the change of z per unit of each opening; readout_lo / _hi (2,)
        # the actor's own range of the openings, which the step's targets are held in.
        self.has_readout = readout is not None  # a Python bool: the ONNX graph has the step or not
        readout = readout or {"w": np.zeros((0, 2)), "y": np.zeros(2), "steps": np.zeros((2, 0))}
        self.register_buffer("readout_w", f64(readout["w"]))
        self.register_buffer("readout_y", f64(readout["y"]))
        self.register_buffer("readout_steps", f64(readout["steps"]))
        self.register_buffer("readout_lo", f64(readout.get("lo", np.full(2, -np.inf))))
        self.register_buffer("readout_hi", f64(readout.get("hi", np.full(2, np.inf))))
        self.inv_width, self.features, self.kind, self.gain = float(inv_width), features, kind, float(gain)
        self.transfer = float(transfer)  # a Python float: the exported graph holds the blend, or none at 1
        self.brow_weight = float(brow_weight)  # fixed by the fit: the centres are in its feature space
        self.left, self.right = torch.tensor(LEFT_EYE), torch.tensor(RIGHT_EYE)

    @property
    def latent_dim(self) -> int:
        return int(self.coef.shape[1])

    def normalise(self, landmarks: torch.Tensor) -> torch.Tensor:
        left = landmarks[:, self.left].mean(dim=1)
        right = landmarks[:, self.right].mean(dim=1)
        iod = torch.linalg.vector_norm(right - left, dim=1)
        return (landmarks - ((left + right) / 2)[:, None]) / iod[:, None, None]

    def map(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "linear":
            return (x - self.x_mean) @ self.coef + self.z_mean
        d2 = (x * x).sum(dim=1, keepdim=True) - 2 * x @ self.centres.T + (self.centres * self.centres).sum(dim=1)[None]
        return torch.exp(-d2.clamp(min=0) * self.inv_width) @ self.coef + self.z_mean

    def forward(self, landmarks: torch.Tensor, driver_neutral: torch.Tensor) -> torch.Tensor:
        landmarks, driver_neutral = landmarks.to(torch.float64), driver_neutral.to(torch.float64)
        driver_neutral = transferred_neutral(driver_neutral, self.actor_neutral, self.transfer)
        shapes = self.actor_neutral[None] + self.gain * (self.normalise(landmarks) - driver_neutral[None])
        z = self.map(shape_features(shapes, self.features, self.brow_weight))
        if self.has_readout:
            target = torch.minimum(torch.maximum(shape_openings(shapes), self.readout_lo), self.readout_hi)
            miss = target - ((z - self.z_mean) @ self.readout_w + self.readout_y)
            z = z + miss @ self.readout_steps
        return z.to(torch.float32)

    @torch.no_grad()
    def drive(self, landmarks: np.ndarray, driver_neutral: np.ndarray) -> np.ndarray:
        """numpy in, numpy out: z (N, latent_dim) float32 for landmarks (N, 68, 2) crop px."""
        lm = torch.as_tensor(np.asarray(landmarks, np.float32))
        neutral = torch.as_tensor(np.asarray(driver_neutral, np.float32))
        if len(lm) == 0:
            return np.zeros((0, self.latent_dim), np.float32)
        return self(lm, neutral).numpy()


def _blocks(n: int, folds: int) -> np.ndarray:
    """Fold of each of ``n`` frames: ``folds`` contiguous blocks (neighbouring frames are near copies,
    so a random split would reward memorising them)."""
    return np.minimum(np.arange(n) * folds // max(n, 1), folds - 1)


def _solve_map(x: np.ndarray, z: np.ndarray, settings: RetargetSettings, median_d2: float | None = None) -> dict:
    """Fit one map (float64): returns centres, coef, x_mean, z_mean, inv_width."""
    x_mean, z_mean = x.mean(axis=0), z.mean(axis=0)
    zc = z - z_mean
    if settings.map == "linear":
        xc = x - x_mean
        # l2 is relative: per frame and per unit of the features' variance.
        gram = xc.T @ xc + settings.l2 * len(x) * xc.var(axis=0).mean() * np.eye(x.shape[1])
        return {"centres": np.zeros((0, x.shape[1])), "coef": np.linalg.solve(gram, xc.T @ zc), "x_mean": x_mean,
                "z_mean": z_mean, "inv_width": 0.0}
    centres = x[evenly_spread(len(x), settings.max_centres)]
    if median_d2 is None:
        d2 = ((centres[:, None] - centres[None]) ** 2).sum(-1)
        median_d2 = float(np.median(d2[d2 > 0])) if (d2 > 0).any() else 1.0
    inv_width = 1.0 / (2.0 * settings.bandwidth * median_d2)
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
    if kind == "linear":
        return (x - fit["x_mean"]) @ fit["coef"] + fit["z_mean"]
    return np.exp(-((x[:, None] - fit["centres"][None]) ** 2).sum(-1) * fit["inv_width"]) @ fit["coef"] + fit["z_mean"]


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


def fit_retarget(landmarks: np.ndarray, mu: np.ndarray, settings: RetargetSettings = RetargetSettings(),
                 gain: float = 1.0) -> tuple[LandmarkRetarget, dict]:
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
                           f"the actor has {len(norm)} (lower render.retarget.folds or add footage)")
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
    report["readout"] = readout is not None and any(readout["used"])
    if readout is not None:
        report["readout_eye_r"], report["readout_mouth_r"] = readout["heldout_r"]
        report["readout_eye"], report["readout_mouth"] = readout["used"]
        report["eye_sd"], report["mouth_sd"] = (float(v) for v in readout["sd"])
        directions = readout["directions"]
        if not any(readout["used"]):
            readout = None
    module = LandmarkRetarget(np.median(norm, axis=0), full["centres"], full["coef"], full["x_mean"], full["z_mean"],
                              full["inv_width"], settings.features, settings.map, gain, readout,
                              brow_weight=settings.brow_weight)
    # The mouth's regression direction even where its step is not used: decouple_eye_step's lever
    # (a transient attribute: the fit's, not saved with the map).
    module.mouth_direction = directions[1] if readout is not None else np.zeros(0)
    return module.eval(), report


# ----------------------------------------------------------------------------- driving a track


def neutral_window(value) -> tuple | None:
    """``render.retarget.neutral`` -> None (the whole video) or a (start, end) window in seconds."""
    if value in (None, "video"):
        return None
    start, end = value
    return (float(start or 0.0), None if end is None else float(end))


def same_person_distance(actor_descriptor: np.ndarray, driver_faces: np.ndarray, align_cfg, upscale: int = 4,
                         most: int = 60) -> float:
    """Distance between the actor's mean dlib descriptor (:func:`facevae.instruments.mean_descriptor`
    of its training faces) and that of up to ``most`` evenly spread driver faces (aligned 64 px,
    enlarged ``upscale`` times alike). Measured on the four lp clips (60 actor faces then): a
    held-out part of the same person's clip 0.09-0.24, two different people 0.46-0.81."""
    from facevae.instruments import mean_descriptor

    if len(driver_faces) == 0 or not np.isfinite(actor_descriptor).all():
        return float("inf")
    return float(np.linalg.norm(actor_descriptor - mean_descriptor(driver_faces, align_cfg, upscale, most)))


def resolve_drive(drive: str, distance: float | None, threshold: float, self_blend: float = SELF_BLEND) -> str:
    """The method ``drive`` stands for: itself, or for ``auto``, when the driver's
    :func:`same_person_distance` is at most ``threshold`` (the driver is the actor), the blend of
    encoder and retargeting (the encoder alone at ``self_blend`` 0), else retarget."""
    if drive != "auto":
        return drive
    if distance is not None and distance <= threshold:
        return "blend" if self_blend > 0 else "encoder"
    return "retarget"


def blend_latents(z_encoder: np.ndarray, z_retarget: np.ndarray, share: float) -> np.ndarray:
    """``(1 - share) * z_encoder + share * z_retarget`` (NaN rows stay NaN).

    Why, for the actor's own clips: the encoder carries what landmarks do not (gaze, light, the
    actor's own small motions) but blurs what the decoder rarely saw; the map carries the landmarks'
    openings. On the bench's own held-out clips (mesh mouth r, encoder / retarget / blend 0.5):
    d6 0.80 / 0.85 / 0.90, d10 0.81 / 0.72 / 0.85, d3 0.78 / 0.84 / 0.92, d13 0.975 / 0.89 / 0.965
    (bench/results/self_blend.md, bench/sweep_self_blend.py)."""
    return ((1.0 - share) * z_encoder + share * z_retarget).astype(np.float32)


def encode_track(codec, track, chunk: int = 512) -> np.ndarray:
    """Posterior means of every kept frame's crop; (N, D) float32 with NaN rows for other frames."""
    z = np.full((track.n, codec.latent_dim), np.nan, np.float32)
    for start in range(0, track.n, chunk):
        stop = min(start + chunk, track.n)
        keep = track.kept[start:stop]
        if keep.any():
            crops = track.read_crops(start, stop)[keep]
            z[start:stop][keep] = codec.encode(crops)
    return z


def transfer_nearest(module: LandmarkRetarget, landmarks: np.ndarray, driver_neutral: np.ndarray, z_reference: np.ndarray,
                     grid=TRANSFER_GRID) -> tuple[float, list, np.ndarray]:
    """The neutral transfer (of ``grid``) whose retargeted z of ``landmarks`` (N, 68, 2) comes nearest
    ``z_reference`` (N, D; mean squared distance over the frames; the smallest transfer on a tie), each
    one's distance, and the z at the pick. Leaves ``module.transfer`` as it found it.

    Why, for the actor's own clips (render.self_transfer encoder): the encoder knows the actor, so its
    z says where this clip's faces lie in the actor's space, and with it how far the clip's median face
    (the driver's neutral) sits from the training clips' for a reason the map should keep (a clip
    spoken with the mouth more open) or take away (the head held lower). The bench's held-out own clips
    (mesh mouth r of the blend, transfer 0.75 -> nearest the encoder's): d6 0.905 -> 0.904 (0.6), d10
    0.848 -> 0.876 (0.2), d3 0.951 -> 0.927 (0.3), d13 0.956 -> 0.970 (0) against the encoder's
    0.802 / 0.812 / 0.866 / 0.965. Fixed: 0.5 and up leave d13 below its encoder, 0 breaks d3 (0.751),
    0.25 clears all four (d13 by 0.001) -- bench/results/self_transfer.md."""
    kept_transfer = module.transfer
    distances, best = [], None
    try:
        for transfer in grid:
            module.transfer = float(transfer)
            z = _drive_chunks(module, landmarks, driver_neutral)
            distances.append(float(np.mean(np.sum((z - z_reference) ** 2, axis=1))))
            if distances[-1] < min(distances[:-1], default=np.inf):
                best = z
    finally:
        module.transfer = kept_transfer
    return float(grid[int(np.argmin(distances))]), distances, best


def _drive_chunks(module: LandmarkRetarget, landmarks: np.ndarray, driver_neutral: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """:meth:`LandmarkRetarget.drive` ``chunk`` frames at a time (the kernel map holds frames x centres)."""
    if len(landmarks) == 0:
        return np.zeros((0, module.latent_dim), np.float32)
    return np.concatenate([module.drive(landmarks[i : i + chunk], driver_neutral) for i in range(0, len(landmarks), chunk)])


def retarget_track(module: LandmarkRetarget, track, neutral="video", gain: float = 1.0, chunk: int = 4096,
                   transfer: float = NEUTRAL_TRANSFER, landmarks=None, nearest_to: np.ndarray | None = None
                   ) -> tuple[np.ndarray, dict]:
    """The actor's z for every kept frame of ``track`` (NaN rows elsewhere) through the map, with the
    driver's neutral taken from ``neutral`` (see :func:`neutral_window`) and ``transfer`` of its gap
    to the actor's taken away (NEUTRAL_TRANSFER). ``landmarks``: the kept frames' points (crop px)
    to drive with instead of the track's (see :func:`driver_landmarks`). ``nearest_to``: z for every
    frame (the encoder's); given, the transfer is the one of TRANSFER_GRID whose z comes nearest it on
    the kept frames (:func:`transfer_nearest`) and ``transfer`` is not used. Returns z and what was used."""
    kept = track.kept
    z = np.full((track.n, module.latent_dim), np.nan, np.float32)
    info = {"neutral": neutral, "gain": gain, "transfer": transfer, "neutral_frames": 0}
    if not kept.any():
        return z, info
    landmarks = np.asarray(track.landmarks[:], np.float32)[kept] if landmarks is None else np.asarray(landmarks, np.float32)
    norm = normalise_landmarks(landmarks)
    window = neutral_window(neutral)
    try:
        driver_neutral = neutral_shape(norm, track.time[kept], window)
    except FacevaeError as err:
        raise FacevaeError(f"render.retarget.neutral: {err} in {track.path}") from None
    info["neutral_frames"] = int(neutral_frames(norm, track.time[kept], window).sum())
    module.gain = float(gain)
    if nearest_to is None:
        module.transfer = float(transfer)
        z[kept] = _drive_chunks(module, landmarks, driver_neutral, chunk)
        return z, info
    transfer, distances, picked = transfer_nearest(module, landmarks, driver_neutral, np.asarray(nearest_to)[kept])
    z[kept] = picked
    module.transfer = transfer
    info.update(transfer=transfer, transfer_chosen_by="nearest the encoder's z",
                transfer_distances=dict(zip(map(str, TRANSFER_GRID), np.round(distances, 3).tolist())))
    log.info("neutral transfer %.1f: its z lies nearest the reference z (mean squared distance %.3f; %.3f at 0, %.3f at 1)",
             transfer, min(distances), distances[0], distances[-1])
    return z, info


MOUTH_POINTS = ("faceapi", "dlib")  # render.retarget.mouth_points


def driver_landmarks(track, mouth_points: str, video_path=None, faceapi_model=None) -> np.ndarray | None:
    """The kept frames' points retargeting reads: the track's (dlib's), with ``mouth_points`` faceapi
    the mouth's 20 points from face-api's 68-point net (the page's model, run in PyTorch on the
    video's frames; ``faceapi_model``: its weights folder, rule faceapi_weights). None = the track's.
    Why: dlib's mouth opening follows the face mesh's less well than face-api's (tpsmm: r 0.75 vs
    0.89), and the map passes that noise on; face-api's eyes are worse for the map (eye r 0.35 vs
    0.52), so only the mouth is taken -- the bench's 16 cross pairs, mesh mouth / eye medians 0.753
    / 0.519 -> 0.821 / 0.542, 13 -> 16 of 16 within retrieval's reach (bench/results/landmark_sweep.md)."""
    if mouth_points not in MOUTH_POINTS:
        raise FacevaeError(f"render.retarget.mouth_points must be one of {', '.join(MOUTH_POINTS)}, not {mouth_points!r}")
    if mouth_points == "dlib" or not track.kept.any():
        return None
    if faceapi_model is None or video_path is None:
        raise FacevaeError("render.retarget.mouth_points faceapi needs face-api's landmark weights (rule faceapi_weights) "
                           "and the driver's video")
    from facevae.faces.faceapi_landmarks import load_faceapi_landmark_net, track_landmarks, with_faceapi_mouth

    rows = np.flatnonzero(track.kept)
    faceapi = track_landmarks(track, video_path, load_faceapi_landmark_net(faceapi_model), rows)
    return with_faceapi_mouth(np.asarray(track.landmarks[:], np.float64)[rows], faceapi)


def drive_track(drive: str, codec, track, retarget_path=None, retarget_cfg: dict | None = None, actor_descriptor=None,
                same_person: float = 0.35, upscale: int = 4, video_path=None, faceapi_model=None,
                self_blend: float = SELF_BLEND, self_transfer=SELF_TRANSFER) -> tuple[np.ndarray, dict]:
    """The actor's z for every kept frame of ``track`` (NaN rows elsewhere) by ``render.drive``.

    ``retarget_path``: the actor's map (needed when the method is retarget); ``retarget_cfg``: the
    ``render.retarget`` section; ``actor_descriptor``: the actor's mean descriptor (auto compares
    the driver's with it); ``video_path`` and ``faceapi_model``: the driver's video and face-api's
    weights folder (retarget with ``mouth_points`` faceapi, see :func:`driver_landmarks`);
    ``self_blend``: the retargeted z's share when the method is blend (:func:`blend_latents`);
    ``self_transfer``: its neutral transfer then (a number, or ``encoder``: :func:`transfer_nearest`).
    Returns z and what was done: ``method`` (encoder, retarget or blend), for auto
    ``identity_distance``, for retarget and blend the map's neutral / gain / mouth points / settings."""
    retarget_cfg = retarget_cfg or {}
    info: dict = {"drive": drive}
    if drive == "auto":
        if actor_descriptor is None:
            raise FacevaeError("render.drive auto needs the actor's training faces (results/faces/{actor}.h5)")
        rows = np.flatnonzero(track.kept)
        crops = np.concatenate([track.read_crops(i, i + 1) for i in rows[evenly_spread(len(rows), 60)]]) if len(rows) else \
            np.zeros((0, FACE_SIZE, FACE_SIZE, 3), np.uint8)
        distance = same_person_distance(actor_descriptor, crops, track.align_config(FACE_SIZE), upscale)
        info.update(identity_distance=distance, same_person_distance=same_person)
        log.info("render.drive auto: the driver's faces are %.3f from the actor's (same person at <= %.2f): %s",
                 distance, same_person, resolve_drive(drive, distance, same_person))
    method = info["method"] = resolve_drive(drive, info.get("identity_distance"), same_person, self_blend)
    if method in ("retarget", "blend"):
        if retarget_path is None:
            raise FacevaeError(f"render.drive {method} needs the actor's retargeting map (rule fit_retarget)")
        settings = RetargetSettings.from_config(retarget_cfg)  # checks the keys before any work
        mouth_points = retarget_cfg.get("mouth_points", "faceapi")
        landmarks = driver_landmarks(track, mouth_points, video_path, faceapi_model)
        transfer, z_encoder, nearest_to = retarget_cfg.get("transfer", NEUTRAL_TRANSFER), None, None
        if method == "blend":
            z_encoder = encode_track(codec, track)
            if self_transfer == "encoder":
                nearest_to = z_encoder
            else:
                transfer = float(self_transfer)
        z, used = retarget_track(load_retarget(retarget_path), track, retarget_cfg.get("neutral", "video"),
                                 retarget_cfg.get("gain", 1.0), transfer=transfer, landmarks=landmarks, nearest_to=nearest_to)
        info["retarget"] = {**used, "mouth_points": mouth_points, "map": dataclasses.asdict(settings)}
        if method == "blend":
            z = blend_latents(z_encoder, z, self_blend)
            info["self_blend"], info["self_transfer"] = float(self_blend), self_transfer
    else:
        z = encode_track(codec, track)
    return z, info


# ----------------------------------------------------------------------------------- file I/O


def save_retarget(path: str | os.PathLike, module: LandmarkRetarget, info: dict | None = None) -> Path:
    """The map's tensors and settings plus free-form ``info`` (weights_only-loadable), written atomically."""
    return atomic_torch_save({
        "format": RETARGET_FORMAT,
        "version": RETARGET_VERSION,
        "state": {k: v.detach().cpu() for k, v in module.state_dict().items()},
        "settings": {"inv_width": module.inv_width, "features": module.features, "kind": module.kind, "gain": module.gain,
                     "transfer": module.transfer, "brow_weight": module.brow_weight},
        "info": info or {},
    }, path)


def load_retarget(path: str | os.PathLike) -> LandmarkRetarget:
    blob = read_blob(path, RETARGET_FORMAT, RETARGET_VERSION, "retargeting map", rebuild="fit_retarget")
    s, cfg = blob["state"], blob["settings"]
    readout = None
    if "readout_w" in s and s["readout_w"].shape[0] > 0:  # version 1 maps have none
        readout = {"w": s["readout_w"].numpy(), "y": s["readout_y"].numpy(), "steps": s["readout_steps"].numpy()}
        if "readout_lo" in s:  # version 2 maps have no range: unbounded
            readout.update(lo=s["readout_lo"].numpy(), hi=s["readout_hi"].numpy())
    module = LandmarkRetarget(s["actor_neutral"].numpy(), s["centres"].numpy(), s["coef"].numpy(), s["x_mean"].numpy(),
                              s["z_mean"].numpy(), cfg["inv_width"], cfg["features"], cfg["kind"], cfg["gain"], readout,
                              cfg.get("transfer", 1.0),  # maps saved before the key: the full transfer
                              cfg.get("brow_weight", 1.0))  # and unweighted brows
    module.info = blob.get("info", {})
    return module.eval()


def export_onnx(module: LandmarkRetarget, path: str | os.PathLike) -> Path:
    """The map as an ONNX graph: inputs ``landmarks`` (N, 68, 2) float32 crop px and
    ``driver_neutral`` (68, 2) float32 normalised; output ``z`` (N, latent_dim)."""
    from facevae.atomic import atomic_path

    import warnings

    example = ((module.actor_neutral[None].repeat(2, 1, 1) * 20 + 32).float(), module.actor_neutral.float())
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter: no onnxscript needed
        torch.onnx.export(module, example, str(tmp), input_names=["landmarks", "driver_neutral"], output_names=["z"],
                          dynamic_axes={"landmarks": {0: "frames"}, "z": {0: "frames"}}, opset_version=17, dynamo=False)
    return Path(path)


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
    # the columns are always there
    report.update(eye_response=float("nan"), eye_gain=1.0, eye_mouth_response=float("nan"),
                  mouth_response=float("nan"), eye_mouth_removed=0.0)
    if not report.get("readout_eye"):
        return module, report
    if settings.eye_keeps_mouth:
        report.update(decouple_eye_step(module, mu, (report["eye_sd"], report["mouth_sd"]), module.mouth_direction,
                                        openings_of))
    if settings.eye_gain_max > 1:
        report.update(calibrate_eye_step(module, mu, float(report["eye_sd"]), lambda z: np.asarray(openings_of(z))[:, 1],
                                         settings.eye_gain_max))
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
    save_retarget(outputs["map"], module, report)
    write_text(outputs["table"], pd.DataFrame([report]).to_csv(sep="\t", index=False, float_format="%.6g"))
    return report
