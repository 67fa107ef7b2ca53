"""Own clips: how much of the retargeted z to mix into the encoder's (render.self_blend)?

Reads a bench_transfer work folder (BENCH_TRANSFER_WORKDIR, its ``auto`` run): per actor, the held-out
rest of its own clip is driven through the encoder, through the retargeting map (the default
render.retarget, face-api's mouth points), and through blends of the two
(facevae.driving.blend_latents); the decoded faces are scored with the face mesh as the score files
score them (mouth and eye r against the driver's crops).

Writes bench/results/self_blend.md. Run: BENCH_TRANSFER_WORKDIR=<dir> .venv/bin/python bench/archive/sweep_self_blend.py
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

from bench_transfer import ACTORS  # noqa: E402
from facevae.driving import blend_latents, drive_track, encode_track  # noqa: E402
from facevae.expression import pearson  # noqa: E402
from facevae.faces.io import DriverTrack  # noqa: E402
from facevae.modelio import Codec, load_model  # noqa: E402
from facevae.render import RenderConfig  # noqa: E402
from sweep_retarget import mesh_measure  # noqa: E402

SHARES = (0.0, 0.25, 0.5, 0.75, 1.0)


def main() -> None:
    torch.set_num_threads(2)
    work = Path(os.environ["BENCH_TRANSFER_WORKDIR"]) / "auto"
    render = RenderConfig()
    measure = mesh_measure(render)
    t0 = time.perf_counter()
    lines = ["# Own-clip blend of encoder and retargeting (bench/archive/sweep_self_blend.py)", "",
             "The transfer bench's four actors, each driven by the held-out rest of its own clip; z = (1 - share) x the "
             "encoder's + share x the retargeted z (share 0: the encoder alone, 1: the map alone). Face-mesh mouth r "
             "(eye r) of the driver's crops and the decoded faces over the kept frames, as the score files measure them "
             "(no render.smooth).", "",
             "| actor | frames | " + " | ".join(f"share {s:g}" for s in SHARES) + " |", "|---|---|" + "---|" * len(SHARES)]
    for a in ACTORS:
        codec = Codec(load_model(work / f"results/models/{a}/model.pt"))
        with DriverTrack(work / f"results/tracks/{a}rest/rest.h5") as track:
            rows = np.flatnonzero(track.kept)
            driver = measure(track.read_crops(0, track.n)[rows])
            z_encoder = encode_track(codec, track)
            z_retarget, _ = drive_track("retarget", codec, track, work / f"results/models/{a}/retarget.pt", render.retarget,
                                        video_path=work / f"results/videos/{a}rest/rest.mp4",
                                        faceapi_model=work / "results/weights/face-api")
        cells = []
        for share in SHARES:
            got = measure(codec.decode(blend_latents(z_encoder, z_retarget, share)[rows]))
            cells.append(f"{pearson(driver[:, 0], got[:, 0]):.3f} ({pearson(driver[:, 1], got[:, 1]):.3f})")
        lines.append(f"| {a} | {len(rows)} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    lines += ["", f"{(time.perf_counter() - t0) / 60:.1f} min on {os.cpu_count()} CPU cores."]
    (REPO / "bench/results/self_blend.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
