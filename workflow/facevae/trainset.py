"""An actor's training faces and their held-out split (rule train_vae's data; :mod:`facevae.train`).

* :func:`load_faces` reads ``results/faces/{actor}.h5`` (or any blog-format file) at 64 px, with
  where each face came from (video, frame, time);
* :func:`holdout_split` labels faces ``train`` / ``heldout`` / ``gap``: held-out frames are whole
  contiguous blocks of each video, spread evenly over it; training frames closer than
  ``gap_seconds`` to a held-out frame -- and always the rows right next to a block -- are left out
  of both sets, so no held-out face has a training neighbour (docs/decisions/023-final-fit.md);
* :func:`plan_split` fits that split to small footage; :func:`write_split` writes ``split.tsv``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np

from . import FACE_SIZE, FacevaeError
from .atomic import write_text

log = logging.getLogger(__name__)

SPLIT_TRAIN, SPLIT_HELDOUT, SPLIT_GAP = "train", "heldout", "gap"


@dataclass
class Faces:
    """An actor's training faces: images plus where each came from (source video, frame, time)."""

    data: np.ndarray  # uint8 N x 64 x 64 x 3
    source: np.ndarray  # str (N,)
    frame: np.ndarray  # int64 (N,)
    time: np.ndarray  # float64 (N,) seconds; frame order where unknown
    path: str = ""

    def __len__(self) -> int:
        return len(self.data)


def load_faces(path: str | os.PathLike) -> Faces:
    """Read ``results/faces/{actor}.h5`` (or any blog-format file) and bring the faces to 64 x 64.

    A blog-format file without ``source``/``frame``/``time`` counts as one video in row order.
    """
    from .faces.io import read_faces

    found = read_faces(path)
    data = found["data"]
    n = len(data)
    if data.shape[1] != FACE_SIZE:
        import cv2

        log.info("%s: resizing %d faces from %d px to %d px", path, n, data.shape[1], FACE_SIZE)
        data = np.stack([cv2.resize(face, (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_AREA) for face in data])
    source = np.asarray(found.get("source", np.array(["dataset"] * n, dtype=object)), dtype=object)
    frame = np.asarray(found.get("frame", np.arange(n)), dtype=np.int64)
    times = found.get("time")
    times = np.asarray(times, dtype=np.float64) if times is not None else frame.astype(np.float64)
    for key, value in (("source", source), ("frame", frame), ("time", times)):
        if len(value) != n:
            raise FacevaeError(f"{path}: dataset '{key}' has {len(value)} rows but 'data' has {n}")
    return Faces(np.ascontiguousarray(data), source, frame, times, str(path))


def holdout_split(source, times, fraction: float = 0.1, blocks: int = 2, gap_seconds: float = 1.0,
                  final_fit: float = 0.0) -> np.ndarray:
    """Label every face ``train``, ``heldout`` or ``gap`` (str array).

    Per video (``source``), in time order: ``round(fraction * n)`` faces (at least one, for videos
    of at least 10 faces) are held out as ``blocks`` contiguous runs centred at evenly spaced points
    of the video. Training faces within ``gap_seconds`` of a held-out face, and the faces right next
    to each run in the video's order, become ``gap`` (used by neither set). ``final_fit`` is not the
    split's (see :func:`final_fit_epochs`); it is accepted so that ``train.holdout`` can be passed whole.
    """
    source = np.asarray(source, dtype=object)
    times = np.asarray(times, dtype=np.float64)
    labels = np.full(len(source), SPLIT_TRAIN, dtype=object)
    for video in sorted(set(source.tolist())):
        rows = np.flatnonzero(source == video)
        rows = rows[np.argsort(times[rows], kind="stable")]
        n = len(rows)
        if n < 10 or fraction <= 0:
            continue
        n_out = max(1, int(round(fraction * n)))
        n_blocks = max(1, min(int(blocks), n_out))
        sizes = [n_out // n_blocks + (1 if k < n_out % n_blocks else 0) for k in range(n_blocks)]
        held = np.zeros(n, dtype=bool)
        for k, size in enumerate(sizes):
            start = int(round((k + 0.5) * n / n_blocks - size / 2))
            start = min(max(start, 0), n - size)
            held[start : start + size] = True
        near = np.zeros(n, dtype=bool)
        edges = np.flatnonzero(np.diff(held.astype(np.int8)) != 0)  # a run starts/ends between i and i+1
        for i in edges:
            near[i] = near[i + 1] = True
        t = times[rows]
        held_t = t[held]
        if gap_seconds > 0 and len(held_t):
            pos = np.searchsorted(np.sort(held_t), t)
            sorted_t = np.sort(held_t)
            left = np.abs(t - sorted_t[np.clip(pos - 1, 0, len(sorted_t) - 1)])
            right = np.abs(t - sorted_t[np.clip(pos, 0, len(sorted_t) - 1)])
            near |= np.minimum(left, right) <= gap_seconds
        labels[rows[near & ~held]] = SPLIT_GAP
        labels[rows[held]] = SPLIT_HELDOUT
    return labels


MIN_TRAIN_FACES = 10  # below this many training faces the held-out split is shrunk, then dropped


def plan_split(source, times, holdout: dict, who: str) -> tuple[np.ndarray, str | None]:
    """:func:`holdout_split` with ``train.holdout``, made to fit small footage: when it would leave
    fewer than MIN_TRAIN_FACES training faces, one block without a gap is tried, then no held-out
    faces at all. Returns the labels and the warning to log (None when the split is as configured)."""
    n = len(source)
    if n < 2:
        raise FacevaeError(f"{who}: {n} face(s) are too few to train (at least 2): add footage, or loosen faces.filters")
    labels = holdout_split(source, times, **holdout)
    n_train = int((labels == SPLIT_TRAIN).sum())
    n_held = int((labels == SPLIT_HELDOUT).sum())
    if n_held and n_train < MIN_TRAIN_FACES:
        small = {**holdout, "blocks": 1, "gap_seconds": 0.0}
        shrunk = holdout_split(source, times, **small)
        if (shrunk == SPLIT_TRAIN).sum() >= MIN_TRAIN_FACES:
            return shrunk, (f"{who}: train.holdout (blocks {holdout.get('blocks')}, gap_seconds {holdout.get('gap_seconds')}) "
                            f"left {n_train} of {n} faces to train on; holding out one block without a gap instead "
                            "(set train.holdout.fraction: 0 to train on every face)")
        return np.full(n, SPLIT_TRAIN, dtype=object), (f"{who}: {n} faces are too few for a held-out split (train.holdout would leave {n_train} to train "
                        "on): training on all of them, with no held-out MSE (add footage for one)")
    if not n_held:
        why = ("train.holdout.fraction is 0" if float(holdout.get("fraction", 0)) <= 0
               else "every video has fewer than 10 faces")
        return labels, (f"{who}: no held-out faces ({why}): training on all {n}, with no held-out MSE; "
                        "reconstructions.png shows training faces")
    return labels, None


def write_split(path: str | os.PathLike, faces: Faces, labels: np.ndarray) -> None:
    import pandas as pd

    table = pd.DataFrame({"index": np.arange(len(faces)), "source": faces.source, "frame": faces.frame, "time": faces.time, "split": labels})
    write_text(path, table.to_csv(sep="\t", index=False, float_format="%.4f"))
