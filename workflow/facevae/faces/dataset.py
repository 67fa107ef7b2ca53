"""Per-person assembly: tracks -> training set (actors), table of every detection, contact sheets,
counts by reason; and the import of a ready blog-format dataset (``actors.<a>.dataset``).

Training set = the kept frames of the person's tracks, sampled at ``faces.fps`` (the sharpest
kept frame of every 1/fps-second bin; null = every frame), minus near-duplicates (a face whose
16x16 grey thumbnail differs from the last accepted face of the same video by less than
``faces.filters.duplicate`` grey levels on average).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import cv2
import h5py
import numpy as np
import pandas as pd

from facevae import FACE_SIZE, FacevaeError, __version__
from facevae.atomic import temp_folder, write_png, write_text
from facevae.download import fetch_file, redact
from facevae import sheets
from facevae.faces import io as fio
from facevae.faces.track import REASONS
from facevae.sampling import evenly_spread

log = logging.getLogger(__name__)

SAMPLED_OUT, DUPLICATE = "sampled out", "near duplicate"
TABLE_COLUMNS = ["video", "frame", "time", "n_faces", "face_px", "score", "blur", "yaw", "pitch",
                 "identity_distance", "track_id", "flags", "track_reason", "in_dataset", "reason"]


def _thumb(crop: np.ndarray) -> np.ndarray:
    grey = cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, (16, 16), interpolation=cv2.INTER_AREA).astype(np.float32)


def sample_bins(time: np.ndarray, fps: float | None) -> np.ndarray:
    """Bin number of each frame for sampling at ``fps`` (None: every frame is its own bin)."""
    if not fps:
        return np.arange(len(time))
    return np.floor(np.asarray(time) * float(fps) + 1e-6).astype(np.int64)


def select(track: dict, fps: float | None, duplicate: float, crops=None) -> tuple[np.ndarray, np.ndarray]:
    """(chosen, duplicate) boolean masks over the frames of one track file.

    chosen: the sharpest kept frame of each sampling bin; duplicate: chosen but too close to the
    previously accepted face. ``crops(index) -> array`` reads crops (default: ``track["crops"]``)."""
    kept, blur = track["kept"], np.nan_to_num(track["blur"], nan=-1.0)
    bins = sample_bins(track["time"], fps)
    chosen = np.zeros(len(kept), bool)
    best: dict[int, int] = {}
    for i in np.flatnonzero(kept):
        b = int(bins[i])
        if b not in best or blur[i] > blur[best[b]]:
            best[b] = i
    chosen[list(best.values())] = True
    dup = np.zeros(len(kept), bool)
    last = None
    picked = np.flatnonzero(chosen)
    read = crops or (lambda index: track["crops"][index])
    for start in range(0, len(picked), 2048):
        part = picked[start:start + 2048]
        for i, crop in zip(part, read(part)):
            thumb = _thumb(crop)
            if last is not None and float(np.abs(thumb - last).mean()) < duplicate:
                dup[i] = True
                continue
            last = thumb
    return chosen, dup


def table_of(video: str, track: dict, chosen: np.ndarray | None, dup: np.ndarray | None) -> pd.DataFrame:
    n = len(track["frame"])
    df = pd.DataFrame({
        "video": video,
        "frame": track["frame"],
        "time": np.round(track["time"], 4),
        "n_faces": track.get("n_faces", np.zeros(n, int)),
        **{k: np.round(track[k].astype(np.float64), 3) if k in track else np.nan
           for k in ("face_px", "score", "blur", "yaw", "pitch", "identity_distance")},
        "track_id": track.get("track_id", np.full(n, -1)),
        "flags": track.get("flags", track["reason"]),
        "track_reason": track["reason"],
    })
    if chosen is None:  # drivers: the track's verdict is final
        df["in_dataset"] = track["kept"]
        df["reason"] = track["reason"]
    else:
        in_set = chosen & ~dup
        reason = np.array(track["reason"], dtype=object)
        reason[(reason == "") & ~chosen] = SAMPLED_OUT
        reason[chosen & dup] = DUPLICATE
        df["in_dataset"] = in_set
        df["reason"] = reason
    return df[TABLE_COLUMNS]


def contact_sheet(crops: np.ndarray, title: str, cols: int = 16, max_faces: int = 160, scale: int = 1) -> np.ndarray:
    """RGB uint8 image: a title bar and up to ``max_faces`` crops (evenly spread) in a grid."""
    crops = np.asarray(crops)
    if len(crops) > max_faces:
        crops = crops[np.linspace(0, len(crops) - 1, max_faces).round().astype(int)]
    size = crops.shape[1] if len(crops) else FACE_SIZE
    cols = max(1, min(cols, len(crops))) if len(crops) else cols
    width = max(cols * size, 480)
    grid = sheets.tile(list(crops), cols, fill=255, min_width=width, cell=(size, size))
    bar = sheets.label(width, 24, title, 0.5, x=4, baseline=17, background=235, fit=False)
    return sheets.enlarge(np.vstack([bar, grid]), scale)


def _stack_sheets(parts: list[np.ndarray]) -> np.ndarray:
    return sheets.stack(parts, gap=8)


def assemble(
    tracks: dict[str, Path | str],
    *,
    person: str,
    role: str,
    faces_cfg: dict,
    out_faces: Path | str | None,
    out_table: Path | str,
    out_kept: Path | str,
    out_rejected: Path | str,
    out_counts: Path | str,
) -> dict:
    """Build the person's outputs from their tracks ({video: tracks.h5}); return the counts.

    Actors get the training set ``out_faces``; drivers (``out_faces`` None) only the report.
    FacevaeError, with the counts, when no usable face is left."""
    fps = faces_cfg.get("fps")
    duplicate = float((faces_cfg.get("filters") or {}).get("duplicate", 0.5))
    tables, kept_parts, rejected = [], [], {}
    data_parts: dict[str, list] = {k: [] for k in ("data", "landmarks", "source", "frame", "time")}
    first_attrs = None
    for video, path in sorted(tracks.items()):
        track = fio.read_track(path, crops=False)  # crops are read row by row where needed

        def crops(index, path=path):
            return fio.read_rows(path, index)

        first_attrs = first_attrs or track["attrs"]
        if role == "actor":
            chosen, dup = select(track, fps, duplicate, crops)
            use = chosen & ~dup
        else:
            chosen = dup = None
            use = track["kept"]
        df = table_of(video, track, chosen, dup)
        tables.append(df)
        idx = np.flatnonzero(use)
        kept_parts.append(crops(idx[evenly_spread(len(idx), 320)]))
        if out_faces is not None:
            data_parts["data"].append(crops(idx))
            data_parts["landmarks"].append(track["landmarks"][idx])
            data_parts["source"].extend([video] * len(idx))
            data_parts["frame"].append(track["frame"][idx])
            data_parts["time"].append(track["time"][idx])
        for reason in df["reason"].unique():
            if not reason or reason == SAMPLED_OUT:
                continue
            where = np.flatnonzero((df["reason"] == reason).to_numpy())
            if reason == "no face":
                rejected.setdefault(reason, [])
                continue
            rejected.setdefault(reason, []).append(crops(where[evenly_spread(len(where), 64)]))
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=TABLE_COLUMNS)
    counts = _counts(table, person, role)
    if counts["in_dataset"] == 0:
        raise FacevaeError(
            f"{role} '{person}': no usable face in its video(s) "
            f"{', '.join(sorted(tracks))}: {counts['frames']} frames, rejected by reason {json.dumps(counts['by_reason'])} "
            "(see faces.filters in the config, or the person's videos)"
        )
    write_text(out_table, table.to_csv(sep="\t", index=False))
    kept = np.concatenate(kept_parts) if kept_parts else np.zeros((0, FACE_SIZE, FACE_SIZE, 3), np.uint8)
    write_png(out_kept, contact_sheet(kept, f"{person}: {counts['in_dataset']} faces kept ({role}) - evenly spread sample", max_faces=320))
    parts = []
    for reason in [r for r in (*REASONS, DUPLICATE) if r in rejected]:
        n = int((table["reason"] == reason).sum())
        crops = np.concatenate(rejected[reason]) if rejected[reason] else np.zeros((0, FACE_SIZE, FACE_SIZE, 3), np.uint8)
        note = " (no crop: nothing was found)" if reason == "no face" else ""
        parts.append(contact_sheet(crops, f"{reason}: {n} frames{note}", max_faces=64))
    if not parts:
        parts.append(contact_sheet(np.zeros((0, FACE_SIZE, FACE_SIZE, 3), np.uint8), f"{person}: nothing rejected"))
    write_png(out_rejected, _stack_sheets(parts))
    if out_faces is not None:
        attrs = {
            "aligner": first_attrs["aligner"], "person": person,
            **{k: first_attrs[k] for k in ("size", "template_scale", "template_offset_y", "points")},
            "settings": first_attrs.get("settings", "{}"), "identity": first_attrs.get("identity", ""),
            "fps_sampling": "null" if not fps else float(fps), "duplicate": duplicate,
            "videos": json.dumps(sorted(tracks)), "facevae": __version__,
        }
        fio.write_faces(
            out_faces, np.concatenate(data_parts["data"]), attrs,
            landmarks=np.concatenate(data_parts["landmarks"]).astype(np.float32),
            source=data_parts["source"],
            frame=np.concatenate(data_parts["frame"]).astype(np.int64),
            time=np.concatenate(data_parts["time"]).astype(np.float64),
        )
    write_text(out_counts, json.dumps(counts, indent=2) + "\n")
    log.info("%s '%s': %s", role, person, json.dumps(counts))
    return counts


def _counts(table: pd.DataFrame, person: str, role: str) -> dict:
    by_reason = {r: int(n) for r, n in table["reason"].value_counts().items() if r}
    per_video = {}
    for video, part in table.groupby("video"):
        per_video[video] = {"frames": int(len(part)), "in_dataset": int(part["in_dataset"].sum()),
                            "by_reason": {r: int(n) for r, n in part["reason"].value_counts().items() if r}}
    return {"person": person, "role": role, "frames": int(len(table)), "in_dataset": int(table["in_dataset"].sum()),
            "faces_found": int((table["n_faces"] > 0).sum()), "by_reason": by_reason, "videos": per_video}


# --- actors.<a>.dataset ------------------------------------------------------------------------


def fetch_dataset(source: str, out: Path | str, *, actor: str, size: int, download: dict | None = None) -> dict:
    """Copy (path) or download (http/https URL, under the ``download:`` limits: see
    :mod:`facevae.download`) a blog-format HDF5, check it, move it to ``out``."""
    out = Path(out)
    key = f"actors.{actor}.dataset"
    shown = redact(source)  # a password in the URL is never written to a message or a file
    out.parent.mkdir(parents=True, exist_ok=True)
    work = temp_folder(out)  # the watchdog counts its bytes; a SIGKILLed run's folder is removed by the next
    tmp = work / "dataset.h5"
    try:
        if source.startswith(("http://", "https://")):
            fetch_file(source, tmp, download or {}, key)
        else:
            if not Path(source).is_file():
                raise FacevaeError(f"{key}: file not found: {source}")
            shutil.copyfile(source, tmp)
        summary = fio.check_blog_dataset(tmp, what=key, shown=shown)
        if summary["size"] != size:
            raise FacevaeError(f"{key}: {shown} holds {summary['size']} px faces but faces.size is {size}")
        os.replace(tmp, out)
        return {**summary, "source": shown}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def dataset_report(h5_path: Path | str, actor: str, source: str, out_kept: Path | str, out_counts: Path | str) -> dict:
    with h5py.File(h5_path, "r") as h5:
        node = h5["data"]
        n = node.shape[0]
        idx = np.unique(np.linspace(0, n - 1, min(n, 320)).round().astype(int))
        sample = node[idx]
    write_png(out_kept, contact_sheet(sample, f"{actor}: {n} faces from {Path(source).name} (given dataset)", max_faces=320))
    counts = {"person": actor, "role": "actor", "dataset": redact(source), "frames": int(n), "in_dataset": int(n),
              "by_reason": {}}
    write_text(out_counts, json.dumps(counts, indent=2) + "\n")
    return counts
