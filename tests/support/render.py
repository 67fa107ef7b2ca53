"""Real inputs for the render tests that do not need the whole pipeline.

``make_track`` writes a track file in the interface-2 layout from a real clip: dlib's HOG detector
(on a downscaled frame) and 68-point predictor, aligned with ``facevae.faces.align.align_face`` --
the same components the faces stage uses, without its filters. ``train_vae`` fits a real VAE for a
few Adam steps. Both are cached per test session by the fixtures that call them.
"""

from __future__ import annotations

import numpy as np
import torch

from facevae.faces.align import AlignConfig, align_face
from facevae.faces.io import write_track
from facevae.faces.dlib_files import PREDICTOR_68, dlib_model
from facevae.video import probe, read_frames


def make_track(video_path, out_path, first: int = 0, count: int | None = None, drop=(), cfg: AlignConfig = AlignConfig()):
    """Track ``count`` frames from frame ``first`` (every decoded frame in the range gets a row).

    Frames in ``drop`` are written as 'no face' rows (to exercise missing faces)."""
    import dlib

    fps = probe(video_path).fps
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(dlib_model(PREDICTOR_68))
    crops, lms, ms, kept, reasons, times, numbers = [], [], [], [], [], [], []
    size = cfg.size
    height = width = 0
    for index, frame in enumerate(read_frames(video_path)):
        if index < first:
            continue
        if count is not None and index >= first + count:
            break
        height, width = frame.shape[:2]
        scale = min(1.0, 320.0 / max(height, width))
        small = frame if scale == 1.0 else np.ascontiguousarray(frame[:: int(round(1 / scale)), :: int(round(1 / scale))])
        step = frame.shape[0] / small.shape[0]
        boxes = [] if index in drop else detector(small, 0)
        if len(boxes):
            b = max(boxes, key=lambda r: r.width() * r.height())
            rect = dlib.rectangle(int(b.left() * step), int(b.top() * step), int(b.right() * step), int(b.bottom() * step))
            shape = predictor(frame, rect)
            pts = np.array([[p.x, p.y] for p in shape.parts()], np.float64)
            crop, lm, m = align_face(frame, pts, cfg)
            crops.append(crop), lms.append(lm), ms.append(m), kept.append(True), reasons.append("")
        else:
            crops.append(np.zeros((size, size, 3), np.uint8))
            lms.append(np.full((68, 2), np.nan, np.float32))
            ms.append(np.full((2, 3), np.nan))
            kept.append(False)
            reasons.append("no face")
        times.append(index / fps)
        numbers.append(index)
    rows = {
        "crops": np.stack(crops), "landmarks": np.stack(lms).astype(np.float32), "transforms": np.stack(ms),
        "time": np.array(times, np.float64), "frame": np.array(numbers, np.int64), "kept": np.array(kept),
        "reason": reasons,
    }
    attrs = {"person": "test", "video": "test", "role": "driver", "fps": fps, "width": width, "height": height,
             "frame_count": len(kept), "aligner": "dlib", **cfg.as_attrs()}
    write_track(out_path, rows, attrs)
    return out_path


def train_vae(faces: np.ndarray, arch: str = "blog", latent: int = 32, steps: int = 60, seed: int = 0, width: int = 16,
              batch: int = 64):
    """A real VAE fitted to ``faces`` (uint8 N x 64 x 64 x 3) for ``steps`` Adam steps (BCE + KL)."""
    from facevae.models import ModelConfig, build_model

    torch.manual_seed(seed)
    model = build_model(ModelConfig(arch=arch, latent_dim=latent, width=width))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    x_all = torch.as_tensor(faces).permute(0, 3, 1, 2).float() / 255.0
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x_all), (min(batch, len(x_all)),), generator=gen)
        x = x_all[idx]
        logits, mu, logvar = model(x, generator=gen)
        rec = torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="sum") / len(x)
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / len(x)
        opt.zero_grad()
        (rec + kl).backward()
        opt.step()
    return model.eval()


_KITS: dict = {}


def render_kit(media, tmp_path_factory) -> dict:
    """Built once per test session and shared by the render test modules: a real 3-second driver
    clip with speech (the start of tpsmm_driving.mp4, re-encoded by the ingest helper), its probe
    metadata, its track with three frames dropped as 'no face', and a VAE fitted to its crops."""
    if "kit" in _KITS:
        return _KITS["kit"]
    import json

    from facevae import modelio
    from facevae.faces.io import read_track
    from facevae.video import to_portable_mp4

    src = media("videos/tpsmm_driving.mp4")
    folder = tmp_path_factory.mktemp("render_kit")
    clip = folder / "clip.mp4"
    to_portable_mp4(src, clip, probe(src), 0.0, 3.0)
    info = probe(clip)
    meta = folder / "clip.json"
    meta.write_text(json.dumps(info.as_dict()))
    track = make_track(clip, folder / "track.h5", drop={10, 11, 12})
    crops = read_track(track)
    model_path = folder / "model.pt"
    faces = crops["crops"][crops["kept"]]
    modelio.save_model(model_path, train_vae(faces, arch="blog", latent=16, steps=10, batch=32))
    # The actor's training set is the same clip's kept faces (so the score has its identity
    # reference and retrieval baseline), and its retargeting map is fitted on them.
    from facevae.driving import RetargetSettings, fit_actor_retarget
    from facevae.faces.io import write_faces

    faces_path = write_faces(folder / "faces.h5", faces, {"aligner": "dlib"}, landmarks=crops["landmarks"][crops["kept"]])
    retarget = {"map": folder / "retarget.pt", "table": folder / "retarget.tsv"}
    fit_actor_retarget(faces_path, model_path, retarget, RetargetSettings(), actor="actor")
    kit = {"folder": folder, "clip": clip, "meta": meta, "info": info, "track": track, "model": model_path,
           "faces": faces_path, "retarget": retarget["map"], "dropped": [10, 11, 12]}
    _KITS["kit"] = kit
    return kit


def faceapi_weights(tmp_path_factory):
    """face-api's 68-point landmark weights, installed once per session from the page's npm lock
    file as rule faceapi_weights installs them (retargeting's default mouth points read them);
    without node/npm the test skips with the reason -- and fails under CI=true."""
    if "faceapi" in _KITS:
        return _KITS["faceapi"]
    from facevae import FacevaeError
    from facevae.webruntime import LANDMARK_WEIGHT_FILES, install_runtime

    from support.media import unavailable

    folder = tmp_path_factory.mktemp("faceapi") / "weights"
    try:
        install_runtime(folder, files=LANDMARK_WEIGHT_FILES, rule="faceapi_weights")
    except FacevaeError as err:
        unavailable(str(err))
    _KITS["faceapi"] = folder
    return folder
