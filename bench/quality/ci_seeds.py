"""The CI pipeline's scored pairs at train.seed 0 / 1 / 2: where tests/test_render_pipeline.py's bars
come from (each bar sits 0.1 below the lowest seed).

Builds the test session's pipeline config (config.yaml with the shared media's local files instead of
the loopback URLs, plus tests/support/pipeline.py's overrides -- the one definition of the CI run),
runs the workflow to its three reenactments (d6 by tpsmm, by its own held-out rest, by an HDTF
talker) once per seed -- seeds 1 and 2 reuse seed 0's videos, tracks and faces -- and prints each
pair's face-mesh mouth / eye r, circular-shift p95 and amplitude ratio, and dlib's mouth r.
With BENCH_CI_PAGE=1 it also builds d6's page and steps through tpsmm in its video-file mode as
tests/test_page.py does (Chromium), and prints the page-vs-pipeline mouth r that test's bar comes from.

    .venv/bin/python bench/quality/ci_seeds.py WORKDIR [seed ...]     (BENCH_CI_FORCERUN: rules to rerun)
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import MEDIA, REPO, provenance, run_workflow  # noqa: E402

sys.path.insert(0, str(REPO / "tests"))
from support.pipeline import pipeline_overrides  # noqa: E402
from support.workflow import deep_merge  # noqa: E402

PAGE_ACTOR, PAGE_DRIVER, PAGE_VIDEO = "d6", "tpsmm", "driving"  # tests/test_page.py's

LOCAL = {"d6": "lp_d6.mp4", "d10": "lp_d10.mp4", "tpsmm": "tpsmm_driving.mp4"}
PAIRS = (("tpsmm", "driving"), ("d6rest", "rest"), ("hdtf", "talk"))


def config(seed: int) -> dict:
    base = yaml.safe_load((REPO / "config.yaml").read_text())
    for group in ("actors", "drivers"):
        for person, entry in base[group].items():
            for video in entry["videos"].values():
                video.pop("url")
                video["path"] = str(MEDIA / "videos" / LOCAL[person])
    cfg = deep_merge(base, pipeline_overrides(lambda rel: MEDIA / rel))
    cfg.pop("celeba", None)  # the attribute stage plays no part in these three scores
    cfg.pop("attributes", None)
    cfg["train"] = {**cfg["train"], "seed": seed}
    return cfg


def page_row(work: Path) -> dict:
    """tests/test_page.py's video-file comparison on ``work``'s built page (a served copy, as its fixture)."""
    import json
    import tempfile

    from facevae.serve_page import serve
    from support.browser import PageSession, playwright_module
    from support.page_compare import compare_with_pipeline, copy_site, step_through

    with tempfile.TemporaryDirectory() as folder:
        server = serve(copy_site(work, PAGE_ACTOR, PAGE_DRIVER, PAGE_VIDEO, Path(folder)))
        try:
            with playwright_module()() as pw:
                s = PageSession(pw, f"http://127.0.0.1:{server.server_address[1]}/")
                try:
                    log = step_through(s, work, PAGE_DRIVER, PAGE_VIDEO)
                finally:
                    s.close()
        finally:
            server.shutdown()
    (work / "page_log.json").write_text(json.dumps(log))  # the page's own points, for a closer look
    manifest = json.loads((work / f"results/explore/{PAGE_ACTOR}/page.json").read_text())
    c = compare_with_pipeline(log, work, PAGE_ACTOR, PAGE_DRIVER, PAGE_VIDEO, manifest)
    return {"page_vs_pipeline_mouth": c["mouth_r"], "shift_p95": c["shift_p95"], "median_diff": c["median_diff"],
            "page_transfer": c["page_transfer"], "pipeline_transfer": c["pipeline_transfer"]}


def main() -> None:
    root = Path(sys.argv[1])
    seeds = [int(s) for s in sys.argv[2:]] or [0, 1, 2]
    forced = tuple(os.environ.get("BENCH_CI_FORCERUN", "").split())
    rows = []
    for seed in seeds:
        work = root / f"seed{seed}"
        if seed != 0 and not (work / "results").exists():
            (work / "results").mkdir(parents=True)
            for stage in ("videos", "tracks", "faces", "weights"):
                shutil.copytree(root / "seed0" / "results" / stage, work / "results" / stage, symlinks=True)
        targets = [f"results/reenact/d6/{d}/{v}.tsv" for d, v in PAIRS]
        page = os.environ.get("BENCH_CI_PAGE") == "1"
        if page:
            targets.append(f"results/explore/{PAGE_ACTOR}/index.html")
        run_workflow(work, config(seed), targets, forced)
        if page:
            print({"seed": seed, **{k: round(v, 4) for k, v in page_row(work).items()}}, flush=True)
        for d, v in PAIRS:
            t = pd.read_csv(work / f"results/reenact/d6/{d}/{v}.tsv", sep="\t").set_index(["instrument", "measure"])
            mm, me, dm = t.loc[("mesh", "mouth_open")], t.loc[("mesh", "eye_open")], t.loc[("dlib", "mouth_open")]
            rows.append({"seed": seed, "driver": d, "drive": mm.drive, "mesh_mouth": mm.pearson, "circular_p95": mm.circular_p95,
                         "amp_mouth": mm.get("amplitude_ratio"), "mesh_eye": me.pearson, "dlib_mouth": dm.pearson,
                         "identity_kept": mm.identity_kept})
    print("\n".join(provenance({"train.seed": seeds})))
    print(pd.DataFrame(rows).round(3).to_string(index=False))


if __name__ == "__main__":
    main()
