"""Saving, loading and using trained face VAEs.

``model.pt`` is a plain ``torch.save`` dict of tensors and primitives (loadable with ``weights_only=True``)::

    {"format": "facevae-model", "version": 1,
     "model_config": {"arch": ..., "latent_dim": ..., "width": ..., "image_size": 64},
     "state_dict": {...}, "info": {...}}   # info: training config, final metrics, split sizes (free-form)

so ``load_model(path)`` rebuilds the network in a fresh process without any training argument.
:class:`Codec` is the render's fast inference path (same contract as :func:`encode` / :func:`decode`);
:func:`pick_device` resolves ``device: auto``.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import numpy as np
import torch

from . import FacevaeError
from .atomic import atomic_path
from .models import FACE_SIZE, VAE, ModelConfig, build_model

MODEL_FORMAT = "facevae-model"
MODEL_VERSION = 1


def atomic_torch_save(obj, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file beside ``path``, fsync, then ``os.replace`` (never a torn file)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    return Path(path)


def save_model(path: str | os.PathLike, model: VAE, info: dict | None = None) -> Path:
    """Write ``model`` (weights on CPU + its ModelConfig + free-form ``info``) atomically.

    ``info`` goes through JSON (anything else becomes its string), so the file stays loadable with
    ``weights_only=True``."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    info = json.loads(json.dumps(info or {}, default=str))
    return atomic_torch_save(
        {
            "format": MODEL_FORMAT,
            "version": MODEL_VERSION,
            "model_config": model.config.to_dict(),
            "state_dict": state,
            "info": info or {},
        },
        path,
    )


def read_blob(path: str | os.PathLike, fmt: str, version: int, what: str, rebuild: str = "", oldest: int = 0) -> dict:
    """A facevae torch file (a weights_only-loadable dict with ``format`` and ``version``), checked;
    every failure is one FacevaeError naming the file, ``what`` it is and, for a damaged file, the
    ``rebuild`` command. ``oldest``: the oldest version still read (an older file is refused so)."""
    path = Path(path)
    if not path.is_file():
        raise FacevaeError(f"{what} {path} not found")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure is the file's
        first = (str(err).strip().splitlines() or [""])[0]
        hint = f"; rebuild it with `snakemake --forcerun {rebuild}`" if rebuild else ""
        raise FacevaeError(f"{what} {path} cannot be read ({type(err).__name__}: {first}){hint}") from None
    if not isinstance(blob, dict) or blob.get("format") != fmt:
        raise FacevaeError(f"{path} is not a facevae {what} (no format '{fmt}')")
    if blob.get("version", 0) > version:
        raise FacevaeError(f"{path} is {what} format version {blob['version']}; this facevae reads up to {version}")
    if blob.get("version", 0) < oldest:
        hint = f"; rebuild it with `snakemake --forcerun {rebuild}`" if rebuild else ""
        raise FacevaeError(f"{what} {path} is format version {blob.get('version', 0)}, older than {oldest}{hint}")
    return blob


def _read(path: str | os.PathLike) -> dict:
    return read_blob(path, MODEL_FORMAT, MODEL_VERSION, "model file", rebuild="train_vae")


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> VAE:
    """Rebuild the network stored in ``path`` and load its weights; returned in eval mode on ``device``.

    ``model.config`` is its ModelConfig and ``model.info`` the stored info dict.
    """
    blob = _read(path)
    model = build_model(ModelConfig.from_dict(blob["model_config"]))
    model.load_state_dict(blob["state_dict"])
    model.info = blob.get("info", {})
    return model.to(device).eval()


def load_model_info(path: str | os.PathLike) -> dict:
    """The ``info`` dict of a model file plus its ``model_config`` (no network is built)."""
    blob = _read(path)
    return {"model_config": blob["model_config"], **blob.get("info", {})}


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def images_to_tensor(images, device) -> torch.Tensor:
    """uint8 N x 64 x 64 x 3 (numpy or tensor) -> float N x 3 x 64 x 64 in [0, 1] on ``device``."""
    x = torch.as_tensor(np.asarray(images) if not torch.is_tensor(images) else images)
    if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[-1] != 3:
        raise FacevaeError(f"images must be uint8 N x H x W x 3, got {x.dtype} {tuple(x.shape)}")
    return x.to(device).permute(0, 3, 1, 2).float().div_(255.0)


