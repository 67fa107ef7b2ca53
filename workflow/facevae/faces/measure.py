"""Measurements on aligned face crops: re-measured landmarks, eye error, blur, head pose, size.

All work on crops made by :func:`facevae.faces.align.align_face`, so the numbers are comparable
between videos, people and backends.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

from facevae.faces.align import AlignConfig, eye_centres, template_eye_centres


@functools.lru_cache(maxsize=1)
def _predictor():
    import dlib

    from facevae.faces.dlib_files import PREDICTOR_68, dlib_model

    return dlib.shape_predictor(dlib_model(PREDICTOR_68))


def crop_landmarks(crops: np.ndarray, cfg: AlignConfig = AlignConfig(), upscale: int = 4) -> np.ndarray:
    """Landmarks re-measured on aligned crops: float32 (N, 68, 2) in crop pixels.

    Independent of whatever aligned the crop: dlib's 68-point predictor runs on the crop enlarged
    ``upscale`` times, started from the template's face box (no detector), and the points are
    mapped back to crop pixels."""
    import dlib

    crops = np.asarray(crops)
    if crops.ndim == 3:
        crops = crops[None]
    predictor = _predictor()
    x0, y0, x1, y1 = (v * upscale for v in cfg.face_box())
    rect = dlib.rectangle(int(round(x0)), int(round(y0)), int(round(x1)) - 1, int(round(y1)) - 1)
    out = np.empty((len(crops), 68, 2), dtype=np.float32)
    for i, crop in enumerate(crops):
        big = cv2.resize(np.ascontiguousarray(crop), None, fx=upscale, fy=upscale, interpolation=cv2.INTER_CUBIC)
        shape = predictor(big, rect)
        pts = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
        out[i] = (pts + 0.5) / upscale - 0.5
    return out


def eye_errors(landmarks: np.ndarray, cfg: AlignConfig = AlignConfig()) -> np.ndarray:
    """(N,) the larger of the two eye-centre distances to the template's eye centres, crop px."""
    lm = np.asarray(landmarks, dtype=np.float64).reshape(-1, 68, 2)
    target = template_eye_centres(cfg.size, cfg.template_scale, cfg.template_offset_y)
    errs = [np.linalg.norm(eye_centres(one) - target, axis=1).max() for one in lm]
    return np.array(errs, dtype=np.float64)


def blur_scores(crops: np.ndarray) -> np.ndarray:
    """(N,) sharpness: variance of the Laplacian of the grey crop (low = blurred).

    Measured on the aligned crop, so it compares faces at one scale whatever their size in the
    frame (a big sharp face shrunk to 64 px and a small one are judged alike)."""
    crops = np.asarray(crops)
    if crops.ndim == 3:
        crops = crops[None]
    out = np.empty(len(crops), dtype=np.float64)
    for i, crop in enumerate(crops):
        grey = cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2GRAY)
        out[i] = cv2.Laplacian(grey, cv2.CV_64F).var()
    return out


# A rough 3-D face for head pose, in units of the template's face width (x right, y down, z towards
# the camera): (template x, template y) of each point from the 2-D template plus a depth guessed from
# average head shape. Only rigid points: eye corners, nose, mouth corners, chin.
_POSE_POINTS = [36, 39, 42, 45, 27, 30, 31, 35, 48, 54, 8]
_POSE_DEPTH = np.array([-0.22, -0.14, -0.14, -0.22, -0.10, 0.10, -0.02, -0.02, -0.12, -0.12, -0.10])


def head_pose(landmarks: np.ndarray, cfg: AlignConfig = AlignConfig()) -> np.ndarray:
    """(N, 2) yaw and pitch in degrees from landmarks in crop pixels (0, 0 = the template's pose).

    A perspective-n-point fit (OpenCV solvePnP) of a rough 3-D face onto 11 rigid landmarks.
    Yaw > 0: the face turned towards the image's right; pitch > 0: looking down. Coarse (a few
    degrees), enough to drop near-profile and strongly tilted faces."""
    lm = np.asarray(landmarks, dtype=np.float64).reshape(-1, 68, 2)
    tpl = cfg.template()[_POSE_POINTS] / cfg.size
    # OpenCV's camera looks along +z: a point nearer the camera has a smaller z.
    model = np.column_stack([tpl - tpl.mean(axis=0), -_POSE_DEPTH]) * cfg.size
    focal = cfg.size * 1.5
    camera = np.array([[focal, 0, cfg.size / 2], [0, focal, cfg.size / 2], [0, 0, 1]], dtype=np.float64)
    out = np.full((len(lm), 2), np.nan)
    for i, pts in enumerate(lm):
        if not np.isfinite(pts).all():
            continue
        ok, rvec, _ = cv2.solvePnP(model, pts[_POSE_POINTS], camera, None, flags=cv2.SOLVEPNP_ITERATIVE)
        if not ok:
            continue
        rot, _ = cv2.Rodrigues(rvec)
        forward = rot @ np.array([0.0, 0.0, -1.0])  # where the nose points, camera coordinates
        out[i] = np.degrees(np.arcsin(np.clip(forward[0], -1, 1))), np.degrees(np.arcsin(np.clip(forward[1], -1, 1)))
    return out
