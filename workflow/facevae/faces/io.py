"""Readers and writers of the faces stage's HDF5 files (interfaces 2 and 3 of the project).

Tracks, ``results/tracks/{person}/{video}.h5`` -- one row per decoded frame, in order:
  crops uint8 (N,S,S,3) RGB (zeros if no face), landmarks float32 (N,68,2) crop px (NaN if no face),
  transforms float64 (N,2,3) crop<-frame (NaN if none), time float64 (N,) s, frame int64 (N,),
  kept bool (N,), reason str (N,) ("" when kept); attrs person, video, role, fps, width, height,
  frame_count, aligner and the AlignConfig fields. Extra datasets (added, never renamed): ``flags``
  str (N,) every filter that fired (for drivers some fire without dropping the frame), ``box``
  float32 (N,4) detector box in frame px, ``score``, ``n_faces``, ``face_px``, ``blur``, ``yaw``,
  ``pitch``, ``identity_distance``, ``track_id``.

Training faces, ``results/faces/{actor}.h5`` (the blog's format plus provenance):
  data uint8 (N,64,64,3) RGB, landmarks float32 (N,68,2), source str (N,), frame int64 (N,),
  time float64 (N,); attrs aligner, template and threshold settings. A blog-format file given as
  ``actors.<a>.dataset`` may hold only ``data``: ``read_faces`` returns what the file has.

Writers write a temporary file beside the target and ``os.replace`` it: never a partial output.
:class:`DriverTrack` reads a tracks file in slices for the render (crops at the models' ``FACE_SIZE``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

import cv2
import h5py
import numpy as np

from facevae import FACE_SIZE, FacevaeError
from facevae.atomic import atomic_path, temp_path
from facevae.faces.align import AlignConfig
from facevae.sampling import evenly_spread

log = logging.getLogger(__name__)

STR = h5py.string_dtype("utf-8")

TRACK_REQUIRED = ("crops", "landmarks", "transforms", "time", "frame", "kept", "reason")
FACES_REQUIRED = ("data",)


def _attr_value(value):
    if value is None:
        return "null"
    if isinstance(value, (dict, list, tuple)) and not (isinstance(value, (list, tuple)) and value and all(isinstance(v, (int, float)) for v in value)):
        return json.dumps(value)
    return value


def _read_attrs(obj) -> dict:
    out = {}
    for key, value in obj.attrs.items():
        if isinstance(value, bytes):
            value = value.decode()
        if isinstance(value, np.generic):
            value = value.item()
        out[key] = value
    return out


def _write(path: Path | str, datasets: dict, attrs: dict, compress: tuple[str, ...] = ()) -> Path:
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as h5:
            for key, value in datasets.items():
                if value is None:
                    continue
                if isinstance(value, (list, tuple)) or (isinstance(value, np.ndarray) and value.dtype.kind in "UOS"):
                    h5.create_dataset(key, data=np.array([str(v) for v in value], dtype=object), dtype=STR)
                    continue
                value = np.asarray(value)
                opts = {}
                if key in compress and value.size:
                    opts = {"compression": "gzip", "compression_opts": 4, "chunks": (min(len(value), 256), *value.shape[1:])}
                h5.create_dataset(key, data=value, **opts)
            for key, value in attrs.items():
                h5.attrs[key] = _attr_value(value)
    return Path(path)


def _read(path: Path | str, what: str, required: tuple[str, ...], skip: tuple[str, ...] = ()) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FacevaeError(f"{what} file not found: {path}")
    try:
        with h5py.File(path, "r") as h5:
            missing = [key for key in required if key not in h5]
            if missing:
                raise FacevaeError(f"{path} is not a {what} file: dataset(s) {', '.join(missing)} missing")
            out = {}
            for key, node in h5.items():
                if not isinstance(node, h5py.Dataset) or key in skip:
                    continue
                if h5py.check_string_dtype(node.dtype) is not None:
                    out[key] = np.array(node.asstr()[()], dtype=object)
                else:
                    out[key] = node[()]
            out["attrs"] = _read_attrs(h5)
    except OSError as err:
        raise FacevaeError(f"{path} is not a readable HDF5 {what} file: {err}") from None
    return out


def write_track(path: Path | str, rows: dict, attrs: dict) -> Path:
    """Write one video's track file (see the module docstring); ``rows`` maps dataset -> array."""
    missing = [key for key in TRACK_REQUIRED if key not in rows]
    if missing:
        raise ValueError(f"write_track: missing {missing}")
    n = len(rows["frame"])
    for key, value in rows.items():
        if len(value) != n:
            raise ValueError(f"write_track: {key} has {len(value)} rows, frame has {n}")
    return _write(path, rows, attrs, compress=("crops",))


