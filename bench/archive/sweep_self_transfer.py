"""Own clips: which neutral transfer should the own-clip blend's retargeted z use (render.self_transfer)?

A held-out clip of the actor is not a stranger: its median face (the driver's neutral) may sit away
from the training clips' because the actor spoke with the mouth more open (the map should keep that:
transfer 0, the clip's own shapes) or held the head lower (take it away: transfer near 1).
render.retarget.transfer's 0.75 was chosen on strangers. ``encoder`` lets the actor's encoder, which
knows the actor, decide per clip: the transfer whose retargeted z lies nearest the encoder's z
(facevae.driving.transfer_nearest).

Per actor of the transfer bench (BENCH_TRANSFER_WORKDIR, its ``auto`` run), the held-out rest of its
own clip through the blend (render.self_blend) at fixed transfers and at the encoder's pick, beside
the plain encoder; optionally the CI pipeline's d6 <- d6rest (SWEEP_CI_WORKDIR, colon-separated run
folders, one per train.seed; their map refitted with today's settings, as the rule would). Face-mesh
mouth r (eye r) of the driver's crops and the decoded faces over the kept frames, as the score files
measure them (no render.smooth) -- the same path as rule reenact (facevae.driving.drive_track).

Writes bench/results/self_transfer.md. Run: BENCH_TRANSFER_WORKDIR=<dir> [SWEEP_CI_WORKDIR=<dirs>] .venv/bin/python bench/archive/sweep_self_transfer.py
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
import torch  # noqa: E402
import yaml  # noqa: E402

from bench_transfer import ACTORS  # noqa: E402
from facevae.driving import (RetargetSettings, blend_latents, driver_landmarks, encode_track, fit_and_calibrate,  # noqa: E402
                             load_retarget, retarget_track)
from facevae.expression import pearson  # noqa: E402
from facevae.faces.io import DriverTrack  # noqa: E402
from facevae.modelio import Codec, load_model  # noqa: E402
from facevae.render import RenderConfig  # noqa: E402
from sweep_retarget import bench_actor, mesh_measure  # noqa: E402

FIXED = (0.0, 0.25, 0.5, 0.75, 1.0)


def own_clip(work: Path, actor: str, module, codec, measure, self_blend: float) -> dict:
    """Mesh mouth / eye r of the actor's held-out rest: the encoder, the blend at each FIXED transfer and at
    the encoder's pick (and the pick)."""
    driver = f"{actor}rest"
    with DriverTrack(work / f"results/tracks/{driver}/rest.h5") as track:
        rows = np.flatnonzero(track.kept)
        mesh = measure(track.read_crops(0, track.n)[rows])
        landmarks = driver_landmarks(track, "faceapi", work / f"results/videos/{driver}/rest.mp4", work / "results/weights/face-api")
        z_encoder = encode_track(codec, track)
        variants = {"encoder": z_encoder}
        for transfer in FIXED:
            z, _ = retarget_track(module, track, transfer=transfer, landmarks=landmarks)
            variants[f"{transfer:g}"] = blend_latents(z_encoder, z, self_blend)
        z, used = retarget_track(module, track, landmarks=landmarks, nearest_to=z_encoder)
        variants["pick"] = blend_latents(z_encoder, z, self_blend)
    row = {"frames": len(rows), "picked": used["transfer"]}
    for name, z in variants.items():
        got = measure(codec.decode(z[rows]))
        row[name] = (pearson(mesh[:, 0], got[:, 0]), pearson(mesh[:, 1], got[:, 1]))
    return row


def main() -> None:
    torch.set_num_threads(2)
    render = RenderConfig()
    measure = mesh_measure(render)
    t0 = time.perf_counter()
    rows = []
    work = Path(os.environ["BENCH_TRANSFER_WORKDIR"]) / "auto"
    for actor in ACTORS:  # the workflow's own map; the CI folders' below are refitted (their models were retrained)
        codec = Codec(load_model(work / f"results/models/{actor}/model.pt"))
        rows.append((actor, own_clip(work, actor, load_retarget(work / f"results/models/{actor}/retarget.pt"), codec,
                                     measure, render.self_blend)))
        print(rows[-1], flush=True)
    for ci in filter(None, os.environ.get("SWEEP_CI_WORKDIR", "").split(":")):
        ci = Path(ci)
        seed = int(((yaml.safe_load((ci / "config.yaml").read_text()) or {}).get("train") or {}).get("seed", 0))
        faces, codec, mu, openings_of = bench_actor(ci, "d6")
        module, _ = fit_and_calibrate(faces["landmarks"], mu, RetargetSettings(), openings_of)
        rows.append((f"CI d6, train.seed {seed}", own_clip(ci, "d6", module, codec, measure, render.self_blend)))
        print(rows[-1], flush=True)
    seconds = time.perf_counter() - t0
    cell = lambda r: f"{r[0]:.3f} ({r[1]:.3f})"  # noqa: E731
    lines = ["# The own-clip blend's neutral transfer (bench/archive/sweep_self_transfer.py)", "",
             f"{seconds / 60:.1f} min on {os.cpu_count()} CPU cores. Each actor driven by the held-out rest of its own clip "
             f"through the blend (render.self_blend {render.self_blend:g}) with the retargeted z's neutral transfer fixed, or "
             "picked by the encoder (render.self_transfer encoder: the transfer of 0, 0.1, ..., 1 whose z lies nearest the "
             "encoder's); the plain encoder beside them. Face-mesh mouth r (eye r) over the kept frames, as the score files "
             "measure them.", "",
             "| actor | frames | encoder | " + " | ".join(f"transfer {t:g}" for t in FIXED) + " | encoder's pick | pick |",
             "|---|---|---|" + "---|" * len(FIXED) + "---|---|"]
    for actor, r in rows:
        lines.append(f"| {actor} | {r['frames']} | {cell(r['encoder'])} | " + " | ".join(cell(r[f'{t:g}']) for t in FIXED)
                     + f" | **{cell(r['pick'])}** | {r['picked']:g} |")
    bench = [r for a, r in rows if not a.startswith("CI")]
    for name in [f"{t:g}" for t in FIXED] + ["pick"]:
        below = [a for a, r in rows if not a.startswith("CI") and r[name][0] < r["encoder"][0]]
        if name == "0":
            lines.append("")
        lines.append(f"- {'the pick' if name == 'pick' else 'transfer ' + name}: own mouth r min "
                     f"{min(r[name][0] for r in bench):.3f}, below the encoder: {', '.join(below) or 'none'}")
    (REPO / "bench/results/self_transfer.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
