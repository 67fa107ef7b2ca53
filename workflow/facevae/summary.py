"""The run's numbers in two small tables for Snakemake's report (``snakemake --report``).

- :func:`score_table` -- one reenactment's score file (results/reenact/{actor}/{driver}/{video}.tsv,
  ~30 columns) cut to what a person reads: per instrument and measure the expression r, the
  retrieval baseline's r and the amplitude against it, the chance level, the scored share, and identity kept.
- :func:`run_summary` -- ``results/summary.tsv``: per actor the faces kept, epochs, held-out MSE
  against the mean face's, and per reenactment its scores -- the numbers to compare across runs.

Both are read from the files the stages wrote (never from Snakemake params, which would make
Snakemake re-run jobs when a number changes). Its rule's inputs are planned in :mod:`facevae.planning` (``summary_inputs``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from facevae.modelio import load_model_info

SCORE_COLUMNS = ("drive", "instrument", "measure", "pearson", "baseline_pearson", "amplitude_ratio", "circular_p95",
                 "scored_share", "identity_kept")
SUMMARY_COLUMNS = ("actor", "faces_frames", "faces_kept", "epochs", "heldout_mse", "meanface_mse", "heldout_vs_meanface",
                   "driver", "video", "drive", "mesh_mouth_r", "mesh_eye_r", "dlib_mouth_r", "dlib_eye_r",
                   "baseline_mesh_mouth_r", "mesh_mouth_amplitude", "mesh_eye_amplitude", "identity_kept", "scored_share")


def score_table(score_path):
    """The short form of one score TSV (columns :data:`SCORE_COLUMNS`, one row per instrument and measure)."""
    table = pd.read_csv(score_path, sep="\t")
    return table[list(SCORE_COLUMNS)]


def _pair_of(score_path: str) -> tuple[str, str, str]:
    parts = str(score_path).split("/")
    return parts[-3], parts[-2], parts[-1].removesuffix(".tsv")


def run_summary(counts: list, metrics: list, models: list, scores: list):
    """``results/summary.tsv`` from :func:`summary_inputs`' files (same order): one row per
    reenactment (its actor's columns repeated), and one row for each actor no one drives."""

    per_actor = {}
    for count_path, metrics_path, model_path in zip(counts, metrics, models):
        actor = str(count_path).split("/")[-2]
        c = json.loads(Path(count_path).read_text())
        m = pd.read_csv(metrics_path, sep="\t")
        info = load_model_info(model_path)
        measured = m["heldout_mse"].dropna()  # the split model's; a final fit's epochs have none
        held, mean = float(measured.iloc[-1]) if len(measured) else float("nan"), float(info.get("meanface_mse", float("nan")))
        per_actor[actor] = {"actor": actor, "faces_frames": int(c["frames"]), "faces_kept": int(c["in_dataset"]),
                            "epochs": int(m["epoch"].iloc[-1]), "heldout_mse": held, "meanface_mse": mean,
                            "heldout_vs_meanface": held / mean if mean > 0 else float("nan")}
    rows, driven = [], set()
    for path in scores:
        actor, driver, video = _pair_of(path)
        t = pd.read_csv(path, sep="\t").set_index(["instrument", "measure"])
        row = {**per_actor.get(actor, {"actor": actor}), "driver": driver, "video": video, "drive": t["drive"].iloc[0]}
        for instrument, measure, column in (("mesh", "mouth_open", "mesh_mouth_r"), ("mesh", "eye_open", "mesh_eye_r"),
                                            ("dlib", "mouth_open", "dlib_mouth_r"), ("dlib", "eye_open", "dlib_eye_r")):
            row[column] = float(t.loc[(instrument, measure), "pearson"])
        mesh_mouth = t.loc[("mesh", "mouth_open")]
        for measure, column in (("mouth_open", "mesh_mouth_amplitude"), ("eye_open", "mesh_eye_amplitude")):
            # score files written before the amplitude column: NaN
            row[column] = float(t.loc[("mesh", measure)].get("amplitude_ratio", float("nan")))
        row.update(baseline_mesh_mouth_r=float(mesh_mouth["baseline_pearson"]),
                   identity_kept=float(mesh_mouth["identity_kept"]), scored_share=float(t["scored_share"].min()))
        rows.append(row)
        driven.add(actor)
    rows += [values for actor, values in per_actor.items() if actor not in driven]
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
