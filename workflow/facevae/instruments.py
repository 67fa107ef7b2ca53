"""Instruments that read aligned 64x64 faces: expression ratios and identity, used to score renders.

Two landmark models measure mouth and eye opening on a face (driver crop or rendered actor face):

- :class:`MeshInstrument` -- MediaPipe's face mesh (468 points, its own detector). It plays no
  part in driving, so it is the *independent* instrument: driving through dlib landmarks and then
  scoring with dlib would count dlib's own errors as transfer. A face it cannot find is NaN.
- :func:`dlib_ratios` -- dlib's 68-point predictor started from the template's face box (no
  detector, so it always answers), after an unsharp mask (VAE faces are blurred).

:func:`face_descriptors` gives dlib's 128-d identity descriptor of aligned faces, upscaled the same
way for every face so that distances between driver crops, actor crops and renders compare.

MediaPipe 0.10.14 is installed with ``--no-deps`` (its own dependency list pins an OpenCV and a
protobuf that clash with the project's); ``make install`` does that.
"""

from __future__ import annotations

import functools
import os
import warnings

import cv2
import numpy as np

from facevae import FacevaeError
from facevae.expression import eye_open_ratio, mouth_open_ratio
from facevae.faces.align import AlignConfig

INSTRUMENTS = ("mesh", "dlib")

# MediaPipe face-mesh indices (canonical 468-point topology).
MESH_LIPS = [(13, 14), (82, 87), (312, 317)]  # inner upper lip -> inner lower lip
MESH_EYELIDS = [(159, 145), (158, 153), (160, 144), (386, 374), (385, 380), (387, 373)]
MESH_EYE_CORNERS = ((33, 133), (362, 263))  # each eye's outer and inner corner

SHARPEN_SIGMA = 3.0 / 64  # unsharp-mask radius, as a fraction of the face size (3 px at 64 px)


def _mesh_module():
    # MediaPipe's C++ side logs through glog straight to file descriptor 2 (past Python's logging and
    # the rule's log redirection): keep its INFO/WARNING chatter off the user's console.
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        with warnings.catch_warnings():  # protobuf's deprecation notice about MediaPipe's generated code
            warnings.simplefilter("ignore", UserWarning)
            from mediapipe.python.solutions import face_mesh
    except ImportError as err:  # the independent instrument is not optional for scoring
        raise FacevaeError(
            "the reenactment score's independent instrument needs MediaPipe 0.10.14 "
            f"(`pip install --no-deps mediapipe==0.10.14`, as `make install` does): {err}"
        ) from None
    return face_mesh


class MeshInstrument:
    """Mouth- and eye-opening ratios from MediaPipe's face mesh on aligned faces.

    Each face is enlarged ``upscale`` times and read in still-image mode (no tracking between
    frames, so one frame's answer never leaks into the next). Ratios are gaps divided by the
    distance between the eye centres (each the mean of the eye's two corners), like
    :mod:`facevae.expression`'s. Measured on the pipeline's crops: the mesh finds the face on every
    kept 64x64 crop of lp_d6 at ``upscale`` 2-4, ~10 ms a face on one core.
    """

    def __init__(self, upscale: int = 4, min_confidence: float = 0.3):
        self.upscale = int(upscale)
        with warnings.catch_warnings():  # protobuf's deprecation notice about MediaPipe's generated code
            warnings.simplefilter("ignore", UserWarning)
            self._mesh = _mesh_module().FaceMesh(
                static_image_mode=True, max_num_faces=1, refine_landmarks=False, min_detection_confidence=min_confidence
            )

    def points(self, face: np.ndarray) -> np.ndarray | None:
        """The mesh's 468 (x, y) points in the face's pixels, or None when it finds no face."""
        big = cv2.resize(np.ascontiguousarray(face), None, fx=self.upscale, fy=self.upscale, interpolation=cv2.INTER_CUBIC)
        result = self._mesh.process(big)
        if not result.multi_face_landmarks:
            return None
        size = face.shape[0]
        return np.array([(p.x * size, p.y * size) for p in result.multi_face_landmarks[0].landmark], np.float64)

    def ratios(self, faces: np.ndarray) -> np.ndarray:
        """(N, 2) float64: mouth-opening and eye-opening ratio of each face; NaN where none is found."""
        out = np.full((len(faces), 2), np.nan)
        for i, face in enumerate(faces):
            p = self.points(face)
            if p is None:
                continue
            centres = [(p[a] + p[b]) / 2 for a, b in MESH_EYE_CORNERS]
            iod = np.linalg.norm(centres[1] - centres[0])
            if iod <= 0:
                continue
            out[i, 0] = np.mean([np.linalg.norm(p[a] - p[b]) for a, b in MESH_LIPS]) / iod
            out[i, 1] = np.mean([np.linalg.norm(p[a] - p[b]) for a, b in MESH_EYELIDS]) / iod
        return out

    def close(self) -> None:
        self._mesh.close()


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


