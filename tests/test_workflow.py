"""Static checks of the Snakemake workflow: lint, formatting, and every rule's log/benchmark/conda."""

import re
import subprocess
import sys
from pathlib import Path

from conftest import REPO

BIN = Path(sys.executable).parent


def test_snakemake_lint_is_clean():
    result = subprocess.run([BIN / "snakemake", "--lint"], cwd=REPO, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Congratulations, your workflow is in a good condition!" in output, output


def test_snakefmt_formatting():
    result = subprocess.run(
        [BIN / "snakefmt", "--check", "rules", "Snakefile"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def rule_blocks():
    """(file, rule name, body) of every rule in rules/*.smk (body = its indented lines)."""
    for smk in sorted((REPO / "rules").glob("*.smk")):
        text = smk.read_text()
        for match in re.finditer(r"^rule (\w+):\n((?:[ \t]+.*\n|\n)+)", text, flags=re.M):
            yield smk.name, match.group(1), match.group(2)


def test_every_rule_has_log_benchmark_and_conda():
    rules = list(rule_blocks())
    assert rules, "no rules found"
    for smk, name, body in rules:
        for directive in ("log:", "benchmark:", "conda:"):
            assert re.search(rf"^\s+{directive}", body, flags=re.M), f"{smk}: rule {name} has no {directive}"
