"""Face detector + 68-point landmark backends behind one small interface.

``make_aligner(name)`` returns an object with ``name``, ``detect(rgb) -> list[Face]`` and the two
halves of ``detect`` that the video tracker uses separately:

- ``find_boxes(rgb) -> list[(box, score)]``: the detector alone (the tracker runs it on downscaled
  frames and on small regions around the previous face);
- ``landmarks(rgb, boxes) -> list[(68, 2) float32]``: the landmark model started from given boxes
  (run on the full-resolution frame).

Backends (package imports stay inside each, so a missing optional package breaks nothing else):

- ``dlib``: dlib's HOG frontal face detector and 68-point shape predictor from the PyPI packages
  dlib-bin + face-recognition-models. Offline; what tests and CI use.
- ``face_alignment``: the face-alignment package (FAN landmarks; its ``sfd`` or ``blazeface``
  detector). Its weights come from the torch hub cache (``$TORCH_HOME/hub/checkpoints``, default
  ``~/.cache/torch/hub/checkpoints``); it would download them on first use, so a machine without
  network gets one error naming the missing file and where to put it.
- ``auto``: face_alignment when its weights are already on disk, else dlib.

Landmarks are in the iBUG-300W 68-point order, in pixels of the image passed in.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from facevae import FacevaeError

log = logging.getLogger(__name__)

#: dlib's HOG detector scans an 80x80 window: smaller faces need an upscaled image.
DLIB_MIN_FACE = 80

Box = tuple[float, float, float, float]


@dataclass
class Face:
    """One detected face: box (x0, y0, x1, y1) and 68 iBUG landmarks, in pixels of the image given."""

    box: Box
    score: float
    landmarks: np.ndarray = field(repr=False)  # float32 (68, 2)


def _as_rgb(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise FacevaeError(f"expected an RGB uint8 image HxWx3, got {rgb.dtype} {rgb.shape}")
    return np.ascontiguousarray(rgb)


def _resize(img: np.ndarray, factor: float) -> np.ndarray:
    if abs(factor - 1.0) < 1e-6:
        return img
    interp = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    h, w = img.shape[:2]
    return cv2.resize(img, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=interp)


def from_scaled(pts: np.ndarray, factor: float) -> np.ndarray:
    """Pixel coordinates in an image resized by ``factor`` -> coordinates in the original.

    Pixel centres are at integer coordinates: x_big = (x + 0.5) * factor - 0.5."""
    return ((np.asarray(pts, dtype=np.float64) + 0.5) / factor - 0.5).astype(np.float32)


class DlibAligner:
    """dlib HOG detector + 68-point shape predictor.

    ``upsample``: the image is enlarged by this factor before detection AND landmarking (results
    are mapped back to the original pixels). dlib's HOG finds faces from about 80 px wide, so small
    images need it: CelebA's 89x109 images (faces ~45 px) work with ``upsample=2``.
    ``detect_scale``: extra factor for detection only (< 1 detects on a downscaled image, faster;
    landmarks still use the full image). ``threshold``: dlib's detection score threshold
    (``adjust_threshold``; higher = stricter).
    """

    name = "dlib"

    def __init__(self, upsample: float = 1.0, detect_scale: float = 1.0, threshold: float = 0.0, device: str = "cpu"):
        import dlib

        from facevae.faces.dlib_files import PREDICTOR_68, dlib_model

        if upsample <= 0 or detect_scale <= 0:
            raise FacevaeError(f"dlib aligner: upsample and detect_scale must be > 0 (got {upsample}, {detect_scale})")
        self.upsample = float(upsample)
        self.detect_scale = float(detect_scale)
        self.threshold = float(threshold)
        self.device = device  # dlib-bin runs on the CPU; kept for a uniform interface
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(dlib_model(PREDICTOR_68))

    def find_boxes(self, rgb: np.ndarray, scale: float | None = None) -> list[tuple[Box, float]]:
        """Detector only: [(box, score)] best first, boxes in pixels of ``rgb``.

        ``scale`` (default ``upsample * detect_scale``) resizes the image the detector sees."""
        rgb = _as_rgb(rgb)
        factor = self.upsample * self.detect_scale if scale is None else float(scale)
        img = _resize(rgb, factor)
        rects, scores, _ = self._detector.run(img, 0, self.threshold)
        found = [
            ((r.left() / factor, r.top() / factor, (r.right() + 1) / factor, (r.bottom() + 1) / factor), float(s))
            for r, s in zip(rects, scores)
        ]
        return sorted(found, key=lambda item: -item[1])

    def landmarks(self, rgb: np.ndarray, boxes: list[Box]) -> list[np.ndarray]:
        """68 landmarks per box (float32 (68, 2), pixels of ``rgb``), the predictor started from each box."""
        rgb = np.asarray(rgb)
        img = _resize(_as_rgb(rgb), self.upsample) if self.upsample != 1.0 else rgb
        out = []
        for box in boxes:
            x0, y0, x1, y1 = (int(round(v * self.upsample)) for v in box)
            # The predictor only looks near the box: hand it that region (converting a whole frame
            # to dlib's image type costs as much as the prediction itself).
            pad = max(x1 - x0, y1 - y0) // 2 + 2
            ox, oy = max(0, x0 - pad), max(0, y0 - pad)
            region = np.ascontiguousarray(img[oy:max(oy + 1, y1 + pad), ox:max(ox + 1, x1 + pad)])
            rect = self._dlib.rectangle(x0 - ox, y0 - oy, x1 - ox - 1, y1 - oy - 1)
            shape = self._predictor(region, rect)
            pts = np.array([(p.x + ox, p.y + oy) for p in shape.parts()], dtype=np.float32)
            out.append(from_scaled(pts, self.upsample) if self.upsample != 1.0 else pts)
        return out

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """Every face in an RGB uint8 image, best score first."""
        found = self.find_boxes(rgb)
        marks = self.landmarks(rgb, [box for box, _ in found])
        return [Face(box=box, score=score, landmarks=lm) for (box, score), lm in zip(found, marks)]


# --- face_alignment ---------------------------------------------------------------------------

FA_DETECTORS = ("sfd", "blazeface")


def torch_hub_checkpoints() -> Path:
    """The folder face-alignment downloads weights into (torch hub's ``checkpoints``)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def _url_name(url: str) -> str:
    from urllib.parse import urlparse

    return os.path.basename(urlparse(url).path)


def face_alignment_files(detector: str = "sfd", detector_path: str | None = None, anchors_path: str | None = None) -> list[tuple[Path, str]]:
    """Every weight file face-alignment needs for 2D landmarks with ``detector``: [(path, url)].

    Paths are where face-alignment looks (the torch hub cache) unless given explicitly."""
    from face_alignment import api

    if detector not in FA_DETECTORS:
        raise FacevaeError(f"faces.face_alignment.detector must be one of {', '.join(FA_DETECTORS)}, got {detector!r}")
    hub = torch_hub_checkpoints()
    fan_url = api.models_urls["2DFAN-4"]
    files = [(hub / _url_name(fan_url), fan_url)]
    if detector == "sfd":
        from face_alignment.detection.sfd import sfd_detector

        url = sfd_detector.models_urls["s3fd"]
        files.append((Path(detector_path) if detector_path else hub / _url_name(url), url))
    else:
        from face_alignment.detection.blazeface import blazeface_detector

        urls = blazeface_detector.models_urls
        if bool(detector_path) != bool(anchors_path):
            raise FacevaeError("faces.face_alignment: blazeface needs both detector_path and anchors_path (or neither)")
        files.append((Path(detector_path) if detector_path else hub / _url_name(urls["blazeface_weights"]), urls["blazeface_weights"]))
        files.append((Path(anchors_path) if anchors_path else hub / _url_name(urls["blazeface_anchors"]), urls["blazeface_anchors"]))
    return files


def missing_face_alignment_files(**kw) -> list[tuple[Path, str]]:
    return [(path, url) for path, url in face_alignment_files(**kw) if not path.is_file()]


class FaceAlignmentAligner:
    """The face-alignment package: its detector (sfd or blazeface) + the 2D FAN landmark network."""

    name = "face_alignment"

    def __init__(
        self,
        device: str = "cpu",
        detector: str = "sfd",
        detector_path: str | None = None,
        anchors_path: str | None = None,
        compile: bool = False,
        flip_input: bool = False,
        threshold: float | None = None,
    ):
        try:
            import face_alignment
        except ImportError as err:
            raise FacevaeError(f"faces.aligner is face_alignment but the package cannot be imported ({err}): "
                               "pip install face-alignment==1.5.0, or set faces.aligner: dlib") from None
        missing = missing_face_alignment_files(detector=detector, detector_path=detector_path, anchors_path=anchors_path)
        if missing:
            lines = "; ".join(f"{path} (download {url} and save it under exactly that name)" for path, url in missing)
            raise FacevaeError(
                f"face_alignment weights missing: {lines}. face-alignment looks for them in the torch hub cache "
                f"{torch_hub_checkpoints()} (set TORCH_HOME to move it); this machine cannot download them. "
                "Or set faces.aligner: dlib (or auto)."
            )
        kwargs = {}
        if detector_path:
            kwargs["path_to_detector"] = str(detector_path)
        if anchors_path:
            kwargs["path_to_anchor"] = str(anchors_path)
        if threshold is not None:
            kwargs["min_score_thresh" if detector == "blazeface" else "filter_threshold"] = float(threshold)
        self.device = device
        self.detector = detector
        self._fa = face_alignment.FaceAlignment(
            face_alignment.LandmarksType.TWO_D,
            device=device,
            face_detector=detector,
            face_detector_kwargs=kwargs,
            compile=compile,
            flip_input=flip_input,
        )

    def find_boxes(self, rgb: np.ndarray, scale: float | None = None) -> list[tuple[Box, float]]:
        rgb = _as_rgb(rgb)
        factor = 1.0 if scale is None else float(scale)
        img = _resize(rgb, factor)
        found = self._fa.face_detector.detect_from_image(img.copy())
        found = [] if found is None else list(found)
        out = [((float(b[0]) / factor, float(b[1]) / factor, float(b[2]) / factor, float(b[3]) / factor), float(b[4])) for b in found]
        return sorted(out, key=lambda item: -item[1])

    def landmarks(self, rgb: np.ndarray, boxes: list[Box]) -> list[np.ndarray]:
        if not boxes:
            return []
        rgb = _as_rgb(rgb)
        dets = [np.array([*box, 1.0], dtype=np.float64) for box in boxes]
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            marks = self._fa.get_landmarks_from_image(rgb, detected_faces=dets)
        return [np.asarray(m, dtype=np.float32)[:, :2] for m in marks]

    def detect(self, rgb: np.ndarray) -> list[Face]:
        found = self.find_boxes(rgb)
        marks = self.landmarks(rgb, [box for box, _ in found])
        return [Face(box=box, score=score, landmarks=lm) for (box, score), lm in zip(found, marks)]


def face_alignment_available(**fa_kw) -> bool:
    """Whether face_alignment can run offline: the package imports and its weights are on disk."""
    try:
        return not missing_face_alignment_files(**fa_kw)
    except ImportError:
        return False


_FA_KEYS = ("detector", "detector_path", "anchors_path", "compile", "flip_input")


def make_aligner(name: str = "auto", device: str = "cpu", **kw):
    """An aligner by name: ``auto`` | ``dlib`` | ``face_alignment``.

    Keyword arguments go to the backend that is built: dlib takes ``upsample``, ``detect_scale``,
    ``threshold``; face_alignment takes ``detector`` (sfd | blazeface), ``detector_path``,
    ``anchors_path``, ``compile``, ``flip_input``, ``threshold``. Keys meant for the other backend
    are ignored, so one config section can hold both.
    """
    fa_kw = {k: v for k, v in kw.items() if k in _FA_KEYS + ("threshold",)}
    dlib_kw = {k: v for k, v in kw.items() if k in ("upsample", "detect_scale", "threshold")}
    if name == "auto":
        files_kw = {k: fa_kw[k] for k in ("detector", "detector_path", "anchors_path") if k in fa_kw}
        name = "face_alignment" if face_alignment_available(**files_kw) else "dlib"
        log.info("aligner auto -> %s", name)
    if name == "dlib":
        return DlibAligner(device=device, **dlib_kw)
    if name == "face_alignment":
        return FaceAlignmentAligner(device=device, **fa_kw)
    raise FacevaeError(f"faces.aligner must be auto, dlib or face_alignment, got {name!r}")


def aligner_kwargs(faces_cfg: dict) -> dict:
    """make_aligner keyword arguments from the config's ``faces`` section."""
    fa = dict(faces_cfg.get("face_alignment") or {})
    return {
        "name": faces_cfg.get("aligner", "auto"),
        "device": faces_cfg.get("device", "cpu"),
        **{k: fa[k] for k in _FA_KEYS if fa.get(k) is not None},
    }
