"""Should the read-out's eye step leave the decoded mouth alone (render.retarget.eye_keeps_mouth)?

The eye step (driving.fit_readout) moves z along the actor's eye-opening direction, a regression
direction that also opens or closes the decoded mouth (eye and mouth co-vary in an actor's frames).
A driver's eyes then move the actor's mouth, and the page -- whose eye points come from face-api,
the pipeline's from dlib -- renders another mouth than the pipeline (issue 13: with the eye step off,
the page's own points follow the pipeline's mouth at 0.805 instead of 0.683). driving.decouple_eye_step
measures on the decoder how far the eye step and the mouth direction move the decoded mouth (dlib)
and takes the cancelling share of the mouth direction out of the eye step.

Same rows as bench/archive/sweep_brow_weight.py (its bench_rows / ci_pair): the transfer bench's 16 cross
pairs with the pipeline's points and the simulated page's, each actor's own held-out rest through
the own-clip blend beside the plain encoder, and the CI pipeline's d6 (SWEEP_CI_WORKDIR). The page's
own points are bench/archive/sweep_page_points.py's instrument.

Writes bench/results/eye_step.md (and .tsv). Run: BENCH_TRANSFER_WORKDIR=<dir> [SWEEP_CI_WORKDIR=<dir>] .venv/bin/python bench/archive/sweep_eye_step.py
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))
sys.path.insert(0, str(REPO / "bench"))

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from facevae.driving import NEUTRAL_TRANSFER, RetargetSettings  # noqa: E402
from facevae.render import RenderConfig  # noqa: E402
from sweep_retarget import mesh_measure  # noqa: E402
from sweep_brow_weight import sweep  # noqa: E402

VARIANTS = {
    "eye step as fitted": dataclasses.replace(RetargetSettings(), eye_keeps_mouth=False),
    "eye step keeps the mouth": dataclasses.replace(RetargetSettings(), eye_keeps_mouth=True),
}


def markdown(table: pd.DataFrame, seconds: float) -> str:
    lines = ["# The eye step and the decoded mouth (bench/archive/sweep_eye_step.py)", "",
             f"{seconds / 60:.1f} min on {os.cpu_count()} CPU cores. The transfer bench's 16 cross pairs with the pipeline's "
             "points (dlib, face-api's mouth) and the simulated page's (face-api's 68 through the port); own = the actor's "
             "held-out rest through the own-clip blend (render.self_blend) beside the plain encoder. Face-mesh r as the "
             "score files measure it; page vs pipeline = r of the two renders' mesh mouth series.", "",
             "| variant | cross mouth r | cross eye r | cross dlib mouth r | within 0.05 of retrieval | mouth r min | "
             "page (simulated) vs pipeline median (min) | own blend mouth r (encoder) | own blend eye r |",
             "|---|---|---|---|---|---|---|---|---|"]
    bench = table[~table.actor.str.startswith("ci d6")] if len(table) else table
    for label in VARIANTS:
        t = bench[bench.variant == label]
        if t.empty:
            continue
        cross, own = t[t.driver != "own"], t[t.driver == "own"]
        within = int((cross.pipeline_mesh_mouth >= cross.retrieval_mouth - 0.05).sum())
        own_mouth = ", ".join(f"{r.actor} {r.mesh_mouth:.3f} ({r.encoder_mouth:.3f})" for r in own.itertuples())
        own_eye = ", ".join(f"{r.actor} {r.mesh_eye:.3f}" for r in own.itertuples())
        lines.append(f"| {label} | {cross.pipeline_mesh_mouth.median():.3f} | {cross.pipeline_mesh_eye.median():.3f} | "
                     f"{cross.dlib_mouth.median():.3f} | {within} of {len(cross)} | {cross.pipeline_mesh_mouth.min():.3f} | "
                     f"{cross.page_vs_pipeline.median():.3f} ({cross.page_vs_pipeline.min():.3f}) | {own_mouth} | {own_eye} |")
    if len(bench):
        lines += ["", "Per cross pair, mesh mouth r (eye r) with the pipeline's points; retrieval's mouth r:", "",
                  "| actor | driver | " + " | ".join(VARIANTS) + " | retrieval |", "|---|---|" + "---|" * (len(VARIANTS) + 1)]
        cross = bench[bench.driver != "own"]
        for (a, b), g in cross.groupby(["actor", "driver"], sort=False):
            g = g.set_index("variant")
            cells = [f"{g.loc[v].pipeline_mesh_mouth:.3f} ({g.loc[v].pipeline_mesh_eye:.3f})" if v in g.index else "" for v in VARIANTS]
            lines.append(f"| {a} | {b} | " + " | ".join(cells) + f" | {g.retrieval_mouth.iloc[0]:.3f} |")
    ci = table[table.actor.str.startswith("ci d6")] if len(table) else table
    if len(ci):
        lines += ["", "The CI pipeline's d6 driven by tpsmm (SWEEP_CI_WORKDIR, one folder per train.seed): the page side "
                  "is the simulation (the port's points in boxes around dlib's).", "",
                  "| model | variant | cross mouth r | cross eye r | page's mouth r | page vs pipeline | own blend mouth r |",
                  "|---|---|---|---|---|---|---|"]
        for r in ci.itertuples():
            lines.append(f"| {r.actor.removeprefix('ci ')} | {r.variant} | {r.pipeline_mesh_mouth:.3f} | {r.pipeline_mesh_eye:.3f} | "
                         f"{r.page_mesh_mouth:.3f} | {r.page_vs_pipeline:.3f} | {r.own_blend_mouth:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    torch.set_num_threads(2)
    render = RenderConfig()
    measure = mesh_measure(render)
    t0 = time.perf_counter()
    table = sweep(VARIANTS, measure, render.retarget.get("transfer", NEUTRAL_TRANSFER), render.self_blend, t0)
    dest = REPO / "bench/results/eye_step"
    table.to_csv(dest.with_suffix(".tsv"), sep="\t", index=False, float_format="%.4f")
    dest.with_suffix(".md").write_text(markdown(table, time.perf_counter() - t0))
    print(dest.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
