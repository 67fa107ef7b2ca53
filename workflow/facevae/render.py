"""Reenactment rendering: a driver's face track through an actor's VAE, composed into a video.

For each decoded frame of the driver video (one row of ``results/tracks/{driver}/{video}.h5``) the
aligned crop goes through the actor's encoder (the posterior mean, no sampling noise) and decoder.
Frames are composed into panels on a canvas drawn once (borders, name labels), streamed into an
ffmpeg process that encodes H.264 and copies the driver's audio stream in, so the result has the
driver's frame rate, frame count and sound. ``paste_back`` also warps the actor face into the
driver's full frame through the inverse of the stored crop<-frame similarity, blended with a
feathered mask -- the face-swap view.

Pieces, each usable and tested alone: :class:`RenderConfig` (the ``render:`` config section),
:func:`smooth_latents`, :func:`shown_index`, :class:`Layout` (canvas, panel boxes, composition),
:class:`Paster` (mask and paste-back), :class:`VideoWriter` (ffmpeg streaming with muxed audio),
:class:`DriverTrack` (chunked reading of a track file), and :func:`render_reenactment` (the rule).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

import cv2
import h5py
import numpy as np

from facevae import FacevaeError, __version__
from facevae import video as vid
from facevae.atomic import save_figure, temp_path, write_png, write_text

log = logging.getLogger(__name__)

LAYOUTS = ("side_by_side", "grid")
MISSING = ("hold", "blank")
INTERPOLATIONS = {
    "nearest": cv2.INTER_NEAREST,
    "linear": cv2.INTER_LINEAR,
    "cubic": cv2.INTER_CUBIC,
    "lanczos": cv2.INTER_LANCZOS4,
    "area": cv2.INTER_AREA,
}
FACE_SIZE = 64  # what the VAEs take and give


def parse_color(value) -> tuple[int, int, int]:
    """"#rrggbb" (or a list of three 0-255 ints) -> (r, g, b)."""
    if isinstance(value, (list, tuple)) and len(value) == 3:
        return tuple(int(v) for v in value)  # type: ignore[return-value]
    text = str(value).lstrip("#")
    if len(text) != 6:
        raise FacevaeError(f"colour must be '#rrggbb', got {value!r}")
    return tuple(int(text[i : i + 2], 16) for i in (0, 2, 4))  # type: ignore[return-value]


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
    score_upscale: int = 4
    score_permutations: int = 1000
    score_sharpen: float = 2.5
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

    @classmethod
    def from_config(cls, section: dict | None) -> "RenderConfig":
        section = dict(section or {})
        score = section.pop("score", {}) or {}
        kwargs = {}
        for key, value in section.items():
            if key in ("border_color", "label_color"):
                value = parse_color(value)
            kwargs[key] = value
        for key in ("upscale", "permutations", "sharpen"):
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


# ---------------------------------------------------------------------------------------- layout


def resize_face(face: np.ndarray, size: int, interpolation: str = "cubic") -> np.ndarray:
    """A square face image resized to ``size`` x ``size`` (uint8)."""
    if face.shape[0] == size and face.shape[1] == size:
        return face
    return cv2.resize(face, (size, size), interpolation=INTERPOLATIONS[interpolation])


def letterbox(frame: np.ndarray, size: int, color=(0, 0, 0)) -> np.ndarray:
    """``frame`` scaled to fit a ``size`` square, centred, the rest filled with ``color``."""
    h, w = frame.shape[:2]
    scale = size / max(h, w)
    nw, nh = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
    small = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    out = np.empty((size, size, 3), np.uint8)
    out[:] = color
    y0, x0 = (size - nh) // 2, (size - nw) // 2
    out[y0 : y0 + nh, x0 : x0 + nw] = small
    return out


class Layout:
    """A canvas of square panels in rows, with borders and a label strip under each panel.

    ``boxes[name] = (x0, y0, x1, y1)`` is where panel ``name`` lands in every frame; the canvas
    (borders, labels) is drawn once and each frame copies it and pastes the panels in.
    Width and height are even (H.264 with 4:2:0 chroma needs it).
    """

    def __init__(
        self,
        rows: list[list[str]],
        panel: int,
        border: int = 8,
        border_color=(0, 0, 0),
        labels: dict[str, str] | None = None,
        label_color=(255, 255, 255),
    ):
        self.rows, self.panel, self.border = rows, int(panel), int(border)
        self.border_color = tuple(border_color)
        self.label_height = max(14, self.panel // 9) if labels else 0
        cols = max(len(r) for r in rows)
        width = cols * self.panel + (cols + 1) * self.border
        height = len(rows) * (self.panel + self.label_height) + (len(rows) + 1) * self.border
        self.width, self.height = width + width % 2, height + height % 2
        self.boxes: dict[str, tuple[int, int, int, int]] = {}
        canvas = np.empty((self.height, self.width, 3), np.uint8)
        canvas[:] = self.border_color
        for r, row in enumerate(rows):
            y0 = self.border + r * (self.panel + self.label_height + self.border)
            for c, name in enumerate(row):
                x0 = self.border + c * (self.panel + self.border)
                self.boxes[name] = (x0, y0, x0 + self.panel, y0 + self.panel)
                if labels and labels.get(name):
                    self._label(canvas, labels[name], x0, y0 + self.panel, label_color)
        self.canvas = canvas

    def _label(self, canvas, text, x0, y0, color) -> None:
        font, thick = cv2.FONT_HERSHEY_SIMPLEX, 1
        strip = self.label_height
        scale = strip / 30.0
        (tw, th), base = cv2.getTextSize(text, font, scale, thick)
        while tw > self.panel - 4 and scale > 0.2:  # shrink long names to the panel width
            scale *= 0.9
            (tw, th), base = cv2.getTextSize(text, font, scale, thick)
        thick = max(1, int(round(scale * 1.5)))
        org = (x0 + max(0, (self.panel - tw) // 2), y0 + (strip + th) // 2)
        cv2.putText(canvas, text, org, font, scale, tuple(int(v) for v in color), thick, cv2.LINE_AA)

    def crop(self, frame: np.ndarray, name: str) -> np.ndarray:
        """The panel ``name`` cut out of a composed frame."""
        x0, y0, x1, y1 = self.boxes[name]
        return frame[y0:y1, x0:x1]

    def compose(self, panels: dict[str, np.ndarray | None]) -> np.ndarray:
        """A new frame: the canvas with each given panel (``panel`` x ``panel`` uint8) in its box;
        a missing (None) panel stays in the border colour."""
        frame = self.canvas.copy()
        for name, image in panels.items():
            if image is None:
                continue
            x0, y0, x1, y1 = self.boxes[name]
            frame[y0:y1, x0:x1] = image
        return frame

    @classmethod
    def for_reenactment(cls, cfg: RenderConfig, actor: str, driver: str, video: str | None = None) -> "Layout":
        if cfg.layout == "side_by_side":
            rows = [["driver", "actor"]]
        else:
            rows = [["frame", "paste"], ["driver", "actor"]]
        labels = None
        if cfg.labels:
            labels = {"driver": driver, "actor": actor, "frame": f"{driver}: {video}" if video else driver,
                      "paste": f"{actor} in {driver}'s frame"}
        return cls(rows, cfg.panel_size, cfg.border, cfg.border_color, labels, cfg.label_color)


# ----------------------------------------------------------------------------------- paste-back


def template_mask(size: int, template_scale: float = 1.0, template_offset_y: float = 0.0, feather: float = 0.08) -> np.ndarray:
    """Soft face mask (float32 ``size`` x ``size`` in [0, 1]) in aligned-crop coordinates.

    The polygon is the convex hull of the template's jaw line and eyebrows (the face the VAE
    draws); it is shrunk and blurred by ``feather`` (a fraction of the crop size) so that it is
    exactly 0 on and outside the hull and rises smoothly to 1 inside it.
    """
    from facevae.faces.align import template_landmarks

    pts = template_landmarks(size, template_scale, template_offset_y)[:27]
    hull = cv2.convexHull(np.round(pts * 16).astype(np.int32))
    hard = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(hard, hull, 255, lineType=cv2.LINE_AA, shift=4)
    width = max(feather * size, 1.0)
    sigma = width / 3.0
    erode = int(np.ceil(width / 2 + 2 * sigma))  # blur reach (3 sigma) stays inside the hull
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * erode + 1, 2 * erode + 1))
    inner = cv2.erode(hard, kernel)
    soft = cv2.GaussianBlur(inner.astype(np.float32) / 255.0, (0, 0), sigma)
    soft[hard == 0] = 0.0  # exactly zero outside the hull, whatever the blur's tails
    soft[soft < 1.0 / 255] = 0.0
    soft[soft > 1.0 - 1.0 / 255] = 1.0
    return soft


def match_color(face: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``face`` with each colour channel's mean inside ``mask`` moved to ``target``'s and its spread
    moved toward it (by at most a factor 1.25 either way: a blurred VAE face stretched to a sharp
    face's contrast looks painted). Both are aligned faces of one size."""
    w = mask > 0.5
    if w.sum() < 16:
        return face
    f, t = face.astype(np.float32), target.astype(np.float32)
    fm, fs = f[w].mean(axis=0), f[w].std(axis=0) + 1e-3
    tm, ts = t[w].mean(axis=0), t[w].std(axis=0)
    scale = np.clip(ts / fs, 0.8, 1.25)
    return np.clip((f - fm) * scale + tm + 0.5, 0, 255).astype(np.uint8)


