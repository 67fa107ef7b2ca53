# Over 450 lines: train_vae is one resumable loop (setup, the split and final phases, checkpoints, outputs) that reads best whole; its data and run kit live in trainset.py and runkit.py.
"""Training one actor's face VAE: held-out split, resumable training loop, outputs.

:func:`train_vae` turns ``results/faces/{actor}.h5`` into ``results/models/{actor}/`` (``model.pt``,
``metrics.tsv``, ``loss.png``, ``reconstructions.png``, ``samples.png``, ``split.tsv``).

* The faces and their held-out split come from :mod:`facevae.trainset`; the held-out MSE is
  measured during the first share of the steps, the last ``train.holdout.final_fit`` train on
  every kept face (:func:`final_fit_epochs`).
* Every random number comes from seeded generators that the checkpoint saves: the model's
  initialisation (``torch.manual_seed``), and one generator on the training device for the data
  order, the flips and the reparameterisation noise.
* The checkpoint (``results/checkpoints/{actor}/ckpt.pt``, outside the rule's declared outputs, which
  Snakemake deletes when a job fails) is written atomically every ``checkpoint_minutes``, at the
  end of the run, and when SIGTERM/SIGINT arrives (at the next batch boundary). It holds the model,
  the optimiser, every RNG state, the current epoch's data order and position, and the metrics so
  far; a re-run with the same settings and faces resumes from it and ends with weights identical
  to an uninterrupted run (on CPU). Different settings or faces -> a fingerprint mismatch -> a
  fresh start. It is deleted once the outputs are written.
* On CUDA the uint8 dataset lives on the GPU, batches are gathered, flipped and converted there,
  the forward/backward passes run under bf16 autocast, and losses are accumulated on the GPU: the
  host only launches work until the end of an epoch (one synchronisation per epoch).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import FACE_SIZE, FacevaeError, __version__
from .atomic import save_figure, write_png, write_text
from . import sheets
from .losses import DFCLoss, kl_divergence, kl_weight, recon_loss
from .modelio import atomic_torch_save, pick_device, resolve_precision, save_model
from .models import DEFAULT_LATENT, ModelConfig, build_model
from .plotting import pyplot
from .runkit import StopSignals, code_hash, elapsed, load_checkpoint, resume, rng_states
from .trainset import SPLIT_GAP, SPLIT_HELDOUT, SPLIT_TRAIN, Faces, load_faces, plan_split, write_split

log = logging.getLogger(__name__)

MODELS = ("conv", "blog", "dfc")
LR_SCHEDULES = ("cosine", "constant")
CHECKPOINT_FORMAT = "facevae-train-checkpoint"
# phase: "split" (training faces only; heldout_mse measured) or "final" (every kept face: the
# held-out faces are training data then, so heldout_mse is left empty -- see final_fit_epochs)
METRIC_COLUMNS = ("epoch", "phase", "loss", "recon", "kl", "kl_weight", "heldout_mse", "seconds", "images_per_s")
PHASE_SPLIT, PHASE_FINAL = "split", "final"


# --- settings ------------------------------------------------------------------------------------


DEFAULT_EPOCHS = 50  # train.epochs unset: this many, raised to reach train.min_steps


@dataclass(frozen=True)
class TrainSettings:
    """The ``train:`` config section (defaults and meanings in workflow/schemas/train.schema.yaml)."""

    model: str = "conv"
    latent_dim: int | None = None
    width: int = 16
    epochs: int | None = None  # None: DEFAULT_EPOCHS, raised to reach min_steps (see epochs_for)
    min_steps: int = 4500
    batch_size: int = 32
    lr: float = 2e-3
    lr_schedule: str = "constant"
    adam_eps: float = 1e-8
    beta: float = 1.0
    kl_warmup_epochs: float = 2.0
    recon_loss: str | None = None
    flip: bool = True
    appearance_jitter: bool = False
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    compile: bool = False
    checkpoint_minutes: float = 5.0
    holdout: dict = field(default_factory=lambda: {"fraction": 0.1, "blocks": 2, "gap_seconds": 1.0, "final_fit": 0.2})
    dfc: dict = field(default_factory=lambda: {"feature_net": None, "layer_weights": [1.0, 1.0, 1.0], "pixel_weight": 0.0})

    @classmethod
    def from_config(cls, section: dict | None) -> "TrainSettings":
        section = dict(section or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(section) - known)
        if unknown:
            raise FacevaeError(f"unknown train setting(s): {', '.join(unknown)}")
        defaults = cls()
        holdout = {**defaults.holdout, **(section.pop("holdout", None) or {})}
        dfc = {**defaults.dfc, **(section.pop("dfc", None) or {})}
        settings = cls(**section, holdout=holdout, dfc=dfc)
        if settings.model not in MODELS:
            raise FacevaeError(f"train.model must be one of {', '.join(MODELS)}, not {settings.model!r}")
        if settings.lr_schedule not in LR_SCHEDULES:
            raise FacevaeError(f"expert.train.lr_schedule must be one of {', '.join(LR_SCHEDULES)}, not {settings.lr_schedule!r}")
        return settings

    def epochs_for(self, n_batches: int) -> int:
        """Epochs a run makes: an explicit ``epochs`` exactly (what the user wrote wins); unset,
        DEFAULT_EPOCHS or more when that is fewer than ``min_steps`` optimiser steps (a 9-s clip gives
        ~9 batches an epoch; 50 epochs of it left the decoder's mouths blurred)."""
        if self.epochs is not None:
            return int(self.epochs)
        return max(DEFAULT_EPOCHS, math.ceil(int(self.min_steps) / max(n_batches, 1)))

    def steps_warning(self, n_batches: int) -> str:
        """A warning when an explicit ``epochs`` makes fewer steps than ``min_steps`` recommends ('' otherwise)."""
        if self.epochs is None or int(self.epochs) * n_batches >= int(self.min_steps):
            return ""
        return (f"train.epochs {self.epochs} makes {int(self.epochs) * n_batches} optimiser steps ({n_batches} batches an "
                f"epoch), fewer than the {self.min_steps} train.min_steps recommends: the decoded mouths may stay blurred "
                f"(unset train.epochs to reach it)")

    def lr_at(self, step: int, total_steps: int) -> float:
        """Learning rate of optimiser step ``step`` of ``total_steps``: constant, or a cosine from ``lr``
        down to 0 over the whole run (both phases, see :func:`final_fit_epochs`)."""
        if self.lr_schedule == "constant":
            return float(self.lr)
        progress = step / max(total_steps, 1)
        return float(self.lr) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    @property
    def recon(self) -> str:
        """The pixel reconstruction term: ``recon_loss``, or the model's own (blog and dfc: bce, conv: gaussian)."""
        return self.recon_loss or ("gaussian" if self.model == "conv" else "bce")

    @property
    def arch(self) -> str:
        """The network: ``dfc`` trains the default ``conv`` network with the DFC loss."""
        return "blog" if self.model == "blog" else "conv"

    def model_config(self) -> ModelConfig:
        latent = self.latent_dim if self.latent_dim is not None else DEFAULT_LATENT[self.arch]
        return ModelConfig(arch=self.arch, latent_dim=int(latent), width=int(self.width))

    def to_dict(self) -> dict:
        return asdict(self)


# --- checkpoint ----------------------------------------------------------------------------------


def _code_hash() -> str:
    return code_hash("train.py", "trainset.py", "runkit.py", "models.py", "losses.py", "featurenet.py")


def fingerprint(settings: TrainSettings, faces: Faces, labels: np.ndarray, feature_net: str | None, device: torch.device, threads: int) -> str:
    """What a checkpoint must match to be resumed: settings (not the checkpoint interval), faces,
    split, feature net, device type, thread count and the training code."""
    digest = hashlib.sha256()
    spec = settings.to_dict()
    spec.pop("checkpoint_minutes")
    digest.update(json.dumps(spec, sort_keys=True).encode())
    digest.update(np.ascontiguousarray(faces.data).tobytes())
    digest.update("\n".join(labels.tolist()).encode())
    if feature_net:
        digest.update(Path(feature_net).read_bytes())
    digest.update(f"{device.type}|{threads}|{torch.__version__}|{_code_hash()}".encode())
    return digest.hexdigest()


# --- the loop ------------------------------------------------------------------------------------


def make_loss(settings: TrainSettings, feature_net: str | None, device: torch.device):
    """``loss(logits, x) -> (reconstruction term, feature term or None)``."""
    if settings.model != "dfc":
        return lambda logits, x: recon_loss(logits, x, settings.recon)
    from .featurenet import load_feature_net

    path = settings.dfc.get("feature_net") or feature_net
    if not path:
        raise FacevaeError("train.model is dfc but no feature network was given (train.dfc.feature_net or the featurenet rule)")
    dfc = DFCLoss(load_feature_net(path, device), settings.dfc["layer_weights"], settings.dfc["pixel_weight"], settings.recon)
    return lambda logits, x: dfc(logits, x)[0]


def _batch(data_u8: torch.Tensor, idx: torch.Tensor, gen: torch.Generator, flip: bool) -> torch.Tensor:
    """A batch of faces as float NCHW in [0, 1], each flipped horizontally with probability 1/2.

    With ``flip``, ``data_u8`` holds the N faces followed by their N mirror images (made once), so
    choosing the flips is part of the one gather: no per-batch flip or select pass."""
    if flip:
        n = data_u8.shape[0] // 2
        idx = idx + n * (torch.rand(idx.shape[0], generator=gen, device=idx.device) < 0.5)
    return data_u8[idx].float().div_(255.0)


@torch.no_grad()
def jitter_appearance(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``x`` (N, 3, H, W in [0, 1]) with each face's look changed and its shape kept (train.appearance_jitter):
    brightness and contrast x0.7-1.3, each channel's gain x0.85-1.15, gamma 0.75-1.33, grey with
    probability 0.2, a 3x3 Gaussian blur with probability 0.3, pixel noise of s.d. up to 0.03. The
    encoder reads the jittered face and the loss compares the decode with the untouched one, so the
    encoder learns to look past light, colour and sharpness (issue 12's identity-robust encoder)."""
    n, device = x.shape[0], x.device

    def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
        return low + (high - low) * torch.rand((n, *shape, 1, 1), generator=gen, device=device)

    def chance(p: float) -> torch.Tensor:
        return (torch.rand((n, 1, 1, 1), generator=gen, device=device) < p).to(x.dtype)

    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    y = ((x - mean) * uniform(0.7, 1.3, 1) + mean) * uniform(0.7, 1.3, 1) * uniform(0.85, 1.15, 3)
    y = y.clamp(0, 1) ** torch.exp(torch.log(torch.tensor(1.33, device=device)) * (2 * uniform(0, 1, 1) - 1))
    grey = (0.299 * y[:, :1] + 0.587 * y[:, 1:2] + 0.114 * y[:, 2:]).expand_as(y)
    y = y + chance(0.2) * (grey - y)
    kernel = torch.tensor([1.0, 2.0, 1.0], device=device)
    kernel = (kernel[:, None] * kernel[None] / 16).expand(3, 1, 3, 3).to(y.dtype)
    blurred = torch.nn.functional.conv2d(torch.nn.functional.pad(y, (1, 1, 1, 1), mode="replicate"), kernel, groups=3)
    y = y + chance(0.3) * (blurred - y)
    noise = torch.randn(y.shape, generator=gen, device=device, dtype=y.dtype)
    return (y + noise * uniform(0.0, 0.03, 1)).clamp_(0, 1)


@torch.no_grad()
def reconstruct_mse(model, data_u8: torch.Tensor, batch: int = 256) -> tuple[float, torch.Tensor]:
    """(mean squared error per pixel in [0, 1] units, reconstructions float NCHW) through mu, eval mode."""
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=data_u8.device)
    recons = []
    for i in range(0, data_u8.shape[0], batch):
        x = data_u8[i : i + batch].float() / 255.0
        mu, _ = model.encode(x)
        r = torch.sigmoid(model.decode(mu).float())
        total += ((r - x) ** 2).sum(dtype=torch.float64)
        recons.append(r)
    model.train(was_training)
    if not recons:
        return float("nan"), torch.zeros(0, 3, FACE_SIZE, FACE_SIZE)
    return float(total.item() / data_u8.numel()), torch.cat(recons)


def mean_face_mse(train: np.ndarray, heldout: np.ndarray) -> float:
    """MSE (pixels in [0, 1]) of predicting every held-out face by the training set's mean face."""
    mean = train.reshape(len(train), -1).astype(np.float64).mean(0) / 255.0
    diff = heldout.reshape(len(heldout), -1).astype(np.float64) / 255.0 - mean
    return float((diff**2).mean())


def final_fit_epochs(settings: TrainSettings, epochs: int, n_batches: int, n_batches_all: int, extra_faces: int) -> tuple[int, int]:
    """Split ``epochs`` (of ``n_batches`` on the training faces) into the measured run and the final fit.

    The held-out faces measure the model at the end of the first phase (its held-out MSE is the one
    reported); the second phase -- ``train.holdout.final_fit`` of the optimiser steps -- trains on
    every kept face (``n_batches_all`` an epoch), so the shipped model also learns the held-out and
    gap faces: on a short clip a third or more of the footage (issue 40; docs/decisions/023). The
    total number of steps stays what it was (no extra time). Returns (split epochs, final epochs);
    (epochs, 0) without a final fit or when no face was left out of training."""
    share = float(settings.holdout.get("final_fit", 0.0) or 0.0)
    if share <= 0 or extra_faces <= 0:
        return epochs, 0
    split = max(1, min(epochs - 1, round(epochs * (1.0 - share))))  # at least one epoch of each
    left = (epochs - split) * n_batches  # the steps the final fit makes, in its own (larger) epochs
    return split, max(1, round(left / max(n_batches_all, 1)))


def train_vae(
    faces_path: str | os.PathLike,
    outputs: dict,
    settings: TrainSettings,
    checkpoint: str | os.PathLike,
    feature_net: str | None = None,
    threads: int | None = None,
    actor: str = "",
    progress: bool = True,
) -> dict:
    """Train one VAE on the faces in ``faces_path``; write ``outputs`` (keys model, metrics, loss_plot,
    reconstructions, samples, split). Returns the info dict stored in ``model.pt``."""
    from tqdm.auto import tqdm

    checkpoint = Path(checkpoint)
    if threads:
        torch.set_num_threads(int(threads))
    threads = torch.get_num_threads()
    faces = load_faces(faces_path)
    who = f"actor {actor}" if actor else str(faces_path)
    labels, split_warning = plan_split(faces.source, faces.time, settings.holdout, who)
    if split_warning:
        log.warning("%s", split_warning)
    train_rows = np.flatnonzero(labels == SPLIT_TRAIN)
    held_rows = np.flatnonzero(labels == SPLIT_HELDOUT)

    device = pick_device(settings.device, "train.device")
    bf16, precision_reason = resolve_precision(settings.precision, device)
    log.info("precision %s (%s)", "bf16" if bf16 else "fp32", precision_reason)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    expected = fingerprint(settings, faces, labels, settings.dfc.get("feature_net") or feature_net, device, threads)

    random.seed(settings.seed)
    np.random.seed(settings.seed)
    torch.manual_seed(settings.seed)
    model = build_model(settings.model_config())
    model.init_from_data(torch.from_numpy(faces.data[train_rows]).float().mean(0).permute(2, 0, 1) / 255.0)
    model = model.to(device)
    # The fused Adam kernel (CUDA and CPU): one pass over the parameters instead of a Python loop
    # over them -- on the CPU it is 6x faster for the blog network, a tenth of its step.
    optimiser = torch.optim.Adam(model.parameters(), lr=settings.lr, eps=settings.adam_eps, fused=True)
    gen = torch.Generator(device=device)
    gen.manual_seed(settings.seed)
    loss_fn = make_loss(settings, feature_net, device)
    step_model = torch.compile(model) if settings.compile else model

    def face_tensor(rows: np.ndarray) -> torch.Tensor:
        """Faces ``rows`` as uint8 NCHW on the device, then their mirror images with train.flip (see _batch)."""
        data = torch.from_numpy(faces.data[rows]).to(device).permute(0, 3, 1, 2).contiguous()
        return torch.cat([data, data.flip(3)]) if settings.flip else data

    all_rows = np.arange(len(faces))
    held_u8 = torch.from_numpy(faces.data[held_rows]).to(device).permute(0, 3, 1, 2).contiguous()
    n_train = len(train_rows)
    batch_size = min(settings.batch_size, n_train)
    n_batches = n_train // batch_size
    n_batches_all = len(all_rows) // batch_size
    epochs_total = settings.epochs_for(n_batches)
    steps_warning = settings.steps_warning(n_batches)
    if steps_warning:
        log.warning("%s", steps_warning)
    split_epochs, final_epochs = final_fit_epochs(settings, epochs_total, n_batches, n_batches_all, len(all_rows) - n_train)
    epochs = split_epochs + final_epochs
    total_steps = split_epochs * n_batches + final_epochs * n_batches_all
    baseline = mean_face_mse(faces.data[train_rows], faces.data[held_rows]) if len(held_rows) else float("nan")

    state = {"epoch": 0, "batch": 0, "perm": None, "sums": None, "epoch_seconds": 0.0, "history": [], "seconds": 0.0, "resumed": 0,
             "heldout_sheet": None}
    ckpt = load_checkpoint(checkpoint, expected, device, CHECKPOINT_FORMAT)
    if ckpt is not None:
        state = resume(ckpt, model, optimiser, gen, checkpoint)

    def train_step(x: torch.Tensor, weight: float) -> torch.Tensor:
        """One optimiser step on batch ``x`` (the encoder reads it appearance-jittered with
        train.appearance_jitter); returns (loss, recon, kl) as float64 for the epoch's sums."""
        seen = jitter_appearance(x, gen) if settings.appearance_jitter else x
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits, mu, logvar = step_model(seen, gen)
            rec = loss_fn(logits, x)  # float32 (pixel losses upcast; a DFC net runs in bf16)
        kl = kl_divergence(mu, logvar)
        loss = rec + weight * kl
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        return torch.stack([loss.detach(), rec.detach(), kl.detach()]).double()

    def pause_due(allowed: bool) -> bool:
        """A checkpoint is due: a stop signal came, or ``allowed`` here and the interval has passed."""
        return stop.signum is not None or (allowed and time.monotonic() - last_save >= interval)

    def pause_point() -> None:
        """Save the checkpoint (model, optimiser, RNGs, loop state); then stop if a signal asked to."""
        nonlocal last_save
        atomic_torch_save(
            {
                "format": CHECKPOINT_FORMAT,
                "fingerprint": expected,
                "model": model.state_dict(),
                "optimiser": optimiser.state_dict(),
                "rng": rng_states(gen),
                "state": state,
            },
            checkpoint,
        )
        last_save = time.monotonic()
        if stop.signum is not None:
            bar.close()
            stop.raise_stop(checkpoint)

    log.info(
        "%s: %d faces -> %d train, %d held out, %d gap; model %s %s; %d epochs x %d batches of %d on %s%s, %d threads%s",
        who, len(faces), n_train, len(held_rows), int((labels == SPLIT_GAP).sum()), settings.model,
        settings.model_config(), split_epochs, n_batches, batch_size, device, " (bf16)" if bf16 else "", threads,
        f" ({DEFAULT_EPOCHS} epochs raised to reach train.min_steps {settings.min_steps})"
        if settings.epochs is None and epochs_total > DEFAULT_EPOCHS else "",
    )
    if final_epochs:
        log.info("%s: held-out MSE measured after epoch %d; then the final fit (train.holdout.final_fit %s): %d epochs x %d "
                 "batches on all %d faces, so the shipped model has seen every one", who, split_epochs,
                 settings.holdout.get("final_fit"), final_epochs, n_batches_all, len(all_rows))
    interval = max(settings.checkpoint_minutes, 0.0) * 60.0
    last_save = time.monotonic()
    bar = tqdm(total=epochs, initial=state["epoch"], desc=f"train {actor}".strip(), unit="epoch", file=sys.stderr, disable=not progress)
    model.train()
    data_phase, data_u8 = None, None
    with StopSignals() as stop:
        while state["epoch"] < epochs:
            epoch = state["epoch"]
            phase = PHASE_SPLIT if epoch < split_epochs else PHASE_FINAL
            if phase != data_phase:  # the training faces, then (final fit) every face; one copy on the device at a time
                data_u8 = None
                data_u8 = face_tensor(train_rows if phase == PHASE_SPLIT else all_rows)
                data_phase = phase
            n_data = len(train_rows) if phase == PHASE_SPLIT else len(all_rows)
            batches = n_batches if phase == PHASE_SPLIT else n_batches_all
            steps_before = min(epoch, split_epochs) * n_batches + max(epoch - split_epochs, 0) * n_batches_all
            if state["batch"] == 0:
                state["perm"] = torch.randperm(n_data, generator=gen, device=device)
                state["sums"] = torch.zeros(3, dtype=torch.float64, device=device)  # loss, recon, kl (sums over batches)
                state["epoch_seconds"] = 0.0
            perm, sums = state["perm"].to(device), state["sums"].to(device)
            started = time.perf_counter()
            for b in range(state["batch"], batches):
                x = _batch(data_u8, perm[b * batch_size : (b + 1) * batch_size], gen, settings.flip)
                weight = kl_weight(settings.beta, settings.kl_warmup_epochs, epoch, b, batches)
                for group in optimiser.param_groups:
                    group["lr"] = settings.lr_at(steps_before + b, total_steps)
                sums += train_step(x, weight)
                state["batch"] = b + 1
                if pause_due(interval > 0 and b + 1 < batches):  # mid-epoch: only with checkpoint_minutes
                    state["epoch_seconds"] += elapsed(device, started)
                    started = time.perf_counter()
                    state["perm"], state["sums"] = perm, sums
                    pause_point()
            train_seconds = state["epoch_seconds"] + elapsed(device, started)
            held_mse = reconstruct_mse(model, held_u8)[0] if phase == PHASE_SPLIT else float("nan")
            if phase == PHASE_SPLIT and epoch + 1 == split_epochs:  # the measured model's held-out faces, for the sheet
                state["heldout_sheet"] = [torch.from_numpy(r) for r in heldout_sheet(model, faces, labels)]  # checkpoints hold tensors
                model.train()
            means = (sums / batches).tolist()
            row = {
                "epoch": epoch + 1,
                "phase": phase,
                "loss": means[0],
                "recon": means[1],
                "kl": means[2],
                "kl_weight": kl_weight(settings.beta, settings.kl_warmup_epochs, epoch, batches - 1, batches),
                "heldout_mse": held_mse,
                "seconds": train_seconds,
                "images_per_s": batches * batch_size / max(train_seconds, 1e-9),
            }
            if not math.isfinite(row["loss"]) or (phase == PHASE_SPLIT and len(held_rows) and not math.isfinite(held_mse)):
                raise FacevaeError(f"{who}: training diverged at epoch {epoch + 1} (loss {row['loss']}); try a lower train.lr")
            state["history"].append(row)
            state["seconds"] += train_seconds
            state.update(epoch=epoch + 1, batch=0, perm=None, sums=None, epoch_seconds=0.0)
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.1f}", heldout_mse=f"{held_mse:.4f}", img_s=f"{row['images_per_s']:.0f}")
            log.info("epoch %d/%d (%s): loss %.2f recon %.2f kl %.2f held-out MSE %.5f (mean face %.5f), %.0f images/s",
                     epoch + 1, epochs, phase, row["loss"], row["recon"], row["kl"], held_mse, baseline, row["images_per_s"])
            if pause_due(state["epoch"] < epochs):  # after every epoch when checkpoint_minutes is 0
                pause_point()
    bar.close()

    measured = [r["heldout_mse"] for r in state["history"] if r["phase"] == PHASE_SPLIT]
    info = {
        "actor": actor,
        "faces": str(faces_path),
        "faces_sha256": hashlib.sha256(np.ascontiguousarray(faces.data).tobytes()).hexdigest(),
        "settings": settings.to_dict(),
        "seed": settings.seed,
        "epochs": epochs,
        "n_faces": len(faces),
        "n_train": int(n_train),  # the measured (split) model's training faces
        "n_heldout": int(len(held_rows)),
        "split_epochs": split_epochs,  # heldout_mse: the model after this epoch, which never saw a held-out face
        "final_fit_epochs": final_epochs,
        "n_trained_on": int(len(all_rows) if final_epochs else n_train),  # the shipped model's training faces
        "split_warning": split_warning,
        "n_gap": int((labels == SPLIT_GAP).sum()),
        "heldout_mse": measured[-1] if measured else float("nan"),
        "meanface_mse": baseline,
        "device": str(device),
        "precision": "bf16" if bf16 else "fp32",
        "threads": threads,
        "train_seconds": state["seconds"],
        "resumed": state["resumed"],
        "torch": str(torch.__version__),
        "facevae": __version__,
    }
    write_outputs(outputs, model, faces, labels, state["history"], info, settings.seed,
                  None if state["heldout_sheet"] is None else [t.numpy() for t in state["heldout_sheet"]])
    checkpoint.unlink(missing_ok=True)
    return info


# --- outputs -------------------------------------------------------------------------------------


def heldout_sheet(model, faces: Faces, labels: np.ndarray) -> list[np.ndarray]:
    """Rows of up to 16 held-out faces (training faces without a split) over ``model``'s reconstructions
    of them: reconstructions.png, taken from the measured model before a final fit sees those faces."""
    from .modelio import reconstruct

    held = faces.data[labels == SPLIT_HELDOUT]
    if not len(held):  # no held-out split (small footage): show training faces, as the log says
        held = faces.data[labels == SPLIT_TRAIN]
    pick = held[np.linspace(0, len(held) - 1, min(16, len(held))).round().astype(int)]
    recon = reconstruct(model, pick)
    rows = []
    for i in range(0, len(pick), 8):
        rows += [pick[i : i + 8], recon[i : i + 8]]
    return rows


def write_outputs(outputs: dict, model, faces: Faces, labels: np.ndarray, history: list[dict], info: dict, seed: int,
                  sheet: list[np.ndarray] | None = None) -> None:
    import pandas as pd

    from .modelio import decode

    model.eval()
    write_split(outputs["split"], faces, labels)
    table = pd.DataFrame(history, columns=list(METRIC_COLUMNS))
    write_text(outputs["metrics"], table.to_csv(sep="\t", index=False, float_format="%.6g"))
    plot_losses(outputs["loss_plot"], table, info["meanface_mse"])
    save_grid(outputs["reconstructions"], sheet if sheet is not None else heldout_sheet(model, faces, labels))

    g = torch.Generator().manual_seed(seed)
    z = torch.randn(64, model.config.latent_dim, generator=g)
    samples = decode(model, z)
    save_grid(outputs["samples"], [samples[i : i + 8] for i in range(0, 64, 8)])
    save_model(outputs["model"], model, info)


def save_grid(path: str | os.PathLike, rows: list[np.ndarray], scale: int = 2) -> None:
    """Rows of uint8 HxWx3 RGB faces -> one PNG (rows padded to the longest with grey), written atomically."""
    write_png(path, sheets.enlarge(sheets.grid([list(faces) for faces in rows], fill=128), scale))


def plot_losses(path: str | os.PathLike, table, meanface_mse: float) -> None:
    plt = pyplot()

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(13, 3.6))
    # The Bernoulli term has a large floor (the pixels' own entropy): loss and reconstruction get
    # their own linear axis, the KL term its own, so their changes stay visible.
    ax1.plot(table["epoch"], table["loss"], marker="o", ms=3, label="loss")
    ax1.plot(table["epoch"], table["recon"], marker="o", ms=3, label="reconstruction")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("per image")
    ax1.legend()
    ax1.set_title("training loss")
    ax2.plot(table["epoch"], table["kl"], marker="o", ms=3, color="tab:green", label="KL (nats)")
    ax2.plot(table["epoch"], table["kl_weight"] * table["kl"], ls="--", color="tab:green", alpha=0.5, label="weighted KL")
    ax2.set_xlabel("epoch")
    ax2.legend()
    ax2.set_title("KL divergence")
    ax3.plot(table["epoch"], table["heldout_mse"], marker="o", ms=3, label="held-out MSE")
    ax3.axhline(meanface_mse, color="grey", ls="--", label="mean face")
    final = table["epoch"][table["phase"] == PHASE_FINAL]
    if len(final):  # the held-out faces join training here: no held-out MSE after it
        for ax in (ax1, ax2, ax3):
            ax.axvline(final.iloc[0] - 0.5, color="tab:purple", ls=":", label="final fit on every face" if ax is ax3 else None)
    ax3.set_xlabel("epoch")
    ax3.set_ylabel("MSE (pixels in [0, 1])")
    ax3.set_ylim(bottom=0)
    ax3.legend()
    ax3.set_title("held-out reconstruction")
    fig.tight_layout()
    save_figure(fig, path)
