"""The feature network of the DFC-VAE loss: a small CNN trained on CelebA's 40 attributes.

No pretrained face network can be downloaded here, so :func:`train_feature_net` fits
:class:`AttributeNet` (a VGG-like CNN for 64 x 64 RGB faces) with multi-label BCE to the faces of
``results/celeba/aligned.h5`` (aligned like the actors' faces, see :mod:`facevae.celeba`) and keeps
its early stages as the feature extractor: ``forward(x) -> list`` of feature maps (earliest first)
for ``x`` float N x 3 x 64 x 64 in [0, 1]. The network is trained once and shared by every actor.

Files: ``featurenet.pt`` is a ``torch.save`` dict (``format: facevae-featurenet``, width, layers,
weights, info) that :func:`load_feature_net` rebuilds into a plain module (bf16 autocast works on
it). A user may instead name a TorchScript file (``torch.jit.save``) with the same forward contract
in ``train.dfc.feature_net``; it runs in float32.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import List

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import FACE_SIZE, FacevaeError
from .atomic import save_figure, write_text
from .plotting import pyplot
from .runkit import StopSignals, code_hash, elapsed, load_checkpoint, resume, rng_states

log = logging.getLogger(__name__)

FEATURENET_FORMAT = "facevae-featurenet"
CHECKPOINT_FORMAT = "facevae-featurenet-checkpoint"
N_ATTRIBUTES = 40
DEFAULTS = {"epochs": 10, "batch_size": 128, "lr": 1e-3, "width": 32, "layers": 3, "seed": 0, "val_fraction": 0.1, "device": "auto"}


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class AttributeNet(nn.Module):
    """VGG-like attribute classifier for 64 x 64 faces; ``stages[i]`` gives the i-th feature map:
    relu1 (w channels @ 64 px), relu2 (2w @ 32), relu3 (4w @ 16), relu4 (8w @ 8); then a head
    (pool, conv, global average, dropout) and a linear layer to the attribute logits."""

    def __init__(self, width: int = 32, n_out: int = N_ATTRIBUTES):
        super().__init__()
        w = width
        self.stages = nn.ModuleList(
            [
                _block(3, w),
                nn.Sequential(nn.MaxPool2d(2), _block(w, 2 * w)),
                nn.Sequential(nn.MaxPool2d(2), _block(2 * w, 4 * w)),
                nn.Sequential(nn.MaxPool2d(2), _block(4 * w, 8 * w)),
            ]
        )
        self.head = nn.Sequential(nn.MaxPool2d(2), _block(8 * w, 8 * w), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2))
        self.fc = nn.Linear(8 * w, n_out)
        # Inputs in [0, 1] are centred inside the network, so users never normalise.
        self.register_buffer("mean", torch.full((1, 3, 1, 1), 0.5))
        self.register_buffer("std", torch.full((1, 3, 1, 1), 0.25))

    def forward(self, x):
        h = (x - self.mean) / self.std
        for stage in self.stages:
            h = stage(h)
        return self.fc(self.head(h))


class FeatureExtractor(nn.Module):
    """The first ``n_layers`` stages of an AttributeNet; ``forward`` returns their outputs (a list)."""

    def __init__(self, width: int = 32, n_layers: int = 3):
        super().__init__()
        if not 1 <= n_layers <= 4:
            raise FacevaeError(f"featurenet.layers must be 1..4, not {n_layers}")
        self.width, self.n_layers = width, n_layers
        self.stages = nn.ModuleList(list(AttributeNet(width).stages)[:n_layers])
        self.register_buffer("mean", torch.full((1, 3, 1, 1), 0.5))
        self.register_buffer("std", torch.full((1, 3, 1, 1), 0.25))

    @classmethod
    def from_net(cls, net: AttributeNet, n_layers: int) -> "FeatureExtractor":
        fx = cls(net.fc.in_features // 8, n_layers)
        for mine, theirs in zip(fx.stages, net.stages):
            mine.load_state_dict(theirs.state_dict())
        fx.mean.copy_(net.mean)
        fx.std.copy_(net.std)
        return fx

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        h = (x - self.mean) / self.std
        out: List[torch.Tensor] = []
        for stage in self.stages:
            h = stage(h)
            out.append(h)
        return out


def save_feature_net(net: AttributeNet, path: str | os.PathLike, n_layers: int, info: dict) -> Path:
    from .modelio import atomic_torch_save

    fx = FeatureExtractor.from_net(net.cpu().eval(), n_layers)
    blob = {
        "format": FEATURENET_FORMAT,
        "version": 1,
        "width": fx.width,
        "layers": n_layers,
        "state_dict": fx.state_dict(),
        "info": info,
    }
    return atomic_torch_save(blob, path)


def load_feature_net(path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """A frozen, eval-mode feature network from our ``featurenet.pt`` or a user's TorchScript file.

    Raises FacevaeError naming the file when it is missing, unreadable or breaks the contract
    (``forward(float N x 3 x 64 x 64 in [0, 1]) -> list of N x C x H x W maps``).
    """
    path = Path(path)
    if not path.is_file():
        raise FacevaeError(f"feature network file {path} not found (train.dfc.feature_net)")
    net = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a TorchScript archive makes torch.load warn
            blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 -- not ours: maybe TorchScript
        blob = None
    if isinstance(blob, dict) and blob.get("format") == FEATURENET_FORMAT:
        net = FeatureExtractor(int(blob["width"]), int(blob["layers"]))
        net.load_state_dict(blob["state_dict"])
    else:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                net = torch.jit.load(str(path), map_location="cpu")
        except Exception as err:  # noqa: BLE001 -- any load failure is the file's fault
            raise FacevaeError(f"feature network {path} is neither a facevae featurenet.pt nor a TorchScript file: {err}") from None
    net = net.to(device).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        try:
            out = net(torch.zeros(1, 3, FACE_SIZE, FACE_SIZE, device=device))
        except Exception as err:  # noqa: BLE001
            raise FacevaeError(f"feature network {path} fails on a 1 x 3 x {FACE_SIZE} x {FACE_SIZE} float input: {err}") from None
    if not isinstance(out, (list, tuple)) or not out or not all(torch.is_tensor(t) and t.dim() == 4 for t in out):
        raise FacevaeError(f"feature network {path} must return a list of N x C x H x W feature maps, got {type(out).__name__}")
    return net


# --- training ------------------------------------------------------------------------------------


def load_aligned(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    """(faces uint8 N x 64 x 64 x 3, attributes float32 N x 40 in {0, 1}, names, identity int64 (N,))
    from ``results/celeba/aligned.h5`` (interface 4), faces resized to 64 px when needed."""
    from .celeba import read_aligned

    found = read_aligned(path)
    for key in ("data", "attributes", "fields"):
        if key not in found:
            raise FacevaeError(f"{path}: no '{key}' dataset (not an aligned CelebA file)")
    data, attrs = found["data"], found["attributes"]
    if data.ndim != 4 or data.shape[3] != 3 or data.dtype != np.uint8 or len(data) == 0:
        raise FacevaeError(f"{path}: 'data' must be a non-empty uint8 N x S x S x 3 array, got {data.dtype} {data.shape}")
    if attrs.shape != (len(data), N_ATTRIBUTES):
        raise FacevaeError(f"{path}: 'attributes' must be N x {N_ATTRIBUTES} with N = {len(data)}, got {attrs.shape}")
    if data.shape[1] != FACE_SIZE:
        import cv2

        data = np.stack([cv2.resize(face, (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_AREA) for face in data])
    identity = np.asarray(found.get("identity", np.full(len(data), -1)), dtype=np.int64)
    return np.ascontiguousarray(data), (attrs > 0).astype(np.float32), [str(n) for n in found["fields"]], identity


def split_by_identity(identity: np.ndarray, val_fraction: float, seed: int) -> np.ndarray:
    """Boolean validation mask: whole identities (so no person is on both sides) drawn with ``seed``
    until ``val_fraction`` of the faces; faces of unknown identity (-1) are split by row."""
    n = len(identity)
    val = np.zeros(n, dtype=bool)
    rng = np.random.default_rng(seed)
    known = identity >= 0
    people = np.unique(identity[known])
    rng.shuffle(people)
    target = int(round(val_fraction * known.sum()))
    counts = dict(zip(*np.unique(identity[known], return_counts=True)))
    chosen, total = [], 0
    for person in people:
        if total >= target:
            break
        chosen.append(person)
        total += counts[person]
    val[np.isin(identity, chosen) & known] = True
    unknown = np.flatnonzero(~known)
    if len(unknown):
        val[unknown[len(unknown) - int(round(val_fraction * len(unknown))) :]] = True
    return val


def _fingerprint(settings: dict, images: np.ndarray, attrs: np.ndarray, identity: np.ndarray, device: torch.device, threads: int) -> str:
    """What a feature-net checkpoint must match to be resumed: settings, faces, labels, device type,
    thread count and the training code."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for array in (images, attrs, identity):
        digest.update(np.ascontiguousarray(array).tobytes())
    digest.update(f"{device.type}|{threads}|{torch.__version__}|{code_hash('featurenet.py', 'runkit.py')}".encode())
    return digest.hexdigest()


