"""The fitted landmark -> latent map: :class:`LandmarkRetarget`, the whole path from a driver's
landmarks to the actor's z as one torch module (every step an ONNX operator, so one export runs it in
the browser: :func:`facevae.driving.mapfile.export_onnx`).

The module is immutable after fitting: how a video is driven (the neutral transfer, the gain) is an
argument of :meth:`LandmarkRetarget.forward` / :meth:`~LandmarkRetarget.drive`, and baked into the
graph only at export.
"""

from __future__ import annotations

import numpy as np
import torch

from facevae.driving.shapes import normalise_points, retarget_shapes, shape_features, shape_openings

MAPS = ("kernel", "linear", "nadaraya", "additive")


def _sq_distances(x: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    return ((x * x).sum(dim=1, keepdim=True) - 2 * x @ centres.T + (centres * centres).sum(dim=1)[None]).clamp(min=0)


def apply_map(x: torch.Tensor, centres: torch.Tensor, coef: torch.Tensor, x_mean: torch.Tensor, z_mean: torch.Tensor,
              inv_width: float, kind: str, blocks: torch.Tensor | None = None) -> torch.Tensor:
    """Feature vectors (N, F) -> z (N, D): kernel ``exp(-|x - c|^2 * inv_width) @ coef + z_mean`` over
    the centres ``c``; ``nadaraya`` the same weights normalised to sum to 1 (``coef``: the centres' own
    codes less ``z_mean``), so z is a weighted mean of the actor's codes; ``additive`` one kernel per
    block of features -- ``blocks`` (B, F): each row the block's features scaled by ``sqrt(inv_width)``
    of that block, zero elsewhere -- their columns side by side, so z = z_mean + f_mouth(mouth) +
    f_eyes(eyes and brows) (:func:`facevae.driving.fit.feature_blocks`); or linear ``(x - x_mean) @
    coef + z_mean``. The one evaluation of a map, for the module and for the fit's cross-validation alike."""
    if kind == "linear":
        return (x - x_mean) @ coef + z_mean
    if kind == "additive":
        k = torch.cat([torch.exp(-_sq_distances(x * scale, centres * scale)) for scale in blocks], dim=1)
        return k @ coef + z_mean
    d2 = _sq_distances(x, centres)
    if kind == "nadaraya":
        # Shifted by each row's nearest centre before exp: a shape far from every face of the actor
        # keeps weights (its nearest faces win) instead of underflowing to 0 / 0.
        weights = torch.exp(-(d2 - d2.min(dim=1, keepdim=True).values) * inv_width)
        return (weights @ coef) / weights.sum(dim=1, keepdim=True) + z_mean
    return torch.exp(-d2 * inv_width) @ coef + z_mean


class LandmarkRetarget(torch.nn.Module):
    """Driver landmarks (crop px) and the driver's neutral (normalised) -> the actor's z.

    ``forward(landmarks (N, 68, 2), driver_neutral (68, 2), transfer, gain) -> (N, latent_dim)``:
    normalise, move to the actor (:func:`~facevae.driving.shapes.retarget_shapes`), take
    :func:`~facevae.driving.shapes.shape_features`, then the fitted map (:func:`apply_map`); then,
    with a read-out (:func:`facevae.driving.fit.fit_readout`), the correction ``z +
    (clip(openings(shapes), readout_lo, readout_hi) - ((z - z_mean) @ readout_w + readout_y)) @
    readout_steps``.
    """

    def __init__(self, actor_neutral, centres, coef, x_mean, z_mean, inv_width: float, features: str = "local",
                 kind: str = "kernel", readout: dict | None = None, brow_weight: float = 1.0, info: dict | None = None,
                 blocks=None, mouth_after_eye: bool = False):
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
        if blocks is not None:  # the additive map's feature blocks: a buffer only there (other maps' files unchanged)
            self.register_buffer("blocks", f64(blocks))
        else:
            self.blocks = None
        # The read-out (empty when off): readout_w (D, 2) and readout_y (2,) predict the openings from
        # z, readout_steps (2, D) is the change of z per unit of each opening; readout_lo / _hi (2,)
        # the actor's own range of the openings, which the step's targets are held in.
        self.has_readout = readout is not None  # a Python bool: the ONNX graph has the step or not
        # A Python bool too: the mouth's miss read after the eye step (a decoded mouth read-out,
        # facevae.driving.fit.calibrate_mouth_readout) or both misses read before either step.
        self.mouth_after_eye = bool(mouth_after_eye)
        readout = readout or {"w": np.zeros((0, 2)), "y": np.zeros(2), "steps": np.zeros((2, 0))}
        self.register_buffer("readout_w", f64(readout["w"]))
        self.register_buffer("readout_y", f64(readout["y"]))
        self.register_buffer("readout_steps", f64(readout["steps"]))
        self.register_buffer("readout_lo", f64(readout.get("lo", np.full(2, -np.inf))))
        self.register_buffer("readout_hi", f64(readout.get("hi", np.full(2, np.inf))))
        self.inv_width, self.features, self.kind = float(inv_width), features, kind
        self.brow_weight = float(brow_weight)  # fixed by the fit: the centres are in its feature space
        self.info = dict(info or {})  # the fit's report (saved with the map)

    @property
    def latent_dim(self) -> int:
        return int(self.coef.shape[1])

    def map(self, x: torch.Tensor) -> torch.Tensor:
        return apply_map(x, self.centres, self.coef, self.x_mean, self.z_mean, self.inv_width, self.kind, self.blocks)

    def forward(self, landmarks: torch.Tensor, driver_neutral: torch.Tensor, transfer: float = 1.0,
                gain: float = 1.0) -> torch.Tensor:
        landmarks, driver_neutral = landmarks.to(torch.float64), driver_neutral.to(torch.float64)
        shapes = retarget_shapes(normalise_points(landmarks), driver_neutral, self.actor_neutral, float(gain), float(transfer))
        z = self.map(shape_features(shapes, self.features, self.brow_weight))
        if self.has_readout:
            target = torch.minimum(torch.maximum(shape_openings(shapes), self.readout_lo), self.readout_hi)
            if self.mouth_after_eye:  # the eye step, then the mouth step by what the read-out sees after it
                for k in (0, 1):
                    miss = target[:, k : k + 1] - ((z - self.z_mean) @ self.readout_w[:, k : k + 1] + self.readout_y[k])
                    z = z + miss @ self.readout_steps[k : k + 1]
            else:
                miss = target - ((z - self.z_mean) @ self.readout_w + self.readout_y)
                z = z + miss @ self.readout_steps
        return z.to(torch.float32)

    @torch.no_grad()
    def drive(self, landmarks: np.ndarray, driver_neutral: np.ndarray, transfer: float = 1.0, gain: float = 1.0) -> np.ndarray:
        """numpy in, numpy out: z (N, latent_dim) float32 for landmarks (N, 68, 2) crop px."""
        lm = torch.as_tensor(np.asarray(landmarks, np.float32))
        neutral = torch.as_tensor(np.asarray(driver_neutral, np.float32))
        if len(lm) == 0:
            return np.zeros((0, self.latent_dim), np.float32)
        return self(lm, neutral, transfer, gain).numpy()


class BakedDrive(torch.nn.Module):
    """A map with one video's drive (``transfer``, ``gain``) fixed: the graph the page exports."""

    def __init__(self, module: LandmarkRetarget, transfer: float, gain: float):
        super().__init__()
        self.module, self.transfer, self.gain = module, float(transfer), float(gain)

    def forward(self, landmarks: torch.Tensor, driver_neutral: torch.Tensor) -> torch.Tensor:
        return self.module(landmarks, driver_neutral, self.transfer, self.gain)


