"""Why the page's video-file render differs from the pipeline's (issue 13): the same actor's map
and the same driver frames, driven with the landmark sets each side has.

The pipeline drives with the track's dlib points and face-api's mouth (render.retarget.mouth_points
faceapi); the page has face-api's 68 points only. Each variant swaps one group of points between the
two models; the decoded faces are read by the face mesh as the score files read them, and each
variant's mouth series is correlated with the driver's and with the pipeline's.

Reads a workflow run folder (PAGE_GAP_WORKDIR) holding results/models/{actor}/, the driver's track and
video and results/weights/face-api (e.g. the CI pipeline's config run in a folder of its own);
PAGE_GAP_ACTOR / PAGE_GAP_DRIVER / PAGE_GAP_VIDEO default to d6 / tpsmm / driving.
Writes bench/results/page_gap.md. Run: PAGE_GAP_WORKDIR=<dir> .venv/bin/python bench/archive/page_gap.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from facevae.driving import NEUTRAL_TRANSFER, load_retarget, neutral_shape, normalise_landmarks  # noqa: E402
from facevae.expression import pearson  # noqa: E402
from facevae.faces.faceapi_landmarks import load_faceapi_landmark_net, track_landmarks, with_faceapi_mouth  # noqa: E402
from facevae.faces.io import DriverTrack  # noqa: E402
from facevae.modelio import Codec, load_model  # noqa: E402
from facevae.render import RenderConfig  # noqa: E402
from sweep_retarget import mesh_measure  # noqa: E402

BROWS, EYES, MOUTH = slice(17, 27), slice(36, 48), slice(48, 68)


def main() -> None:
    torch.set_num_threads(2)
    work = Path(os.environ["PAGE_GAP_WORKDIR"])
    actor, driver, video = (os.environ.get(f"PAGE_GAP_{k}", d) for k, d in (("ACTOR", "d6"), ("DRIVER", "tpsmm"), ("VIDEO", "driving")))
    render = RenderConfig()
    measure = mesh_measure(render)
    codec = Codec(load_model(work / f"results/models/{actor}/model.pt"))
    module = load_retarget(work / f"results/models/{actor}/retarget.pt")
    module.transfer = NEUTRAL_TRANSFER
    with DriverTrack(work / f"results/tracks/{driver}/{video}.h5") as track:
        rows = np.flatnonzero(track.kept)
        crops_mesh = measure(track.read_crops(0, track.n)[rows])
        dlib = np.asarray(track.landmarks[:], np.float64)[rows]
        faceapi = track_landmarks(track, work / f"results/videos/{driver}/{video}.mp4",
                                  load_faceapi_landmark_net(work / "results/weights/face-api"), rows)
    pipeline = with_faceapi_mouth(dlib, faceapi)

    def swap(base, part, source):
        out = base.copy()
        out[:, part] = source[:, part]
        return out

    variants = {
        "pipeline: dlib, face-api's mouth (the default)": pipeline,
        "page: face-api's 68 points": faceapi,
        "pipeline with face-api's eyes": swap(pipeline, EYES, faceapi),
        "pipeline with face-api's brows": swap(pipeline, BROWS, faceapi),
        "page with dlib's brows": swap(faceapi, BROWS, dlib),
        "page with dlib's eyes and brows": swap(swap(faceapi, BROWS, dlib), EYES, dlib),
        "dlib's 68 points (mouth_points dlib)": dlib,
    }
    series = {}
    lines = ["# Page vs pipeline: which points move the mouth series (bench/archive/page_gap.py)", "",
             f"{work.name}: actor {actor} driven by {driver}/{video} ({len(rows)} kept frames), the actor's map at "
             f"transfer {NEUTRAL_TRANSFER}, no smoothing; face-mesh mouth and eye r with the driver's crops, and the "
             "mouth series' r with the pipeline's (issue 13's video-file bar: 0.8).", "",
             "| points driving the map | mouth r (driver) | eye r (driver) | mouth r with the pipeline's |", "|---|---|---|---|"]
    for name, points in variants.items():
        got = measure(codec.decode(module.drive(points.astype(np.float32), neutral_shape(normalise_landmarks(points)))))
        series[name] = got
        base = series["pipeline: dlib, face-api's mouth (the default)"]
        lines.append(f"| {name} | {pearson(crops_mesh[:, 0], got[:, 0]):.3f} | {pearson(crops_mesh[:, 1], got[:, 1]):.3f} | "
                     f"{pearson(base[:, 0], got[:, 0]):.3f} |")
        print(lines[-1], flush=True)
    (REPO / "bench/results/page_gap.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
