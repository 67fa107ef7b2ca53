"""Picking a few items evenly spread over many (faces for sheets, descriptors, attribute rows)."""

from __future__ import annotations

import numpy as np


def evenly_spread(n: int, most: int) -> np.ndarray:
    """Sorted int64 indices of at most ``most`` of ``n`` items, evenly spread from the first to the
    last (all of them when ``n <= most``)."""
    if n <= 0 or most <= 0:
        return np.zeros(0, np.int64)
    return np.unique(np.linspace(0, n - 1, min(n, most)).round().astype(np.int64))