def landmark_ratios(landmarks: np.ndarray) -> np.ndarray:
    """(N, 2): mouth- and eye-opening ratios of 68-point landmarks."""
    return np.stack([mouth_open_ratio(landmarks), eye_open_ratio(landmarks)], axis=1) if len(landmarks) else np.zeros((0, 2))


def dlib_ratios(faces: np.ndarray, align_cfg: AlignConfig, upscale: int = 4, sharpen_amount: float = 2.5) -> np.ndarray:
    """(N, 2): mouth- and eye-opening ratios from dlib's 68 points re-measured on aligned faces."""
    return landmark_ratios(measure_faces(faces, align_cfg, upscale, sharpen_amount))


@functools.lru_cache(maxsize=1)
def _descriptor_model():
    import dlib

    from facevae.faces.dlib_files import DESCRIPTOR, dlib_model

    return dlib.face_recognition_model_v1(dlib_model(DESCRIPTOR))


def mean_descriptor(faces: np.ndarray, align_cfg: AlignConfig, upscale: int = 4, most: int = 100) -> np.ndarray:
    """(128,) mean dlib descriptor of up to ``most`` evenly spread faces (a person's identity
    reference: the reenact job computes the actor's once, for render.drive auto and the score);
    NaN for no faces."""
    from facevae.sampling import evenly_spread

    if len(faces) == 0:
        return np.full(128, np.nan, np.float32)
    return face_descriptors(faces[evenly_spread(len(faces), most)], align_cfg, upscale).mean(axis=0)


def face_descriptors(faces: np.ndarray, align_cfg: AlignConfig, upscale: int = 4) -> np.ndarray:
    """(N, 128) float32 dlib descriptors of aligned faces, each enlarged ``upscale`` times.

    The 68 points that place dlib's face chip are predicted on the enlarged face from the
    template's box, so every face -- a driver's sharp crop or a blurred render -- is chipped the
    same way."""
    import dlib

    from facevae.faces.measure import crop_landmarks

    out = np.zeros((len(faces), 128), np.float32)
    if len(faces) == 0:
        return out
    landmarks = crop_landmarks(np.ascontiguousarray(faces), align_cfg, upscale=upscale)
    x0, y0, x1, y1 = (v * upscale for v in align_cfg.face_box())
    rect = dlib.rectangle(int(round(x0)), int(round(y0)), int(round(x1)) - 1, int(round(y1)) - 1)
    model = _descriptor_model()
    for i, (face, lm) in enumerate(zip(faces, landmarks)):
        big = cv2.resize(np.ascontiguousarray(face), None, fx=upscale, fy=upscale, interpolation=cv2.INTER_CUBIC)
        pts = dlib.points([dlib.point(int(round((x + 0.5) * upscale - 0.5)), int(round((y + 0.5) * upscale - 0.5))) for x, y in lm])
        out[i] = np.asarray(model.compute_face_descriptor(big, dlib.full_object_detection(rect, pts)), np.float32)
    return out


def identity_kept(rendered: np.ndarray, actor_mean: np.ndarray, driver_mean: np.ndarray, threshold: float = 0.6) -> dict:
    """How many rendered faces look like the actor: nearer the actor's mean descriptor than the
    driver's and within ``threshold`` of the actor's. A face without a descriptor (a NaN row)
    counts as not kept. Returns ``kept`` (share), ``actor_distance`` and ``driver_distance`` (means)."""
    d = np.asarray(rendered, np.float64)
    to_actor = np.linalg.norm(d - actor_mean[None], axis=1)
    to_driver = np.linalg.norm(d - driver_mean[None], axis=1)
    ok = np.isfinite(to_actor) & np.isfinite(to_driver)
    kept = ok & (to_actor < to_driver) & (to_actor < threshold)
    nan = float("nan")
    return {
        "kept": float(kept.mean()) if len(d) else nan,
        "actor_distance": float(to_actor[ok].mean()) if ok.any() else nan,
        "driver_distance": float(to_driver[ok].mean()) if ok.any() else nan,
        "frames": int(len(d)),
    }