class Paster:
    """Warp aligned faces back into full frames through the inverse crop<-frame transform.

    ``crop_size`` is the track's crop size (the transforms map frames to it); faces of any size
    (the VAE's 64 px) are scaled to it. The mask is built at ``mask_size`` px for a smooth edge.
    """

    def __init__(self, crop_size: int, template_scale: float = 1.0, template_offset_y: float = 0.0,
                 feather: float = 0.08, mask_size: int = 256, interpolation: str = "cubic"):
        self.crop_size = int(crop_size)
        self.mask_size = int(mask_size)
        self.mask = template_mask(self.mask_size, template_scale, template_offset_y, feather)
        self.flags = INTERPOLATIONS[interpolation] | cv2.WARP_INVERSE_MAP
        self._small_masks: dict[int, np.ndarray] = {}

    def mask_at(self, size: int) -> np.ndarray:
        """The face mask resized to an aligned face of ``size`` px."""
        if size not in self._small_masks:
            self._small_masks[size] = cv2.resize(self.mask, (size, size), interpolation=cv2.INTER_AREA)
        return self._small_masks[size]

    def _roi(self, m: np.ndarray, shape) -> tuple[int, int, int, int] | None:
        """Frame-pixel box (x0, y0, x1, y1) covering the crop square, clipped to the frame."""
        from facevae.faces.align import invert_transform, transform_points

        s = self.crop_size
        corners = transform_points(invert_transform(m), np.array([[0, 0], [s, 0], [0, s], [s, s]], float))
        h, w = shape[:2]
        x0, y0 = np.floor(corners.min(axis=0)).astype(int) - 2
        x1, y1 = np.ceil(corners.max(axis=0)).astype(int) + 2
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None

    @staticmethod
    def _shift(m: np.ndarray, scale: float, x0: int, y0: int) -> np.ndarray:
        """(scale * m) for destination pixels offset by (x0, y0): src = scale * m @ [u + x0, v + y0, 1]."""
        ms = np.asarray(m, np.float64) * scale
        ms[:, 2] += ms[:, :2] @ np.array([x0, y0], np.float64)
        return ms

    def alpha(self, m: np.ndarray, shape) -> np.ndarray:
        """The blend weight of the pasted face in frame coordinates (float32 H x W)."""
        out = np.zeros(shape[:2], np.float32)
        roi = self._roi(m, shape) if np.isfinite(m).all() else None
        if roi is None:
            return out
        x0, y0, x1, y1 = roi
        mm = self._shift(m, self.mask_size / self.crop_size, x0, y0)
        out[y0:y1, x0:x1] = cv2.warpAffine(self.mask, mm, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return out

    def paste(self, frame: np.ndarray, face: np.ndarray, m: np.ndarray) -> np.ndarray:
        """``frame`` with ``face`` (an aligned face of any square size) pasted through ``m`` (crop<-frame)."""
        out = frame.copy()
        if face is None or not np.isfinite(m).all():
            return out
        roi = self._roi(m, frame.shape)
        if roi is None:
            return out
        x0, y0, x1, y1 = roi
        size = (x1 - x0, y1 - y0)
        warped = cv2.warpAffine(face, self._shift(m, face.shape[0] / self.crop_size, x0, y0), size, flags=self.flags,
                                borderMode=cv2.BORDER_REPLICATE)
        alpha = cv2.warpAffine(self.mask, self._shift(m, self.mask_size / self.crop_size, x0, y0), size,
                               flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        a = alpha[..., None]
        region = out[y0:y1, x0:x1].astype(np.float32)
        blended = region + a * (warped.astype(np.float32) - region)
        out[y0:y1, x0:x1] = np.where(a > 0, np.clip(blended + 0.5, 0, 255), region).astype(np.uint8)
        return out


# ------------------------------------------------------------------------------------------ video


def fps_text(fps: float) -> str:
    """ffmpeg frame-rate text: NTSC rates as exact fractions (29.97 -> 30000/1001)."""
    for base in (24, 30, 60, 120):
        if abs(fps - base * 1000 / 1001) < 0.005:
            return f"{base * 1000}/1001"
    return f"{fps:.6g}"


class VideoWriter:
    """Stream RGB frames into an H.264 mp4 through ffmpeg, optionally with another file's audio.

    Written to a temporary file beside ``path`` and moved into place by :meth:`close` (after the
    encoder succeeded), so no partial video is ever left under the final name::

        with VideoWriter(path, width, height, fps, audio_from=driver_mp4) as out:
            out.write(frame)
    """

    def __init__(self, path, width: int, height: int, fps: float, audio_from=None, crf: int = 18,
                 preset: str = "veryfast", metadata: dict | None = None, threads: int = 0):
        self.path = Path(path)
        self.tmp = temp_path(self.path, self.path.suffix)  # ffmpeg picks the container from the suffix
        self.width, self.height, self.frames = int(width), int(height), 0
        cmd = [vid.ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{self.width}x{self.height}", "-r", fps_text(fps), "-i", "-"]
        if audio_from:
            cmd += ["-i", str(audio_from), "-map", "0:v:0", "-map", "1:a:0", "-c:a", "copy"]
        cmd += ["-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", "-c:v", "libx264", "-preset", preset, "-crf", str(crf),
                "-pix_fmt", "yuv420p", "-movflags", "+faststart"]
        if threads:
            cmd += ["-threads", str(threads)]
        for key, value in (metadata or {}).items():
            cmd += ["-metadata", f"{key}={value}"]
        cmd.append(str(self.tmp))
        self._err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=self._err)
        self.encode_seconds = 0.0  # time blocked handing frames to the encoder

    def write(self, frame: np.ndarray) -> None:
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise FacevaeError(f"frame {frame.shape} {frame.dtype} does not match the video's {self.height}x{self.width}x3 uint8")
        start = time.perf_counter()
        try:
            self.proc.stdin.write(np.ascontiguousarray(frame).data)
        except BrokenPipeError:
            self._fail("the encoder stopped taking frames")
        self.encode_seconds += time.perf_counter() - start
        self.frames += 1

    def _fail(self, what: str):
        self.proc.kill()
        self.proc.wait()
        self._err.seek(0)
        tail = " | ".join(self._err.read().decode(errors="replace").strip().splitlines()[-3:])
        self.tmp.unlink(missing_ok=True)
        raise vid.VideoError(self.path, f"{what}: {tail or 'ffmpeg exit ' + str(self.proc.returncode)}")

    def close(self) -> Path:
        start = time.perf_counter()
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        code = self.proc.wait()
        self.encode_seconds += time.perf_counter() - start
        if code != 0:
            self._fail("encoding failed")
        os.replace(self.tmp, self.path)
        self._err.close()
        return self.path

    def abort(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.tmp.unlink(missing_ok=True)
        self._err.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False


def read_frames(path) -> Iterator[np.ndarray]:
    """Decoded RGB frames of a video, streamed (imageio-ffmpeg), as H x W x 3 uint8 arrays."""
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    w, h = meta["size"]
    try:
        for raw in reader:
            yield np.frombuffer(raw, np.uint8).reshape(h, w, 3)
    finally:
        reader.close()


# ------------------------------------------------------------------------------------------ track


ALIGN_FIELDS = ("size", "template_scale", "template_offset_y", "points")


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
        from facevae.faces.align import AlignConfig

        if all(key in self.attrs for key in ALIGN_FIELDS):
            cfg = AlignConfig.from_attrs(self.attrs)
        else:
            log.warning("%s has no alignment attributes; assuming the default template", self.path)
            cfg = AlignConfig(size=self.crop_size)
        return dataclasses.replace(cfg, size=size) if size is not None else cfg

    def read_crops(self, start: int, stop: int, size: int = FACE_SIZE) -> np.ndarray:
        """Crops of frames [start, stop) as uint8 (n, size, size, 3) (resized if the track's differ)."""
        crops = self.crops[start:stop]
        if crops.shape[1] != size:
            crops = np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA) for c in crops]) if len(crops) else \
                np.zeros((0, size, size, 3), np.uint8)
        return crops

    def close(self):
        self._h5.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


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


