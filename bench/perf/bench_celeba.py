"""CelebA stage speed: parsing the attribute list and aligning the shared sample's images.

The first 1000 images of ../shared/data/celeba (89 x 109, faces about 45 px wide, upsampled before
detection) through the celeba_align code path (dlib, default detect widths), with 1 and 2 worker
processes, measured in one run with the machine's load noted (the 2 cores are shared; other work
running at the same time slows every number down). Also the parse time of the attribute list.

Run: .venv/bin/python bench/perf/bench_celeba.py   (writes bench/results/celeba.md)
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "workflow"))

from facevae.celeba import build_aligned, read_attributes, read_identities  # noqa: E402

MEDIA = Path(os.environ.get("FACEVAE_MEDIA", REPO.parent / "shared" / "data")) / "celeba"
OUT = REPO / "bench" / "results" / "celeba.md"
IMAGES = 1000


def main() -> None:
    if not MEDIA.is_dir():
        sys.exit(f"no CelebA sample at {MEDIA} (set FACEVAE_MEDIA)")
    cfg = {
        "images": str(MEDIA / "img_align_celeba_89x109"),
        "attributes": str(MEDIA / "list_attr_celeba.txt"),
        "identities": str(MEDIA / "identity_CelebA.txt"),
        "limit": IMAGES,
    }
    t0 = time.perf_counter()
    names, files, _ = read_attributes(cfg["attributes"])
    read_identities(cfg["identities"])
    parse = time.perf_counter() - t0
    rows = []
    for workers in (1, 2):
        load = os.getloadavg()[0]
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            summary = build_aligned(cfg, {"aligner": "dlib"}, Path(tmp) / "aligned.h5", workers=workers)
            seconds = time.perf_counter() - t0
        rows.append((workers, summary, seconds, load, os.getloadavg()[0]))
        print(f"{workers} worker(s): {summary['aligned']}/{summary['images']} aligned in {seconds:.1f} s")
    lines = [
        "# CelebA alignment speed",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs; {time.strftime('%Y-%m-%d %H:%M')}. "
        "Load = 1-minute load average before/after (2 cores shared with other work: higher load, slower numbers).",
        "",
        f"Parsing list_attr_celeba.txt + identity_CelebA.txt ({len(files)} rows, {len(names)} attributes): {parse:.2f} s",
        "",
        "| images | workers | aligned | share | seconds | images/s | load before/after |",
        "|---:|---:|---:|---:|---:|---:|---|",
    ]
    for workers, summary, seconds, before, after in rows:
        n, ok = summary["images"], summary["aligned"]
        lines.append(f"| {n} | {workers} | {ok} | {100 * ok / n:.1f}% | {seconds:.1f} | {n / seconds:.0f} | {before:.1f} / {after:.1f} |")
    lines += ["", "Seconds include building the aligner (dlib models) and writing aligned.h5."]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
