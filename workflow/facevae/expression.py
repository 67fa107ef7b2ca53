"""Expression measures from 68 iBUG landmarks, and how well one series follows another.

The two measures are scale-free: each vertical gap is divided by the inter-ocular distance (the
distance between the two eye centres, each the mean of its six contour points), so a face's size,
position and in-plane rotation in the image do not change them. Both take any array of shape
(..., 68, 2) and return the leading shape; a NaN landmark (no face) gives NaN.

- ``mouth_open_ratio``: mean gap between the inner lips (points 61-67, 62-66, 63-65).
- ``eye_open_ratio``: mean gap between the eyelids of both eyes (37-41, 38-40, 43-47, 44-46).

``transfer_score`` compares a driver's series with a rendered actor's series: the Pearson
correlation, the same correlation with the actor series shuffled in time (a control that must sit
near 0, with the spread of that null distribution), and a circular-shift control, which keeps each
series' own autocorrelation and is the stricter null for smooth signals such as these.
"""

from __future__ import annotations

import numpy as np

from facevae import FacevaeError

LEFT_EYE = list(range(36, 42))
RIGHT_EYE = list(range(42, 48))
# (upper, lower) point pairs of the vertical gaps.
INNER_LIPS = [(61, 67), (62, 66), (63, 65)]
EYELIDS = [(37, 41), (38, 40), (43, 47), (44, 46)]


def _check(landmarks) -> np.ndarray:
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.ndim < 2 or lm.shape[-2:] != (68, 2):
        raise FacevaeError(f"landmarks must have shape (..., 68, 2), got {lm.shape}")
    return lm


def interocular_distance(landmarks) -> np.ndarray:
    """Distance between the eye centres (mean of each eye's 6 contour points), shape (...)."""
    lm = _check(landmarks)
    left = lm[..., LEFT_EYE, :].mean(axis=-2)
    right = lm[..., RIGHT_EYE, :].mean(axis=-2)
    return np.linalg.norm(right - left, axis=-1)


def _gap_ratio(landmarks, pairs) -> np.ndarray:
    lm = _check(landmarks)
    upper = lm[..., [a for a, _ in pairs], :]
    lower = lm[..., [b for _, b in pairs], :]
    gap = np.linalg.norm(lower - upper, axis=-1).mean(axis=-1)
    iod = interocular_distance(lm)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = gap / iod
    return np.where(iod > 0, ratio, np.nan)


def mouth_open_ratio(landmarks) -> np.ndarray:
    """Inner-lip opening / inter-ocular distance; (N, 68, 2) -> (N,). About 0 closed, ~0.5 wide open."""
    return _gap_ratio(landmarks, INNER_LIPS)


def eye_open_ratio(landmarks) -> np.ndarray:
    """Mean eyelid opening of both eyes / inter-ocular distance; (N, 68, 2) -> (N,)."""
    return _gap_ratio(landmarks, EYELIDS)


def pearson(a, b) -> float:
    """Pearson correlation of two equal-length series over the entries where both are finite.

    NaN when fewer than 3 such entries remain or either series is constant there."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise FacevaeError(f"series to correlate differ in length: {a.shape} vs {b.shape}")
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3:
        return float("nan")
    a, b = a[ok] - a[ok].mean(), b[ok] - b[ok].mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else float("nan")


def _pearson_many(a: np.ndarray, bs: np.ndarray) -> np.ndarray:
    """Correlation of finite ``a`` (n,) with each row of finite ``bs`` (k, n)."""
    a = a - a.mean()
    bs = bs - bs.mean(axis=1, keepdims=True)
    den = np.sqrt((a * a).sum() * (bs * bs).sum(axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, bs @ a / den, np.nan)


def transfer_score(driver, actor, seed: int = 0, permutations: int = 1000, min_shift: int | None = None) -> dict:
    """How well the ``actor`` series follows the ``driver`` series, frame for frame.

    Entries where either is NaN are left out (frames without a kept face). Returns a dict:
    ``frames`` (scored pairs), ``pearson``; ``shuffled_pearson`` (the actor series in one random
    order, seeded), ``shuffled_mean`` and ``shuffled_p95`` (mean and 95th percentile of |r| over
    ``permutations`` random orders) and ``p_shuffle`` (share of orders with r >= the real one);
    ``circular_pearson`` (the mean r over every circular shift of at least ``min_shift`` frames,
    default a tenth of the series) and ``circular_p95`` (95th percentile of |r| over those shifts).
    """
    d, a = np.asarray(driver, dtype=np.float64), np.asarray(actor, dtype=np.float64)
    if d.shape != a.shape or d.ndim != 1:
        raise FacevaeError(f"driver and actor series must be 1-D and equal in length: {d.shape} vs {a.shape}")
    ok = np.isfinite(d) & np.isfinite(a)
    d, a = d[ok], a[ok]
    n = len(d)
    out = {"frames": int(n), "seed": int(seed), "permutations": int(permutations)}
    nan = float("nan")
    if n < 3:
        out.update(pearson=nan, shuffled_pearson=nan, shuffled_mean=nan, shuffled_p95=nan, p_shuffle=nan,
                   circular_pearson=nan, circular_p95=nan, min_shift=0)
        return out
    r = pearson(d, a)
    rng = np.random.default_rng(seed)
    orders = np.stack([rng.permutation(n) for _ in range(max(permutations, 1))])
    null = _pearson_many(d, a[orders])
    shift0 = max(1, n // 10) if min_shift is None else max(1, int(min_shift))
    shifts = np.arange(shift0, n - shift0 + 1) if n - 2 * shift0 >= 0 else np.array([], dtype=int)
    if len(shifts):
        idx = (np.arange(n)[None, :] - shifts[:, None]) % n
        circ = _pearson_many(d, a[idx])
    else:
        circ = np.array([nan])
    out.update(
        pearson=r,
        shuffled_pearson=float(null[0]),
        shuffled_mean=float(np.nanmean(null)) if np.isfinite(null).any() else nan,
        shuffled_p95=float(np.nanpercentile(np.abs(null), 95)) if np.isfinite(null).any() else nan,
        p_shuffle=float((np.sum(null >= r) + 1) / (len(null) + 1)) if np.isfinite(r) else nan,
        circular_pearson=float(np.nanmean(circ)) if np.isfinite(circ).any() else nan,
        circular_p95=float(np.nanpercentile(np.abs(circ), 95)) if np.isfinite(circ).any() else nan,
        min_shift=int(shift0),
    )
    return out
