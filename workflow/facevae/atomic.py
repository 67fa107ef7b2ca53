"""Atomic outputs: write beside the target, then rename over it.

Every output file of the workflow goes through here (or :func:`atomic_path` directly): a crash, a
killed job or a full disk leaves the previous file or nothing -- never a torn file that Snakemake
or a later rule would take for a finished one. The temporary is a hidden file in the target's own
folder (``os.replace`` is atomic only within one file system) and is removed on any error.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from . import FacevaeError


def temp_path(path: str | os.PathLike, suffix: str = "") -> Path:
    """A hidden temporary name beside ``path``, unique to this process (for writers that stream
    into a file over many calls and rename it themselves; :func:`atomic_path` for everything else).
    The target's folder is created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp{suffix}")


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Remove the temporaries of ``path`` that a killed process left (SIGKILL runs no cleanup):
    ``.{name}.{pid}.tmp*`` files and folders (a download's work folder) whose process is gone.
    Returns what was removed."""
    import shutil

    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f".{path.name}.*.tmp*"):
        pid = tmp.name[len(path.name) + 2 :].split(".", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
            continue
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def temp_folder(path: str | os.PathLike) -> Path:
    """A hidden work folder beside ``path`` named like :func:`temp_path`'s files, so a killed
    process's folder is removed by the next run's :func:`remove_stale_temps` (a ``mkdtemp`` name
    was left for ever, a whole video or dataset in it). The caller removes it when done."""
    folder = temp_path(path)
    import shutil

    shutil.rmtree(folder, ignore_errors=True)  # this pid's own leftover (pids are reused)
    folder.mkdir()
    return folder


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without error it replaces ``path``.

    ``suffix`` is appended to the temporary's name for writers that pick the format from it
    (``cv2.imwrite``, matplotlib). The target's folder is created first.
    """
    tmp = temp_path(path, suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_png(path: str | os.PathLike, rgb: np.ndarray) -> Path:
    """Write an RGB uint8 image (H x W x 3) as PNG atomically."""
    import cv2

    ok, buf = cv2.imencode(".png", np.ascontiguousarray(np.asarray(rgb)[:, :, ::-1]))
    if not ok:
        raise FacevaeError(f"cannot encode {path} as PNG")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())
    return Path(path)


def save_figure(fig, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Save a matplotlib figure as PNG atomically and close it (also when saving fails)."""
    from facevae.plotting import pyplot

    plt = pyplot()

    try:
        with atomic_path(path, ".png") as tmp:
            fig.savefig(tmp, dpi=dpi, format="png")
    finally:
        plt.close(fig)
    return Path(path)
