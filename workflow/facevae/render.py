"""Reenactment rendering: a driver's face track through an actor's VAE, composed into a video.

For each decoded frame of the driver video (one row of ``results/tracks/{driver}/{video}.h5``) the
driving path (:mod:`facevae.driving`: landmark retargeting by default, or the actor's encoder on
the crop) gives a latent code, which the actor's decoder turns into the actor's face.
Frames are composed into panels on a canvas drawn once (borders, name labels), streamed into an
ffmpeg process that encodes H.264 and copies the driver's audio stream in, so the result has the
driver's frame rate, frame count and sound. ``paste_back`` also warps the actor face into the
driver's full frame through the inverse of the stored crop<-frame similarity, blended with a
feathered mask -- the face-swap view.

Here: :class:`RenderConfig` (the ``render:`` config section), :func:`smooth_latents`,
:func:`shown_index`, :func:`edit_vector` and :func:`render_reenactment` (the rule). How a
driver frame becomes the actor's z is :mod:`facevae.driving`. The pieces it puts together, each usable and tested alone, live by capability:
:mod:`facevae.compose` (:class:`~facevae.compose.Layout`: canvas, panel boxes, composition;
:class:`~facevae.compose.Paster`: mask and paste-back), :mod:`facevae.video`
(:class:`~facevae.video.VideoWriter`: ffmpeg streaming with muxed audio; ``read_frames``),
:mod:`facevae.faces.io` (:class:`~facevae.faces.io.DriverTrack`: chunked reading of a track file),
:mod:`facevae.modelio` (:class:`~facevae.modelio.Codec`: the fast encoder/decoder;
``pick_device``) and :mod:`facevae.scoring` (the expression-transfer score files).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import h5py
import numpy as np

from facevae import FacevaeError, __version__, modelio
from facevae import video as vid
from facevae.compose import INTERPOLATIONS, Layout, Paster, letterbox, match_color, parse_color, resize_face, write_sheet
from facevae.driving import DRIVES, DrivePlan, drive_track
from facevae.faces.io import DriverTrack, read_faces
from facevae.instruments import mean_descriptor
from facevae.modelio import Codec, pick_device
from facevae import FACE_SIZE
from facevae.planning import RENDER_FRAME_BUFFER_BYTES
from facevae.scoring import ScoreMeter, retrieval_index, write_score_outputs
from facevae.video import VideoWriter, read_frames

log = logging.getLogger(__name__)

LAYOUTS = ("side_by_side", "grid")
MISSING = ("hold", "blank")


@dataclasses.dataclass(frozen=True)
class RenderConfig:
    """The ``render:`` config section (see workflow/schemas/render.schema.yaml for each key)."""

    layout: str = "side_by_side"
    panel_size: int = 256
    border: int = 8
    border_color: tuple = (0, 0, 0)
    labels: bool = True
    label_color: tuple = (255, 255, 255)
    missing: str = "hold"
    smooth: int = 1
    paste_back: bool = False
    feather: float = 0.08
    color_match: bool = True
    interpolation: str = "cubic"
    crf: int = 18
    preset: str = "veryfast"
    edit: dict = dataclasses.field(default_factory=dict)
    device: str = "auto"
    drive: str = "auto"
    same_person_distance: float = DrivePlan.same_person_distance
    self_blend: float = DrivePlan.self_blend
    self_transfer: object = DrivePlan.self_transfer  # "encoder" or a number in [0, 1]
    retarget: dict = dataclasses.field(default_factory=dict)
    score_upscale: int = 4
    score_permutations: int = 1000
    score_sharpen: float = 2.5
    score_mesh_sharpen: float = 1.0
    score_identity_every: int = 3
    score_identity_threshold: float = 0.6
    seed: int = 0

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise FacevaeError(f"render.layout must be one of {', '.join(LAYOUTS)}, not {self.layout!r}")
        if self.missing not in MISSING:
            raise FacevaeError(f"render.missing must be one of {', '.join(MISSING)}, not {self.missing!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise FacevaeError(f"render.interpolation must be one of {', '.join(INTERPOLATIONS)}")
        if int(self.smooth) < 1 or int(self.smooth) % 2 == 0:
            raise FacevaeError(f"render.smooth must be an odd number of frames >= 1 (1 = off), not {self.smooth!r}")
        if int(self.panel_size) < 16:
            raise FacevaeError(f"render.panel_size must be >= 16 px, not {self.panel_size!r}")
        if self.drive not in DRIVES:
            raise FacevaeError(f"render.drive must be one of {', '.join(DRIVES)}, not {self.drive!r}")
        if not 0 <= float(self.self_blend) <= 1:
            raise FacevaeError(f"expert.render.self_blend must be in [0, 1] (0 = the encoder alone), not {self.self_blend!r}")
        if self.self_transfer != "encoder" and (isinstance(self.self_transfer, bool) or not isinstance(
                self.self_transfer, (int, float)) or not 0 <= self.self_transfer <= 1):
            raise FacevaeError(f"expert.render.self_transfer must be encoder or a number in [0, 1], not {self.self_transfer!r}")

    @classmethod
    def from_config(cls, section: dict | None) -> "RenderConfig":
        section = dict(section or {})
        score = section.pop("score", {}) or {}
        kwargs = {}
        for key, value in section.items():
            if key in ("border_color", "label_color"):
                value = parse_color(value)
            kwargs[key] = value
        for key in ("upscale", "permutations", "sharpen", "mesh_sharpen", "identity_every", "identity_threshold"):
            if key in score:
                kwargs[f"score_{key}"] = score[key]
        if "seed" in score:
            kwargs["seed"] = score["seed"]
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise FacevaeError(f"unknown render key(s): {', '.join(unknown)}")
        return cls(**kwargs)


# --------------------------------------------------------------------------------------- latents


def smooth_latents(z: np.ndarray, valid: np.ndarray, k: int) -> np.ndarray:
    """Centred moving average over ``k`` frames (odd) of the rows of ``z`` marked ``valid``.

    Each valid row becomes the mean of the valid rows within ``k // 2`` frames on either side
    (frames without a face do not pull the average; the window shrinks at gaps and at the ends).
    Invalid rows are returned unchanged. ``k = 1`` returns a copy.
    """
    z = np.asarray(z, dtype=np.float64)
    valid = np.asarray(valid, dtype=bool)
    out = z.copy()
    if k <= 1 or not valid.any():
        return out.astype(np.float32)
    half = k // 2
    filled = np.where(valid[:, None], z, 0.0)
    csum = np.concatenate([np.zeros((1, z.shape[1])), np.cumsum(filled, axis=0)])
    ccount = np.concatenate([[0], np.cumsum(valid)])
    n = len(z)
    idx = np.arange(n)
    lo, hi = np.clip(idx - half, 0, n), np.clip(idx + half + 1, 0, n)
    sums = csum[hi] - csum[lo]
    counts = (ccount[hi] - ccount[lo])[:, None]
    out[valid] = (sums / np.maximum(counts, 1))[valid]
    return out.astype(np.float32)


def shown_index(kept: np.ndarray, missing: str = "hold") -> np.ndarray:
    """For each frame, the frame whose face is shown: itself when kept; with ``hold`` the last kept
    frame before it; -1 for a blank panel (``blank``, or before the first kept frame)."""
    kept = np.asarray(kept, dtype=bool)
    idx = np.where(kept, np.arange(len(kept)), -1)
    if missing == "hold":
        idx = np.maximum.accumulate(idx) if len(idx) else idx
    return idx


def edit_vector(attributes_path, edit: dict, latent_dim: int) -> np.ndarray:
    """Sum of ``amount * attribute_vector`` over the ``edit`` mapping (attribute name -> amount)."""
    vec = np.zeros(latent_dim, np.float64)
    if not edit:
        return vec
    path = Path(attributes_path) if attributes_path else None
    if path is None or not path.is_file():
        raise FacevaeError(f"render.edit needs the attribute vectors file {path} (made by the attributes stage)")
    with h5py.File(path, "r") as h5:
        fields = [f.decode() if isinstance(f, bytes) else str(f) for f in h5["fields"][:]]
        vectors = h5["attribute_vectors"][:]
    if vectors.shape[1] != latent_dim:
        raise FacevaeError(f"{path}: attribute vectors have {vectors.shape[1]} dimensions, the model {latent_dim}")
    for name, amount in edit.items():
        if name not in fields:
            raise FacevaeError(f"render.edit.{name}: no such attribute in {path} (fields: {', '.join(fields)})")
        vec += float(amount) * vectors[fields.index(name)]
    return vec


# ------------------------------------------------------------------------------------ the render


@dataclasses.dataclass
class Timings:
    encode_decode: float = 0.0
    compose: float = 0.0
    video_encode: float = 0.0
    landmarks: float = 0.0
    read: float = 0.0

    def as_dict(self):
        return dataclasses.asdict(self)


def frames_per_chunk(width: int, height: int, chunk: int = 256) -> int:
    """How many full-resolution driver frames one render chunk holds: ``chunk`` at most, and no
    more than :data:`~facevae.planning.RENDER_FRAME_BUFFER_BYTES` (one frame at least) -- the
    chunk is bounded by bytes, not frames (256 frames were ~6.4 GB at 4K, ~26 GB at 8K)."""
    return max(1, min(int(chunk), RENDER_FRAME_BUFFER_BYTES // max(1, 3 * int(width) * int(height))))


def render_reenactment(
    track_path,
    video_path,
    model_path,
    outputs: dict,
    cfg: RenderConfig,
    actor: str,
    driver: str,
    video: str,
    meta_path=None,
    attributes_path=None,
    faces_path=None,
    retarget_path=None,
    faceapi_model=None,
    chunk: int = 256,
    score: bool = True,
    progress: bool = True,
) -> dict:
    """Render one driver video through one actor's model.

    ``outputs``: ``video`` (composite mp4), and optionally ``paste`` (full-frame face swap mp4),
    ``score`` (expression-transfer TSV), ``series`` (per-frame TSV), ``plot`` (PNG of the series),
    ``sheet`` (PNG of a few composed frames). Returns a summary dict (frames, timings, scores).
    ``faces_path``: the actor's training faces (the score's identity reference and retrieval
    baseline, and what ``render.drive auto`` compares the driver with; needed when scoring).
    ``retarget_path``: the actor's map (rule fit_retarget; needed when the drive is retarget).
    ``faceapi_model``: face-api's landmark weights folder (rule faceapi_weights; needed when the
    drive retargets with render.retarget.mouth_points faceapi).
    """
    from tqdm import tqdm

    t_start = time.perf_counter()
    timings = Timings()
    meta = json.loads(Path(meta_path).read_text()) if meta_path else {}
    info = vid.probe(video_path)
    fps = float(meta.get("fps") or info.fps)
    has_audio = bool(meta.get("has_audio", info.has_audio))
    model = modelio.load_model(model_path, device=pick_device(cfg.device))
    codec = Codec(model)
    with DriverTrack(track_path) as track:
        n = track.n
        if abs(n - info.frame_count) > 1:
            log.warning("%s has %d rows but %s has %d frames", track_path, n, video_path, info.frame_count)
        kept = track.kept.copy()
        if not kept.any():  # a blank "reenactment" is not a result (faces_driver checks whole people)
            raise FacevaeError(f"driver '{driver}': no usable face in its video {video}: {n} frames, rejected by "
                               f"reason {json.dumps(track.rejections())} (see faces.filters in the config, or the video)")
        if score and faces_path is None:
            raise FacevaeError("the reenactment score needs the actor's training faces (results/faces/{actor}.h5)")
        actor_faces = read_faces(faces_path) if faces_path is not None else None
        # The actor's identity reference, once: render.drive auto and the score both compare with it.
        actor_descriptor = None
        if actor_faces is not None and (score or cfg.drive == "auto"):
            actor_descriptor = mean_descriptor(actor_faces["data"], track.align_config(FACE_SIZE), cfg.score_upscale)
        t0 = time.perf_counter()
        plan = DrivePlan.from_render(cfg.drive, cfg.retarget, same_person_distance=cfg.same_person_distance,
                                     self_blend=cfg.self_blend, self_transfer=cfg.self_transfer, upscale=cfg.score_upscale)
        z, drive_info = drive_track(plan, codec, track, retarget_path, cfg.retarget, actor_descriptor, video_path,
                                    faceapi_model)
        z = smooth_latents(z, kept, cfg.smooth)
        if cfg.edit:
            z = (z + edit_vector(attributes_path, cfg.edit, model.config.latent_dim)).astype(np.float32)
        timings.encode_decode += time.perf_counter() - t0
        shown = shown_index(kept, cfg.missing)
        layout = Layout.for_reenactment(cfg, actor, driver, video)
        need_frames = cfg.layout == "grid" or "paste" in outputs
        paster = None
        if need_frames:
            chunk = frames_per_chunk(info.width, info.height, chunk)
            geometry = track.align_config()
            paster = Paster(track.crop_size, geometry.template_scale, geometry.template_offset_y, cfg.feather,
                            interpolation=cfg.interpolation)
        description = json.dumps({"facevae": __version__, "actor": actor, "driver": driver, "video": video,
                                  "layout": cfg.layout, "smooth": cfg.smooth, "edit": cfg.edit, "missing": cfg.missing,
                                  **drive_info}, default=str)
        audio = video_path if has_audio else None
        writer = VideoWriter(outputs["video"], layout.width, layout.height, fps, audio, cfg.crf, cfg.preset,
                             metadata={"comment": description})
        paste_writer = None
        frames_iter = read_frames(video_path) if need_frames else None
        sheet_at = set(np.linspace(0, max(n - 1, 0), 6).round().astype(int).tolist()) if outputs.get("sheet") else set()
        sheet_frames = []
        align64 = track.align_config(FACE_SIZE)
        meter = baseline = None
        if score:
            if "landmarks" not in actor_faces:
                raise FacevaeError(f"{faces_path} has no landmarks: the score's retrieval baseline needs faces made by the faces stage")
            meter = ScoreMeter(n, align64, cfg, actor_descriptor)
            baseline = np.zeros(n, np.int64)
            if kept.any():
                baseline[kept] = retrieval_index(actor_faces["landmarks"], np.asarray(track.landmarks[:])[kept])
        last_face = last_crop = None
        try:
            bar = tqdm(total=n, desc=f"reenact {actor}<-{driver}/{video}", unit="frame", disable=not progress, mininterval=2)
            for start in range(0, n, chunk):
                stop = min(start + chunk, n)
                t0 = time.perf_counter()
                crops = track.read_crops(start, stop)
                transforms = track.transforms[start:stop]
                frames = []
                if frames_iter is not None:
                    for i in range(start, stop):
                        frame = next(frames_iter, None)
                        if frame is None:  # the tracker's decoder gave it n frames: the video changed since
                            raise FacevaeError(f"{video_path} has {i} frames, its track {track_path} {n} rows: the video "
                                               "changed after tracking; rebuild the track (snakemake --forcerun faces_track)")
                        frames.append(frame)
                timings.read += time.perf_counter() - t0
                t0 = time.perf_counter()
                keep = kept[start:stop]
                faces = codec.decode(z[start:stop][keep]) if keep.any() else np.zeros((0, FACE_SIZE, FACE_SIZE, 3), np.uint8)
                timings.encode_decode += time.perf_counter() - t0
                if meter is not None and keep.any():
                    t0 = time.perf_counter()
                    rows = np.arange(start, stop)[keep]
                    meter.add(rows, crops[keep], track.landmarks[start:stop][keep], faces, actor_faces["data"][baseline[rows]])
                    timings.landmarks += time.perf_counter() - t0
                t0 = time.perf_counter()
                j = 0
                for i in range(stop - start):
                    if keep[i]:
                        last_face, last_crop = faces[j], crops[i]
                        j += 1
                        face, crop = last_face, last_crop
                    elif shown[start + i] >= 0:
                        face, crop = last_face, last_crop
                    else:
                        face = crop = None
                    panels = {
                        "driver": resize_face(crop, cfg.panel_size, cfg.interpolation) if crop is not None else None,
                        "actor": resize_face(face, cfg.panel_size, cfg.interpolation) if face is not None else None,
                    }
                    pasted = None
                    if paster is not None:
                        frame = frames[i]
                        pasted = frame
                        if keep[i]:
                            swap = match_color(face, crops[i], paster.mask_at(FACE_SIZE)) if cfg.color_match else face
                            pasted = paster.paste(frame, swap, transforms[i])
                        if cfg.layout == "grid":
                            panels["frame"] = letterbox(frame, cfg.panel_size, cfg.border_color)
                            panels["paste"] = letterbox(pasted, cfg.panel_size, cfg.border_color)
                    composed = layout.compose(panels)
                    if start + i in sheet_at:
                        sheet_frames.append(composed)
                    timings.compose += time.perf_counter() - t0
                    writer.write(composed)
                    if "paste" in outputs:
                        if paste_writer is None:
                            h, w = pasted.shape[:2]
                            paste_writer = VideoWriter(outputs["paste"], w, h, fps, audio, cfg.crf, cfg.preset,
                                                       metadata={"comment": description})
                        paste_writer.write(pasted)
                    t0 = time.perf_counter()
                bar.update(stop - start)
            bar.close()
            writer.close()
            if paste_writer is not None:
                paste_writer.close()
        except BaseException:
            writer.abort()
            if paste_writer is not None:
                paste_writer.abort()
            raise
        finally:
            if frames_iter is not None:
                frames_iter.close()
        timings.video_encode = writer.encode_seconds + (paste_writer.encode_seconds if paste_writer else 0.0)
        summary = {
            "actor": actor, "driver": driver, "video": video, "frames": n, "kept": int(kept.sum()), "fps": fps,
            "audio": has_audio, "seconds": time.perf_counter() - t_start, "timings": timings.as_dict(),
            "width": layout.width, "height": layout.height, "drive": drive_info,
        }
        if meter is not None:
            summary["scores"] = write_score_outputs(outputs, meter, track, actor, driver, video, cfg, drive_info["method"])
            meter.close()
        if outputs.get("sheet"):
            write_sheet(outputs["sheet"], sheet_frames)
    log.info("rendered %d frames (%d with a kept face) in %.1f s: %s", n, int(kept.sum()), summary["seconds"],
             {k: round(v, 2) for k, v in timings.as_dict().items()})
    return summary
