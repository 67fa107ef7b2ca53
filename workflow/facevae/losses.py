"""VAE losses: pixel reconstruction terms, the KL divergence with beta and a linear warm-up, and the
Deep Feature Consistent (DFC) reconstruction term.

Conventions: images are float N x 3 x H x W in [0, 1]; decoders give *logits*. Reconstruction and KL
terms are summed over pixels / latent dimensions and averaged over the batch, so with ``beta = 1``
and ``bce`` the loss is the negative ELBO per image in nats (the blog's loss).

DFC (Hou et al. 2017): the reconstruction is compared with the input through the early feature maps
of a frozen network phi (:mod:`facevae.featurenet`): term = sum_l w_l * D * mean_{c,h,w}
(phi_l(recon) - phi_l(x))^2, batch-averaged, where D = 3 * 64 * 64 puts each layer on the scale of a
summed pixel loss (so the weights are comparable with the KL term whatever a layer's size).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import FACE_SIZE, FacevaeError

RECON_LOSSES = ("bce", "mse", "l1", "gaussian")
PIXELS = 3 * FACE_SIZE * FACE_SIZE


def recon_loss(logits: torch.Tensor, target: torch.Tensor, kind: str = "bce") -> torch.Tensor:
    """Pixel reconstruction loss, summed over pixels and averaged over the batch (float32 scalar).

    ``bce`` is the Bernoulli negative log-likelihood computed from logits
    (``binary_cross_entropy_with_logits``: numerically stable, and allowed under CUDA autocast where
    plain BCE on sigmoid outputs is refused); ``mse`` / ``l1`` compare ``sigmoid(logits)`` with the
    target; ``gaussian`` is the Gaussian negative log-likelihood with the batch's optimal variance.
    """
    logits = logits.float()
    target = target.float()
    n = logits.shape[0]
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logits, target, reduction="sum") / n
    if kind == "mse":
        return F.mse_loss(torch.sigmoid(logits), target, reduction="sum") / n
    if kind == "l1":
        return F.l1_loss(torch.sigmoid(logits), target, reduction="sum") / n
    if kind == "gaussian":
        # Gaussian likelihood whose variance is the optimum for this batch, sigma^2 = its MSE (the
        # "calibrated decoder" of sigma-VAE, Rybkin et al. 2021): -log p = D/2 log(2 pi e sigma^2)
        # per image. The weight of a squared error, 1/(2 sigma^2), grows as reconstructions improve,
        # where BCE's stays near 2 -- so the KL term cannot wash the expressions out.
        pixels = logits[0].numel()
        mse = F.mse_loss(torch.sigmoid(logits), target).clamp_min(1e-6)
        return 0.5 * pixels * (torch.log(mse) + math.log(2 * math.pi) + 1.0)
    raise FacevaeError(f"train.recon_loss must be one of {', '.join(RECON_LOSSES)}, not {kind!r}")


def kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) of every latent dimension of every sample (float32 N x D)."""
    mu, logvar = mu.float(), logvar.float()
    return -0.5 * (1.0 + logvar - mu.pow(2) - logvar.exp())


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) summed over latent dimensions, averaged over the batch (float32)."""
    return kl_per_dim(mu, logvar).sum() / mu.shape[0]


def kl_weight(beta: float, warmup_epochs: float, epoch: int, batch: int = 0, n_batches: int = 1) -> float:
    """Weight of the KL term at one step: ``beta`` times a linear ramp 0 -> 1 over ``warmup_epochs``.

    ``epoch`` and ``batch`` are 0-based; the ramp reaches 1 at the end of epoch ``warmup_epochs - 1``
    (the current batch counts as done). ``warmup_epochs <= 0``: no ramp.
    """
    if warmup_epochs <= 0:
        return float(beta)
    progress = (epoch + (batch + 1) / max(n_batches, 1)) / warmup_epochs
    return float(beta) * min(1.0, progress)


class DFCLoss(nn.Module):
    """Deep Feature Consistent reconstruction loss over a frozen feature network.

    ``feature_net(x)`` takes float N x 3 x 64 x 64 in [0, 1] and returns a list of feature maps, the
    earliest layer first (:func:`facevae.featurenet.load_feature_net` gives one). ``forward(logits,
    target)`` -> (total, feature_term, pixel_term), float32 scalars, with total = feature_term +
    pixel_weight * recon_loss(logits, target, pixel_loss).
    """

    def __init__(
        self,
        feature_net: nn.Module,
        layer_weights: Sequence[float] = (1.0, 1.0, 1.0),
        pixel_weight: float = 0.0,
        pixel_loss: str = "bce",
    ):
        super().__init__()
        self.net = feature_net
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.net.eval()
        self.layer_weights = [float(w) for w in layer_weights]
        if not self.layer_weights:
            raise FacevaeError("train.dfc.layer_weights must name at least one layer weight")
        self.pixel_weight = float(pixel_weight)
        if pixel_loss not in RECON_LOSSES:
            raise FacevaeError(f"train.recon_loss must be one of {', '.join(RECON_LOSSES)}, not {pixel_loss!r}")
        self.pixel_loss = pixel_loss
        # TorchScript files from users run in float32 outside autocast (their graphs may not support it).
        self._scripted = isinstance(feature_net, torch.jit.ScriptModule)
        device = next(iter(self.net.buffers()), next(self.net.parameters(), torch.zeros(()))).device
        with torch.no_grad():
            n_maps = len(self._features(torch.zeros(1, 3, FACE_SIZE, FACE_SIZE, device=device)))
        if n_maps < len(self.layer_weights):
            raise FacevaeError(
                f"train.dfc.layer_weights has {len(self.layer_weights)} weights but the feature network "
                f"returns only {n_maps} feature maps"
            )

    def train(self, mode: bool = True):  # the feature net always stays in eval mode (frozen BN statistics)
        super().train(mode)
        self.net.eval()
        return self

    def _features(self, x: torch.Tensor):
        if self._scripted:
            with torch.autocast(x.device.type, enabled=False):
                return list(self.net(x.float()))[: len(self.layer_weights)]
        return list(self.net(x))[: len(self.layer_weights)]

    def forward(self, logits: torch.Tensor, target: torch.Tensor):
        n = logits.shape[0]
        with torch.no_grad():
            ft = self._features(target)
        fr = self._features(torch.sigmoid(logits.float()))
        feat = torch.zeros((), dtype=torch.float32, device=logits.device)
        for w, a, b in zip(self.layer_weights, fr, ft):
            if w != 0.0:
                feat = feat + w * PIXELS * F.mse_loss(a.float(), b.float(), reduction="sum") / (a[0].numel() * n)
        if self.pixel_weight != 0.0:
            pix = recon_loss(logits, target, self.pixel_loss)
            return feat + self.pixel_weight * pix, feat, pix
        return feat, feat, torch.zeros_like(feat)