def tensor_to_images(x: torch.Tensor) -> np.ndarray:
    """float N x 3 x H x W in [0, 1] -> uint8 N x H x W x 3 numpy (rounded)."""
    return (x.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def encode(model: VAE, images, batch_size: int = 256) -> np.ndarray:
    """uint8 faces N x 64 x 64 x 3 -> posterior means ``mu`` (float32 numpy N x latent_dim)."""
    model.eval()
    dev = _device_of(model)
    n = len(images)
    out = []
    for i in range(0, n, batch_size):
        mu, _ = model.encode(images_to_tensor(images[i : i + batch_size], dev))
        out.append(mu.float().cpu())
    if not out:
        return np.zeros((0, model.config.latent_dim), np.float32)
    return torch.cat(out).numpy()


@torch.no_grad()
def decode(model: VAE, z, batch_size: int = 256) -> np.ndarray:
    """Latent codes N x latent_dim -> uint8 faces N x 64 x 64 x 3 (``sigmoid(logits)``, rounded)."""
    model.eval()
    dev = _device_of(model)
    z = torch.as_tensor(np.asarray(z, dtype=np.float32) if not torch.is_tensor(z) else z).float()
    if z.dim() != 2 or z.shape[1] != model.config.latent_dim:
        raise FacevaeError(f"latent codes must be N x {model.config.latent_dim}, got {tuple(z.shape)}")
    out = [
        tensor_to_images(torch.sigmoid(model.decode(z[i : i + batch_size].to(dev)).float()))
        for i in range(0, z.shape[0], batch_size)
    ]
    if not out:
        return np.zeros((0, FACE_SIZE, FACE_SIZE, 3), np.uint8)
    return np.concatenate(out)


@torch.no_grad()
def reconstruct(model: VAE, images, batch_size: int = 256) -> np.ndarray:
    """uint8 faces -> uint8 reconstructions through the posterior mean (no sampling)."""
    return decode(model, encode(model, images, batch_size), batch_size)


def edit_faces(model, latent: np.ndarray, direction: np.ndarray, amounts) -> np.ndarray:
    """Decode ``latent + a * direction`` for every amount: uint8 (len(amounts), N, 64, 64, 3)."""
    latent = np.asarray(latent, dtype=np.float32)
    direction = np.asarray(direction, dtype=np.float32)
    z = np.concatenate([latent + np.float32(a) * direction for a in amounts])
    faces = decode(model, z)
    return faces.reshape(len(amounts), len(latent), *faces.shape[1:])


def pick_device(name: str = "auto", key: str = "render.device") -> torch.device:
    """``auto`` -> CUDA when present, else CPU; ``cuda``/``cuda:N`` must exist. Errors name ``key``
    (the config key the value came from: train.device, featurenet.device, render.device...)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(name).startswith("cuda") and not torch.cuda.is_available():
        raise FacevaeError(f"{key} is {name!r} but CUDA is not available on this machine (use auto or cpu)")
    try:
        return torch.device(name)
    except RuntimeError as err:
        raise FacevaeError(f"{key} {name!r} is not a device: {err}") from None


CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # x86 flags for native bf16 dot products (AVX-512 BF16, AMX)


def cpu_bf16_flags(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> list[str]:
    """The CPU_BF16_FLAGS this machine's processor reports (none where /proc/cpuinfo is missing)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return []
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[-1].split())
    return [f for f in CPU_BF16_FLAGS if f in flags]


def resolve_precision(precision: str, device: torch.device, cpu_flags: list[str] | None = None) -> tuple[bool, str]:
    """(bf16 autocast?, why) for ``train.precision``: ``bf16`` / ``fp32`` as asked; ``auto`` bf16 on
    CUDA and on a CPU with native bf16 dot products (CPU_BF16_FLAGS), else fp32. Why auto takes bf16
    on such CPUs: the conv VAE's step runs ~1.7x the images/s at the same held-out quality
    (bench/results/train.md; docs/decisions)."""
    if precision != "auto":
        return precision == "bf16", f"train.precision {precision}"
    if device.type == "cuda":
        return True, "auto: CUDA"
    if device.type == "cpu":
        flags = cpu_bf16_flags() if cpu_flags is None else cpu_flags
        if flags:
            return True, f"auto: the CPU has {', '.join(flags)}"
        return False, "auto: the CPU has no native bf16 (avx512_bf16 or amx_bf16)"
    return False, f"auto: fp32 on {device.type}"


class Codec:
    """An actor model's encoder (posterior mean) and decoder, made fast for inference.

    Same contract as ``modelio.encode`` / ``modelio.decode`` (uint8 NHWC faces <-> float32 codes),
    but the network runs on a channels-last copy of the weights under ``torch.inference_mode`` --
    on the CPU about twice the frames per second of the default layout, for the same numbers up to
    float rounding.
    """

    def __init__(self, model, batch_size: int = 256):
        self.batch_size = batch_size
        self.device = next(model.parameters()).device
        self.latent_dim = model.config.latent_dim
        self.model = copy.deepcopy(model).eval().to(memory_format=torch.channels_last)

    def encode(self, images: np.ndarray) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for i in range(0, len(images), self.batch_size):
                x = images_to_tensor(images[i : i + self.batch_size], self.device)
                mu, _ = self.model.encode(x.contiguous(memory_format=torch.channels_last))
                out.append(mu.float().cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, self.latent_dim), np.float32)

    def decode(self, z: np.ndarray) -> np.ndarray:
        z = torch.as_tensor(np.asarray(z, np.float32))
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise FacevaeError(f"latent codes must be N x {self.latent_dim}, got {tuple(z.shape)}")
        out = []
        with torch.inference_mode():
            for i in range(0, len(z), self.batch_size):
                logits = self.model.decode(z[i : i + self.batch_size].to(self.device))
                out.append(tensor_to_images(torch.sigmoid(logits.float())))
        return np.concatenate(out) if out else np.zeros((0, FACE_SIZE, FACE_SIZE, 3), np.uint8)
