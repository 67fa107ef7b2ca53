"""Static checks of the Snakemake workflow: lint, formatting, and every rule's log/benchmark/conda."""

import re
import subprocess
import sys
from pathlib import Path

from support.media import REPO
from support.timeouts import hang_guard

BIN = Path(sys.executable).parent


def test_snakemake_lint_is_clean():
    result = subprocess.run([BIN / "snakemake", "--lint"], cwd=REPO, capture_output=True, text=True, timeout=hang_guard(300))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Congratulations, your workflow is in a good condition!" in output, output


def test_snakefmt_formatting():
    result = subprocess.run(
        [BIN / "snakefmt", "--check", "rules", "Snakefile"], cwd=REPO, capture_output=True, text=True, timeout=hang_guard(120)
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


def _dry_run(workdir: Path, *configfiles: Path) -> str:
    """`snakemake -n` as a user types it in the repository (the default profile applies)."""
    cmd = [BIN / "snakemake", "--directory", str(workdir), "--configfile", *map(str, configfiles), "-n"]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=hang_guard(300))
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_a_users_configfile_stands_alone(tmp_path):
    """`--configfile my.yaml` as the README shows it: only my.yaml's people are scheduled, not the
    demo config.yaml's three (whose downloads fail offline and train two extra actors online)."""
    import yaml

    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"not read by a dry run")
    mine = tmp_path / "my.yaml"
    mine.write_text(yaml.safe_dump({"actors": {"mine": {"videos": {"clip": {"path": str(clip)}}}}}))
    output = _dry_run(tmp_path / "work", mine)
    people = set(re.findall(r"wildcards: (?:person|actor)=(\w+)", output))
    assert people == {"mine"}, people
    demo = yaml.safe_load((REPO / "config.yaml").read_text())
    assert not any(f"results/videos/{name}/" in output for name in [*demo["actors"], *demo["drivers"]]), output
    # A preset still lays over the user's config when both are named.
    blog = _dry_run(tmp_path / "work", mine, REPO / "presets" / "blog2017.yaml")
    assert set(re.findall(r"wildcards: (?:person|actor)=(\w+)", blog)) == {"mine"}


def rule_resources(body: str) -> dict:
    """``name=value`` pairs of a rule body's ``resources:`` block (numbers as int)."""
    block = re.search(r"^\s+resources:\n((?:\s{8}\w+=.*\n)+)", body, flags=re.M)
    if block is None:
        return {}
    pairs = re.findall(r"^\s+(\w+)=([^,\n]+),?$", block.group(1), flags=re.M)
    return {key: int(value) if value.strip().isdigit() else value.strip() for key, value in pairs}


def test_slurm_profile_and_rules_ask_for_the_same_resources():
    """profiles/slurm's set-resources override the rules' resources on a cluster; where both name a
    resource they must agree (the profile adds only what a cluster needs beyond it, e.g. gpu), and
    every rule the profile names exists."""
    import yaml

    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    rules = {name: rule_resources(body) for _, name, body in rule_blocks()}
    assert rules["train_vae"], "the resources regex found nothing in rule train_vae"
    for name, asked in profile["set-resources"].items():
        assert name in rules, f"profiles/slurm sets resources for {name!r}, which is no rule"
        for key, value in asked.items():
            if key in rules[name]:
                assert rules[name][key] == value, (
                    f"rule {name} asks {key}={rules[name][key]}, profiles/slurm says {value}")
