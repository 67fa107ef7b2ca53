"""Real Snakemake runs for tests: the repository's config pointed at the loopback media server,
config merging, and one ``run_snakemake`` that runs the real workflow in a work folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from support.media import GITHUB_RAW, REPO
from support.timeouts import hang_guard

DEFAULT_CONFIG = REPO / "config.yaml"


def loopback_config(server, config: dict | None = None) -> dict:
    """``config`` (default: the repository's config.yaml) with its public URLs pointed at ``server``."""
    config = config if config is not None else yaml.safe_load(DEFAULT_CONFIG.read_text())
    text = yaml.safe_dump(config).replace(GITHUB_RAW, server.url + "/")
    return yaml.safe_load(text)


def deep_merge(base: dict, extra: dict) -> dict:
    """``base`` updated by ``extra``, nested dicts merged key by key (new dicts; inputs unchanged)."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def run_snakemake(workdir: Path, config: dict, *args: str, timeout: int = 900, check: bool = True):
    """Run the real workflow in ``workdir`` with ``config``; returns the CompletedProcess."""
    workdir.mkdir(parents=True, exist_ok=True)
    configfile = workdir / "config.yaml"
    configfile.write_text(yaml.safe_dump(config, sort_keys=False))
    cmd = [
        str(Path(sys.executable).parent / "snakemake"),
        "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir),
        "--configfile", str(configfile),
        "--cores", "2",
        *args,
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=hang_guard(timeout))
    result.output = result.stdout + result.stderr
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake failed ({result.returncode}):\n{result.output[-6000:]}")
    return result
