"""Training on a shared machine (issue 15 item 9): two `train_vae` jobs in two Snakemake processes
at once, and one job beside a foreign busy process, against the same job alone.

Each run trains one actor on the same faces (lp_d6's first 10 s, tracked once by the workflow and
copied into every work folder) with the default network for a few epochs, through the real
workflow (snakemake, 2 cores, the rule's threads). Times are the train_vae job's own wall seconds
(Snakemake's benchmark file). Rows for each OpenMP wait policy: ``passive`` (what facevae sets
unless OMP_WAIT_POLICY is already set: idle threads sleep) and ``active`` (libgomp's spinning, the
old behaviour, forced with OMP_WAIT_POLICY=ACTIVE). Target: two jobs each at most 2.5x their idle
time. The foreign process (two threads spinning in numpy) is a row without a target.

Writes bench/results/contention.md. Run on an otherwise idle machine:
.venv/bin/python bench/bench_contention.py (~10 min; the active-policy contended row is the slow one).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
MEDIA = Path(os.environ.get("FACEVAE_MEDIA", REPO.parent / "shared" / "data"))
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
EPOCHS = int(os.environ.get("FACEVAE_BENCH_EPOCHS", "4"))
TARGET = 2.5


def config() -> dict:
    return {"actors": {"a": {"videos": {"v": {"path": str(MEDIA / "videos" / "lp_d6.mp4"), "end": 10.0}}}},
            "faces": {"aligner": "dlib"},
            "train": {"epochs": EPOCHS, "min_steps": 0, "checkpoint_minutes": 0, "holdout": {"blocks": 1, "gap_seconds": 0.5}}}


def snakemake(work: Path, target: str, env: dict) -> subprocess.Popen:
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.yaml").write_text(yaml.safe_dump(config()))
    cmd = [SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(work), "--configfile",
           str(work / "config.yaml"), "--cores", "2", target]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)


def seconds(work: Path) -> float:
    return float(pd.read_csv(work / "results/benchmarks/train_vae/a.tsv", sep="\t").s.iloc[0])


def fresh(root: Path, name: str, faces: Path) -> Path:
    """A work folder holding the tracked faces (mtimes kept) and no model."""
    work = root / name
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(faces, work, symlinks=True)
    shutil.rmtree(work / "results" / "models", ignore_errors=True)
    shutil.rmtree(work / "results" / "benchmarks" / "train_vae", ignore_errors=True)
    return work


BUSY = ("import numpy as np, threading\n"
        "a = np.random.rand(400, 400)\n"
        "def spin():\n"
        "    while True: a @ a\n"
        "[threading.Thread(target=spin, daemon=True).start() for _ in range(2)]\n"
        "threading.Event().wait()\n")


def main() -> None:
    root = Path(os.environ.get("BENCH_CONTENTION_WORKDIR") or tempfile.mkdtemp(prefix="bench_contention."))
    base = root / "faces"
    if not (base / "results/faces/a.h5").exists():
        proc = snakemake(base, "results/faces/a.h5", dict(os.environ))
        assert proc.wait() == 0, "the faces stage failed"
    rows = []
    for policy in ("passive", "active"):
        env = dict(os.environ)
        env.pop("OMP_WAIT_POLICY", None)
        if policy == "active":
            env["OMP_WAIT_POLICY"] = "ACTIVE"
        alone = fresh(root, f"{policy}-alone", base)
        assert snakemake(alone, "results/models/a/model.pt", env).wait() == 0
        idle = seconds(alone)
        rows.append({"policy": policy, "run": "alone", "job seconds": idle, "x idle": 1.0, "target": ""})
        one, two = fresh(root, f"{policy}-one", base), fresh(root, f"{policy}-two", base)
        procs = [snakemake(w, "results/models/a/model.pt", env) for w in (one, two)]
        assert all(p.wait() == 0 for p in procs)
        for label, work in (("two at once (1st)", one), ("two at once (2nd)", two)):
            rows.append({"policy": policy, "run": label, "job seconds": seconds(work), "x idle": seconds(work) / idle,
                         "target": f"<= {TARGET}"})
        busy = subprocess.Popen([sys.executable, "-c", BUSY])
        try:
            time.sleep(1)
            foreign = fresh(root, f"{policy}-foreign", base)
            assert snakemake(foreign, "results/models/a/model.pt", env).wait() == 0
        finally:
            busy.kill()
            busy.wait()
        rows.append({"policy": policy, "run": "beside a 2-thread busy process", "job seconds": seconds(foreign),
                     "x idle": seconds(foreign) / idle, "target": "(none)"})
    table = pd.DataFrame(rows)
    met = table[table.target.str.startswith("<=")].groupby("policy")["x idle"].max()
    lines = ["# Training on a shared machine (bench/bench_contention.py)", "",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs. One train_vae job (default "
             f"network, lp_d6's first 10 s, {EPOCHS} epochs) per Snakemake process, --cores 2 each. "
             "x idle = the job's wall seconds over the same job alone.", "",
             "| policy | run | job seconds | x idle | target |", "|---|---|---|---|---|"]
    for r in table.itertuples():
        lines.append(f"| {r.policy} | {r.run} | {r._3:.1f} | {r._4:.2f} | {r.target} |")
    lines += ["", "Two jobs at once, worst of the pair: " + ", ".join(
        f"{p} {v:.2f}x ({'met' if v <= TARGET else 'not met'})" for p, v in met.items())]
    out = REPO / "bench" / "results" / "contention.md"
    out.write_text("\n".join(lines) + "\n")
    print(out.read_text())


if __name__ == "__main__":
    main()
