"""The per-video driving policy: which method turns a driver's frames into the actor's z, and how.

:class:`DrivePlan` holds the render's choices (``render.drive`` and the per-video ``render.retarget``
keys); :func:`drive_track` applies them to one driver track. The methods:

- ``auto`` (default) -- ``blend`` when the driver is the actor (their mean 128-d face descriptors
  within ``same_person_distance``: :func:`same_person_distance`), ``retarget`` otherwise.
- ``retarget`` -- expression retargeting through landmarks (:mod:`facevae.driving.retarget_map`):
  the driver's landmarks relative to its own neutral face, moved onto the actor's neutral, through
  the actor's fitted map. The actor's encoder never sees the stranger's face, so the stranger's
  identity, colour and lighting cannot pull z into one corner of the actor's space.
- ``blend`` -- for the actor's own clips: the encoder's z and the retargeted z mixed
  (:func:`blend_latents`), the retargeting's neutral transfer chosen by the encoder
  (:func:`transfer_nearest`).
- ``encoder`` -- the 2017 blog's way: the driver's aligned crop through the actor's encoder
  (posterior mean). Kept for reproducing the blog's videos.

Why each default: docs/driving.md and docs/decisions/.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from facevae import FACE_SIZE, FacevaeError
from facevae.driving.fit import RetargetSettings
from facevae.driving.mapfile import load_retarget
from facevae.driving.retarget_map import LandmarkRetarget
from facevae.driving.shapes import neutral_frames, neutral_shape, neutral_window, normalise_landmarks
from facevae.sampling import evenly_spread

log = logging.getLogger(__name__)

DRIVES = ("auto", "retarget", "encoder", "blend")
MOUTH_POINTS = ("faceapi", "dlib")
TRANSFER_GRID = tuple(round(0.1 * k, 1) for k in range(11))


@dataclasses.dataclass(frozen=True)
class DrivePlan:
    """How one driver video is driven: the one home of these defaults (the schema's mirror them).

    ``drive``: the method (DRIVES). ``same_person_distance``: auto's descriptor distance under which
    the driver is the actor. ``self_blend``: the retargeted z's share in the own-clip blend
    (:func:`blend_latents`; 0 = the encoder alone). ``self_transfer``: the own-clip blend's neutral
    transfer, ``encoder`` (:func:`transfer_nearest`) or a number. ``neutral``: where the driver's
    neutral face comes from (``video`` or a [start, end] window, :func:`neutral_window`). ``gain``:
    the driver's change from its neutral is multiplied by it. ``transfer``: the share of the gap
    between the driver's and the actor's neutral faces taken away for a stranger (1: the driver's
    change put on the actor's neutral; 0: the driver's own shapes). ``mouth_points``: where the
    driver's mouth points come from (:func:`driver_landmarks`). ``upscale``: the identity
    descriptor's enlargement of the 64-px faces.
    """

    drive: str = "auto"  # checked by RenderConfig (and the schema); mouth_points by driver_landmarks
    same_person_distance: float = 0.35
    self_blend: float = 0.5
    self_transfer: object = "encoder"
    neutral: object = "video"
    gain: float = 1.0
    transfer: float = 0.75
    mouth_points: str = "faceapi"
    upscale: int = 4

    @classmethod
    def from_render(cls, drive: str, retarget: dict | None = None, **render) -> "DrivePlan":
        """From ``render.drive``, the ``render.retarget`` section (its per-video keys; the map's own
        keys are rule fit_retarget's) and the other render keys by name."""
        known = {f.name for f in dataclasses.fields(cls)}
        per_video = {k: v for k, v in (retarget or {}).items() if k in ("neutral", "gain", "transfer", "mouth_points")}
        return cls(drive=drive, **per_video, **{k: v for k, v in render.items() if k in known})


def same_person_distance(actor_descriptor: np.ndarray, driver_faces: np.ndarray, align_cfg, upscale: int = 4,
                         most: int = 60) -> float:
    """Distance between the actor's mean dlib descriptor (:func:`facevae.instruments.mean_descriptor`
    of its training faces) and that of up to ``most`` evenly spread driver faces (aligned 64 px,
    enlarged ``upscale`` times alike). Measured on the four lp clips (60 actor faces then): a
    held-out part of the same person's clip 0.09-0.24, two different people 0.46-0.81."""
    from facevae.instruments import mean_descriptor

    if len(driver_faces) == 0 or not np.isfinite(actor_descriptor).all():
        return float("inf")
    return float(np.linalg.norm(actor_descriptor - mean_descriptor(driver_faces, align_cfg, upscale, most)))


def resolve_drive(drive: str, distance: float | None, threshold: float, self_blend: float = DrivePlan.self_blend) -> str:
    """The method ``drive`` stands for: itself, or for ``auto``, when the driver's
    :func:`same_person_distance` is at most ``threshold`` (the driver is the actor), the blend of
    encoder and retargeting (the encoder alone at ``self_blend`` 0), else retarget."""
    if drive != "auto":
        return drive
    if distance is not None and distance <= threshold:
        return "blend" if self_blend > 0 else "encoder"
    return "retarget"


def blend_latents(z_encoder: np.ndarray, z_retarget: np.ndarray, share: float) -> np.ndarray:
    """``(1 - share) * z_encoder + share * z_retarget`` (NaN rows stay NaN).

    Why, for the actor's own clips: the encoder carries what landmarks do not (gaze, light, the
    actor's own small motions) but blurs what the decoder rarely saw; the map carries the landmarks'
    openings. On the bench's own held-out clips (mesh mouth r, encoder / retarget / blend 0.5):
    d6 0.80 / 0.85 / 0.90, d10 0.81 / 0.72 / 0.85, d3 0.78 / 0.84 / 0.92, d13 0.975 / 0.89 / 0.965
    (bench/results/self_blend.md, bench/archive/sweep_self_blend.py)."""
    return ((1.0 - share) * z_encoder + share * z_retarget).astype(np.float32)


def encode_track(codec, track, chunk: int = 512) -> np.ndarray:
    """Posterior means of every kept frame's crop; (N, D) float32 with NaN rows for other frames."""
    z = np.full((track.n, codec.latent_dim), np.nan, np.float32)
    for start in range(0, track.n, chunk):
        stop = min(start + chunk, track.n)
        keep = track.kept[start:stop]
        if keep.any():
            crops = track.read_crops(start, stop)[keep]
            z[start:stop][keep] = codec.encode(crops)
    return z


def transfer_nearest(module: LandmarkRetarget, landmarks: np.ndarray, driver_neutral: np.ndarray, z_reference: np.ndarray,
                     grid=TRANSFER_GRID, gain: float = 1.0) -> tuple[float, list, np.ndarray]:
    """The neutral transfer (of ``grid``) whose retargeted z of ``landmarks`` (N, 68, 2) comes nearest
    ``z_reference`` (N, D; mean squared distance over the frames; the smallest transfer on a tie), each
    one's distance, and the z at the pick.

    Why, for the actor's own clips (render.self_transfer encoder): the encoder knows the actor, so its
    z says where this clip's faces lie in the actor's space, and with it how far the clip's median face
    (the driver's neutral) sits from the training clips' for a reason the map should keep (a clip
    spoken with the mouth more open) or take away (the head held lower); no fixed transfer served
    every tuning actor's own clip (docs/decisions)."""
    distances, best = [], None
    for transfer in grid:
        z = _drive_chunks(module, landmarks, driver_neutral, float(transfer), gain)
        distances.append(float(np.mean(np.sum((z - z_reference) ** 2, axis=1))))
        if distances[-1] < min(distances[:-1], default=np.inf):
            best = z
    return float(grid[int(np.argmin(distances))]), distances, best


def _drive_chunks(module: LandmarkRetarget, landmarks: np.ndarray, driver_neutral: np.ndarray, transfer: float,
                  gain: float, chunk: int = 4096) -> np.ndarray:
    """:meth:`LandmarkRetarget.drive` ``chunk`` frames at a time (the kernel map holds frames x centres)."""
    if len(landmarks) == 0:
        return np.zeros((0, module.latent_dim), np.float32)
    return np.concatenate([module.drive(landmarks[i : i + chunk], driver_neutral, transfer, gain)
                           for i in range(0, len(landmarks), chunk)])


def retarget_track(module: LandmarkRetarget, track, neutral="video", gain: float = 1.0, chunk: int = 4096,
                   transfer: float = DrivePlan.transfer, landmarks=None, nearest_to: np.ndarray | None = None
                   ) -> tuple[np.ndarray, dict]:
    """The actor's z for every kept frame of ``track`` (NaN rows elsewhere) through the map, with the
    driver's neutral taken from ``neutral`` (see :func:`neutral_window`) and ``transfer`` of its gap
    to the actor's taken away. ``landmarks``: the kept frames' points (crop px) to drive with instead
    of the track's (see :func:`driver_landmarks`). ``nearest_to``: z for every frame (the encoder's);
    given, the transfer is the one of TRANSFER_GRID whose z comes nearest it on the kept frames
    (:func:`transfer_nearest`) and ``transfer`` is not used. Returns z and what was used."""
    kept = track.kept
    z = np.full((track.n, module.latent_dim), np.nan, np.float32)
    info = {"neutral": neutral, "gain": gain, "transfer": transfer, "neutral_frames": 0}
    if not kept.any():
        return z, info
    landmarks = np.asarray(track.landmarks[:], np.float32)[kept] if landmarks is None else np.asarray(landmarks, np.float32)
    norm = normalise_landmarks(landmarks)
    window = neutral_window(neutral)
    try:
        driver_neutral = neutral_shape(norm, track.time[kept], window)
    except FacevaeError as err:
        raise FacevaeError(f"render.retarget.neutral: {err} in {track.path}") from None
    info["neutral_frames"] = int(neutral_frames(norm, track.time[kept], window).sum())
    if nearest_to is None:
        z[kept] = _drive_chunks(module, landmarks, driver_neutral, float(transfer), float(gain), chunk)
        return z, info
    transfer, distances, picked = transfer_nearest(module, landmarks, driver_neutral, np.asarray(nearest_to)[kept],
                                                   gain=float(gain))
    z[kept] = picked
    info.update(transfer=transfer, transfer_chosen_by="nearest the encoder's z",
                transfer_distances=dict(zip(map(str, TRANSFER_GRID), np.round(distances, 3).tolist())))
    log.info("neutral transfer %.1f: its z lies nearest the reference z (mean squared distance %.3f; %.3f at 0, %.3f at 1)",
             transfer, min(distances), distances[0], distances[-1])
    return z, info


def driver_landmarks(track, mouth_points: str, video_path=None, faceapi_model=None) -> np.ndarray | None:
    """The kept frames' points retargeting reads: the track's (dlib's), with ``mouth_points`` faceapi
    the mouth's 20 points from face-api's 68-point net (the page's model, run in PyTorch on the
    video's frames; ``faceapi_model``: its weights folder, rule faceapi_weights). None = the track's.
    Why: dlib's mouth opening follows the face mesh's less well than face-api's (tpsmm: r 0.75 vs
    0.89), and the map passes that noise on; face-api's eyes are worse for the map (eye r 0.35 vs
    0.52), so only the mouth is taken -- the bench's 16 cross pairs, mesh mouth / eye medians 0.753
    / 0.519 -> 0.821 / 0.542, 13 -> 16 of 16 within retrieval's reach (bench/results/landmark_sweep.md)."""
    if mouth_points not in MOUTH_POINTS:
        raise FacevaeError(f"render.retarget.mouth_points must be one of {', '.join(MOUTH_POINTS)}, not {mouth_points!r}")
    if mouth_points == "dlib" or not track.kept.any():
        return None
    if faceapi_model is None or video_path is None:
        raise FacevaeError("render.retarget.mouth_points faceapi needs face-api's landmark weights (rule faceapi_weights) "
                           "and the driver's video")
    from facevae.faces.faceapi_landmarks import load_faceapi_landmark_net, track_landmarks, with_faceapi_mouth

    rows = np.flatnonzero(track.kept)
    faceapi = track_landmarks(track, video_path, load_faceapi_landmark_net(faceapi_model), rows)
    return with_faceapi_mouth(np.asarray(track.landmarks[:], np.float64)[rows], faceapi)


def drive_track(plan: DrivePlan, codec, track, retarget_path=None, retarget_cfg: dict | None = None, actor_descriptor=None,
                video_path=None, faceapi_model=None) -> tuple[np.ndarray, dict]:
    """The actor's z for every kept frame of ``track`` (NaN rows elsewhere) by ``plan``.

    ``retarget_path``: the actor's map (needed when the method is retarget or blend);
    ``retarget_cfg``: the ``render.retarget`` section (its map keys are checked and recorded);
    ``actor_descriptor``: the actor's mean descriptor (auto compares the driver's with it);
    ``video_path`` and ``faceapi_model``: the driver's video and face-api's weights folder
    (``mouth_points`` faceapi, see :func:`driver_landmarks`). Returns z and what was done:
    ``method`` (encoder, retarget or blend), for auto ``identity_distance``, for retarget and blend
    the map's neutral / gain / mouth points / settings."""
    info: dict = {"drive": plan.drive}
    if plan.drive == "auto":
        if actor_descriptor is None:
            raise FacevaeError("render.drive auto needs the actor's training faces (results/faces/{actor}.h5)")
        rows = np.flatnonzero(track.kept)
        crops = np.concatenate([track.read_crops(i, i + 1) for i in rows[evenly_spread(len(rows), 60)]]) if len(rows) else \
            np.zeros((0, FACE_SIZE, FACE_SIZE, 3), np.uint8)
        distance = same_person_distance(actor_descriptor, crops, track.align_config(FACE_SIZE), plan.upscale)
        info.update(identity_distance=distance, same_person_distance=plan.same_person_distance)
        log.info("render.drive auto: the driver's faces are %.3f from the actor's (same person at <= %.2f): %s",
                 distance, plan.same_person_distance, resolve_drive(plan.drive, distance, plan.same_person_distance))
    method = info["method"] = resolve_drive(plan.drive, info.get("identity_distance"), plan.same_person_distance,
                                            plan.self_blend)
    if method not in ("retarget", "blend"):
        return encode_track(codec, track), info
    if retarget_path is None:
        raise FacevaeError(f"render.drive {method} needs the actor's retargeting map (rule fit_retarget)")
    settings = RetargetSettings.from_config(retarget_cfg)  # checks the keys before any work
    landmarks = driver_landmarks(track, plan.mouth_points, video_path, faceapi_model)
    transfer, z_encoder, nearest_to = plan.transfer, None, None
    if method == "blend":
        z_encoder = encode_track(codec, track)
        if plan.self_transfer == "encoder":
            nearest_to = z_encoder
        else:
            transfer = float(plan.self_transfer)
    z, used = retarget_track(load_retarget(retarget_path), track, plan.neutral, plan.gain, transfer=transfer,
                             landmarks=landmarks, nearest_to=nearest_to)
    info["retarget"] = {**used, "mouth_points": plan.mouth_points, "map": dataclasses.asdict(settings)}
    if method == "blend":
        z = blend_latents(z_encoder, z, plan.self_blend)
        info["self_blend"], info["self_transfer"] = float(plan.self_blend), plan.self_transfer
    return z, info
