"""Does an identity-robust *encoder* carry a stranger's expression? (issue 12's first lever, measured
beside the landmark retargeting that became the default)

Driver-side appearance normalisation before the actor's encoder: each driver crop's colour statistics
moved to those of the actor's training faces, then the plain encoder (the 2017 blog's path) and the
decoder. Variants: per-channel mean and standard deviation matched in RGB or in CIE Lab, over the
driver's whole video (keeps its changes of light) or per frame; per-channel histogram matching to the
actor's pooled training pixels; and the driver turned grey and given the actor's mean colour (a Lab
image with the driver's lightness, matched in mean/s.d., and the actor's mean chroma).

The transfer bench's 16 cross pairs (BENCH_TRANSFER_WORKDIR, its ``auto`` run: the actors lp_d6,
lp_d10, lp_d3, lp_d13 and their cross drivers' tracks), scored by the face mesh as the score files
score them (mouth and eye r of the driver's crops and the decoded faces over the kept frames); the
default drive (retargeting, the workflow's numbers in bench/results/transfer.md) beside them.

And the other half of that lever, the encoder trained to look past appearance (train.appearance_jitter:
the encoder reads jittered faces, the loss compares the decode with the untouched face):
APPEARANCE_JITTER_MODELS names a folder of ``{actor}/model.pt`` trained on the bench's faces with it
(every other training setting the bench's); those actors' pairs get a row through it, beside the
plain encoder on the same pairs.

Writes bench/results/appearance.md. Run: BENCH_TRANSFER_WORKDIR=<dir> [APPEARANCE_JITTER_MODELS=<dir>] .venv/bin/python bench/archive/sweep_appearance.py
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))
sys.path.insert(0, str(REPO / "bench"))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from bench_transfer import ACTORS, video_of  # noqa: E402
from facevae.expression import pearson  # noqa: E402
from facevae.faces.io import DriverTrack, read_faces  # noqa: E402
from facevae.modelio import Codec, load_model  # noqa: E402
from facevae.render import RenderConfig  # noqa: E402
from sweep_retarget import mesh_measure  # noqa: E402


JITTER = "encoder trained with appearance jitter"


def to_lab(faces: np.ndarray) -> np.ndarray:
    return np.stack([cv2.cvtColor(f.astype(np.float32) / 255, cv2.COLOR_RGB2Lab) for f in faces])


def from_lab(lab: np.ndarray) -> np.ndarray:
    return np.stack([np.clip(cv2.cvtColor(f.astype(np.float32), cv2.COLOR_Lab2RGB) * 255, 0, 255).round().astype(np.uint8)
                     for f in lab])


def match_moments(x: np.ndarray, target_mean, target_sd, per_frame: bool) -> np.ndarray:
    """x (N, H, W, 3) float: each channel moved to the target mean and s.d. (statistics over the whole
    video, or per frame)."""
    axes = (1, 2) if per_frame else (0, 1, 2)
    mean, sd = x.mean(axis=axes, keepdims=True), x.std(axis=axes, keepdims=True) + 1e-6
    return (x - mean) / sd * target_sd + target_mean


def match_histograms(faces: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per channel, the driver's pooled pixel values mapped through its CDF onto the actor's."""
    out = np.empty_like(faces)
    for c in range(3):
        src, ref = faces[..., c].ravel(), reference[..., c].ravel()
        s_values, s_idx, s_counts = np.unique(src, return_inverse=True, return_counts=True)
        r_values, r_counts = np.unique(ref, return_counts=True)
        mapped = np.interp(np.cumsum(s_counts) / src.size, np.cumsum(r_counts) / ref.size, r_values)
        out[..., c] = mapped[s_idx].reshape(faces.shape[:-1]).round().astype(np.uint8)
    return out


def variants(crops: np.ndarray, actor: np.ndarray, actor_lab: np.ndarray) -> dict[str, np.ndarray]:
    rgb_mean, rgb_sd = actor.mean(axis=(0, 1, 2)), actor.std(axis=(0, 1, 2))
    lab_mean, lab_sd = actor_lab.mean(axis=(0, 1, 2)), actor_lab.std(axis=(0, 1, 2))
    lab = to_lab(crops)
    rgb = lambda x: np.clip(x, 0, 255).round().astype(np.uint8)  # noqa: E731
    grey = lab.copy()
    grey[..., 0] = match_moments(lab[..., :1], lab_mean[0], lab_sd[0], False)[..., 0]
    grey[..., 1:] = lab_mean[1:]
    return {
        "plain encoder": crops,
        "RGB mean/s.d., video": rgb(match_moments(crops.astype(np.float32), rgb_mean, rgb_sd, False)),
        "RGB mean/s.d., frame": rgb(match_moments(crops.astype(np.float32), rgb_mean, rgb_sd, True)),
        "Lab mean/s.d., video": from_lab(match_moments(lab, lab_mean, lab_sd, False)),
        "Lab mean/s.d., frame": from_lab(match_moments(lab, lab_mean, lab_sd, True)),
        "RGB histograms, video": match_histograms(crops, actor),
        "grey + actor's mean colour": from_lab(grey),
    }


