"""How fast does a face stop being a near copy of its neighbours? (issue 40: the held-out gap)

For each actor's kept faces (the bench work folders' results/faces/{actor}.h5), the median pixel MSE
between faces ``lag`` seconds apart in the same video, as a share of the median MSE between faces
drawn at random from the whole clip (the plateau: two unrelated frames of the same person). A
held-out face closer than the lag where the share reaches ~0.8 to a training face has a
near-copy in training; the gap (train.holdout.gap_seconds) must cover that.

    .venv/bin/python bench/archive/bench_gap.py /work/bench/validation /work/bench/tuning/auto

Writes bench/results/holdout_gap.md (+ .tsv).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "quality"))
from benchlib import REPO, provenance  # noqa: E402

sys.path.insert(0, str(REPO / "workflow"))
from facevae.trainset import load_faces  # noqa: E402

LAGS = (0.04, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)


def decorrelation(faces, rng: np.random.Generator) -> dict:
    x = faces.data.reshape(len(faces.data), -1).astype(np.float32) / 255.0
    i, j = rng.integers(0, len(x), 2000), rng.integers(0, len(x), 2000)
    keep = i != j
    plateau = float(np.median(((x[i[keep]] - x[j[keep]]) ** 2).mean(1)))
    row = {"faces": len(x), "seconds": float(np.ptp(faces.time)), "plateau_mse": plateau}
    for lag in LAGS:
        mses = []
        for video in np.unique(faces.source):
            rows = np.flatnonzero(faces.source == video)
            rows = rows[np.argsort(faces.time[rows])]
            t = faces.time[rows]
            partner = np.searchsorted(t, t + lag)  # the first face at least `lag` later
            ok = partner < len(rows)
            ok[ok] &= np.abs(t[partner[ok]] - (t[ok] + lag)) <= max(0.5 * lag, 0.04)
            a, b = rows[ok], rows[partner[ok]]
            mses.append(((x[a] - x[b]) ** 2).mean(1))
        m = np.concatenate(mses) if mses else np.array([])
        row[f"share_{lag:g}s"] = float(np.median(m) / plateau) if len(m) else float("nan")
    shares = np.array([row[f"share_{lag:g}s"] for lag in LAGS])
    above = np.flatnonzero(shares >= 0.8)
    row["lag_to_0.8"] = float(LAGS[above[0]]) if len(above) else float("inf")
    return row


def main() -> None:
    rng = np.random.default_rng(0)
    rows = []
    for work in map(Path, sys.argv[1:]):
        for path in sorted((work / "results/faces").glob("*.h5")):
            rows.append({"actor": path.stem, "set": work.name, **decorrelation(load_faces(path), rng)})
    table = pd.DataFrame(rows)
    out = REPO / "bench" / "results"
    table.to_csv(out / "holdout_gap.tsv", sep="\t", index=False, float_format="%.4f")
    cols = ["actor", "faces", "seconds", "plateau_mse", *[f"share_{lag:g}s" for lag in LAGS], "lag_to_0.8"]
    lines = ["# Issue 40: how fast a face stops being a near copy of its neighbours", "", *provenance(), "",
             "Script: `bench/archive/bench_gap.py`. Per actor: the median pixel MSE between kept faces `lag` s apart in the same "
             "video, over the median MSE between two faces drawn at random from the clip (1.0 = as different as two "
             "unrelated frames). `lag_to_0.8`: the first lag where the share reaches 0.8.", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in table.iterrows():
        lines.append("| " + " | ".join(f"{r[c]:.2f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")
    (out / "holdout_gap.md").write_text("\n".join(lines) + "\n")
    print(table[cols].round(2).to_string())


if __name__ == "__main__":
    main()
