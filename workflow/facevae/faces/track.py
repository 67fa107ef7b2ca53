# Over 450 lines: the tracker, its worker pool and the per-video verdicts share one frame record and its private helpers; apart, each would import the other's internals.
"""Fast per-video extraction: every decoded frame -> the person's aligned face, measures and verdict.

How it stays fast (lp_d6, 480x480: 5-10 ms of CPU a frame, see bench/results/faces.md):

- The full-frame detector does not run on every frame. A face found in one frame is looked for in
  the next one only in a small region around its previous box, shrunk so the face is ~90 px
  wide (dlib's HOG needs 80): about 1.5 ms instead of ~20 ms. The whole frame is searched again
  when a face is lost, after a scene cut, and every ``redetect_every`` frames (new faces).
- Whole-frame searches first look at a downscaled frame for big faces, and only when that finds
  nothing at the scale where the smallest face worth keeping (``filters.min_size``) is visible.
- Landmarks always come from the full-resolution frame; the 128-d identity descriptor (~80 ms) is
  computed when a track starts and every ``identity_every`` frames of it, not on every frame.
- Decoding streams frame by frame (OpenCV); the video is cut into contiguous chunks, one per
  worker process (both cores), each decoding its own chunk. Results go to small block files and
  are written into the HDF5 file block by block: memory does not grow with the video's length.

Verdicts (``reason``/``flags``), decided after all frames are seen (the dominant identity needs
them all): "no face", "not this person", "several faces" (two faces both match the person), then
"excluded" (the config's manual list), "too small", "head pose", "blurred". Actors keep a frame
only with no flag; drivers keep every frame with a face of this person (the other flags are
recorded, not applied) -- they are rendered frame for frame.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import shutil
import signal
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from facevae import FacevaeError, __version__
from facevae.faces import identity as ident
from facevae.faces.align import AlignConfig, align_face, face_box_in_frame, similarity_scale, transform_points
from facevae.faces.aligners import DLIB_MIN_FACE, aligner_kwargs, make_aligner
from facevae.faces.measure import blur_scores, head_pose
from facevae.video import open_capture, read_frames

log = logging.getLogger(__name__)

# Reasons, in the order they are reported (``reason`` is the first that fired).
NO_FACE, NOT_PERSON, SEVERAL, EXCLUDED, SMALL, POSE, BLUR = (
    "no face", "not this person", "several faces", "excluded", "too small", "head pose", "blurred")
REASONS = (NO_FACE, NOT_PERSON, SEVERAL, EXCLUDED, SMALL, POSE, BLUR)
#: What drops a driver's frame; an actor's frame is dropped by any reason.
DRIVER_REASONS = (NO_FACE, NOT_PERSON, SEVERAL, EXCLUDED)

# The template face's detector box is this many times the crop side (align._TEMPLATE_FACE_BOX).
_BLOCK = 256  # frames per block file
_ROI_HALF = 0.85  # half side of the region searched around a followed face, in face widths


@dataclass(frozen=True)
class TrackerSettings:
    """Detection/tracking and filter settings (config ``faces.detect`` and ``faces.filters``)."""

    redetect_every: int = 15
    roi_face_px: int = 90
    max_detect_side: int = 1280
    scene_cut: float = 20.0
    idle_every: int = 3
    coast: int = 5
    identity_every: int = 60
    min_size: float = 40.0
    min_blur: float = 40.0
    max_yaw: float = 40.0
    max_pitch: float = 30.0
    identity_distance: float = 0.6
    identity_margin: float = 0.05

    @classmethod
    def from_config(cls, faces: dict | None) -> "TrackerSettings":
        faces = faces or {}
        det, flt = faces.get("detect") or {}, faces.get("filters") or {}
        values = {**{k: det[k] for k in ("redetect_every", "roi_face_px", "max_detect_side", "scene_cut", "idle_every", "coast") if k in det},
                  **{k: flt[k] for k in ("identity_every", "min_size", "min_blur", "max_yaw", "max_pitch",
                                         "identity_distance", "identity_margin") if k in flt}}
        return cls(**values)


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class _Track:
    id: int
    box: tuple
    last_descriptor: int = -10**9
    coast: int = 0


@dataclass
class FrameTracker:
    """Finds faces frame after frame, reusing where the previous frame's faces were.

    ``step(rgb)`` returns [(box, score, track_id, is_new_track)] for one frame; ids are unique
    within this tracker (a new id whenever a face is found afresh, so an id is one track segment)."""

    aligner: object
    settings: TrackerSettings
    width: int
    height: int
    id_base: int = 0
    tracks: list = field(default_factory=list)
    stats: dict = field(default_factory=lambda: {"full": 0, "quick": 0, "roi": 0, "coast": 0, "cuts": 0})

    def __post_init__(self):
        self._next = self.id_base
        self._since_full = 10**9
        self._since_fine = 10**9
        self._thumb = None
        long_side, short_side = max(self.width, self.height), min(self.width, self.height)
        native = DLIB_MIN_FACE if self.aligner.name == "dlib" else None
        cap = self.settings.max_detect_side / long_side
        if native:
            # Fine: where the smallest face worth keeping is visible. Quick: faces >= 1/3 of the frame.
            self.fine_scale = min(native / max(self.settings.min_size, 1.0), cap)
            self.quick_scale = min(native / (short_side / 3.0), self.fine_scale)
        else:  # face_alignment's detectors resize internally
            self.fine_scale = self.quick_scale = min(1.0, cap)
        self._native = native

    def _new_id(self) -> int:
        self._next += 1
        return self._next - 1

    def _scene_cut(self, rgb) -> bool:
        step = max(1, min(rgb.shape[0], rgb.shape[1]) // 64)  # subsample first: a full-frame INTER_AREA costs more
        thumb = cv2.resize(rgb[::step, ::step], (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
        cut = self._thumb is not None and float(np.abs(thumb - self._thumb).mean()) > self.settings.scene_cut
        self._thumb = thumb
        return cut

    def _full(self, rgb, fine: bool) -> list:
        """Whole-frame search: the quick (downscaled) pass first; the fine pass if that found
        nothing and ``fine`` allows it."""
        if self.quick_scale < self.fine_scale * 0.8:
            self.stats["quick"] += 1
            found = self.aligner.find_boxes(rgb, scale=self.quick_scale)
            if found or not fine:
                return found
        self.stats["full"] += 1
        self._since_fine = 0
        return self.aligner.find_boxes(rgb, scale=self.fine_scale)

    def _roi(self, rgb, box):
        self.stats["roi"] += 1
        x0, y0, x1, y1 = box
        w = max(x1 - x0, y1 - y0, 1.0)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        half = w * _ROI_HALF  # the face may move a third of its width between frames
        rx0, ry0 = int(max(0, cx - half)), int(max(0, cy - half))
        rx1, ry1 = int(min(self.width, cx + half)), int(min(self.height, cy + half))
        if rx1 - rx0 < 8 or ry1 - ry0 < 8:
            return None
        scale = self.settings.roi_face_px / w if self._native else 1.0
        found = self.aligner.find_boxes(rgb[ry0:ry1, rx0:rx1], scale=min(scale, 4.0))
        best, best_iou = None, 0.3
        for (bx0, by0, bx1, by1), score in found:
            cand = (bx0 + rx0, by0 + ry0, bx1 + rx0, by1 + ry0)
            overlap = _iou(cand, box)
            if overlap > best_iou:
                best, best_iou = (cand, score), overlap
        return best

    def step(self, rgb: np.ndarray) -> list[tuple]:
        cut = self._scene_cut(rgb)
        if cut:
            self.stats["cuts"] += 1
            self.tracks = []
            self._since_fine = 10**9
        self._since_full += 1
        self._since_fine += 1
        hits, missing = [], []
        for track in self.tracks:  # follow every known face near where it was
            hit = self._roi(rgb, track.box)
            if hit is None:
                missing.append(track)
            else:
                track.coast = 0
                hits.append((hit[0], hit[1], track, False))
        periodic = self._since_full >= self.settings.redetect_every
        if self.tracks and not missing and not periodic:
            return self._commit(hits)
        # Whole-frame search: periodically for new faces (quick, downscaled), when a face was
        # lost, and while no face is followed (the fine small-face search every idle_every frames).
        fine = not hits and (bool(missing) or self._since_fine >= self.settings.idle_every)
        found = self._full(rgb, fine=fine)
        self._since_full = 0
        result = list(hits)
        for box, score in found:
            if any(_iou(box, b) > 0.3 for b, _, _, _ in result):
                continue  # already followed
            again = max(missing, key=lambda t: _iou(box, t.box), default=None)
            if again is not None and _iou(box, again.box) > 0.3:
                missing.remove(again)
                again.coast = 0
                result.append((box, score, again, False))
            else:
                result.append((box, score, _Track(self._new_id(), box), True))
        for track in missing:  # the detector missed a followed face: coast a few frames on landmarks
            if track.coast < self.settings.coast:
                track.coast += 1
                self.stats["coast"] += 1
                result.append((track.box, float("nan"), track, False))
        return self._commit(result)

    def _commit(self, result: list[tuple]) -> list[tuple]:
        self.tracks = [t for _, _, t, _ in result]
        for box, _, track, _ in result:
            track.box = box
        return result


# --- worker ------------------------------------------------------------------------------------


def video_layout(path: Path | str) -> dict:
    cap = open_capture(path)
    try:
        return {
            "fps": float(cap.get(cv2.CAP_PROP_FPS)) or 25.0,
            "width": int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            "height": int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            "frame_count": int(cap.get(cv2.CAP_PROP_FRAME_COUNT)),
        }
    finally:
        cap.release()


def _flush(block_dir: Path, worker: int, index: int, rec: dict) -> Path:
    path = block_dir / f"w{worker:02d}_{index:06d}.npz"
    arrays = {k: np.asarray(v) for k, v in rec.items()}
    np.savez(path, **arrays)
    for v in rec.values():
        v.clear()
    return path


def _empty_record() -> dict:
    return {k: [] for k in ("frame", "track", "box", "score", "landmarks", "transform", "crop", "descriptor", "blur")}


_SHARED: dict = {}  # objects the forked workers inherit from the parent
_COUNTER = None  # frames done, shared by the worker processes (set by the pool's initializer)


def _init_worker(counter) -> None:
    global _COUNTER
    _COUNTER = counter
    # Ctrl-C reaches every process of the terminal's group: the parent stops the pool and reports
    # once; a worker's own KeyboardInterrupt traceback would only be noise. SIGTERM: die quietly.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _work(job: dict) -> dict:
    """One worker: decode frames [start, stop) of the video and find/align every face in them."""
    cv2.setNumThreads(1)
    worker, start, stop = job["worker"], job["start"], job["stop"]
    settings, cfg = job["settings"], job["align"]
    # Models loaded by the parent before forking are inherited (loading dlib's takes ~2 s).
    aligner = _SHARED.get("aligner") or make_aligner(**job["aligner"])
    frames = read_frames(job["video"], start, stop, threads=1)  # exact frame numbers: decoded from 0
    block_dir = Path(job["block_dir"])
    counter = _COUNTER
    frame_index = start
    tracker = FrameTracker(aligner, settings, job["width"], job["height"], id_base=worker * 10**9)
    rec, blocks, n_frames, n_faces = _empty_record(), [], 0, 0
    frames_in_block = 0
    try:
        for rgb in frames:
            found = tracker.step(rgb)
            if found:
                marks = aligner.landmarks(rgb, [box for box, _, _, _ in found])
                for (box, score, track, _), lm in zip(found, marks):
                    crop, _, m = align_face(rgb, lm, cfg)
                    if not np.isfinite(score):  # coasting: the landmarks say where the face went
                        box = face_box_in_frame(m, cfg)
                        track.box = box
                    desc = np.full(128, np.nan, np.float32)
                    if frame_index - track.last_descriptor >= settings.identity_every:
                        desc = ident.descriptor(rgb, box, lm)
                        track.last_descriptor = frame_index
                    rec["frame"].append(frame_index)
                    rec["track"].append(track.id)
                    rec["box"].append(np.asarray(box, np.float32))
                    rec["score"].append(score)
                    rec["landmarks"].append(lm)
                    rec["transform"].append(m)
                    rec["crop"].append(crop)
                    rec["descriptor"].append(desc)
                    rec["blur"].append(blur_scores(crop)[0])
                    n_faces += 1
            frame_index += 1
            n_frames += 1
            frames_in_block += 1
            if frames_in_block >= _BLOCK:
                blocks.append(_flush(block_dir, worker, len(blocks), rec))
                frames_in_block = 0
                if counter is not None:
                    with counter.get_lock():
                        counter.value += _BLOCK
        if rec["frame"]:
            blocks.append(_flush(block_dir, worker, len(blocks), rec))
    finally:
        frames.close()  # releases the capture
    return {"worker": worker, "start": start, "frames": n_frames, "faces": n_faces, "blocks": [str(b) for b in blocks],
            "stats": tracker.stats}


def _load_blocks(paths: list[str], keys: tuple[str, ...]) -> tuple[dict, list[int]]:
    """The face records of all blocks (without crops) and the row offset of each block."""
    parts, offsets, total = {k: [] for k in keys}, [], 0
    for path in paths:
        with np.load(path) as data:
            for k in keys:
                parts[k].append(data[k])
            offsets.append(total)
            total += len(data["frame"])
    return {k: (np.concatenate(v) if v else None) for k, v in parts.items()}, offsets


# --- the whole video ---------------------------------------------------------------------------


def parse_frame_list(items) -> list[tuple[int, int]]:
    """Config frame list ([12, "40-55"]) -> inclusive (first, last) ranges, kept as ranges: a range
    of a billion frames is two numbers, not a set of a billion ints (~380 MB per 5 M frames).
    A range that runs backwards is a FacevaeError (the config check names its key first)."""
    ranges: list[tuple[int, int]] = []
    for item in items or []:
        if isinstance(item, str):
            first, last = (int(v) for v in item.split("-"))
            if last < first:
                raise FacevaeError(f"exclude range '{item}' runs backwards (write first-last, e.g. '{last}-{first}')")
            ranges.append((first, last))
        else:
            ranges.append((int(item), int(item)))
    return ranges


def exclusion_mask(excluded, n_frames: int) -> np.ndarray:
    """bool (n_frames,): True for the frames in ``excluded`` -- (first, last) ranges or frame
    numbers; what lies past the video's end is ignored."""
    mask = np.zeros(n_frames, dtype=bool)
    for item in excluded or ():
        first, last = item if isinstance(item, tuple) else (item, item)
        if first < n_frames:
            mask[max(0, int(first)) : min(int(last), n_frames - 1) + 1] = True
    return mask


