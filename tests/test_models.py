"""The VAE networks, their losses and model files (no media needed: shapes, formulas, file format)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from support.timeouts import hang_guard
import torch

from facevae import FacevaeError
from facevae.featurenet import AttributeNet, FeatureExtractor, load_feature_net, save_feature_net
from facevae.losses import DFCLoss, kl_divergence, kl_per_dim, kl_weight, recon_loss
from facevae.modelio import decode, encode, load_model, load_model_info, save_model
from facevae.models import BlogVAE, ConvVAE, ModelConfig, build_model


def _shapes(blocks, x):
    shapes = []
    for block in blocks:
        x = block(x)
        shapes.append(tuple(x.shape[1:]))
    return shapes


def test_blog_network_shapes_are_the_2017_ones():
    model = build_model(ModelConfig(arch="blog", latent_dim=100)).eval()
    assert isinstance(model, BlogVAE)
    x = torch.rand(2, 3, 64, 64)
    # Encoder: four 4x4 stride-2 convolutions, 32/64/128/256 channels, each conv + batch norm + ReLU.
    assert _shapes(model.encoder, x) == [(32, 32, 32), (64, 16, 16), (128, 8, 8), (256, 4, 4), (4096,)]
    for block in list(model.encoder)[:4]:
        conv, norm, act = block
        assert conv.kernel_size == (4, 4) and conv.stride == (2, 2)
        assert isinstance(norm, torch.nn.BatchNorm2d) and isinstance(act, torch.nn.ReLU)
    assert model.fc_mu.in_features == model.fc_logvar.in_features == 4096
    assert model.fc_mu.out_features == model.fc_logvar.out_features == 100
    # Decoder: fully connected to 4*256, reshaped to 1x1, transposed convs 5,5,6,6 VALID: 1->5->13->30->64.
    assert model.fc_dec.out_features == 4 * 256
    h = model.fc_dec(torch.zeros(2, 100))
    assert _shapes(model.decoder, h) == [(1024, 1, 1), (128, 5, 5), (64, 13, 13), (32, 30, 30), (3, 64, 64)]
    deconvs = [m for m in model.decoder.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [d.kernel_size[0] for d in deconvs] == [5, 5, 6, 6]
    assert all(d.padding == (0, 0) and d.stride == (2, 2) for d in deconvs)
    logits, mu, logvar = model(x, torch.Generator().manual_seed(0))
    assert logits.shape == (2, 3, 64, 64) and mu.shape == logvar.shape == (2, 100)


def test_conv_network_shapes_and_defaults():
    model = build_model({"arch": "conv", "latent_dim": 128, "width": 8, "image_size": 64}).eval()
    assert isinstance(model, ConvVAE)
    mu, logvar = model.encode(torch.rand(3, 3, 64, 64))
    assert mu.shape == logvar.shape == (3, 128)
    assert model.decode(mu).shape == (3, 3, 64, 64)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"arch": "vgg"}, "architecture"), ({"latent_dim": 0}, "latent_dim"), ({"width": 2}, "width"), ({"image_size": 128}, "image_size")],
)
def test_model_config_rejects_bad_values(kwargs, message):
    with pytest.raises(FacevaeError, match=message):
        ModelConfig(**kwargs)


def test_reparameterisation_is_driven_by_the_generator():
    model = build_model(ModelConfig(arch="conv", latent_dim=16, width=8))
    x = torch.rand(4, 3, 64, 64)
    a = model(x, torch.Generator().manual_seed(3))[0]
    b = model(x, torch.Generator().manual_seed(3))[0]
    c = model(x, torch.Generator().manual_seed(4))[0]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_reconstruction_losses_match_their_formulas():
    torch.manual_seed(0)
    logits, target = torch.randn(4, 3, 64, 64), torch.rand(4, 3, 64, 64)
    p = torch.sigmoid(logits)
    bce = -(target * torch.log(p) + (1 - target) * torch.log(1 - p)).sum() / 4
    assert torch.allclose(recon_loss(logits, target, "bce"), bce, rtol=1e-4)
    assert torch.allclose(recon_loss(logits, target, "mse"), ((p - target) ** 2).sum() / 4, rtol=1e-5)
    assert torch.allclose(recon_loss(logits, target, "l1"), (p - target).abs().sum() / 4, rtol=1e-5)
    # calibrated Gaussian: the NLL per image at the batch's optimal variance sigma^2 = MSE
    mse = ((p - target) ** 2).mean()
    sigma2 = mse
    nll = 0.5 * ((p - target) ** 2 / sigma2 + torch.log(2 * torch.pi * sigma2)).sum() / 4
    assert torch.allclose(recon_loss(logits, target, "gaussian"), nll, rtol=1e-4)
    with pytest.raises(FacevaeError, match="recon_loss"):
        recon_loss(logits, target, "huber")


def test_kl_matches_torch_distributions_and_warmup_ramps():
    mu, logvar = torch.randn(5, 7), torch.randn(5, 7)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    expected = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0))
    assert torch.allclose(kl_per_dim(mu, logvar), expected, atol=1e-5)
    assert torch.allclose(kl_divergence(mu, logvar), expected.sum() / 5, atol=1e-5)
    assert kl_weight(4.0, 0, epoch=0) == 4.0
    ramp = [kl_weight(2.0, 2, epoch=e, batch=b, n_batches=4) for e in range(3) for b in range(4)]
    assert ramp[0] == pytest.approx(0.25) and ramp[7] == pytest.approx(2.0) and ramp[-1] == 2.0
    assert all(b >= a for a, b in zip(ramp, ramp[1:]))


def test_bce_from_logits_runs_under_autocast():
    """Plain BCE on sigmoid outputs is refused under autocast; the loss here works from logits."""
    model = build_model(ModelConfig(arch="blog", latent_dim=8))
    x = torch.rand(4, 3, 64, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, mu, logvar = model(x, torch.Generator().manual_seed(0))
        assert logits.dtype == torch.bfloat16
    loss = recon_loss(logits, x, "bce") + kl_divergence(mu, logvar)
    loss.backward()
    assert torch.isfinite(loss) and loss.dtype == torch.float32
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_dfc_loss_compares_feature_maps(tmp_path):
    torch.manual_seed(0)
    net = AttributeNet(width=8)
    path = save_feature_net(net, tmp_path / "featurenet.pt", n_layers=3, info={"note": "random init"})
    fx = load_feature_net(path)
    assert isinstance(fx, FeatureExtractor)
    assert [tuple(m.shape[1:]) for m in fx(torch.rand(1, 3, 64, 64))] == [(8, 64, 64), (16, 32, 32), (32, 16, 16)]
    # the stored stages are the trained net's stages
    with torch.no_grad():
        net.eval()
        assert torch.equal(fx(torch.ones(1, 3, 64, 64) * 0.3)[1], net.stages[1](net.stages[0]((torch.ones(1, 3, 64, 64) * 0.3 - 0.5) / 0.25)))
    loss = DFCLoss(fx, [1.0, 0.5, 0.25], pixel_weight=0.0)
    x = torch.rand(2, 3, 64, 64)
    same = loss(torch.logit(x.clamp(1e-4, 1 - 1e-4)), x)[0]
    other = loss(torch.zeros(2, 3, 64, 64, requires_grad=True), x)[0]
    assert same < 1e-2 * other
    logits = torch.zeros(2, 3, 64, 64, requires_grad=True)
    total, feat, pix = DFCLoss(fx, [1.0], pixel_weight=2.0)(logits, x)
    assert torch.allclose(total, feat + 2.0 * recon_loss(logits, x, "bce"))
    total.backward()
    assert logits.grad.abs().sum() > 0
    assert all(p.grad is None for p in fx.parameters())
    with pytest.raises(FacevaeError, match="only 3 feature maps"):
        DFCLoss(fx, [1.0, 1.0, 1.0, 1.0])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit is deprecated upstream, still what users have
def test_dfc_accepts_a_torchscript_feature_network(tmp_path):
    fx = FeatureExtractor(width=8, n_layers=2).eval()
    scripted = torch.jit.script(fx)
    path = tmp_path / "user.ts"
    torch.jit.save(scripted, str(path))
    net = load_feature_net(path)
    loss = DFCLoss(net, [1.0, 1.0])
    x = torch.rand(2, 3, 64, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = loss(torch.zeros(2, 3, 64, 64), x)[0]
    assert torch.isfinite(value)
    (tmp_path / "junk.pt").write_text("not a network")
    with pytest.raises(FacevaeError, match="junk.pt"):
        load_feature_net(tmp_path / "junk.pt")
    with pytest.raises(FacevaeError, match="not found"):
        load_feature_net(tmp_path / "missing.pt")


def test_model_file_loads_in_a_fresh_process_without_training_arguments(tmp_path):
    torch.manual_seed(1)
    model = build_model(ModelConfig(arch="conv", latent_dim=12, width=8)).eval()
    path = save_model(tmp_path / "model.pt", model, {"seed": 1, "settings": {"epochs": 2}})
    faces = np.random.default_rng(0).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    np.save(tmp_path / "faces.npy", faces)
    script = textwrap.dedent(
        f"""
        import numpy as np
        from facevae.modelio import load_model, encode, decode
        model = load_model({str(path)!r})
        mu = encode(model, np.load({str(tmp_path / 'faces.npy')!r}))
        out = decode(model, mu)
        np.save({str(tmp_path / 'mu.npy')!r}, mu)
        np.save({str(tmp_path / 'out.npy')!r}, out)
        print(model.config.latent_dim, mu.dtype, out.dtype, out.shape)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=hang_guard(120),
                            env={"PYTHONPATH": str(__import__("pathlib").Path(__file__).resolve().parents[1] / "workflow"), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["12", "float32", "uint8", "(5,", "64,", "64,", "3)"]
    with torch.no_grad():
        mu, _ = model.encode(torch.from_numpy(faces).permute(0, 3, 1, 2).float() / 255)
    assert np.allclose(np.load(tmp_path / "mu.npy"), mu.numpy(), atol=1e-5)
    assert np.array_equal(np.load(tmp_path / "out.npy"), decode(load_model(path), mu.numpy()))
    assert load_model_info(path)["model_config"]["latent_dim"] == 12


def test_model_file_errors_name_the_file(tmp_path):
    with pytest.raises(FacevaeError, match="not found"):
        load_model(tmp_path / "none.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(FacevaeError, match="not a facevae model"):
        load_model(tmp_path / "other.pt")
    model = build_model(ModelConfig(arch="blog", latent_dim=4))
    with pytest.raises(FacevaeError, match="N x 4"):
        decode(model, np.zeros((2, 5), np.float32))
    with pytest.raises(FacevaeError, match="uint8"):
        encode(model, np.zeros((2, 64, 64, 3), np.float32))


def test_precision_auto_resolves_from_the_cpu_flags(tmp_path):
    """train.precision auto: bf16 on CUDA and on a CPU with native bf16 dot products, fp32 on other
    CPUs -- asserted from this machine's own flags, not from a speed."""
    import torch

    from facevae.modelio import cpu_bf16_flags, resolve_precision

    cpu = torch.device("cpu")
    flags = cpu_bf16_flags()
    bf16, why = resolve_precision("auto", cpu)
    assert bf16 == bool(flags) and (all(f in why for f in flags) if flags else "no native bf16" in why)
    assert resolve_precision("auto", cpu, ["avx512_bf16"]) == (True, "auto: the CPU has avx512_bf16")
    assert resolve_precision("auto", cpu, [])[0] is False
    assert resolve_precision("auto", torch.device("cuda"), [])[0] is True
    assert resolve_precision("fp32", cpu, ["amx_bf16"])[0] is False and resolve_precision("bf16", cpu, [])[0] is True
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f amx_bf16 amx_tile\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert cpu_bf16_flags(info) == ["amx_bf16"] and cpu_bf16_flags(tmp_path / "missing") == []