def pick_device(name: str = "auto") -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


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


class Codec:
    """An actor model's encoder (posterior mean) and decoder, made fast for inference.

    Same contract as ``modelio.encode`` / ``modelio.decode`` (uint8 NHWC faces <-> float32 codes),
    but the network runs on a channels-last copy of the weights under ``torch.inference_mode`` --
    on the CPU about twice the frames per second of the default layout, for the same numbers up to
    float rounding.
    """

    def __init__(self, model, batch_size: int = 256):
        import copy

        import torch

        self.batch_size = batch_size
        self.device = next(model.parameters()).device
        self.latent_dim = model.config.latent_dim
        self.model = copy.deepcopy(model).eval().to(memory_format=torch.channels_last)

    def encode(self, images: np.ndarray) -> np.ndarray:
        import torch

        from facevae import modelio

        out = []
        with torch.inference_mode():
            for i in range(0, len(images), self.batch_size):
                x = modelio.images_to_tensor(images[i : i + self.batch_size], self.device)
                mu, _ = self.model.encode(x.contiguous(memory_format=torch.channels_last))
                out.append(mu.float().cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, self.latent_dim), np.float32)

    def decode(self, z: np.ndarray) -> np.ndarray:
        import torch

        from facevae import modelio

        z = torch.as_tensor(np.asarray(z, np.float32))
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise FacevaeError(f"latent codes must be N x {self.latent_dim}, got {tuple(z.shape)}")
        out = []
        with torch.inference_mode():
            for i in range(0, len(z), self.batch_size):
                logits = self.model.decode(z[i : i + self.batch_size].to(self.device))
                out.append(modelio.tensor_to_images(torch.sigmoid(logits.float())))
        return np.concatenate(out) if out else np.zeros((0, FACE_SIZE, FACE_SIZE, 3), np.uint8)


