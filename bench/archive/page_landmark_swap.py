"""Where the page and the pipeline draw different mouths (docs/decisions/025): on a ci_seeds.py seed folder
with BENCH_CI_PAGE=1 (its page_log.json: the page's own points), PyTorch's driving path on the page's points
with one landmark group swapped for the pipeline's, and per refitted map variant page vs pipeline.

    .venv/bin/python bench/archive/page_landmark_swap.py WORK/seed0 [variant ...]
"""
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from support.page_compare import mesh_mouth
from facevae.expression import pearson
from facevae.driving import driver_landmarks, load_retarget, neutral_shape, normalise_landmarks
from facevae.faces.io import DriverTrack
from facevae.modelio import decode, load_model

wd = Path(sys.argv[1])
log = json.loads((wd / "page_log.json").read_text())
man = json.loads((wd / "results/explore/d6/page.json").read_text())
model = load_model(wd / "results/models/d6/model.pt")
ret = load_retarget(wd / "results/models/d6/retarget.pt")
cal, tr, gain = man["drive"]["calibration_seconds"], man["drive"]["transfer"], man["drive"]["gain"]
with DriverTrack(wd / "results/tracks/tpsmm/driving.h5") as track:
    pts = driver_landmarks(track, "faceapi", wd / "results/videos/tpsmm/driving.mp4", wd / "results/explore/d6/vendor/face-api/model")
    kept = np.flatnonzero(track.kept)
    by_frame = {int(f): i for i, f in enumerate(track.frame)}
    pairs = [(e, by_frame[e["frame"]]) for e in log if e.get("image") and e["frame"] in by_frame and track.kept[by_frame[e["frame"]]]]
    rows = np.array([r for _, r in pairs])
    times = np.asarray(track.time[:], np.float64)[rows]
    pos = {r: i for i, r in enumerate(kept)}
    pipe_lm = pts[[pos[r] for r in rows]] * (64 / track.crop_size)
    dlib_lm = np.asarray(track.landmarks[:], np.float64)[rows] * (64 / track.crop_size)
page_lm = np.asarray([e["crop"] for e, _ in pairs], np.float64)
page_mouth = mesh_mouth(np.asarray([e["image"] for e, _ in pairs], np.uint8).reshape(-1, 64, 64, 3))

def render(lm):
    n = neutral_shape(normalise_landmarks(lm), times, (0, cal))
    return mesh_mouth(decode(model, ret.drive(lm, n, tr, gain)))

pipe = render(pipe_lm)
print("pipeline(recomputed on page frames) vs page", round(pearson(page_mouth, pipe), 4))
EYES = list(range(17, 27)) + list(range(36, 48))
MOUTH = list(range(48, 68))
JAW = list(range(0, 17)); NOSE = list(range(27, 36))
for name, idx in [("eyes+brows", EYES), ("mouth", MOUTH), ("jaw", JAW), ("nose", NOSE), ("eyes+brows+jaw+nose", EYES + JAW + NOSE)]:
    h = page_lm.copy(); h[:, idx] = pipe_lm[:, idx]
    m = render(h)
    print(f"page lm with pipeline's {name:22s}: vs pipeline {pearson(m, pipe):.4f}  vs page {pearson(m, page_mouth):.4f}")

# --- the same question under refitted map variants (PyTorch on each side's points; the page == PyTorch on its points)
import dataclasses
from facevae.driving import RetargetSettings, fit_and_calibrate
from facevae.driving.fit import _dlib_openings
from facevae.faces.io import read_faces
from facevae.modelio import Codec
faces_path = wd / "results/faces/d6.h5"
faces = read_faces(faces_path)
codec = Codec(model)
mu = codec.encode(faces["data"])
openings_of = _dlib_openings(codec, faces, faces_path)
with DriverTrack(wd / "results/tracks/tpsmm/driving.h5") as track:
    drv_crops = np.concatenate([track.read_crops(i, i + 1) for i in rows])
drv_mouth = mesh_mouth(drv_crops)
VARIANTS = {"default": {}, "decoded": {"mouth_readout": "decoded"}, "additive": {"map": "additive"},
            "eyegain1": {"eye_gain_max": 1.0}, "brow0": {"brow_weight": 0.0}, "brow0.25": {"brow_weight": 0.25}, "no-eye-keeps-mouth": {"eye_keeps_mouth": False},
            "noreadout": {"readout": False}}
for name in (sys.argv[2:] or VARIANTS):
    ret, _ = fit_and_calibrate(faces["landmarks"], mu, dataclasses.replace(RetargetSettings(), **VARIANTS[name]), openings_of)
    p, q = render(page_lm), render(pipe_lm)
    print(f"{name:20s} page vs pipeline {pearson(p, q):.4f}; with driver: page {pearson(p, drv_mouth):.4f} pipeline {pearson(q, drv_mouth):.4f}", flush=True)
