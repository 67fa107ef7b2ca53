"""What the quality benches share: running the real workflow on a bench config, and reading a
reenactment's score file back as one table row. Public (no leading underscores): bench scripts import
it; nothing under tests/ is imported."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[2]
MEDIA = Path(os.environ.get("FACEVAE_MEDIA", REPO.parent / "shared" / "data"))
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


def run_workflow(workdir: Path, cfg: dict, targets: list[str], forced: tuple[str, ...] = (), cores: int | None = None) -> None:
    """``snakemake`` on ``cfg`` (written to workdir/config.yaml) for ``targets``, in ``workdir``.
    ``cores`` defaults to $BENCH_CORES or 2; two benches in parallel run one core each (two one-thread
    trainings share the 2 cores better than one two-thread training, bench/results/contention.md)."""
    cores = cores or int(os.environ.get("BENCH_CORES", "2"))
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    cmd = [SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir), "--configfile",
           str(workdir / "config.yaml"), "--cores", str(cores), "--set-threads", "reenact=1", "--rerun-incomplete",
           *targets, "--rerun-triggers", "mtime"]  # the targets before the options that take several values
    if forced:
        cmd += ["--forcerun", *forced]
    print("==", workdir, flush=True)
    subprocess.run(cmd, check=True)


def score_row(workdir: Path, actor: str, driver: str, video: str) -> dict:
    """One reenactment's score file as a flat row: per instrument (mesh, dlib) and opening (mouth, eye)
    r, the retrieval baseline's r and the amplitude ratio; identity kept, frames, the reenact job's seconds."""
    base = workdir / f"results/reenact/{actor}/{driver}/{video}"
    t = pd.read_csv(f"{base}.tsv", sep="\t").set_index(["instrument", "measure"])
    row = {"actor": actor, "driver": driver}
    for inst in ("mesh", "dlib"):
        for part in ("mouth", "eye"):
            r = t.loc[(inst, f"{part}_open")]
            row[f"{inst}_{part}"] = float(r.pearson)
            row[f"base_{inst}_{part}"] = float(r.baseline_pearson)
            row[f"amp_{inst}_{part}"] = float(r.amplitude_ratio) if "amplitude_ratio" in r else float("nan")
    mm = t.loc[("mesh", "mouth_open")]
    row.update(method=str(mm.drive), frames=int(mm.kept_frames), scored=float(mm.scored_share),
               identity_kept=float(mm.identity_kept), circular_p95=float(mm.circular_p95))
    bench = workdir / f"results/benchmarks/reenact/{actor}/{driver}/{video}.tsv"
    row["seconds"] = float(pd.read_csv(bench, sep="\t").s.iloc[0]) if bench.is_file() else float("nan")
    return row


def provenance(overrides: dict | None = None) -> list[str]:
    """The lines every bench table starts with: date, commit, machine, and the overrides it ran with."""
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                           text=True).stdout.strip()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").is_file() else platform.processor()
    return [f"Date: {datetime.date.today().isoformat()}; commit: {commit}{' (+ uncommitted changes)' if dirty else ''}; "
            f"machine: {os.cpu_count()} cores, {cpu}, Python {platform.python_version()}",
            f"Overrides: {yaml.safe_dump(overrides or {}, default_flow_style=True, width=10**6).strip()}"]
