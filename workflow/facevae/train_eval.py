"""Measures of a trained face VAE used by the model comparison (bench/perf/bench_train.py) and tests.

* :func:`pca_mse` -- the linear baseline: held-out MSE of PCA with as many components as latents;
* :func:`active_dims` -- latent dimensions whose mean KL over faces exceeds 0.01 nats;
* :func:`face_share` -- share of images in which dlib's HOG detector finds a face (decoded
  N(0, I) draws: does the model generate faces?);
* :func:`bare_rate` -- images/s of the network's bare forward + loss + backward on random tensors,
  the bound an epoch's images/s is compared with.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from . import FACE_SIZE
from .losses import kl_divergence, kl_per_dim, recon_loss
from .modelio import images_to_tensor
from .models import build_model


def pca_mse(train: np.ndarray, heldout: np.ndarray, components: int) -> float:
    """Held-out MSE (pixels in [0, 1]) of projecting onto the training faces' top principal components."""
    x = train.reshape(len(train), -1).astype(np.float64) / 255.0
    y = heldout.reshape(len(heldout), -1).astype(np.float64) / 255.0
    mean = x.mean(0)
    # the components from the (N x N) Gram matrix: cheap when N << pixels
    xc = x - mean
    gram = xc @ xc.T
    vals, vecs = np.linalg.eigh(gram)
    order = np.argsort(vals)[::-1][: min(components, len(x) - 1)]
    basis = (xc.T @ vecs[:, order]) / np.sqrt(np.maximum(vals[order], 1e-12))
    yc = y - mean
    recon = (yc @ basis) @ basis.T
    return float(((recon - yc) ** 2).mean())


@torch.no_grad()
def mean_kl_per_dim(model, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """KL(q(z|x) || N(0, 1)) of each latent dimension averaged over ``images`` (float64 (D,)): how
    much each dimension carries."""
    model.eval()
    device = next(model.parameters()).device
    total = torch.zeros(model.config.latent_dim, dtype=torch.float64)
    for i in range(0, len(images), batch):
        mu, logvar = model.encode(images_to_tensor(images[i : i + batch], device))
        total += kl_per_dim(mu, logvar).sum(0).double().cpu()
    return (total / len(images)).numpy()


def active_dims(model, images: np.ndarray, threshold: float = 0.01, batch: int = 256) -> int:
    """Latent dimensions whose KL(q(z|x) || N(0, 1)), averaged over ``images``, exceeds ``threshold``."""
    return int((mean_kl_per_dim(model, images, batch) > threshold).sum())


def face_share(images: np.ndarray, scale: int = 4) -> float:
    """Share of uint8 RGB faces in which dlib's HOG frontal detector finds a face (each image is
    enlarged ``scale`` times first: the detector misses faces under about 80 px)."""
    import cv2
    import dlib

    detector = dlib.get_frontal_face_detector()
    found = 0
    for face in images:
        big = cv2.resize(face, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
        found += len(detector(big, 0)) > 0
    return found / max(len(images), 1)


def bare_rate(model_config, batch_size: int, steps: int = 8, kind: str = "bce", device: str = "cpu", warmup: int = 2) -> float:
    """Images/s of forward + loss + backward of a fresh network on random tensors (no data, no optimiser)."""
    torch.manual_seed(0)
    model = build_model(model_config).to(device).train()
    x = torch.rand(batch_size, 3, FACE_SIZE, FACE_SIZE, device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    for i in range(warmup + steps):
        if i == warmup:
            if device != "cpu":
                torch.cuda.synchronize()
            start = time.perf_counter()
        logits, mu, logvar = model(x, gen)
        loss = recon_loss(logits, x, kind) + kl_divergence(mu, logvar)
        model.zero_grad(set_to_none=True)
        loss.backward()
    if device != "cpu":
        torch.cuda.synchronize()
    return steps * batch_size / (time.perf_counter() - start)