def read_track(path: Path | str, crops: bool = True) -> dict:
    """A track file as a dict of numpy arrays (strings as object arrays of str) plus ``attrs``.

    ``crops=False`` leaves the crops out (a long video's crops are large): read the rows you need
    with :func:`read_rows`."""
    return _read(path, "tracks", TRACK_REQUIRED, skip=() if crops else ("crops",))


def read_rows(path: Path | str, index, dataset: str = "crops", chunk: int = 4096) -> np.ndarray:
    """Rows ``index`` (ints, any order) of one dataset, read in bounded chunks."""
    index = np.asarray(index, dtype=np.int64).reshape(-1)
    with h5py.File(path, "r") as h5:
        node = h5[dataset]
        out = np.empty((len(index), *node.shape[1:]), dtype=node.dtype)
        if len(index) == 0:
            return out
        order = np.argsort(index, kind="stable")
        ordered = index[order]
        start = 0
        while start < len(ordered):
            lo = int(ordered[start])
            stop = int(np.searchsorted(ordered, lo + chunk, side="left"))
            block = node[lo:int(ordered[stop - 1]) + 1]
            out[order[start:stop]] = block[ordered[start:stop] - lo]
            start = stop
    return out


def write_faces(path: Path | str, data: np.ndarray, attrs: dict, **extra) -> Path:
    """Write a training set: ``data`` uint8 (N,S,S,3) plus extra datasets (landmarks, source, ...)."""
    data = np.asarray(data)
    check_faces_array(data, str(path))
    return _write(path, {"data": data, **extra}, attrs, compress=("data",))


def read_faces(path: Path | str) -> dict:
    """A training set (ours or any blog-format file) as a dict of numpy arrays plus ``attrs``.

    ``data`` is always there (uint8 (N,S,S,3) RGB); ``landmarks``, ``source``, ``frame`` and
    ``time`` are there for sets this workflow extracted."""
    out = _read(path, "faces", FACES_REQUIRED)
    check_faces_array(out["data"], str(path))
    return out


def check_faces_array(data: np.ndarray, where: str) -> None:
    """FacevaeError unless ``data`` is a non-empty uint8 (N, S, S, 3) array of square RGB images."""
    if data.dtype != np.uint8:
        raise FacevaeError(f"{where}: dataset 'data' must be uint8, got {data.dtype}")
    if data.ndim != 4 or data.shape[3] != 3 or data.shape[1] != data.shape[2]:
        raise FacevaeError(f"{where}: dataset 'data' must be N x S x S x 3 (square RGB faces), got shape {data.shape}")
    if data.shape[0] == 0:
        raise FacevaeError(f"{where}: dataset 'data' is empty (no faces)")