def encode_track(codec: Codec, track: DriverTrack, chunk: int = 512) -> np.ndarray:
    """Posterior means of every kept frame's crop; (N, D) float32 with NaN rows for other frames."""
    z = np.full((track.n, codec.latent_dim), np.nan, np.float32)
    for start in range(0, track.n, chunk):
        stop = min(start + chunk, track.n)
        keep = track.kept[start:stop]
        if keep.any():
            crops = track.read_crops(start, stop)[keep]
            z[start:stop][keep] = codec.encode(crops)
    return z


SHARPEN_SIGMA = 3.0 / 64  # unsharp-mask radius, as a fraction of the face size (3 px at 64 px)


def sharpen(faces: np.ndarray, amount: float) -> np.ndarray:
    """Unsharp mask: ``face + amount * (face - gaussian(face))``, radius ``SHARPEN_SIGMA`` of the size.

    dlib's predictor loses the lips on blurred faces -- VAE output is blurred -- and an unsharp mask
    gives it back edges to lock on (measured on lp_d6: with the driver's own crops blurred by a
    2.5 px Gaussian, the mouth-ratio correlation with the full-frame landmarks rises from 0.02 to
    about 0.5 with amount 2.5; on sharp crops it stays at 0.88)."""
    if amount <= 0 or len(faces) == 0:
        return faces
    sigma = SHARPEN_SIGMA * faces.shape[1]
    out = np.empty_like(faces)
    for i, face in enumerate(faces):
        f = face.astype(np.float32)
        out[i] = np.clip(f + amount * (f - cv2.GaussianBlur(f, (0, 0), sigma)) + 0.5, 0, 255).astype(np.uint8)
    return out


