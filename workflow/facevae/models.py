"""Face VAE networks for 64x64 RGB faces.

Every network here is a :class:`VAE`:

* ``encode(x) -> (mu, logvar)`` with ``x`` float N x 3 x 64 x 64 in [0, 1];
* ``decode(z) -> logits`` (N x 3 x 64 x 64; ``torch.sigmoid(logits)`` is the image in [0, 1]);
* ``forward(x, generator=None) -> (logits, mu, logvar)`` samples ``z = mu + sigma * eps`` with ``eps``
  drawn from ``generator``, so training owns (and checkpoints) every random number it uses.

A network is fully described by a :class:`ModelConfig` (a small dataclass of plain values), which
:mod:`facevae.modelio` stores next to the weights, so ``load_model(path)`` rebuilds it without any
training argument.

Architectures (``ModelConfig.arch``):

``blog``
    The int8 2017 TensorFlow face VAE as the issue describes it: encoder of four 4x4 stride-2
    convolutions (32/64/128/256 channels, 'SAME' padding: 64->32->16->8->4), each with batch norm +
    ReLU, flattened to 4096, fully connected mu and log sigma^2 (latent 100); decoder fully
    connected to 4*256 = 1024 units, reshaped to 1024 x 1 x 1, transposed convolutions 5x5->128,
    5x5->64, 6x6->32 (ReLU) and 6x6->3, stride 2, 'VALID' padding (spatial 1->5->13->30->64), whose
    logits go through a sigmoid for the image.

``conv``
    A residual design for 64x64 faces (default latent 128, base width 16): pre-activation residual
    blocks (BN-SiLU-conv3x3 twice, last conv zero-initialised so each block starts as the identity)
    at 32/16/8/4 px with 4x4 stride-2 downsampling convolutions (w, 2w, 4w, 8w channels); the decoder
    mirrors it with nearest-neighbour upsampling + 3x3 convolutions (no transposed-convolution
    checkerboard artefacts) up to 64 px and a BN-SiLU-conv3x3 head, plus a per-pixel output bias
    initialised to the training faces' mean (logits), so training starts from the mean face.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import FACE_SIZE, FacevaeError

ARCHS = ("blog", "conv")
DEFAULT_LATENT = {"blog": 100, "conv": 128}


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a network (stored in ``model.pt``)."""

    arch: str = "conv"
    latent_dim: int = 128
    width: int = 16  # base channel count of ``conv`` (``blog`` is fixed at 32/64/128/256)
    image_size: int = FACE_SIZE

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise FacevaeError(f"model architecture must be one of {', '.join(ARCHS)}, not {self.arch!r}")
        if not isinstance(self.latent_dim, int) or self.latent_dim < 1:
            raise FacevaeError(f"latent_dim must be a positive integer, not {self.latent_dim!r}")
        if not isinstance(self.width, int) or self.width < 4:
            raise FacevaeError(f"model width must be an integer >= 4, not {self.width!r}")
        if self.image_size != FACE_SIZE:
            raise FacevaeError(f"image_size must be {FACE_SIZE} (faces are 64x64), not {self.image_size!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise FacevaeError(f"unknown model config key(s): {', '.join(unknown)}")
        return cls(**d)


class VAE(nn.Module):
    """Common VAE interface; subclasses define ``encode`` and ``decode``."""

    config: ModelConfig

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``mu + exp(logvar / 2) * eps`` in float32 (also under bf16 autocast: sampling needs the precision)."""
        mu, logvar = mu.float(), logvar.float()
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=torch.float32)
        return mu + eps * torch.exp(0.5 * logvar)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar, generator)
        return self.decode(z), mu, logvar

    def init_from_data(self, mean_face: torch.Tensor) -> None:
        """Data-dependent initialisation before training (``mean_face``: float 3 x 64 x 64 in [0, 1],
        the training faces' mean); the default does nothing."""


# ----------------------------------------------------------------------------------------------- blog


class BlogVAE(VAE):
    """The int8 2017 face VAE (see the module docstring). ``encoder`` and ``decoder`` are
    ``nn.Sequential``s whose blocks tests walk through to check every intermediate shape."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        latent = config.latent_dim

        def down(cin, cout):  # 4x4 stride 2, padding 1 == TensorFlow 'SAME' for even sizes
            return nn.Sequential(nn.Conv2d(cin, cout, 4, stride=2, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

        def up(cin, cout, k):  # 'VALID' transposed convolution: out = (in - 1) * 2 + k
            return nn.Sequential(nn.ConvTranspose2d(cin, cout, k, stride=2), nn.ReLU(inplace=True))

        self.encoder = nn.Sequential(down(3, 32), down(32, 64), down(64, 128), down(128, 256), nn.Flatten())
        self.fc_mu = nn.Linear(256 * 4 * 4, latent)
        self.fc_logvar = nn.Linear(256 * 4 * 4, latent)
        self.fc_dec = nn.Linear(latent, 4 * 256)
        self.decoder = nn.Sequential(
            nn.Unflatten(1, (4 * 256, 1, 1)),  # 1024 x 1 x 1
            up(4 * 256, 128, 5),  # 1 -> 5
            up(128, 64, 5),  # 5 -> 13
            up(64, 32, 6),  # 13 -> 30
            nn.ConvTranspose2d(32, 3, 6, stride=2),  # 30 -> 64, logits
        )
        # TensorFlow's defaults, which the 2017 code used: Glorot-uniform weights, zero biases.
        # (PyTorch's smaller default weights shrink the signal through the normalisation-free
        # decoder, and the network then takes several times as many steps to leave the grey start.)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def encode(self, x):
        h = self.encoder(x)
        return self.fc_mu(h), self.fc_logvar(h)

    def decode(self, z):
        return self.decoder(self.fc_dec(z))


# ----------------------------------------------------------------------------------------------- conv


class ResBlock(nn.Module):
    """Pre-activation residual block (BN-SiLU-conv3x3 twice); the last conv starts at zero (identity)."""

    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(ch),
            nn.SiLU(),
            nn.Conv2d(ch, ch, 3, padding=1, bias=False),
            nn.BatchNorm2d(ch),
            nn.SiLU(),
            nn.Conv2d(ch, ch, 3, padding=1),
        )
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)

    def forward(self, x):
        return x + self.body(x)


def _down(cin: int, cout: int, preact: bool = True) -> nn.Sequential:
    """(BN-SiLU then) 4x4 stride-2 convolution: halves the resolution."""
    layers = [nn.BatchNorm2d(cin), nn.SiLU()] if preact else []
    return nn.Sequential(*layers, nn.Conv2d(cin, cout, 4, stride=2, padding=1))


class Up(nn.Module):
    """BN-SiLU, nearest-neighbour 2x upsampling, 3x3 convolution."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm = nn.Sequential(nn.BatchNorm2d(cin), nn.SiLU())
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(self.norm(x), scale_factor=2.0, mode="nearest"))


class ConvVAE(VAE):
    """Residual convolutional VAE for 64x64 faces (see the module docstring)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        w, latent = config.width, config.latent_dim
        c = [w, 2 * w, 4 * w, 8 * w]  # channels at 32, 16, 8, 4 px
        head = max(w // 2, 4)
        self.encoder = nn.Sequential(
            _down(3, c[0], preact=False),  # 64 -> 32
            ResBlock(c[0]),
            _down(c[0], c[1]),  # -> 16
            ResBlock(c[1]),
            _down(c[1], c[2]),  # -> 8
            ResBlock(c[2]),
            _down(c[2], c[3]),  # -> 4
            ResBlock(c[3]),
            nn.BatchNorm2d(c[3]),
            nn.SiLU(),
            nn.Flatten(),
        )
        self.fc_enc = nn.Linear(c[3] * 16, 2 * latent)
        self.fc_dec = nn.Linear(latent, c[3] * 16)
        self.decoder = nn.Sequential(
            nn.Unflatten(1, (c[3], 4, 4)),
            ResBlock(c[3]),
            Up(c[3], c[2]),  # -> 8
            ResBlock(c[2]),
            Up(c[2], c[1]),  # -> 16
            ResBlock(c[1]),
            Up(c[1], c[0]),  # -> 32
            ResBlock(c[0]),
            Up(c[0], head),  # -> 64
            nn.BatchNorm2d(head),
            nn.SiLU(),
            nn.Conv2d(head, 3, 3, padding=1),
        )
        # A per-pixel output bias: the decoder adds the difference from a base image, which
        # init_from_data sets to the training set's mean face, so training starts at the mean face
        # instead of spending its first epochs learning it from grey.
        self.out_bias = nn.Parameter(torch.zeros(1, 3, FACE_SIZE, FACE_SIZE))

    def encode(self, x):
        h = self.fc_enc(self.encoder(x * 2.0 - 1.0))
        mu, logvar = h.chunk(2, dim=1)
        return mu, logvar

    def decode(self, z):
        return self.decoder(self.fc_dec(z)) + self.out_bias

    @torch.no_grad()
    def init_from_data(self, mean_face: torch.Tensor) -> None:
        self.out_bias.copy_(torch.logit(mean_face.float().clamp(0.01, 0.99)).reshape(self.out_bias.shape))


_CLASSES = {"blog": BlogVAE, "conv": ConvVAE}


def build_model(config: ModelConfig | dict) -> VAE:
    """Build an (untrained) network from its config."""
    if isinstance(config, dict):
        config = ModelConfig.from_dict(config)
    return _CLASSES[config.arch](config)