def check_blog_dataset(path: Path | str, what: str = "dataset", shown: str | None = None) -> dict:
    """Check a blog-format HDF5 without loading it all: ``data`` uint8 (N,S,S,3), N > 0.

    Returns a summary (count, size). ``what`` names the config key in errors, ``shown`` the file
    as the user knows it (default ``path``; a download's temporary name means nothing to them)."""
    path = Path(path)
    name = shown or str(path)
    try:
        with h5py.File(path, "r") as h5:
            link = h5.get("data", getlink=True)
            if link is None:
                raise FacevaeError(f"{what}: {name} has no dataset 'data' (datasets: {', '.join(h5.keys()) or 'none'})")
            _refuse_foreign_storage(h5, link, what, name)
            _refuse_foreign_objects(h5, what, name)  # read_faces reads every top-level dataset, not only data
            if not isinstance(h5["data"], h5py.Dataset):
                raise FacevaeError(f"{what}: {name} has no dataset 'data' (datasets: {', '.join(h5.keys()) or 'none'})")
            node = h5["data"]
            shape, dtype = node.shape, node.dtype
            if dtype != np.uint8:
                raise FacevaeError(f"{what}: {name} dataset 'data' must be uint8, got {dtype}")
            if len(shape) != 4 or shape[3] != 3 or shape[1] != shape[2]:
                raise FacevaeError(f"{what}: {name} dataset 'data' must be N x S x S x 3 (square RGB faces), got shape {shape}")
            if shape[0] == 0:
                raise FacevaeError(f"{what}: {name} dataset 'data' is empty (no faces)")
            try:  # the first and last faces decode (a filter this HDF5 lacks, a cut-off file fail here)
                node[0], node[shape[0] - 1]
            except (OSError, ValueError, RuntimeError) as err:
                raise FacevaeError(f"{what}: {name} dataset 'data' cannot be read: {str(err).replace(str(path), name)}") from None
            return {"count": int(shape[0]), "size": int(shape[1])}
    except OSError as err:
        reason = str(err).replace(str(path), name)
        raise FacevaeError(f"{what}: {name} is not a readable HDF5 file: {reason}") from None


# HDF5 can make a dataset read bytes from outside its own file: external raw storage (a list of
# other files and offsets), a virtual dataset (a map onto other files' datasets) or an external
# link. A given dataset file is read into the actor's faces, kept.png, the model and the page, so
# such a file would copy any local file the workflow can read into them: only a dataset whose
# bytes live in the file itself is accepted (compact, contiguous or chunked layout).
_LOCAL_LAYOUTS = {h5py.h5d.COMPACT: "compact", h5py.h5d.CONTIGUOUS: "contiguous", h5py.h5d.CHUNKED: "chunked"}


def _refuse_foreign_storage(h5: h5py.File, link, what: str, name: str) -> None:
    """FacevaeError naming the construct when ``data`` (reached through ``link``) is not stored in ``h5``."""
    if isinstance(link, h5py.ExternalLink):
        raise FacevaeError(f"{what}: {name} 'data' is an external link to {link.filename}:{link.path}; only a "
                           "dataset stored in the file itself is accepted (copy the faces into it)")
    if isinstance(link, h5py.SoftLink):
        raise FacevaeError(f"{what}: {name} 'data' is a soft link to {link.path}; only a dataset stored in the "
                           "file itself under the name 'data' is accepted")
    node = h5["data"]
    if not isinstance(node, h5py.Dataset):
        return
    if node.is_virtual:
        sources = sorted({source.file_name for source in node.virtual_sources()})
        raise FacevaeError(f"{what}: {name} 'data' is a virtual dataset (mapped onto {', '.join(sources)}); only a "
                           "dataset stored in the file itself is accepted")
    if node.external:
        files = sorted({str(entry[0]) for entry in node.external})
        raise FacevaeError(f"{what}: {name} 'data' uses external storage (its bytes are read from "
                           f"{', '.join(files)}); only a dataset stored in the file itself is accepted")
    layout = node.id.get_create_plist().get_layout()
    if layout not in _LOCAL_LAYOUTS:
        raise FacevaeError(f"{what}: {name} 'data' has HDF5 storage layout {layout}; only a compact, contiguous or "
                           "chunked dataset stored in the file itself is accepted")


