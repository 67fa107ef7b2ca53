"""Issue 40's table: the validation set's actors trained with and without the final fit.

Inputs: two bench_validation work folders whose actors were trained with ``train.holdout.final_fit``
0.2 (the default) and 0, and the sweep_mouth rows of each (``SWEEP_SELF=1 SWEEP_OUT=...
sweep_mouth.py validation <work> default``). Per actor: faces kept, faces the shipped model trained on,
held-out MSE of the measured model, training seconds, and the driving medians over its cross pairs plus
its own-clip row.

    .venv/bin/python bench/archive/final_fit_report.py WORK_0.2 SWEEP_0.2.tsv WORK_0 SWEEP_0.tsv

Writes bench/results/final_fit.md and final_fit.tsv.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "quality"))
from benchlib import REPO, provenance  # noqa: E402

sys.path.insert(0, str(REPO / "workflow"))
from facevae.modelio import load_model_info  # noqa: E402


def arm(work: Path, sweep: Path, share: str) -> pd.DataFrame:
    rows = pd.read_csv(sweep, sep="\t")
    out = []
    for actor, t in rows.groupby("actor"):
        model = work / f"results/models/{actor}/model.pt"
        if not model.is_file():
            continue
        info = load_model_info(model)
        own = t[t.driver == actor + "full"]
        cross = t[t.driver != actor + "full"]
        out.append({
            "actor": actor, "final_fit": share, "faces": info["n_faces"], "trained_on": info["n_trained_on"],
            "measured_on": info["n_train"], "heldout_mse": info["heldout_mse"], "train_seconds": info["train_seconds"],
            "steps": info["split_epochs"] * (info["n_train"] // 32) + info.get("final_fit_epochs", 0) * (info["n_faces"] // 32),
            "cross_pairs": len(cross), "cross_mouth_r": cross.mesh_mouth.median(), "cross_mouth_amp": cross.amp_mesh_mouth.median(),
            "cross_within_0.05": int((cross.mesh_mouth >= cross.base_mesh_mouth - 0.05).sum()),
            "cross_eye_r": cross.mesh_eye.median(), "cross_dlib_mouth_r": cross.dlib_mouth.median(),
            "own_mouth_r": float(own.mesh_mouth.iloc[0]) if len(own) else float("nan"),
            "own_mouth_amp": float(own.amp_mesh_mouth.iloc[0]) if len(own) else float("nan"),
            "own_eye_r": float(own.mesh_eye.iloc[0]) if len(own) else float("nan"),
            "own_dlib_mouth_r": float(own.dlib_mouth.iloc[0]) if len(own) else float("nan"),
        })
    return pd.DataFrame(out)


def main() -> None:
    new = arm(Path(sys.argv[1]), Path(sys.argv[2]), "0.2")
    old = arm(Path(sys.argv[3]), Path(sys.argv[4]), "0")
    table = pd.concat([new, old], ignore_index=True).sort_values(["actor", "final_fit"], ascending=[True, False])
    out = REPO / "bench" / "results"
    table.to_csv(out / "final_fit.tsv", sep="\t", index=False, float_format="%.5f")
    cols = list(table.columns)
    fmt = {"heldout_mse": "{:.5f}", "train_seconds": "{:.0f}"}
    lines = ["# Issue 40: the final fit on every face, on the validation set", "", *provenance({"train.holdout.final_fit": "0.2 vs 0"}), "",
             "Each actor trained with the defaults (bf16, 1 thread, two jobs sharing the 2 cores: seconds are indicative only) "
             "with `train.holdout.final_fit` 0.2 and 0, same seed and the same optimiser steps; then driven by "
             "`bench/quality/sweep_mouth.py validation` (default driving; face mesh and dlib as in the score files). "
             "`measured_on`: the faces the held-out MSE's model trained on; `trained_on`: the shipped model's. "
             "`cross_*`: medians over the actor's cross pairs (three HDTF talkers and the other validation actors); "
             "`cross_within_0.05`: pairs with mesh mouth r within 0.05 of the retrieval baseline's or above; "
             "`own_*`: the actor driven by its whole clip (retargeted).", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in table.iterrows():
        cells = []
        for c in cols:
            v = r[c]
            cells.append(fmt.get(c, "{:.3f}").format(v) if isinstance(v, float) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    (out / "final_fit.md").write_text("\n".join(lines) + "\n")
    print(table.round(3).to_string())


if __name__ == "__main__":
    main()
