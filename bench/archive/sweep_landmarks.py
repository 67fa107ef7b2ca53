"""Which landmark model should drive? dlib's 68 points (the tracks') against face-api's (the page's,
through the PyTorch port facevae.faces.faceapi_landmarks), on the transfer bench's 16 cross pairs.

Reads a bench_transfer work folder (BENCH_TRANSFER_WORKDIR, its ``auto`` run). For every kept frame
of a track, face-api's net runs on the frame as the page's tracking runs it: in the box around the
dlib landmarks (align.js boxAround, margin 1.25), then once more in the box around its own
answer; the points are carried into the track's crop by the track's transform (the map normalises
position and scale). Variants: ``dlib`` (the default, reproduces sweep_retarget's default row),
``face-api driver`` (the actors' maps fitted on dlib points, drivers' points from face-api -- the
page's situation), ``face-api mouth driver`` (the drivers' mouth points, 48-67, from face-api,
the rest from dlib), ``face-api both`` (maps refitted on face-api points of the actors' own frames).
Each map is fitted as rule fit_retarget fits it (driving.fit_and_calibrate) and driven with the
default transfer (render.retarget.transfer); the decoded faces are scored with the face mesh as the score files are.
The retrieval column is the score files' (dlib points); ``retrieval face-api`` retrieves with
face-api points on both sides.

Writes bench/results/landmark_sweep.md (and .tsv). Run:
BENCH_TRANSFER_WORKDIR=<dir> FACEAPI_MODEL_DIR=<face-api package>/model .venv/bin/python bench/archive/sweep_landmarks.py
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))
sys.path.insert(0, str(REPO / "bench"))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from bench_transfer import ACTORS  # noqa: E402
from facevae.driving import NEUTRAL_TRANSFER, RetargetSettings, fit_and_calibrate, neutral_shape, normalise_landmarks  # noqa: E402
from facevae.expression import pearson  # noqa: E402
from facevae.faces.faceapi_landmarks import load_faceapi_landmark_net, track_landmarks, with_faceapi_mouth  # noqa: E402
from facevae.faces.io import DriverTrack  # noqa: E402
from facevae.render import RenderConfig  # noqa: E402
from sweep_retarget import bench_actor, bench_drivers, mesh_measure  # noqa: E402
from facevae.scoring import jitter, retrieval_index  # noqa: E402

def main() -> None:
    torch.set_num_threads(2)
    work = Path(os.environ["BENCH_TRANSFER_WORKDIR"]) / "auto"
    net = load_faceapi_landmark_net(os.environ.get("FACEAPI_MODEL_DIR",
                                                   "/tmp/facevae-faceapi-js/node_modules/@vladmandic/face-api/model"))
    render = RenderConfig()
    measure = mesh_measure(render)
    t0 = time.perf_counter()
    drivers = bench_drivers(work, measure)
    for b, drv in drivers.items():
        fa = track_landmarks(drv["track"], drv["video"], net, drv["rows"])
        drv.update({"dlib": drv["landmarks"], "face-api": fa, "face-api mouth": with_faceapi_mouth(drv["landmarks"], fa)})
        print(f"driver {b}: {len(drv['rows'])} frames ({time.perf_counter() - t0:.0f} s)", flush=True)
    out = []
    for a in ACTORS:
        faces, codec, mu, openings_of = bench_actor(work, a)
        track = DriverTrack(work / f"results/tracks/{a}/{a}.h5")
        by_frame = {int(f): r for r, f in enumerate(track.frame)}
        rows = np.array([by_frame[int(f)] for f in faces["frame"]])
        actor_fa = track_landmarks(track, work / f"results/videos/{a}/{a}.mp4", net, rows)
        # the faces file's points are the track's (same crop): check, so the transform is the right one
        assert np.allclose(np.asarray(track.landmarks[:])[rows], faces["landmarks"], atol=1e-3)
        maps = {"dlib": fit_and_calibrate(faces["landmarks"], mu, RetargetSettings(), openings_of)[0],
                "face-api": fit_and_calibrate(actor_fa, mu, RetargetSettings(), openings_of)[0]}
        for module in maps.values():
            module.transfer = NEUTRAL_TRANSFER  # as rule reenact sets render.retarget.transfer
        for b, drv in drivers.items():
            if b == a:
                continue
            row = {"actor": a, "driver": b}
            for label, actor_points, driver_points in (("dlib", "dlib", "dlib"), ("face-api driver", "dlib", "face-api"),
                                                       ("face-api mouth driver", "dlib", "face-api mouth"),
                                                       ("face-api both", "face-api", "face-api")):
                lm = drv[driver_points]
                z = maps[actor_points].drive(lm, neutral_shape(normalise_landmarks(lm)))
                got = measure(codec.decode(z))
                row[f"{label} mouth"] = pearson(drv["mesh"][:, 0], got[:, 0])
                row[f"{label} eye"] = pearson(drv["mesh"][:, 1], got[:, 1])
                row[f"{label} jitter"] = jitter(got[:, 0], drv["mesh"][:, 0])
            for label, actor_points, driver_points in (("retrieval", faces["landmarks"], drv["dlib"]),
                                                       ("retrieval face-api", actor_fa, drv["face-api"])):
                got = measure(faces["data"][retrieval_index(actor_points, driver_points)])
                row[f"{label} mouth"] = pearson(drv["mesh"][:, 0], got[:, 0])
                row[f"{label} eye"] = pearson(drv["mesh"][:, 1], got[:, 1])
            out.append(row)
            print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
    table = pd.DataFrame(out)
    dest = REPO / "bench/results/landmark_sweep"
    table.to_csv(dest.with_suffix(".tsv"), sep="\t", index=False, float_format="%.4f")
    labels = ["dlib", "face-api driver", "face-api mouth driver", "face-api both", "retrieval", "retrieval face-api"]
    lines = ["# Landmark model for driving (bench/archive/sweep_landmarks.py)", "",
             f"The transfer bench's four actors and 16 cross pairs ({(time.perf_counter() - t0) / 60:.1f} min). Face-mesh r of "
             "the driver's and the decoded actor's opening series over the kept frames, as the score files measure them; "
             "within 0.05 = pairs whose mouth r is within 0.05 of the (dlib) retrieval baseline's or above.", "",
             "| variant | mouth r median | eye r median | mouth r min | within 0.05 of retrieval |", "|---|---|---|---|---|"]
    for label in labels:
        m = table[f"{label} mouth"]
        lines.append(f"| {label} | {m.median():.3f} | {table[f'{label} eye'].median():.3f} | {m.min():.3f} | "
                     f"{int((m >= table['retrieval mouth'] - 0.05).sum())} of {len(m)} |")
    lines += ["", "Per pair, mouth r (eye r):", "", "| actor | driver | " + " | ".join(labels) + " |",
              "|---|---|" + "---|" * len(labels)]
    for _, r in table.iterrows():
        lines.append(f"| {r.actor} | {r.driver} | " + " | ".join(f"{r[f'{x} mouth']:.2f} ({r[f'{x} eye']:.2f})" for x in labels) + " |")
    dest.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:12]))


if __name__ == "__main__":
    main()
