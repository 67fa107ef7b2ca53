"""The page's build pieces without a browser: ONNX export against onnxruntime, the manifest, the
npm runtime's errors, the server's headers, and the page's place in the plan."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request

import numpy as np
import pytest
import torch

from facevae import FacevaeError


def _small_model():
    from facevae.models import ModelConfig, build_model

    torch.manual_seed(0)
    return build_model(ModelConfig(arch="conv", latent_dim=16, width=8)).eval()


def test_decoder_onnx_equals_pytorch_in_onnxruntime(tmp_path):
    import onnxruntime

    from facevae.page import DecodeImage, export_decoder_onnx

    model = _small_model()
    path = export_decoder_onnx(model, tmp_path / "decoder.onnx")
    z = np.random.default_rng(1).standard_normal((5, 16)).astype(np.float32)
    got = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"z": z})[0]
    with torch.no_grad():
        want = DecodeImage(model)(torch.from_numpy(z)).numpy()
    assert got.shape == (5, 64, 64, 3) and np.abs(got - want).max() <= 1e-5


def test_kl_ranking_puts_the_dimensions_that_carry_first():
    from facevae.losses import kl_per_dim  # what train_eval.mean_kl_per_dim averages for page.json

    mu = np.zeros((100, 3))
    mu[:, 1] = np.random.default_rng(0).standard_normal(100) * 2  # carries a lot
    logvar = np.zeros((100, 3))
    logvar[:, 2] = -3.0  # certain about 0: carries some
    kl = kl_per_dim(torch.from_numpy(mu), torch.from_numpy(logvar)).mean(0).numpy()
    assert kl[0] == pytest.approx(0.0) and kl[1] > kl[2] > kl[0]


def test_missing_npm_names_what_to_install(tmp_path, monkeypatch):
    from facevae.webruntime import install_runtime

    monkeypatch.setenv("PATH", str(tmp_path))  # neither node nor npm
    with pytest.raises(FacevaeError, match="node and npm.*envs/page.yaml.*page.build"):
        install_runtime(tmp_path / "vendor")
    assert not (tmp_path / "vendor").exists()


def test_the_lock_file_pins_every_direct_dependency():
    from facevae.webruntime import PAGE_SOURCE, VENDOR_FILES, locked_versions

    versions = locked_versions()
    wanted = json.loads((PAGE_SOURCE / "package.json").read_text())["dependencies"]
    assert versions == wanted  # exact pins, and the lock agrees with package.json
    packages = {src.split("/dist/")[0].split("/model/")[0].rsplit("/LICENSE")[0] for src in VENDOR_FILES.values()}
    assert packages <= set(versions)


def test_make_explore_server_prints_its_url_and_sends_isolation_headers(tmp_path):
    (tmp_path / "index.html").write_text("<!doctype html><title>t</title>")
    (tmp_path / "a.mjs").write_text("export default 1;")
    proc = subprocess.Popen([sys.executable, "-m", "facevae.serve_page", str(tmp_path), "--port", "0"],
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": "workflow"})
    try:
        line = proc.stdout.readline()
        url = line.split(" at ")[1].split(" ")[0]
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url + "a.mjs", timeout=10) as response:
            assert response.headers["Content-Type"].startswith("text/javascript")
            assert response.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
            assert response.headers["Cross-Origin-Opener-Policy"] == "same-origin"
        # Byte ranges: without them a browser cannot seek in a served video.
        request = urllib.request.Request(url + "a.mjs", headers={"Range": "bytes=7-13"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 206 and response.read() == b"default"
            assert response.headers["Content-Range"] == "bytes 7-13/17"
    finally:
        proc.terminate()
        proc.wait(10)


def test_serving_a_folder_without_a_page_says_how_to_build_it(tmp_path):
    done = subprocess.run([sys.executable, "-m", "facevae.serve_page", str(tmp_path)], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": "workflow"}, timeout=30)
    assert done.returncode != 0 and "snakemake --cores all" in done.stderr and "index.html" in done.stderr


def test_the_page_settings_come_from_the_schema():
    """rule page_models' params: the validated page: section, the render gain, the crop geometry --
    every default from the schemas (page.py has none of its own)."""
    from facevae.config import validate
    from facevae.planning import page_model_settings

    config = validate({"actors": {"a": {"videos": {"v": {"url": "https://example.org/x.mp4"}}}}})
    settings = page_model_settings(config)
    assert {k: settings[k] for k in ("calibration_seconds", "detect_every", "neutral", "gain", "transfer")} == \
        {"calibration_seconds": 2.0, "detect_every": 5, "neutral": "running", "gain": 1.0, "transfer": 0.75}
    assert "build" not in settings and settings["attributes"] == config["attributes"]["edit"]


def test_every_actor_gets_a_page_unless_switched_off():
    from facevae.planning import page_targets

    config = {"actors": {"a": {}, "b": {}}}
    assert page_targets(config) == ["results/explore/a/index.html", "results/explore/b/index.html"]
    assert page_targets({**config, "page": {"build": False}}) == []
