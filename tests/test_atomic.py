"""Atomic outputs: a failed write leaves the previous file (or none) and no temporary behind."""

import numpy as np
import pytest

from facevae.atomic import atomic_path, save_figure, write_png, write_text


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out" / "table.tsv"
    write_text(target, "old\n")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half a tab")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["table.tsv"]


def test_failed_first_write_leaves_nothing(tmp_path):
    target = tmp_path / "new" / "faces.h5"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"\x89HDF")
            raise RuntimeError("no space left")
    assert list(target.parent.iterdir()) == []


def test_png_and_figure_round_trip(tmp_path):
    import cv2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rgb = np.zeros((8, 12, 3), np.uint8)
    rgb[..., 0] = 255  # red
    back = cv2.imread(str(write_png(tmp_path / "red.png", rgb)))
    assert back.shape == (8, 12, 3) and (back[..., 2] == 255).all() and (back[..., :2] == 0).all()
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = save_figure(fig, tmp_path / "plot.png")
    assert cv2.imread(str(path)) is not None and not plt.get_fignums()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plot.png", "red.png"]
