"""Landmark shapes: normalisation, a person's neutral face, the move from the driver to the actor,
and the features and openings the map reads.

Landmarks are the tracks' 68 iBUG points in aligned-crop pixels. The crops are already similarity
aligned on the rigid eyes-and-nose points, so :func:`normalise_landmarks` only moves the origin to
the midpoint of the eye centres and divides by the inter-ocular distance; what remains is
expression plus out-of-plane head pose, both of which the actor should copy. Every function here
that the exported driving graph uses works on torch tensors with ONNX operators only.
"""

from __future__ import annotations

import numpy as np
import torch

from facevae import FacevaeError
from facevae.expression import EYELIDS, INNER_LIPS, LEFT_EYE, RIGHT_EYE

MOUTH = list(range(48, 68))
BROWS = list(range(17, 27))
LEFT_EYE_BROW = LEFT_EYE + list(range(17, 22))
RIGHT_EYE_BROW = RIGHT_EYE + list(range(22, 27))
FEATURES = ("local", "face")


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


def normalise_points(landmarks: torch.Tensor) -> torch.Tensor:
    """:func:`normalise_landmarks` in torch (ONNX operators; a zero inter-ocular distance gives inf/NaN)."""
    left = landmarks[:, LEFT_EYE].mean(dim=1)
    right = landmarks[:, RIGHT_EYE].mean(dim=1)
    iod = torch.linalg.vector_norm(right - left, dim=1)
    return (landmarks - ((left + right) / 2)[:, None]) / iod[:, None, None]


def neutral_window(value) -> tuple | None:
    """``render.retarget.neutral`` -> None (the whole video) or a (start, end) window in seconds."""
    if value in (None, "video"):
        return None
    start, end = value
    return (float(start or 0.0), None if end is None else float(end))


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
    ``transfer`` x the driver's own (render.retarget.transfer); numpy or torch alike."""
    if transfer == 1.0:
        return driver_neutral
    return (1.0 - transfer) * actor_neutral + transfer * driver_neutral


def retarget_shapes(driver_normalised, driver_neutral, actor_neutral, gain: float = 1.0, transfer: float = 1.0):
    """The actor's shapes that make the driver's expressions: the actor's neutral plus ``gain``
    times each driver frame's change from the driver's neutral (all normalised, so the change is
    measured in inter-ocular distances and lands on the actor at the actor's scale). With
    ``transfer`` < 1 the change is taken from :func:`transferred_neutral` instead: at gain 1 the
    driver's own shape moved by ``transfer`` x (actor's neutral - driver's neutral). numpy (float64)
    or torch alike: the driving graph calls it too."""
    if not torch.is_tensor(driver_normalised):
        driver_normalised, driver_neutral, actor_neutral = (np.asarray(a, np.float64) for a in
                                                            (driver_normalised, driver_neutral, actor_neutral))
    neutral = transferred_neutral(driver_neutral, actor_neutral, transfer)
    return actor_neutral[None] + gain * (driver_normalised - neutral[None])


def shape_features(shapes: torch.Tensor, kind: str = "local", brow_weight: float = 1.0) -> torch.Tensor:
    """(N, 68, 2) normalised shapes -> (N, F) feature vectors the map reads: ``local`` -- the mouth's
    20 points about their own centre and each eye with its brow about the eye's centre (expression
    without head position), or ``face`` -- all 68 points (head pose too). The brows' coordinates are
    multiplied by ``brow_weight`` (a Python float: a constant in the ONNX graph, none at 1)."""
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
