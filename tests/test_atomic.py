"""Atomic outputs: a failed write leaves the previous file (or none) and no temporary behind."""

import os

import numpy as np
import pytest

from facevae.atomic import atomic_path, remove_stale_temps, save_figure, write_png, write_text


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


def test_a_killed_writers_temporary_is_removed_on_the_next_write(tmp_path):
    """SIGKILL runs no cleanup: the next write of the same file removes the dead process's
    temporary, and leaves a live process's alone."""
    import subprocess

    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = tmp_path / f".out.txt.{gone.pid}.tmp"
    dead.write_text("partial")
    alive = tmp_path / f".out.txt.{os.getppid()}.tmp.png"
    alive.write_text("another writer")
    write_text(tmp_path / "out.txt", "done")
    assert not dead.exists() and alive.exists()
    assert (tmp_path / "out.txt").read_text() == "done"
    assert remove_stale_temps(tmp_path / "out.txt") == []
