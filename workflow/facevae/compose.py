"""Compositing for the render stage: panels on a canvas, and aligned faces pasted back into frames.

:class:`Layout` draws the canvas once (borders, name labels) and places square panels on it;
:func:`resize_face` and :func:`letterbox` make the panels. :class:`Paster` warps an aligned face
back into the driver's full frame through the inverse of the stored crop<-frame similarity,
blended with the feathered :func:`template_mask` (optionally after :func:`match_color`) -- the
face-swap view. :func:`write_sheet` writes a contact sheet of composed frames.
"""

from __future__ import annotations

import cv2
import numpy as np

from facevae import FACE_SIZE, FacevaeError
from facevae.atomic import write_png
from facevae import sheets
from facevae.faces.align import invert_transform, template_landmarks, transform_points

INTERPOLATIONS = {
    "nearest": cv2.INTER_NEAREST,
    "linear": cv2.INTER_LINEAR,
    "cubic": cv2.INTER_CUBIC,
    "lanczos": cv2.INTER_LANCZOS4,
    "area": cv2.INTER_AREA,
}


def parse_color(value) -> tuple[int, int, int]:
    """"#rrggbb" (or a list of three 0-255 ints) -> (r, g, b)."""
    if isinstance(value, (list, tuple)) and len(value) == 3:
        return tuple(int(v) for v in value)  # type: ignore[return-value]
    text = str(value).lstrip("#")
    if len(text) != 6:
        raise FacevaeError(f"colour must be '#rrggbb', got {value!r}")
    return tuple(int(text[i : i + 2], 16) for i in (0, 2, 4))  # type: ignore[return-value]


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
    def for_reenactment(cls, cfg, actor: str, driver: str, video: str | None = None) -> "Layout":
        """The reenactment canvas. ``cfg`` is a :class:`facevae.render.RenderConfig` (read by duck
        typing: ``layout``, ``labels``, ``panel_size``, ``border``, ``border_color``, ``label_color``)."""
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


# --------------------------------------------------------------------------------- contact sheet


def write_sheet(path, frames: list[np.ndarray], cols: int = 2) -> None:
    """A contact sheet of composed frames (grid, ``cols`` wide)."""
    if not frames:
        frames = [np.zeros((FACE_SIZE, FACE_SIZE, 3), np.uint8)]
    write_png(path, sheets.tile(frames, cols, min_width=cols * frames[0].shape[1]))