def measure_faces(faces: np.ndarray, align_cfg, upscale: int, sharpen_amount: float = 0.0) -> np.ndarray:
    """68 landmarks (crop px) predicted on aligned faces upscaled ``upscale`` times with the
    template's face box (``facevae.faces.measure.crop_landmarks``), after an optional unsharp mask."""
    from facevae.faces.measure import crop_landmarks

    if len(faces) == 0:
        return np.zeros((0, 68, 2), np.float32)
    return crop_landmarks(np.ascontiguousarray(sharpen(faces, sharpen_amount)), align_cfg, upscale=upscale)


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
    chunk: int = 256,
    score: bool = True,
    progress: bool = True,
) -> dict:
    """Render one driver video through one actor's model.

    ``outputs``: ``video`` (composite mp4), and optionally ``paste`` (full-frame face swap mp4),
    ``score`` (expression-transfer TSV), ``series`` (per-frame TSV), ``plot`` (PNG of the series),
    ``sheet`` (PNG of a few composed frames). Returns a summary dict (frames, timings, scores).
    """
    from facevae import modelio
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
        if not kept.any():
            log.warning("%s: no kept face in any frame; every panel is blank", track_path)
        t0 = time.perf_counter()
        z = encode_track(codec, track)
        z = smooth_latents(z, kept, cfg.smooth)
        if cfg.edit:
            z = (z + edit_vector(attributes_path, cfg.edit, model.config.latent_dim)).astype(np.float32)
        timings.encode_decode += time.perf_counter() - t0
        shown = shown_index(kept, cfg.missing)
        layout = Layout.for_reenactment(cfg, actor, driver, video)
        need_frames = cfg.layout == "grid" or "paste" in outputs
        paster = None
        if need_frames:
            geometry = track.align_config()
            paster = Paster(track.crop_size, geometry.template_scale, geometry.template_offset_y, cfg.feather,
                            interpolation=cfg.interpolation)
        description = json.dumps({"facevae": __version__, "actor": actor, "driver": driver, "video": video,
                                  "layout": cfg.layout, "smooth": cfg.smooth, "edit": cfg.edit, "missing": cfg.missing})
        audio = video_path if has_audio else None
        writer = VideoWriter(outputs["video"], layout.width, layout.height, fps, audio, cfg.crf, cfg.preset,
                             metadata={"comment": description})
        paste_writer = None
        frames_iter = read_frames(video_path) if need_frames else None
        last_frame = None
        sheet_at = set(np.linspace(0, max(n - 1, 0), 6).round().astype(int).tolist()) if outputs.get("sheet") else set()
        sheet_frames = []
        align64 = track.align_config(FACE_SIZE)
        ratios = {f"{who}_{key}": np.full(n, np.nan) for key in ("mouth", "eye") for who in ("driver", "actor", "instrument")}
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
                    for _ in range(stop - start):
                        frame = next(frames_iter, None)
                        if frame is None:  # the decoder gave fewer frames than the track: repeat the last
                            frame = frames[-1] if frames else last_frame
                        frames.append(frame)
                        last_frame = frame
                timings.read += time.perf_counter() - t0
                t0 = time.perf_counter()
                keep = kept[start:stop]
                faces = codec.decode(z[start:stop][keep]) if keep.any() else np.zeros((0, 64, 64, 3), np.uint8)
                timings.encode_decode += time.perf_counter() - t0
                if score and keep.any():
                    t0 = time.perf_counter()
                    from facevae.expression import eye_open_ratio, mouth_open_ratio

                    # The driver: the track's landmarks, measured on its full-resolution frames. The
                    # actor: predicted on the rendered faces. The driver's crops through the actor's
                    # instrument give the instrument's own ceiling (instrument_pearson).
                    lm_d = track.landmarks[start:stop][keep]
                    lm_i = measure_faces(crops[keep], align64, cfg.score_upscale, cfg.score_sharpen)
                    lm_a = measure_faces(faces, align64, cfg.score_upscale, cfg.score_sharpen)
                    sl = np.arange(start, stop)[keep]
                    for key, fn in (("mouth", mouth_open_ratio), ("eye", eye_open_ratio)):
                        ratios[f"driver_{key}"][sl] = fn(lm_d)
                        ratios[f"actor_{key}"][sl] = fn(lm_a)
                        ratios[f"instrument_{key}"][sl] = fn(lm_i)
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
            "width": layout.width, "height": layout.height,
        }
        if score:
            summary["scores"] = write_score_outputs(outputs, ratios, track, kept, actor, driver, video, cfg)
        if outputs.get("sheet"):
            write_sheet(outputs["sheet"], sheet_frames)
    log.info("rendered %d frames (%d with a kept face) in %.1f s: %s", n, int(kept.sum()), summary["seconds"],
             {k: round(v, 2) for k, v in timings.as_dict().items()})
    return summary


