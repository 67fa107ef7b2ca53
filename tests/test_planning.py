"""Rule planning lives in one light module that the rule files import at parse time."""

from __future__ import annotations

import re
import subprocess
import sys

from support.media import REPO
from support.timeouts import hang_guard

HEAVY = ("torch", "cv2", "h5py", "dlib", "numpy", "pandas", "mediapipe")


def test_planning_imports_nothing_heavy():
    code = f"import sys, facevae.planning; print([m for m in {HEAVY!r} if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO / "workflow", capture_output=True, text=True, timeout=hang_guard(60))
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


def test_rule_files_plan_through_the_planning_module():
    """The .smk files import planning (and config validation), no stage module."""
    for smk in sorted((REPO / "rules").glob("*.smk")):
        modules = set(re.findall(r"^from (facevae[\w.]*) import", smk.read_text(), flags=re.M))
        assert modules <= {"facevae.planning", "facevae.config"}, (smk.name, modules)


def test_one_module_picks_the_plotting_backend():
    """Only facevae/plotting.py calls matplotlib.use or imports pyplot; figures come from its pyplot()."""
    package = REPO / "workflow" / "facevae"
    offenders = [str(p.relative_to(package)) for p in sorted(package.rglob("*.py")) if p.name != "plotting.py"
                 and re.search(r"matplotlib\.use\(|import matplotlib\.pyplot", p.read_text())]
    assert offenders == [], offenders
