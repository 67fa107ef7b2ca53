"""Who is this face: dlib's 128-d face descriptor and the identity decisions made with it.

The descriptor network costs ~80 ms a face on one CPU core, so the tracker computes it once per
track segment and every ``faces.filters.identity_every`` frames, never on every frame; the frames of
a track share their segment's decision. Distances are Euclidean; dlib's own rule of thumb is that
two faces with distance < 0.6 are the same person.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import cv2
import numpy as np

from facevae import FacevaeError

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def _model():
    import dlib

    from facevae.faces.dlib_files import DESCRIPTOR, dlib_model

    return dlib.face_recognition_model_v1(dlib_model(DESCRIPTOR))


def load_model() -> None:
    """Load the descriptor network now (e.g. before forking workers that will share it)."""
    _model()


def descriptor(rgb: np.ndarray, box, landmarks: np.ndarray) -> np.ndarray:
    """The 128-d descriptor (float32) of the face with ``landmarks`` (68, frame px) in ``rgb``."""
    import dlib

    x0, y0, x1, y1 = box
    rect = dlib.rectangle(int(round(x0)), int(round(y0)), int(round(x1)) - 1, int(round(y1)) - 1)
    pts = dlib.points([dlib.point(int(round(x)), int(round(y))) for x, y in np.asarray(landmarks)])
    shape = dlib.full_object_detection(rect, pts)
    return np.asarray(_model().compute_face_descriptor(np.ascontiguousarray(rgb), shape), dtype=np.float32)


def reference_descriptor(path: Path | str, aligner, key: str = "reference") -> np.ndarray:
    """The descriptor of the largest face in a reference photo; FacevaeError naming ``key`` if none."""
    path = Path(path)
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FacevaeError(f"{key}: cannot read the reference photo {path}")
    rgb = np.ascontiguousarray(img[:, :, ::-1])
    faces = aligner.detect(rgb)
    if not faces:  # small photos: try once more at twice the size
        big = cv2.resize(rgb, None, fx=2, fy=2, interpolation=cv2.INTER_LINEAR)
        faces = aligner.detect(big)
        for face in faces:
            face.box = tuple(v / 2 for v in face.box)
            face.landmarks = (face.landmarks + 0.5) / 2 - 0.5
    if not faces:
        raise FacevaeError(f"{key}: no face found in the reference photo {path}")
    area = lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1])  # noqa: E731
    faces = sorted(faces, key=area, reverse=True)
    if len(faces) > 1 and area(faces[0]) < 2 * area(faces[1]):
        # Which of them is the person? Guessing wrong would reject every frame as "not this person".
        raise FacevaeError(f"{key}: the reference photo {path} shows {len(faces)} faces of similar size; "
                           "crop it to the person (one face)")
    if len(faces) > 1:
        log.warning("%s: the reference photo %s shows %d faces; using the largest", key, path, len(faces))
    return descriptor(rgb, faces[0].box, faces[0].landmarks)


def dominant_centre(descriptors: np.ndarray, threshold: float) -> np.ndarray | None:
    """The mean descriptor of the largest group of mutually close descriptors.

    The descriptor with the most neighbours within ``threshold`` is the seed; its neighbours are
    averaged. Descriptors are sampled at a fixed frame interval, so the group with the most of them
    is the identity seen in the most frames -- the person the video is about."""
    d = np.asarray(descriptors, dtype=np.float64)
    d = d[np.isfinite(d).all(axis=1)] if len(d) else d
    if len(d) == 0:
        return None
    dist = np.linalg.norm(d[:, None, :] - d[None, :, :], axis=-1)
    close = dist < threshold
    seed = int(np.argmax(close.sum(axis=1)))
    return d[close[seed]].mean(axis=0).astype(np.float32)


def distances(descriptors: np.ndarray, centre: np.ndarray | None) -> np.ndarray:
    d = np.asarray(descriptors, dtype=np.float64).reshape(-1, 128)
    if centre is None:
        return np.full(len(d), np.nan)
    return np.linalg.norm(d - np.asarray(centre, dtype=np.float64)[None], axis=1)
