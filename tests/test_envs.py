"""The conda envs (for `--sdm conda` users) pin exactly what pyproject.toml pins.

Conda cannot be solved here (no conda channels are reachable), so the check is on the files.
"""

import re
import tomllib

import pytest
import yaml

from support.media import REPO
from support.timeouts import hang_guard


def requirement_name(spec: str) -> str:
    return re.split(r"[<>=!~ \[;]", spec, maxsplit=1)[0].lower().replace("_", "-")


def pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {requirement_name(spec): spec.replace(" ", "") for spec in project["dependencies"]}


ENV_FILES = sorted((REPO / "envs").glob("*.yaml"))


@pytest.mark.parametrize("env_file", ENV_FILES, ids=[f.name for f in ENV_FILES])
def test_env_pins_agree_with_pyproject(env_file):
    pins = pyproject_pins()
    env = yaml.safe_load(env_file.read_text())
    pip_specs = [spec for dep in env["dependencies"] if isinstance(dep, dict) for spec in dep.get("pip", [])]
    if not pip_specs:  # only the page's env: Python's standard library and node (next test)
        assert env_file.name == "page.yaml" and any(str(d).startswith("nodejs") for d in env["dependencies"]), \
            f"{env_file.name} lists no pip packages"
        return
    for spec in pip_specs:
        name = requirement_name(spec)
        assert name in pins, f"{env_file.name}: {name} is not a dependency in pyproject.toml"
        assert spec.replace(" ", "") == pins[name], f"{env_file.name}: {spec!r} differs from pyproject's {pins[name]!r}"


def test_every_env_is_used_by_a_rule():
    rule_text = "\n".join(p.read_text() for p in (REPO / "rules").glob("*.smk"))
    for env_file in ENV_FILES:
        assert f"envs/{env_file.name}" in rule_text, f"{env_file.name} is used by no rule"


def test_the_page_rule_needs_only_the_standard_library():
    """envs/page.yaml has no pip packages: rule page's Python imports nothing outside the stdlib."""
    import subprocess
    import sys

    code = ("import sys; import facevae.webruntime, facevae.rulerun; "
            "print(sorted(m for m in ('numpy', 'torch', 'cv2', 'h5py', 'yaml', 'pandas') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO / "workflow", timeout=hang_guard(60))
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr
