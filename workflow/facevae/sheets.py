"""Contact sheets, grids and labelled figures: every tiled image the workflow writes is laid out here.

Images are RGB uint8 (H, W, 3). A *grid* is rows of equally sized images, placed left to right and
top to bottom on a canvas of one fill colour; *labels* are text strips drawn with OpenCV's Hershey
font; *stack* puts strips and grids under one another. Writers (``write_png``) stay with their
stage -- this module only builds the arrays.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

FONT = cv2.FONT_HERSHEY_SIMPLEX


def grid(rows: Sequence[Sequence[np.ndarray]], *, fill: int = 0, gap: int = 0, min_width: int = 0,
         cell: tuple[int, int] | None = None) -> np.ndarray:
    """Rows of images (each (h, w, 3), all one size) on one canvas.

    The canvas is as wide as the longest row (at least ``min_width``; shorter rows and the extra
    width keep ``fill``). ``gap``: px of ``fill`` between the images and around the edge.
    ``cell``: (h, w) of an image, needed only when there are no images (an empty canvas)."""
    images = [image for row in rows for image in row]
    h, w = images[0].shape[:2] if images else (cell or (0, 0))
    columns = max((len(row) for row in rows), default=0)
    height = len(rows) * h + ((len(rows) + 1) * gap if gap else 0)
    width = max(columns * w + ((columns + 1) * gap if gap else 0), min_width)
    canvas = np.full((height, width, 3), fill, np.uint8)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            y, x = gap + r * (h + gap), gap + c * (w + gap)
            canvas[y : y + h, x : x + w] = image
    return canvas


def tile(images: Sequence[np.ndarray], columns: int, **kwargs) -> np.ndarray:
    """``images`` in rows of ``columns`` (the last row may be short); ``kwargs`` as :func:`grid`."""
    return grid([images[i : i + columns] for i in range(0, len(images), columns)], **kwargs)


def enlarge(image: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour enlargement by a whole factor (pixels stay square blocks)."""
    scale = int(scale)
    return image if scale <= 1 else image.repeat(scale, axis=0).repeat(scale, axis=1)


def label(width: int, height: int, text: str, scale: float = 0.4, *, x: int | None = None,
          baseline: int | None = None, background: int = 255, fit: bool = True) -> np.ndarray:
    """A ``height`` x ``width`` strip of ``background`` with ``text`` in black.

    ``x``: the text's left edge (default: centred); ``baseline``: its y (default ``height - 6``).
    ``fit``: a text wider than the strip shrinks (to a font scale of 0.25 at least)."""
    strip = np.full((height, width, 3), background, np.uint8)
    size = cv2.getTextSize(text, FONT, scale, 1)[0]
    while fit and size[0] > width - 4 and scale > 0.25:
        scale *= 0.9
        size = cv2.getTextSize(text, FONT, scale, 1)[0]
    if x is None:
        x = max(1, (width - size[0]) // 2)
    cv2.putText(strip, text, (x, height - 6 if baseline is None else baseline), FONT, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return strip


def stack(parts: Sequence[np.ndarray], *, gap: int = 0, fill: int = 255) -> np.ndarray:
    """Strips and grids one under another, each padded on the right to the widest with ``fill``
    and followed by ``gap`` px of it."""
    width = max(part.shape[1] for part in parts)
    return np.vstack([np.pad(part, ((0, gap), (0, width - part.shape[1]), (0, 0)), constant_values=fill)
                      for part in parts])
