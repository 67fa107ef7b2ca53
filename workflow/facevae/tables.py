"""Small tab-separated tables with ``# ...`` comment lines on top (the attribute stage's probe and
mouth tables): written atomically, read back with numbers parsed."""

from __future__ import annotations

import os
from pathlib import Path

from facevae.atomic import write_text


def write_tsv(path: str | os.PathLike, rows: list[dict], header_lines: list[str] | None = None) -> Path:
    """Rows of dicts as a tab-separated table (atomic), optional ``# ...`` comment lines first."""
    columns = list(rows[0]) if rows else []
    lines = [f"# {h}" for h in header_lines or []]
    lines.append("\t".join(columns))
    for row in rows:
        lines.append("\t".join(_fmt(row[c]) for c in columns))
    return write_text(path, "\n".join(lines) + "\n")


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def read_tsv(path: str | os.PathLike) -> list[dict]:
    """A table written by :func:`write_tsv` (comment lines skipped); numbers parsed."""
    lines = [ln for ln in Path(path).read_text().splitlines() if ln and not ln.startswith("#")]
    header = lines[0].split("\t")
    rows = []
    for line in lines[1:]:
        row = {}
        for key, value in zip(header, line.split("\t")):
            try:
                row[key] = int(value)
            except ValueError:
                try:
                    row[key] = float(value)
                except ValueError:
                    row[key] = value
        rows.append(row)
    return rows
