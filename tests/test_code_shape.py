"""The package's shape (issue 35): a module over 450 lines says why on its first line."""

from __future__ import annotations

from support.media import REPO

LONG = 450
REASON = "# Over 450 lines: "


def test_long_modules_state_their_reason():
    unexplained = []
    for path in sorted((REPO / "workflow" / "facevae").rglob("*.py")):
        text = path.read_text()
        if text.count("\n") > LONG and not text.startswith(REASON):
            unexplained.append(f"{path.relative_to(REPO)} ({text.count(chr(10))} lines)")
    assert not unexplained, f"modules over {LONG} lines without a first line '{REASON}<why>': {unexplained}"