# ------------------------------------------------------------------------------- score outputs


def write_sheet(path, frames: list[np.ndarray], cols: int = 2) -> None:
    """A contact sheet of composed frames (grid, ``cols`` wide)."""
    if not frames:
        frames = [np.zeros((64, 64, 3), np.uint8)]
    h, w = frames[0].shape[:2]
    rows = -(-len(frames) // cols)
    sheet = np.zeros((rows * h, cols * w, 3), np.uint8)
    for k, f in enumerate(frames):
        r, c = divmod(k, cols)
        sheet[r * h : (r + 1) * h, c * w : (c + 1) * w] = f
    write_png(path, sheet)


def score_table(ratios: dict, n_frames: int, seed: int = 0, permutations: int = 1000):
    """One row per measure (mouth_open, eye_open): the transfer score and its controls.

    ``pearson``: driver series (track landmarks) against the rendered actor's series, over the
    frames with a kept face; ``shuffled_*`` and ``circular_*``: the same with the actor series
    shuffled in time or circularly shifted (the chance level, see ``expression.transfer_score``);
    ``instrument_pearson``: the driver series against the driver's own crops measured the way
    the actor's faces are -- the most the instrument can show on real faces.
    """
    import pandas as pd

    from facevae.expression import pearson, transfer_score

    rows = []
    for measure, key in (("mouth_open", "mouth"), ("eye_open", "eye")):
        d, a = ratios[f"driver_{key}"], ratios[f"actor_{key}"]
        s = transfer_score(d, a, seed=seed, permutations=permutations)
        rows.append({
            "measure": measure,
            "frames": n_frames,
            "scored_frames": s["frames"],
            "pearson": s["pearson"],
            "shuffled_pearson": s["shuffled_pearson"],
            "shuffled_mean": s["shuffled_mean"],
            "shuffled_p95": s["shuffled_p95"],
            "p_shuffle": s["p_shuffle"],
            "circular_pearson": s["circular_pearson"],
            "circular_p95": s["circular_p95"],
            "instrument_pearson": pearson(d, ratios[f"instrument_{key}"]) if f"instrument_{key}" in ratios else np.nan,
            "driver_mean": float(np.nanmean(d)) if np.isfinite(d).any() else np.nan,
            "driver_std": float(np.nanstd(d)) if np.isfinite(d).any() else np.nan,
            "actor_mean": float(np.nanmean(a)) if np.isfinite(a).any() else np.nan,
            "actor_std": float(np.nanstd(a)) if np.isfinite(a).any() else np.nan,
            "seed": seed,
            "permutations": permutations,
        })
    return pd.DataFrame(rows)


def write_score_outputs(outputs, ratios, track: DriverTrack, kept, actor, driver, video, cfg: RenderConfig) -> dict:
    import pandas as pd

    table = score_table(ratios, track.n, cfg.seed, cfg.score_permutations)
    table.insert(0, "video", video)
    table.insert(0, "driver", driver)
    table.insert(0, "actor", actor)
    if outputs.get("score"):
        write_text(outputs["score"], table.to_csv(sep="\t", index=False, float_format="%.6g"))
    if outputs.get("series"):
        series = pd.DataFrame({"frame": track.frame, "time": track.time, "kept": kept.astype(int), **ratios})
        write_text(outputs["series"], series.to_csv(sep="\t", index=False, float_format="%.6g"))
    if outputs.get("plot"):
        plot_series(outputs["plot"], track.time, ratios, table, f"{actor} driven by {driver} ({video})")
    return {row["measure"]: {k: row[k] for k in ("pearson", "shuffled_pearson", "circular_p95", "scored_frames")}
            for row in table.to_dict("records")}


def plot_series(path, t, ratios, table, title) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True)
    for ax, (measure, key) in zip(axes, (("mouth_open", "mouth"), ("eye_open", "eye"))):
        row = table[table.measure == measure].iloc[0]
        ax.plot(t, ratios[f"driver_{key}"], lw=1.2, label="driver")
        ax.plot(t, ratios[f"actor_{key}"], lw=1.2, label="actor (rendered)")
        ax.plot(t, ratios[f"instrument_{key}"], lw=0.8, ls=":", color="grey", label="driver crop, actor's instrument")
        ax.set_ylabel(f"{measure} ratio")
        ax.set_title(f"{measure}: r = {row.pearson:.3f}, shuffled r = {row.shuffled_pearson:.3f}, "
                     f"circular-shift |r| p95 = {row.circular_p95:.3f}, instrument r = {row.instrument_pearson:.3f}", fontsize=9)
        ax.legend(loc="upper right", fontsize=8)
    axes[-1].set_xlabel("time (s)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
