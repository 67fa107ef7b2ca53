"""Training stage: model comparison and training speed (writes bench/results/train.md).

Comparison -- the same actor faces (lp_d6.mp4, every frame, extracted by the workflow's own faces
rules), the same held-out split, seed and number of epochs for every model:

* ``blog``: the int8 2017 network, Bernoulli (BCE) reconstruction, beta 1; and the same network with
  the calibrated Gaussian decoder (``train.recon_loss: gaussian``);
* ``conv``: this workflow's default (residual network, latent 128, calibrated Gaussian decoder), beta 1;
* ``beta-VAE``: the default with beta = 4 (KL warm-up over the first quarter);
* ``dfc``: the default network with the Deep Feature Consistent loss over the feature network that
  the workflow trains on the shared CelebA sample (results/featurenet/featurenet.pt).

Columns: held-out MSE (pixels in [0, 1], posterior mean) and its ratio to the mean face's, the held-out MSE of PCA with as many
components as latent dimensions (the linear baseline), the mean-face MSE, the share of 64 decoded
N(0, I) draws in which dlib's HOG detector finds a face (real held-out faces for reference),
active latent dimensions (mean KL > 0.01 nats on held-out faces) and training seconds.

Speed -- images/s of training epochs (gather + flip + forward + loss + backward + Adam) next to the
same network's bare forward + loss + backward on random tensors of the same batch, measured in one
run. Target: epoch >= 0.8 x bare on the CPU. The machine's load average is recorded: the 2 cores
are shared and every number slows down when other work runs.

Environment: FACEVAE_BENCH_EPOCHS (default 20), FACEVAE_BENCH_MODELS (comma list, default all),
FACEVAE_BENCH_CACHE (workflow outputs reused between runs, default ~/.cache/facevae/bench_train).
Run: .venv/bin/python bench/perf/bench_train.py
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "workflow"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from facevae.modelio import decode  # noqa: E402
from facevae.train import TrainSettings, mean_face_mse, train_vae  # noqa: E402
from facevae.trainset import SPLIT_HELDOUT, SPLIT_TRAIN, holdout_split, load_faces  # noqa: E402
from facevae.train_eval import active_dims, bare_rate, face_share, pca_mse  # noqa: E402

MEDIA = Path(os.environ.get("FACEVAE_MEDIA", REPO.parent / "shared" / "data"))
CACHE = Path(os.environ.get("FACEVAE_BENCH_CACHE", Path.home() / ".cache" / "facevae" / "bench_train"))
OUT = REPO / "bench" / "results" / "train.md"
EPOCHS = int(os.environ.get("FACEVAE_BENCH_EPOCHS", "20"))
SEED = 0

MODELS = {
    "blog (Bernoulli)": {"model": "blog"},
    "blog (calibrated Gaussian)": {"model": "blog", "recon_loss": "gaussian"},
    "conv (default: calibrated Gaussian)": {"model": "conv"},
    "beta-VAE (conv, beta 4)": {"model": "conv", "beta": 4.0, "kl_warmup_epochs": max(1, EPOCHS // 4)},
    "dfc (conv + DFC loss)": {"model": "dfc"},
}


def workflow(config: dict, targets: list[str]) -> Path:
    """Build ``targets`` with the real workflow in the cache folder (nothing is rebuilt when present)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    (CACHE / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    cmd = [str(Path(sys.executable).parent / "snakemake"), "--snakefile", str(REPO / "Snakefile"), "--directory", str(CACHE),
           "--configfile", str(CACHE / "config.yaml"), "--cores", "2", "--rerun-triggers", "mtime", "--", *targets]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"workflow failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return CACHE


def bench_config(with_dfc: bool) -> dict:
    config = {
        "actors": {"d6": {"videos": {"d6": {"path": str(MEDIA / "videos" / "lp_d6.mp4")}}}},
        "faces": {"aligner": "dlib"},
        "train": {"model": "dfc" if with_dfc else "conv"},
    }
    if with_dfc:
        celeba = MEDIA / "celeba"
        config["celeba"] = {"images": str(celeba / "img_align_celeba_89x109"), "attributes": str(celeba / "list_attr_celeba.txt"),
                            "identities": str(celeba / "identity_CelebA.txt")}
    return config


def compare(faces_path: Path, feature_net: Path | None, names: list[str]) -> tuple[list[dict], dict]:
    faces = load_faces(faces_path)
    labels = holdout_split(faces.source, faces.time, **TrainSettings().holdout)
    train, held = faces.data[labels == SPLIT_TRAIN], faces.data[labels == SPLIT_HELDOUT]
    reference = {"n_train": len(train), "n_heldout": len(held), "meanface": mean_face_mse(train, held),
                 "real_face_share": face_share(held[:64])}
    rows = []
    for name in names:
        settings = TrainSettings.from_config({**MODELS[name], "epochs": EPOCHS, "min_steps": 0, "seed": SEED, "checkpoint_minutes": 0})
        with tempfile.TemporaryDirectory() as tmp:
            outputs = {k: f"{tmp}/{k}" for k in ("model", "metrics", "loss_plot", "reconstructions", "samples", "split")}
            outputs.update(model=f"{tmp}/model.pt", loss_plot=f"{tmp}/loss.png", reconstructions=f"{tmp}/r.png", samples=f"{tmp}/s.png")
            start = time.perf_counter()
            info = train_vae(faces_path, outputs, settings, f"{tmp}/ckpt.pt", feature_net=str(feature_net) if feature_net else None,
                             progress=False)
            seconds = time.perf_counter() - start
            from facevae.modelio import load_model

            model = load_model(outputs["model"])
        latent = model.config.latent_dim
        draws = decode(model, torch.randn(64, latent, generator=torch.Generator().manual_seed(SEED)))
        rows.append({
            "model": name,
            "latent": latent,
            "heldout_mse": info["heldout_mse"],
            "pca_mse": pca_mse(train, held, latent),
            "face_share": face_share(draws),
            "active": active_dims(model, held),
            "seconds": seconds,
        })
        print(rows[-1], flush=True)
    return rows, reference


def speed(faces_path: Path, batch: int = 128, rounds: int = 3) -> list[dict]:
    """Epoch images/s vs bare forward+backward images/s, same network and batch, in this one run.

    The two are interleaved (bare, 3 training epochs, bare, 3 epochs, ..., bare) and each is the
    median of its samples, so a change in the machine's load hits both alike."""
    import pandas as pd

    rows = []
    for name, spec in (("blog", {"model": "blog"}), ("conv (default)", {"model": "conv"})):
        settings = TrainSettings.from_config({**spec, "epochs": 3, "min_steps": 0, "batch_size": batch, "seed": SEED, "checkpoint_minutes": 0})
        bare, epochs = [bare_rate(settings.model_config(), batch, steps=8)], []
        for _ in range(rounds):
            with tempfile.TemporaryDirectory() as tmp:
                outputs = {"model": f"{tmp}/m.pt", "metrics": f"{tmp}/m.tsv", "loss_plot": f"{tmp}/l.png",
                           "reconstructions": f"{tmp}/r.png", "samples": f"{tmp}/s.png", "split": f"{tmp}/s.tsv"}
                train_vae(faces_path, outputs, settings, f"{tmp}/ckpt.pt", progress=False)
                epochs += pd.read_csv(outputs["metrics"], sep="\t")["images_per_s"].iloc[1:].tolist()  # epoch 1 warms up
            bare.append(bare_rate(settings.model_config(), batch, steps=8))
        epoch_rate, bound = float(np.median(epochs)), float(np.median(bare))
        rows.append({"model": name, "batch": batch, "epoch": epoch_rate, "bare": bound, "ratio": epoch_rate / bound})
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    if not (MEDIA / "videos" / "lp_d6.mp4").exists():
        sys.exit(f"test media not found under {MEDIA} (set FACEVAE_MEDIA)")
    names = [n for n in MODELS if n.split()[0] in os.environ.get("FACEVAE_BENCH_MODELS", "blog,conv,beta-VAE,dfc").split(",")]
    load_before = os.getloadavg()
    with_dfc = any(n.startswith("dfc") for n in names)
    targets = ["results/faces/d6.h5"] + (["results/featurenet/featurenet.pt"] if with_dfc else [])
    t0 = time.perf_counter()
    work = workflow(bench_config(with_dfc), targets)
    prep = time.perf_counter() - t0
    faces_path = work / "results/faces/d6.h5"
    speed_rows = speed(faces_path)
    rows, ref = compare(faces_path, work / "results/featurenet/featurenet.pt" if with_dfc else None, names)
    load_after = os.getloadavg()

    lines = [
        "# Training: model comparison and speed",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, no GPU. Load average before / after: "
        f"{load_before[0]:.1f} / {load_after[0]:.1f} (shared machine: other work slows every number).",
        f"Faces: lp_d6.mp4 at every frame through the workflow's faces rules (dlib): {ref['n_train']} training and "
        f"{ref['n_heldout']} held-out faces (2 blocks, 1 s gap). Every model: {EPOCHS} epochs with the default training settings (batch 32, Adam 2e-3, KL warm-up 2 epochs), "
        f"flips, seed {SEED}. Workflow preparation (faces{', CelebA alignment, feature net' if with_dfc else ''}): {prep:.0f} s.",
        "",
        f"Mean-face held-out MSE: {ref['meanface']:.5f}. dlib finds a face in {ref['real_face_share']:.0%} of real held-out faces "
        "(64 px, enlarged 4x), the reference for the samples column.",
        "",
        "| model | latent | held-out MSE | / mean face | PCA MSE (same #components) | samples with a face | active dims | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['model']} | {r['latent']} | {r['heldout_mse']:.5f} | {r['heldout_mse'] / ref['meanface']:.2f} | {r['pca_mse']:.5f} | {r['face_share']:.0%} | "
                     f"{r['active']} | {r['seconds']:.0f} |")
    lines += [
        "",
        "## Speed (CPU): training epoch vs bare forward + backward",
        "",
        "| model | batch | epoch images/s | bare fwd+bwd images/s | ratio (target >= 0.8) |",
        "|---|---|---|---|---|",
    ]
    for r in speed_rows:
        lines.append(f"| {r['model']} | {r['batch']} | {r['epoch']:.0f} | {r['bare']:.0f} | {r['ratio']:.2f} |")
    lines += ["", "No GPU was available for this run: the blog-scale GPU target (100 epochs x 20,000 faces at batch 128 "
              "in under 60 s on one H100) is not measured here.", ""]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
