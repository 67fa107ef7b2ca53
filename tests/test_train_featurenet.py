"""The DFC feature network on the pipeline's aligned CelebA faces, and a dfc model trained through
Snakemake with it (rule train_featurenet, then rule train_vae)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from support.media import REPO
from support.timeouts import hang_guard
from facevae.celeba import read_aligned
from facevae.faces.io import read_track, write_faces
from facevae.featurenet import FeatureExtractor, load_feature_net, split_by_identity, train_feature_net
from facevae.losses import DFCLoss
from facevae.modelio import load_model

pytestmark = [pytest.mark.media, pytest.mark.slow]

FEATURENET_TEST = {"epochs": 3, "width": 8, "batch_size": 64, "seed": 0}


@pytest.fixture(scope="module")
def aligned(pipeline) -> Path:
    path = pipeline["workdir"] / "results/celeba/aligned.h5"
    if not path.exists():
        pytest.fail("the test pipeline has no results/celeba/aligned.h5 (its config needs the celeba section)")
    return path


def test_split_keeps_every_identity_on_one_side():
    identity = np.repeat(np.arange(50), 4)
    identity[:7] = -1
    val = split_by_identity(identity, 0.2, seed=3)
    known = identity >= 0
    assert not set(identity[val & known]) & set(identity[~val & known])
    assert abs(val.mean() - 0.2) < 0.05


def test_feature_net_learns_celeba_attributes(aligned, tmp_path):
    out = tmp_path / "featurenet.pt"
    info = train_feature_net(aligned, out, tmp_path / "metrics.tsv", tmp_path / "accuracy.png", FEATURENET_TEST, progress=False)
    metrics = pd.read_csv(tmp_path / "metrics.tsv", sep="\t")
    found = read_aligned(aligned)
    assert info["n_train"] + info["n_val"] == len(found["data"]) and info["n_val"] > 0
    assert list(metrics["epoch"]) == [1, 2, 3] and metrics["loss"].iloc[-1] < metrics["loss"].iloc[0]
    per = info["per_attribute"]
    print({k: [round(a, 3), round(m, 3)] for k, (a, m) in per.items() if k in ("Male", "Smiling", "Mouth_Slightly_Open")},
          round(info["val_accuracy"], 3), round(info["majority_accuracy"], 3))
    # Attributes a face network must see (on people it has never seen): clearly above the majority class.
    for name in ("Male", "Smiling"):
        accuracy, majority = per[name]
        assert accuracy > majority + 0.05, f"{name}: {accuracy:.3f} vs majority {majority:.3f}"
    assert (tmp_path / "accuracy.png").stat().st_size > 0
    net = load_feature_net(out)
    assert isinstance(net, FeatureExtractor) and net.n_layers == 3
    assert [tuple(m.shape[1:]) for m in net(torch.rand(2, 3, 64, 64))] == [(8, 64, 64), (16, 32, 32), (32, 16, 16)]
    # the DFC loss over it: a face compared with itself costs ~nothing, with another face a lot
    faces = torch.from_numpy(found["data"][:4]).permute(0, 3, 1, 2).float() / 255
    loss = DFCLoss(net, [1.0, 1.0, 1.0])
    same = loss(torch.logit(faces.clamp(1e-3, 1 - 1e-3)), faces)[0]
    other = loss(torch.logit(faces.flip(0).clamp(1e-3, 1 - 1e-3)), faces)[0]
    assert same < 0.01 * other


def test_feature_net_resumes_after_sigterm_to_the_same_weights(aligned, tmp_path):
    """The feature net's loop is resumable like train_vae's (the kit of facevae.runkit): a real
    SIGTERM once its first epoch's checkpoint exists stops it with the checkpoint saved; the re-run
    resumes from it and ends with the weights and metrics of an uninterrupted run."""
    import os
    import signal
    import threading

    from facevae.rulerun import Terminated

    settings = {**FEATURENET_TEST, "epochs": 4}
    straight = train_feature_net(aligned, tmp_path / "straight.pt", tmp_path / "straight.tsv", None, settings, threads=1,
                                 progress=False)
    ckpt = tmp_path / "ckpt.pt"

    def kill_once_saved():  # what a cluster's kill does, once there is something to resume
        while not ckpt.exists():
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)

    killer = threading.Thread(target=kill_once_saved, daemon=True)
    killer.start()
    with pytest.raises(Terminated, match="checkpoint saved"):
        train_feature_net(aligned, tmp_path / "resumed.pt", tmp_path / "resumed.tsv", None, settings, threads=1, progress=False,
                          checkpoint=ckpt)
    killer.join(timeout=5)
    stopped = torch.load(ckpt, weights_only=True)["state"]
    assert stopped["epoch"] < settings["epochs"], "the run finished before SIGTERM arrived"
    assert not (tmp_path / "resumed.pt").exists()
    resumed = train_feature_net(aligned, tmp_path / "resumed.pt", tmp_path / "resumed.tsv", None, settings, threads=1,
                                progress=False, checkpoint=ckpt)
    assert resumed["resumed"] == 1 and straight["resumed"] == 0 and not ckpt.exists()
    a, b = (torch.load(tmp_path / f"{n}.pt", weights_only=False)["state_dict"] for n in ("straight", "resumed"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ"
    m1, m2 = (pd.read_csv(tmp_path / f"{n}.tsv", sep="\t") for n in ("straight", "resumed"))
    assert np.array_equal(m1["loss"], m2["loss"]) and np.array_equal(m1["val_accuracy"], m2["val_accuracy"])


def test_dfc_model_through_snakemake(pipeline, aligned, tmp_path):
    """rule train_featurenet on the aligned CelebA faces, then rule train_vae with model dfc."""
    work = tmp_path / "work"
    (work / "results/celeba").mkdir(parents=True)
    shutil.copy2(aligned, work / "results/celeba/aligned.h5")  # reuse the pipeline's alignment
    track = read_track(pipeline["workdir"] / "results/tracks/d6/d6.h5")
    kept = np.flatnonzero(track["kept"])[:80]
    write_faces(tmp_path / "faces.h5", track["crops"][kept], {"aligner": "dlib"}, source=np.array(["d6"] * len(kept), dtype=object),
                frame=track["frame"][kept], time=track["time"][kept])
    config = {
        "actors": {"a": {"dataset": str(tmp_path / "faces.h5")}},
        "celeba": pipeline["config"]["celeba"],
        "train": {"model": "dfc", "width": 8, "epochs": 1, "min_steps": 0, "batch_size": 16, "holdout": {"gap_seconds": 0.2}},
        "featurenet": {"epochs": 1, "width": 8},
    }
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    cmd = [str(Path(sys.executable).parent / "snakemake"), "--snakefile", str(REPO / "Snakefile"), "--directory", str(work),
           "--configfile", str(work / "config.yaml"), "--cores", "2", "--allowed-rules", "train_featurenet", "train_vae",
           "faces_dataset", "--", "results/models/a/model.pt"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=hang_guard(900))
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    for name in ("featurenet.pt", "metrics.tsv", "accuracy.png"):
        assert (work / "results/featurenet" / name).stat().st_size > 0
    model = load_model(work / "results/models/a/model.pt")
    assert model.info["settings"]["model"] == "dfc" and model.config.arch == "conv"
    assert np.isfinite(model.info["heldout_mse"])


def test_featurenet_schema_defaults_are_the_library_defaults():
    """One source of defaults: the featurenet schema fills in exactly featurenet.DEFAULTS."""
    import yaml

    from support.media import REPO
    from facevae.config import validate
    from facevae.featurenet import DEFAULTS

    assert validate(yaml.safe_load((REPO / "config.yaml").read_text()))["featurenet"] == DEFAULTS