def main() -> None:
    torch.set_num_threads(2)
    work = Path(os.environ["BENCH_TRANSFER_WORKDIR"]) / "auto"
    measure = mesh_measure(RenderConfig())
    t0 = time.perf_counter()
    drivers = {}
    for d in [f"{b}full" for b in ACTORS] + ["tpsmm"]:
        with DriverTrack(work / f"results/tracks/{d}/{video_of(d)}.h5") as track:
            crops = track.read_crops(0, track.n)[np.flatnonzero(track.kept)]
        drivers[d] = {"crops": crops, "mesh": measure(crops)}
    rows = []
    jittered = Path(os.environ["APPEARANCE_JITTER_MODELS"]) if os.environ.get("APPEARANCE_JITTER_MODELS") else None
    for a in ACTORS:
        codec = Codec(load_model(work / f"results/models/{a}/model.pt"))
        robust = None
        if jittered is not None and (jittered / a / "model.pt").is_file():
            robust = Codec(load_model(jittered / a / "model.pt"))
        actor = read_faces(work / f"results/faces/{a}.h5")["data"]
        actor_lab = to_lab(actor)
        for d in [f"{b}full" for b in ACTORS if b != a] + ["tpsmm"]:
            mesh = drivers[d]["mesh"]
            for name, faces in variants(drivers[d]["crops"], actor, actor_lab).items():
                got = measure(codec.decode(codec.encode(faces)))
                rows.append({"actor": a, "driver": d.removesuffix("full"), "variant": name,
                             "mouth": pearson(mesh[:, 0], got[:, 0]), "eye": pearson(mesh[:, 1], got[:, 1])})
            if robust is not None:
                got = measure(robust.decode(robust.encode(drivers[d]["crops"])))
                rows.append({"actor": a, "driver": d.removesuffix("full"), "variant": JITTER,
                             "mouth": pearson(mesh[:, 0], got[:, 0]), "eye": pearson(mesh[:, 1], got[:, 1])})
            print(a, d, {r["variant"]: round(r["mouth"], 3) for r in rows if r["actor"] == a and r["driver"] == d.removesuffix("full")},
                  flush=True)
    table = pd.DataFrame(rows)
    transfer = pd.read_csv(REPO / "bench/results/transfer.tsv", sep="\t")
    default = transfer[(transfer.drive == "auto") & (transfer.kind == "cross")]
    seconds = time.perf_counter() - t0
    order = [v for v in dict.fromkeys(table.variant) if v != JITTER]
    lines = ["# Identity-robust encoding: driver-side appearance normalisation, and an encoder trained with appearance jitter (bench/archive/sweep_appearance.py)", "",
             f"{seconds / 60:.1f} min on {os.cpu_count()} CPU cores. The transfer bench's 16 cross pairs; each driver crop's "
             "colour statistics moved to the actor's training faces', then the actor's plain encoder and decoder. Face-mesh "
             "mouth / eye r of the driver's crops and the decoded faces over the kept frames (as the score files). The default "
             "drive (landmark retargeting) from the workflow's run, bench/results/transfer.tsv, on the same models.", "",
             "| variant | cross mouth r (median) | cross eye r (median) | mouth r min | pairs >= 0.6 mouth r |", "|---|---|---|---|---|"]
    for name in order:
        t = table[table.variant == name]
        lines.append(f"| {name} | {t.mouth.median():.3f} | {t.eye.median():.3f} | {t.mouth.min():.3f} | {int((t.mouth >= 0.6).sum())} of {len(t)} |")
    lines.append(f"| default: landmark retargeting (transfer.tsv) | {default.mesh_mouth.median():.3f} | {default.mesh_eye.median():.3f} | "
                 f"{default.mesh_mouth.min():.3f} | {int((default.mesh_mouth >= 0.6).sum())} of {len(default)} |")
    robust = table[table.variant == JITTER]
    if len(robust):
        pairs = table.set_index(["actor", "driver"]).index.isin(robust.set_index(["actor", "driver"]).index)
        same = table[pairs]
        ref = default.set_index(["actor", "driver"]).loc[robust.set_index(["actor", "driver"]).index]
        lines += ["", f"The encoder trained with train.appearance_jitter ({', '.join(sorted(set(robust.actor)))}: "
                  f"{len(robust)} pairs), on the same pairs:", "",
                  "| variant | mouth r (median) | eye r (median) | mouth r min | per pair |", "|---|---|---|---|---|"]
        for name in ("plain encoder", JITTER):
            t = same[same.variant == name]
            lines.append(f"| {name} | {t.mouth.median():.3f} | {t.eye.median():.3f} | {t.mouth.min():.3f} | "
                         + ", ".join(f"{r.actor} <- {r.driver} {r.mouth:.2f}" for r in t.itertuples()) + " |")
        lines.append(f"| default: landmark retargeting | {ref.mesh_mouth.median():.3f} | {ref.mesh_eye.median():.3f} | "
                     f"{ref.mesh_mouth.min():.3f} | " + ", ".join(f"{a} <- {d} {v:.2f}" for (a, d), v in ref.mesh_mouth.items()) + " |")
    lines += ["", "Per pair, mesh mouth r:", "", "| actor | driver | " + " | ".join(order) + " | retargeting |",
              "|---|---|" + "---|" * (len(order) + 1)]
    for (a, d), g in table.groupby(["actor", "driver"], sort=False):
        g = g.set_index("variant")
        ref = default[(default.actor == a) & (default.driver == d)].mesh_mouth
        retargeting = f"{ref.iloc[0]:.3f}" if len(ref) else ""
        lines.append(f"| {a} | {d} | " + " | ".join(f"{g.loc[v].mouth:.3f}" for v in order) + f" | {retargeting} |")
    (REPO / "bench/results/appearance.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
