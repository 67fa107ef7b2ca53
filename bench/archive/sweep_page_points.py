"""The page's video-file render against the pipeline's, on the page's OWN landmarks (issue 13).

bench/archive/page_gap.py and bench/archive/sweep_brow_weight.py simulate the page's points (face-api's net through
its PyTorch port, in boxes around dlib's points); the real page runs face-api's tiny detector and its
points differ more (the simulation said 0.82 where the test measured 0.683). This sweep reads the
page's own log instead -- tests/test_page.py writes it when FACEVAE_PAGE_LOG names a file: per frame
the box the net ran in, the frame and crop landmarks -- and refits the actor's map per setting
(driving.fit_and_calibrate, as rule fit_retarget fits it). Both sides are driven as
tests/support/page_compare.py compares them: the pipeline with the track's dlib points and
face-api's mouth (render.retarget.mouth_points faceapi), the page with its own points, the neutral
from the page's calibration window on both; PyTorch's path on the page's points is the page's render
(r 1.000 in the test). Decoded faces are read by the face mesh as the score files read them.

Variants: the read-out's eye step as it is, decoupled from the decoded mouth
(render.retarget.eye_keeps_mouth), or off (the mouth's reference); the page's points as logged or
refined by one more pass of the landmark net in the box around its own answer (as the pipeline's
face-api points are: driving.driver_landmarks), computed with the port on the same frames.

Reads PAGE_SWEEP_WORKDIR (the test session's pipeline folder; several, separated by ':', e.g. copies
retrained at other train.seed values -- the page's points do not depend on the model, so one log
serves them all) and PAGE_SWEEP_LOG (the log); writes bench/results/page_points.md. Run: PAGE_SWEEP_WORKDIR=<dir> PAGE_SWEEP_LOG=<json> .venv/bin/python bench/archive/sweep_page_points.py
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))
sys.path.insert(0, str(REPO / "bench"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from facevae.driving import (RetargetSettings, driver_landmarks, fit_and_calibrate, neutral_shape,  # noqa: E402
                             normalise_landmarks, retarget_track)
from facevae.expression import pearson  # noqa: E402
from facevae.faces.align import transform_points, umeyama  # noqa: E402
from facevae.faces.faceapi_landmarks import TRACK_MARGIN, box_around, faceapi_landmarks, load_faceapi_landmark_net  # noqa: E402
from facevae.faces.io import DriverTrack  # noqa: E402
from facevae.video import read_frames  # noqa: E402
from sweep_retarget import bench_actor  # noqa: E402
sys.path.insert(0, str(REPO / "tests"))
from support.page_compare import mesh_mouth  # noqa: E402

ACTOR, DRIVER, VIDEO = "d6", "tpsmm", "driving"
VARIANTS = {  # label -> (settings changes, eye step on)
    "as fitted": ({"eye_keeps_mouth": False}, True),
    "keeps the mouth (the default)": ({"eye_keeps_mouth": True}, True),
    "off (reference)": ({"eye_keeps_mouth": False}, False),
}


def refined(entries: list[dict], video: Path, net) -> np.ndarray:
    """The page's crop points after one more pass of face-api's net in the box around its own
    frame points (the port, on the same frames decoded by the pipeline's decoder)."""
    at = {e["frame"]: k for k, e in enumerate(entries)}
    out = np.full((len(entries), 68, 2), np.nan)
    for index, rgb in enumerate(read_frames(video, 0, max(at) + 1)):
        if index in at:
            frame_pts, crop_pts = np.asarray(entries[at[index]]["landmarks"]), np.asarray(entries[at[index]]["crop"])
            again = faceapi_landmarks(rgb, box_around(frame_pts, TRACK_MARGIN, rgb.shape[1], rgb.shape[0]), net)
            out[at[index]] = transform_points(umeyama(frame_pts, crop_pts), again)  # the page's own frame -> crop similarity
    return out


def main() -> None:
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    log = json.loads(Path(os.environ["PAGE_SWEEP_LOG"]).read_text())
    lines = ["# The page's own points against the pipeline's (bench/archive/sweep_page_points.py)", "",
             f"The CI pipeline's {ACTOR} driven by {DRIVER}, every frame stepped through in Chromium (the page's log); the "
             "map refitted per variant, both sides driven as tests/support/page_compare.py drives them. Columns: mesh "
             "mouth r of the page's render against the pipeline's (issue 13's bar: 0.8), and of each render with the "
             "driver's crops; the eye step's pull on the decoded mouth before decoupling (dlib, per unit of eye "
             "opening) and the share of the mouth direction taken out.", "",
             "| model | eye step | page's points | page vs pipeline | page's mouth r | pipeline's mouth r | "
             "eye-step mouth response (removed share) |", "|---|---|---|---|---|---|---|"]
    refined_points = None
    for folder in os.environ["PAGE_SWEEP_WORKDIR"].split(os.pathsep):
        work = Path(folder)
        seed = ((yaml.safe_load((work / "config.yaml").read_text()) or {}).get("train") or {}).get("seed", 0)
        manifest = json.loads((work / f"results/explore/{ACTOR}/page.json").read_text())
        calibration, gain, transfer = (manifest["drive"][k] for k in ("calibration_seconds", "gain", "transfer"))
        faces, codec, mu, openings_of = bench_actor(work, ACTOR)
        video = work / f"results/videos/{DRIVER}/{VIDEO}.mp4"
        with DriverTrack(work / f"results/tracks/{DRIVER}/{VIDEO}.h5") as track:
            by_frame = {int(f): i for i, f in enumerate(track.frame)}
            entries = [e for e in log if e.get("face") and e["frame"] in by_frame and track.kept[by_frame[e["frame"]]]]
            rows = [by_frame[e["frame"]] for e in entries]
            times = np.asarray(track.time[:], np.float64)[rows]
            driver_mouth = mesh_mouth(np.concatenate([track.read_crops(i, i + 1) for i in rows]))
            points = driver_landmarks(track, "faceapi", video, work / "results/weights/face-api")
            if refined_points is None:
                refined_points = refined(entries, video, load_faceapi_landmark_net(work / "results/weights/face-api"))
            page_points = {"as logged": np.asarray([e["crop"] for e in entries], np.float64), "refined once": refined_points}
            for label, (changes, eye_on) in VARIANTS.items():
                module, report = fit_and_calibrate(faces["landmarks"], mu, dataclasses.replace(RetargetSettings(), **changes),
                                                   openings_of)
                if not eye_on and module.has_readout:
                    module.readout_steps[0] = 0.0
                z, _ = retarget_track(module, track, neutral=[0, calibration], gain=gain, transfer=transfer, landmarks=points)
                pipeline = mesh_mouth(codec.decode(z[rows]))
                for name, crop in page_points.items():
                    neutral = neutral_shape(normalise_landmarks(crop), times, (0, calibration))
                    page = mesh_mouth(codec.decode(module.drive(crop, neutral)))
                    lines.append(f"| {ACTOR} seed {seed} | {label} | {name} | {pearson(page, pipeline):.3f} | "
                                 f"{pearson(page, driver_mouth):.3f} | {pearson(pipeline, driver_mouth):.3f} | "
                                 f"{report['eye_mouth_response']:.3f} ({report['eye_mouth_removed']:.3f}) |")
                    print(lines[-1], f"({time.perf_counter() - t0:.0f} s)", flush=True)
    lines += ["", f"{len(log)} logged frames; {(time.perf_counter() - t0) / 60:.1f} min on {os.cpu_count()} CPU cores. "
              "'refined once': the page's points after one more pass of face-api's net in the box around its own "
              "answer (the port on the same frames). The page now takes that pass itself on the frames its detector runs: "
              "a log written since holds refined points already."]
    (REPO / "bench/results/page_points.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