def run_workers(video: Path, layout: dict, aligner_kw: dict, cfg: AlignConfig, settings: TrackerSettings, workers: int,
                block_dir: Path, progress: bool = True) -> list[dict]:
    """Decode and track the video in ``workers`` contiguous chunks; results in frame order."""
    count = max(layout["frame_count"], 1)
    workers = max(1, min(int(workers), count // 32 or 1))
    bounds = [round(i * count / workers) for i in range(workers + 1)]
    jobs = [
        {"worker": w, "start": bounds[w], "stop": bounds[w + 1] if w < workers - 1 else None, "video": str(video),
         "width": layout["width"], "height": layout["height"], "aligner": aligner_kw, "align": cfg,
         "settings": settings, "block_dir": str(block_dir)}
        for w in range(workers)
    ]
    from tqdm import tqdm

    bar = tqdm(total=layout["frame_count"], unit="frame", desc=video.name, disable=not progress, mininterval=2.0)
    try:
        if workers == 1:
            result = [_work(jobs[0])]
            bar.update(result[0]["frames"])
            return result
        ctx = mp.get_context("fork")  # fork: rule scripts are not importable modules (no re-import)
        counter = ctx.Value("i", 0)
        # OpenCV's thread pool does not survive a fork: a child touching it waits forever for
        # threads that were not copied. One thread in the parent while forking = no pool to inherit.
        cv_threads = cv2.getNumThreads()
        cv2.setNumThreads(1)
        try:
            with ctx.Pool(workers, initializer=_init_worker, initargs=(counter,)) as pool:
                pending = pool.map_async(_work, jobs)
                while not pending.ready():
                    pending.wait(1.0)
                    bar.n = min(counter.value, bar.total)
                    bar.refresh()
                result = pending.get()
        finally:
            cv2.setNumThreads(cv_threads)
        bar.n = sum(r["frames"] for r in result)
        bar.refresh()
        return sorted(result, key=lambda r: r["worker"])
    finally:
        bar.close()


def extract_track(
    video: Path | str,
    out: Path | str,
    *,
    person: str,
    name: str,
    role: str,
    faces_cfg: dict | None = None,
    reference: str | None = None,
    exclude=None,
    workers: int = 1,
    progress: bool = True,
) -> dict:
    """Write ``out`` (the tracks HDF5 of one video, see facevae.faces.io) and return a summary."""
    from facevae.faces.io import TrackWriter

    video, out = Path(video), Path(out)
    faces_cfg = faces_cfg or {}
    cfg = AlignConfig.from_config(faces_cfg)
    settings = TrackerSettings.from_config(faces_cfg)
    kw = aligner_kwargs(faces_cfg)
    where = f"{role} '{person}', video '{name}'"
    t0 = time.perf_counter()
    layout = video_layout(video)
    # Resolve "auto" once here, so every worker runs (and the file records) the same backend.
    probe = make_aligner(**kw)
    kw = {**kw, "name": probe.name}
    ident.load_model()  # before forking: the workers inherit it
    _SHARED["aligner"] = probe
    if probe.name != "dlib":
        workers = 1  # one torch model in one process (it uses the cores itself)
    ref_desc = None
    if reference:
        ref_desc = ident.reference_descriptor(reference, probe, key=f"{role}s.{person}.reference")
    excluded = parse_frame_list(exclude)
    if out.parent.exists():  # a killed run's blocks (SIGKILL runs no cleanup); one job writes ``out`` at a time
        for stale in out.parent.glob(f".{out.stem}.*.blocks"):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.stem}.", suffix=".blocks", dir=out.parent if out.parent.exists() else None))
    try:
        results = run_workers(video, layout, kw, cfg, settings, workers, tmp, progress)
        # Chunks must join without a gap: worker w starts where worker w-1 stopped.
        n_frames = 0
        for r in results:
            if r["frames"] and r["start"] != n_frames:
                raise FacevaeError(f"{where}: {video} decoded {n_frames} frames before frame {r['start']}: "
                                   "the video's frame count is wrong (re-run ingest)")
            n_frames += r["frames"]
        if n_frames == 0:
            raise FacevaeError(f"{where}: {video} has no decodable frames")
        blocks = [b for r in results for b in r["blocks"]]
        meta, offsets = _load_blocks(blocks, ("frame", "track", "box", "score", "landmarks", "transform", "descriptor", "blur"))
        rows = decide(meta, n_frames, settings, cfg, role, ref_desc, excluded)
        fps = layout["fps"]
        rows["time"] = rows["frame"] / fps
        attrs = {
            "person": person, "video": name, "role": role, "fps": fps, "width": layout["width"],
            "height": layout["height"], "frame_count": n_frames, "aligner": kw["name"], **cfg.as_attrs(),
            "identity": "reference" if ref_desc is not None else "dominant", "reference": str(reference or ""),
            "settings": json.dumps(asdict(settings)), "facevae": __version__,
            "applied_reasons": json.dumps(list(DRIVER_REASONS if role == "driver" else REASONS)),
        }
        face_row = rows.pop("face_row")
        with TrackWriter(out, n_frames, cfg.size, attrs) as writer:
            writer.write_rows(rows)
            for path, offset in zip(blocks, offsets):  # crops, block by block (never all in memory)
                with np.load(path) as data:
                    frames, crops = data["frame"], data["crop"]
                    chosen = face_row[frames] == offset + np.arange(len(frames))
                    writer.write_crops(frames[chosen], crops[chosen])
        stats = {k: sum(r["stats"][k] for r in results) for k in results[0]["stats"]}
        elapsed = time.perf_counter() - t0
        summary = {
            "frames": n_frames, "faces_found": int(len(meta["frame"]) if meta["frame"] is not None else 0),
            "kept": int(rows["kept"].sum()), "seconds": round(elapsed, 2), "fps": round(n_frames / elapsed, 1),
            "workers": len(results), "aligner": kw["name"], "detector_calls": stats,
            "reasons": {r: int((rows["reason"] == r).sum()) for r in REASONS if (rows["reason"] == r).any()},
        }
        log.info("%s: %s", where, json.dumps(summary))
        return summary
    finally:
        _SHARED.clear()
        shutil.rmtree(tmp, ignore_errors=True)


def decide(meta: dict, n_frames: int, settings: TrackerSettings, cfg: AlignConfig, role: str,
           ref_desc: np.ndarray | None, excluded) -> dict:
    """Per-frame rows of the tracks file from all face records of a video: which face is the
    person's, its measures, and the verdict. ``excluded``: frame numbers or (first, last) ranges."""
    rows = {
        "landmarks": np.full((n_frames, 68, 2), np.nan, np.float32),
        "transforms": np.full((n_frames, 2, 3), np.nan),
        "box": np.full((n_frames, 4), np.nan, np.float32),
        "score": np.full(n_frames, np.nan, np.float32),
        "n_faces": np.zeros(n_frames, np.int32),
        "face_px": np.full(n_frames, np.nan, np.float32),
        "blur": np.full(n_frames, np.nan, np.float32),
        "yaw": np.full(n_frames, np.nan, np.float32),
        "pitch": np.full(n_frames, np.nan, np.float32),
        "identity_distance": np.full(n_frames, np.nan, np.float32),
        "track_id": np.full(n_frames, -1, np.int64),
        "face_row": np.full(n_frames, -1, np.int64),
    }
    frames = meta["frame"]
    if frames is None or len(frames) == 0:
        frames = np.zeros(0, np.int64)
        track_dist = {}
    else:
        desc, tracks = meta["descriptor"], meta["track"]
        has = np.isfinite(desc).all(axis=1)
        if ref_desc is not None:
            centre = np.asarray(ref_desc, np.float32)
        else:
            centre = ident.dominant_centre(desc[has], settings.identity_distance)
        sample_dist = ident.distances(desc[has], centre)
        track_dist = {}
        for tid in np.unique(tracks):
            d = sample_dist[tracks[has] == tid]
            track_dist[int(tid)] = float(np.median(d)) if len(d) else float("nan")
    flags = [[] for _ in range(n_frames)]
    np.add.at(rows["n_faces"], frames, 1)
    order = np.argsort(frames, kind="stable")
    start = 0
    while start < len(order):
        f = int(frames[order[start]])
        stop = start
        while stop < len(order) and frames[order[stop]] == f:
            stop += 1
        idx = order[start:stop]
        dists = np.array([track_dist.get(int(meta["track"][i]), np.nan) for i in idx])
        dists_sort = np.where(np.isfinite(dists), dists, np.inf)
        rank = np.argsort(dists_sort, kind="stable")
        best = idx[rank[0]]
        if not dists_sort[rank[0]] <= settings.identity_distance:
            flags[f].append(NOT_PERSON)
        elif len(idx) > 1 and dists_sort[rank[1]] <= settings.identity_distance and \
                dists_sort[rank[1]] - dists_sort[rank[0]] < settings.identity_margin:
            flags[f].append(SEVERAL)
        rows["face_row"][f] = best
        rows["identity_distance"][f] = dists[rank[0]]
        rows["track_id"][f] = meta["track"][best]
        m = meta["transform"][best]
        rows["transforms"][f] = m
        rows["landmarks"][f] = transform_points(m, meta["landmarks"][best]).astype(np.float32)
        rows["box"][f] = meta["box"][best]
        rows["score"][f] = meta["score"][best]
        rows["face_px"][f] = _face_px(m, cfg)
        rows["blur"][f] = meta["blur"][best]
        start = stop
    present = rows["face_row"] >= 0
    if present.any():
        rows["yaw"][present], rows["pitch"][present] = head_pose(rows["landmarks"][present], cfg).T
    return _verdicts(rows, flags, present, n_frames, settings, role, excluded)


def _face_px(m: np.ndarray, cfg: AlignConfig) -> float:
    """Width of the template's face box in frame pixels (about the detector box's width)."""
    x0, _, x1, _ = cfg.face_box()
    return float((x1 - x0) / similarity_scale(m))


def _verdicts(rows, flags, present, n_frames, settings, role, excluded) -> dict:
    excluded = exclusion_mask(excluded, n_frames)
    for f in range(n_frames):
        if not present[f]:
            flags[f].insert(0, NO_FACE)
        if excluded[f]:
            flags[f].append(EXCLUDED)
        if present[f]:
            if rows["face_px"][f] < settings.min_size:
                flags[f].append(SMALL)
            yaw, pitch = rows["yaw"][f], rows["pitch"][f]
            if not (abs(yaw) <= settings.max_yaw and abs(pitch) <= settings.max_pitch):
                flags[f].append(POSE)
            if rows["blur"][f] < settings.min_blur:
                flags[f].append(BLUR)
    applied = DRIVER_REASONS if role == "driver" else REASONS
    ordered = [sorted(fl, key=REASONS.index) for fl in flags]
    dropping = [[r for r in fl if r in applied] for fl in ordered]
    rows["flags"] = np.array([",".join(fl) for fl in ordered], dtype=object)
    rows["reason"] = np.array([fl[0] if fl else "" for fl in dropping], dtype=object)
    rows["kept"] = np.array([not fl for fl in dropping], dtype=bool)
    rows["frame"] = np.arange(n_frames, dtype=np.int64)
    return rows
