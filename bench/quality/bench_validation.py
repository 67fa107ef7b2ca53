"""Driving on people no default was chosen on (issue 38's validation set).

The tuning set is bench_transfer.py's (lp_d6, lp_d10, lp_d3, lp_d13 and tpsmm): every driving
default was chosen there. This bench never informs a choice; it reports. Actors: four other
single-person shared clips -- lp_d11 (a girl talking, looks around), lp_d12 (surprised), lp_s18
(upper body, little mouth movement), lp_s32 (talking) -- each trained with the defaults on its whole
clip. Drivers: the three HDTF talking-head clips (natural speech: small, fast mouth movements, the
mouth half open at rest) and each other validation actor's whole clip: 24 cross pairs, through the
real workflow with the default config, so the numbers are the score files a user gets (face mesh:
the independent instrument; dlib; the retrieval baseline -- the actor's own training face with the
nearest mouth and eye landmarks; the amplitude ratio -- the rendered opening's s.d. over the
baseline's, same instrument and frames).

Writes bench/results/validation.md (+ .tsv) and a contact sheet of the weakest pair. Run from the
repository root: .venv/bin/python bench/quality/bench_validation.py. BENCH_VALIDATION_WORKDIR keeps (and
reuses) the work folder; BENCH_VALIDATION_FORCERUN reruns those rules (e.g. ``fit_retarget``).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import MEDIA, REPO, provenance, run_workflow, score_row  # noqa: E402

ACTORS = {"d11": "lp_d11.mp4", "d12": "lp_d12.mp4", "s18": "lp_s18.mp4", "s32": "lp_s32.mp4"}
TALKERS = {"hdtf_rd": "hdtf_RD_Radio2_000.mp4", "hdtf_bm": "hdtf_WDA_BobMenendez_000.mp4",
           "hdtf_em": "hdtf_WDA_EdMarkey0_000.mp4"}
TARGETS = {"mesh mouth r (median)": 0.6, "mesh mouth amplitude ratio (median)": 0.7, "mesh eye r (median)": 0.5,
           "identity kept (median)": 0.95, "dlib mouth r (median)": 0.6}


def config(render: dict | None = None) -> dict:
    videos = MEDIA / "videos"
    actors = {a: {"videos": {"full": {"path": str(videos / clip)}}} for a, clip in ACTORS.items()}
    drivers = {t: {"videos": {"talk": {"path": str(videos / clip)}}} for t, clip in TALKERS.items()}
    drivers.update({f"{a}full": {"videos": {"full": {"path": str(videos / clip)}}} for a, clip in ACTORS.items()})
    pairs = [{"actor": a, "driver": d} for a in ACTORS for d in [*TALKERS, *(f"{b}full" for b in ACTORS if b != a)]]
    cfg = {"actors": actors, "drivers": drivers, "reenact": pairs, "faces": {"aligner": "dlib"}}
    if render:
        cfg["render"] = render
    return cfg


def video_of(driver: str) -> str:
    return "talk" if driver in TALKERS else "full"


def targets(cfg: dict) -> list[str]:
    return [f"results/reenact/{p['actor']}/{p['driver']}/{video_of(p['driver'])}.tsv" for p in cfg["reenact"]]


def main() -> None:
    import pandas as pd

    if not (MEDIA / "videos" / "hdtf_RD_Radio2_000.mp4").is_file():
        sys.exit(f"bench_validation: {MEDIA}/videos not found (set FACEVAE_MEDIA)")
    work = Path(os.environ.get("BENCH_VALIDATION_WORKDIR") or tempfile.mkdtemp(prefix="bench_validation."))
    forced = tuple(os.environ.get("BENCH_VALIDATION_FORCERUN", "").split())
    t0 = time.perf_counter()
    cfg = config()
    run_workflow(work, cfg, targets(cfg), forced)
    rows = pd.DataFrame([score_row(work, p["actor"], p["driver"], video_of(p["driver"])) for p in cfg["reenact"]])
    out = REPO / "bench" / "results"
    rows.to_csv(out / "validation.tsv", sep="\t", index=False, float_format="%.4f")
    print(rows.to_string())
    print(f"{time.perf_counter() - t0:.0f} s", provenance())


if __name__ == "__main__":
    main()
