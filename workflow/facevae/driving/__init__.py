"""Driving: how each frame of a driver's face becomes a point z in the actor's latent space.

- :mod:`~facevae.driving.shapes` -- landmark normalisation, neutral faces, the features and openings;
- :mod:`~facevae.driving.retarget_map` -- the fitted map :class:`LandmarkRetarget` (immutable; the
  drive's transfer and gain are arguments, baked in only at ONNX export);
- :mod:`~facevae.driving.fit` -- fitting the map and calibrating its read-out (rule fit_retarget);
- :mod:`~facevae.driving.mapfile` -- the map's file and ONNX graph;
- :mod:`~facevae.driving.policy` -- the per-video plan (:class:`DrivePlan`) and :func:`drive_track`.

The algorithm, in prose and with a figure: docs/driving.md.
"""

from facevae.driving.fit import (BROW_WEIGHT, READOUT_MIN_R, RetargetSettings, calibrate_eye_step, decouple_eye_step, fit_actor_retarget,
                                 fit_and_calibrate, fit_readout, fit_retarget)
from facevae.driving.mapfile import export_onnx, load_retarget, save_retarget
from facevae.driving.policy import (DRIVES, MOUTH_POINTS, TRANSFER_GRID, DrivePlan, blend_latents, drive_track,
                                    driver_landmarks, encode_track, resolve_drive, retarget_track, same_person_distance,
                                    transfer_nearest)
from facevae.driving.retarget_map import MAPS, BakedDrive, LandmarkRetarget
from facevae.driving.shapes import (BROWS, FEATURES, LEFT_EYE_BROW, MOUTH, RIGHT_EYE_BROW, neutral_frames, neutral_shape,
                                    neutral_window, normalise_landmarks, retarget_shapes, shape_features, shape_openings,
                                    transferred_neutral)

__all__ = [
    "BROW_WEIGHT", "READOUT_MIN_R", "RetargetSettings", "calibrate_eye_step", "decouple_eye_step", "fit_actor_retarget", "fit_and_calibrate",
    "fit_readout", "fit_retarget", "export_onnx", "load_retarget", "save_retarget", "DRIVES", "MOUTH_POINTS",
    "TRANSFER_GRID", "DrivePlan", "blend_latents", "drive_track", "driver_landmarks", "encode_track", "resolve_drive",
    "retarget_track", "same_person_distance", "transfer_nearest", "MAPS", "BakedDrive", "LandmarkRetarget", "BROWS",
    "FEATURES", "LEFT_EYE_BROW", "MOUTH", "RIGHT_EYE_BROW", "neutral_frames", "neutral_shape", "neutral_window",
    "normalise_landmarks", "retarget_shapes", "shape_features", "shape_openings", "transferred_neutral",
]