def train_feature_net(aligned_h5, out_path, metrics_path=None, plot_path=None, settings: dict | None = None,
                      threads: int | None = None, progress: bool = True, checkpoint: str | os.PathLike | None = None) -> dict:
    """Train :class:`AttributeNet` on the 40 attributes of ``aligned_h5``; save its first
    ``layers`` stages to ``out_path``. Returns info: validation accuracy (mean over attributes),
    the majority-class accuracy on the same faces (the bar to beat), sizes, seconds.

    With ``checkpoint`` the run is resumable as :func:`facevae.train.train_vae` is (the kit of
    :mod:`facevae.runkit`): saved after every epoch and, on SIGTERM / SIGINT, at the next batch; a
    re-run with the same settings and faces resumes from it to the same weights; deleted at the end."""
    from tqdm.auto import tqdm

    from .modelio import atomic_torch_save, pick_device

    s = {**DEFAULTS, **(settings or {})}
    unknown = sorted(set(s) - set(DEFAULTS))
    if unknown:
        raise FacevaeError(f"unknown featurenet setting(s): {', '.join(unknown)}")
    if threads:
        torch.set_num_threads(int(threads))
    images, attrs, names, identity = load_aligned(aligned_h5)
    val = split_by_identity(identity, s["val_fraction"], s["seed"])
    tr = np.flatnonzero(~val)
    va = np.flatnonzero(val)
    if len(tr) < 2:
        raise FacevaeError(f"{aligned_h5}: {len(images)} faces are too few to train the feature network")
    device = pick_device(s["device"], "featurenet.device")
    bf16 = device.type == "cuda"  # the feature net: bf16 on CUDA only (not measured on CPUs)
    torch.manual_seed(s["seed"])
    net = AttributeNet(width=int(s["width"]), n_out=attrs.shape[1]).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=s["lr"])
    gen = torch.Generator(device=device).manual_seed(s["seed"])
    x_tr = torch.from_numpy(images[tr]).to(device).permute(0, 3, 1, 2).contiguous()
    y_tr = torch.from_numpy(attrs[tr]).to(device)
    x_va = torch.from_numpy(images[va]).to(device).permute(0, 3, 1, 2).contiguous()
    y_va = torch.from_numpy(attrs[va]).to(device)
    bs = min(int(s["batch_size"]), len(tr))
    n_batches = len(tr) // bs
    epochs = int(s["epochs"])
    majority = attrs[tr].mean(0) >= 0.5
    majority_acc = (attrs[va] == majority).mean(0) if len(va) else np.full(attrs.shape[1], np.nan)
    log.info("feature net: %d train / %d validation faces (split by identity), %d epochs on %s", len(tr), len(va), epochs, device)

    state = {"epoch": 0, "batch": 0, "perm": None, "total": None, "epoch_seconds": 0.0, "rows": [], "seconds": 0.0, "resumed": 0,
             "per_attr": torch.full((attrs.shape[1],), float("nan"), dtype=torch.float64)}
    checkpoint = Path(checkpoint) if checkpoint else None
    expected = _fingerprint(s, images, attrs, identity, device, torch.get_num_threads()) if checkpoint else ""
    ckpt = load_checkpoint(checkpoint, expected, device, CHECKPOINT_FORMAT) if checkpoint else None
    if ckpt is not None:
        state = resume(ckpt, net, opt, gen, checkpoint)

    def save_checkpoint() -> None:
        atomic_torch_save({"format": CHECKPOINT_FORMAT, "fingerprint": expected, "model": net.state_dict(),
                           "optimiser": opt.state_dict(), "rng": rng_states(gen), "state": state}, checkpoint)

    bar = tqdm(total=epochs, initial=state["epoch"], desc="feature net", unit="epoch", file=sys.stderr, disable=not progress)
    with StopSignals() as stop:
        while state["epoch"] < epochs:
            epoch = state["epoch"]
            net.train()
            if state["batch"] == 0:
                state["perm"] = torch.randperm(len(tr), generator=gen, device=device)
                state["total"] = torch.zeros((), device=device)
                state["epoch_seconds"] = 0.0
            perm, total = state["perm"].to(device), state["total"].to(device)
            t0 = time.perf_counter()
            for b in range(state["batch"], n_batches):
                idx = perm[b * bs : (b + 1) * bs]
                x = x_tr[idx]
                flip = torch.rand(idx.shape[0], generator=gen, device=device) < 0.5
                x = torch.where(flip[:, None, None, None], x.flip(3), x).float().div_(255.0)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    logits = net(x)
                loss = F.binary_cross_entropy_with_logits(logits.float(), y_tr[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.detach()
                state["batch"] = b + 1
                if stop.signum is not None and checkpoint and b + 1 < n_batches:  # mid-epoch: stop here
                    state.update(perm=perm, total=total, epoch_seconds=state["epoch_seconds"] + elapsed(device, t0))
                    save_checkpoint()
                    bar.close()
                    stop.raise_stop(checkpoint)
            seconds = state["epoch_seconds"] + elapsed(device, t0)
            val_loss, per_attr = _evaluate(net, x_va, y_va, bf16)
            row = {"epoch": epoch + 1, "loss": total.item() / max(n_batches, 1), "val_loss": val_loss,
                   "val_accuracy": float(np.mean(per_attr)), "majority_accuracy": float(np.mean(majority_acc)),
                   "seconds": seconds, "images_per_s": n_batches * bs / max(seconds, 1e-9)}
            state["rows"].append(row)
            state.update(epoch=epoch + 1, batch=0, perm=None, total=None, epoch_seconds=0.0,
                         seconds=state["seconds"] + seconds, per_attr=torch.from_numpy(np.asarray(per_attr, np.float64)))
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.3f}", val_acc=f"{row['val_accuracy']:.3f}")
            log.info("feature net epoch %d: loss %.4f, validation accuracy %.4f (majority %.4f)", epoch + 1, row["loss"],
                     row["val_accuracy"], row["majority_accuracy"])
            if checkpoint and state["epoch"] < epochs:
                save_checkpoint()
                if stop.signum is not None:
                    bar.close()
                    stop.raise_stop(checkpoint)
    bar.close()
    rows, per_attr = state["rows"], state["per_attr"].numpy()
    info = {
        "aligned": str(aligned_h5),
        "settings": s,
        "n_train": int(len(tr)),
        "n_val": int(len(va)),
        "val_accuracy": rows[-1]["val_accuracy"] if rows else float("nan"),
        "majority_accuracy": float(np.mean(majority_acc)),
        "per_attribute": {name: [float(a), float(m)] for name, a, m in zip(names, per_attr, majority_acc)},
        "seconds": state["seconds"],
        "resumed": state["resumed"],
    }
    if metrics_path:
        import pandas as pd

        write_text(metrics_path, pd.DataFrame(rows).to_csv(sep="\t", index=False, float_format="%.6g"))
    if plot_path:
        plot_accuracy(plot_path, names, per_attr, majority_acc)
    save_feature_net(net, out_path, int(s["layers"]), info)
    if checkpoint:
        checkpoint.unlink(missing_ok=True)
    return info


@torch.no_grad()
def _evaluate(net: nn.Module, x_u8: torch.Tensor, y: torch.Tensor, bf16: bool, bs: int = 512) -> tuple[float, np.ndarray]:
    """(validation BCE, per-attribute accuracy) in eval mode."""
    if x_u8.shape[0] == 0:
        return float("nan"), np.full(y.shape[1], np.nan)
    net.eval()
    correct = torch.zeros(y.shape[1], device=y.device)
    loss = torch.zeros((), device=y.device)
    for i in range(0, x_u8.shape[0], bs):
        with torch.autocast(x_u8.device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = net(x_u8[i : i + bs].float() / 255.0).float()
        loss += F.binary_cross_entropy_with_logits(logits, y[i : i + bs], reduction="sum")
        correct += ((logits > 0).float() == y[i : i + bs]).float().sum(0)
    net.train()
    return float(loss.item() / y.numel()), (correct / y.shape[0]).cpu().numpy()


def plot_accuracy(path, names, accuracy, majority) -> None:
    """Bar chart: validation accuracy of each attribute next to its majority-class rate."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(12, 4))
    pos = np.arange(len(names))
    ax.bar(pos - 0.2, accuracy, 0.4, label="feature net (validation)")
    ax.bar(pos + 0.2, majority, 0.4, label="majority class", color="grey")
    ax.set_xticks(pos, names, rotation=90, fontsize=7)
    ax.set_ylim(0.4, 1.12)
    ax.set_ylabel("accuracy")
    ax.legend(loc="upper left", ncol=2)
    ax.set_title("CelebA attributes: feature network vs majority class (validation identities)")
    fig.tight_layout()
    save_figure(fig, path)