def _refuse_foreign_objects(h5: h5py.File, what: str, name: str) -> None:
    """FacevaeError naming the first object anywhere in ``h5`` that reads bytes from outside it
    (an external link, or a dataset with external storage or a virtual layout): the faces file is
    read whole (landmarks, frame, ... beside data) by the stages after it."""
    found: list[str] = []

    def visit(path, link):
        if isinstance(link, h5py.ExternalLink):
            found.append(f"'{path}' is an external link to {link.filename}:{link.path}")
        elif isinstance(link, h5py.HardLink):
            node = h5.get(path)
            if isinstance(node, h5py.Dataset) and (node.is_virtual or node.external):
                found.append(f"'{path}' reads its bytes from another file ({'virtual dataset' if node.is_virtual else 'external storage'})")
        return found[0] if found else None  # stop at the first

    h5.visititems_links(visit)
    if found:
        raise FacevaeError(f"{what}: {name} {found[0]}; only objects stored in the file itself are accepted")


class TrackWriter:
    """Writes a tracks file in pieces (rows first, crops block by block) into a temporary file
    that replaces ``path`` only when closed without an error."""

    def __init__(self, path: Path | str, n_frames: int, size: int, attrs: dict):
        self.path = Path(path)
        self.tmp = temp_path(self.path)
        self.h5 = h5py.File(self.tmp, "w")
        self.n = n_frames
        self.crops = self.h5.create_dataset(
            "crops", shape=(n_frames, size, size, 3), dtype=np.uint8, fillvalue=0,
            chunks=(min(max(n_frames, 1), 256), size, size, 3), compression="gzip", compression_opts=4)
        for key, value in attrs.items():
            self.h5.attrs[key] = _attr_value(value)

    def write_rows(self, rows: dict) -> None:
        for key, value in rows.items():
            if key.startswith("_") or key == "crops":
                continue
            if isinstance(value, (list, tuple)) or (isinstance(value, np.ndarray) and value.dtype.kind in "UOS"):
                self.h5.create_dataset(key, data=np.array([str(v) for v in value], dtype=object), dtype=STR)
            else:
                value = np.asarray(value)
                if len(value) != self.n:
                    raise ValueError(f"TrackWriter: {key} has {len(value)} rows, expected {self.n}")
                self.h5.create_dataset(key, data=value)

    def write_crops(self, frames: np.ndarray, crops: np.ndarray) -> None:
        """Crops of the given frames (sorted frame numbers, as in the worker blocks)."""
        frames = np.asarray(frames)
        if len(frames) == 0:
            return
        if np.all(np.diff(frames) == 1):
            self.crops[int(frames[0]) : int(frames[-1]) + 1] = crops
        else:
            for f, crop in zip(frames, crops):
                self.crops[int(f)] = crop

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            self.h5.close()
            if exc_type is None:
                missing = [k for k in TRACK_REQUIRED if k not in _datasets(self.tmp)]
                if missing:
                    raise ValueError(f"TrackWriter: datasets {missing} were never written")
                os.replace(self.tmp, self.path)
        finally:
            self.tmp.unlink(missing_ok=True)
        return False


def _datasets(path: Path) -> list[str]:
    with h5py.File(path, "r") as h5:
        return list(h5.keys())


ALIGN_FIELDS = ("size", "template_scale", "template_offset_y", "points")


def align_config_of(attrs: dict, crop_size: int, where: Path | str, size: int | None = None) -> AlignConfig:
    """The crop geometry a tracks or faces file was made with (its AlignConfig attributes; the
    default template at ``crop_size`` when it has none, with a warning naming ``where``), at ``size`` px."""
    if all(key in attrs for key in ALIGN_FIELDS):
        cfg = AlignConfig.from_attrs(attrs)
    else:
        log.warning("%s has no alignment attributes; assuming the default template", where)
        cfg = AlignConfig(size=crop_size)
    return dataclasses.replace(cfg, size=size) if size is not None else cfg


