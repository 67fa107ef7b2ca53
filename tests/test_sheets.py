"""facevae.sheets: the one layout of every contact sheet, grid and labelled figure."""

from __future__ import annotations

import cv2
import numpy as np

from facevae import sheets


def solid(value, h=4, w=6):
    return np.full((h, w, 3), value, np.uint8)


def test_grid_places_rows_left_to_right_with_fill_gap_and_width():
    canvas = sheets.grid([[solid(10), solid(20)], [solid(30)]], fill=128, gap=1, min_width=20)
    assert canvas.shape == (2 * 4 + 3, 20, 3)
    assert (canvas[1:5, 1:7] == 10).all() and (canvas[1:5, 8:14] == 20).all() and (canvas[6:10, 1:7] == 30).all()
    assert (canvas[6:10, 8:14] == 128).all() and (canvas[:, 15:] == 128).all() and (canvas[0] == 128).all()
    assert sheets.grid([], fill=255, min_width=480, cell=(64, 64)).shape == (0, 480, 3)


def test_tile_breaks_images_into_rows():
    images = [solid(k) for k in range(1, 6)]
    canvas = sheets.tile(images, 2)
    assert canvas.shape == (12, 12, 3)
    assert [int(canvas[r * 4, c * 6, 0]) for r in range(3) for c in range(2)] == [1, 2, 3, 4, 5, 0]


def test_enlarge_is_nearest_neighbour():
    image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    for scale in (2, 3):
        expected = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
        np.testing.assert_array_equal(sheets.enlarge(image, scale), expected)
    assert sheets.enlarge(image, 1) is image


def test_labels_draw_black_text_centred_or_from_the_left_and_shrink_to_fit():
    centred = sheets.label(200, 20, "Smiling")
    ink = np.flatnonzero((centred < 128).any(axis=(0, 2)))
    assert ink.size and abs((ink[0] + ink[-1]) / 2 - 100) <= 3
    left = sheets.label(200, 24, "d6", 0.5, x=4, baseline=17, background=235)
    assert left[0, -1].tolist() == [235] * 3 and np.flatnonzero((left < 128).any(axis=(0, 2)))[0] <= 6
    long = "Wearing_Necktie"
    width = cv2.getTextSize(long, sheets.FONT, 0.3, 1)[0][0] + 8  # fits at 0.3, not at 0.4
    fitted, clipped = sheets.label(width, 18, long), sheets.label(width, 18, long, fit=False)
    assert (fitted[:, -2:] == 255).all() and not (clipped[:, -2:] == 255).all()


def test_stack_pads_each_part_to_the_widest_and_adds_the_gap():
    out = sheets.stack([solid(0, 2, 3), solid(50, 3, 5)], gap=1, fill=255)
    assert out.shape == (2 + 1 + 3 + 1, 5, 3)
    assert (out[:2, 3:] == 255).all() and (out[2] == 255).all() and (out[3:6] == 50).all()