class DriverTrack:
    """A track file (interface 2), read in slices so long videos never sit in memory whole."""

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.is_file():
            raise FacevaeError(f"track file {self.path} not found")
        try:
            self._h5 = h5py.File(self.path, "r")
            h5 = self._h5
            self.attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in h5.attrs.items()}
            self.kept = h5["kept"][:].astype(bool)
            self.transforms = h5["transforms"][:].astype(np.float64)
            self.time = h5["time"][:].astype(np.float64)
            self.frame = h5["frame"][:].astype(np.int64)
            self.crops = h5["crops"]
            self.landmarks = h5["landmarks"]
        except (OSError, KeyError) as err:
            raise FacevaeError(f"track file {self.path} is not a readable track (interface 2): {err}") from None
        self.n = len(self.kept)
        self.crop_size = int(self.crops.shape[1])

    def align_config(self, size: int | None = None):
        """The crop geometry the track was made with (its AlignConfig attributes), at ``size`` px."""
        return align_config_of(self.attrs, self.crop_size, self.path, size)

    def read_crops(self, start: int, stop: int, size: int = FACE_SIZE) -> np.ndarray:
        """Crops of frames [start, stop) as uint8 (n, size, size, 3) (resized if the track's differ)."""
        crops = self.crops[start:stop]
        if crops.shape[1] != size:
            crops = np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA) for c in crops]) if len(crops) else \
                np.zeros((0, size, size, 3), np.uint8)
        return crops

    def rejections(self) -> dict[str, int]:
        """How many frames were not kept, by reason (the track's ``reason`` column)."""
        reasons = self._h5["reason"][:].astype(str)
        values, counts = np.unique(reasons[reasons != ""], return_counts=True)
        return {str(r): int(c) for r, c in zip(values, counts)}

    def close(self):
        self._h5.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


# --- faces of any of the two formats, for the attribute stage ------------------------------------


def read_face_array(path: str | os.PathLike, key: str = "data") -> np.ndarray:
    """The uint8 faces of a blog-format HDF5 (``data``), or of a track file (``crops`` where ``kept``)."""
    path = Path(path)
    if not path.is_file():
        raise FacevaeError(f"faces file {path} not found")
    with h5py.File(path, "r") as f:
        if "crops" in f and "kept" in f:
            kept = f["kept"][()].astype(bool)
            idx = np.flatnonzero(kept)
            return f["crops"][idx] if len(idx) else np.zeros((0, *f["crops"].shape[1:]), np.uint8)
        if key not in f:
            raise FacevaeError(f"{path} has no dataset '{key}' (faces) or 'crops' (track)")
        return f[key][()]


def sample_faces(files: list[str], n: int) -> np.ndarray:
    """``n`` faces spread evenly over the kept faces of several files (tracks or faces files),
    reading only those rows (a long driver's track is not loaded whole)."""
    where = []
    for path in files:
        if not Path(path).is_file():
            raise FacevaeError(f"faces file {path} not found")
        with h5py.File(path, "r") as f:
            if "crops" in f and "kept" in f:
                rows = np.flatnonzero(f["kept"][()].astype(bool))
            elif "data" in f:
                rows = np.arange(len(f["data"]))
            else:
                raise FacevaeError(f"{path} has no dataset 'data' (faces) or 'crops' (track)")
        where += [(path, int(r)) for r in rows]
    picked = [where[i] for i in evenly_spread(len(where), n)]
    out = []
    for path in dict.fromkeys(p for p, _ in picked):  # one read per file, in the files' order
        with h5py.File(path, "r") as f:
            dataset = "crops" if "crops" in f else "data"
        out.append(read_rows(path, [row for p, row in picked if p == path], dataset))
    return np.concatenate(out) if out else np.zeros((0, FACE_SIZE, FACE_SIZE, 3), np.uint8)
