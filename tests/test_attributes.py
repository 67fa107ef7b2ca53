"""CelebA attributes in an actor's latent space (issue 6).

Two kinds of tests:

* library tests on real data: aligned CelebA faces from the shared sample, encoded by a small VAE
  trained here for a few steps on real faces (no pipeline needed);
* acceptance tests on the session's ONE pipeline run (``pipeline`` fixture): the attribute files,
  probes, grids and mouth curves the workflow wrote for a shared actor (lp_d6, actor ``d6``).
"""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from support.media import REPO
from facevae import FacevaeError
from facevae.attribute_diagnostics import identity_folds, mouth_width_ratio, probe
from facevae.attributes import (
    attribute_vectors,
    build_attributes,
    build_edits,
    decoded_face_geometry,
    orthogonalise,
    principal_components,
    read_attributes_h5,
    vector_of,
)
from facevae.tables import read_tsv
from facevae.celeba import build_aligned, read_aligned
from facevae.planning import DEFAULTS

pytestmark = pytest.mark.media

ACTOR = "d6"  # the shared actor whose pipeline model the acceptance tests read


# --- real data for the library tests -------------------------------------------------------------


def train_vae(faces: np.ndarray, epochs: int, arch: str = "conv", latent: int = 128, width: int = 8, batch: int = 32,
              seed: int = 0):
    """A real VAE (BCE + KL, Adam, horizontal flips) fitted to ``faces`` for ``epochs`` passes, on one
    thread (small batches gain nothing from a second one, and lose a lot on a busy machine)."""
    import torch

    from facevae.losses import kl_divergence, recon_loss
    from facevae.modelio import images_to_tensor
    from facevae.models import ModelConfig, build_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        model = build_model(ModelConfig(arch=arch, latent_dim=latent, width=width))
        opt = torch.optim.Adam(model.parameters(), 1e-3)
        x_all = images_to_tensor(faces, "cpu")
        model.train()
        for _ in range(epochs):
            order = torch.randperm(len(x_all), generator=gen)
            for i in range(0, len(x_all), batch):
                x = x_all[order[i : i + batch]]
                flip = torch.rand(len(x), generator=gen) < 0.5
                x = torch.where(flip[:, None, None, None], x.flip(3), x)
                logits, mu, logvar = model(x, generator=gen)
                loss = recon_loss(logits, x) + kl_divergence(mu, logvar)
                opt.zero_grad()
                loss.backward()
                opt.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


@pytest.fixture(scope="module")
def aligned(media, tmp_path_factory):
    """300 aligned faces of the shared CelebA sample (the celeba_align code path, ~3 s)."""
    out = tmp_path_factory.mktemp("attr_celeba") / "aligned.h5"
    cfg = {
        "images": str(media("celeba/img_align_celeba_89x109")),
        "attributes": str(media("celeba/list_attr_celeba.txt")),
        "identities": str(media("celeba/identity_CelebA.txt")),
        "limit": 300,
    }
    build_aligned(cfg, {"aligner": "dlib"}, out, workers=2)
    return out


@pytest.fixture(scope="module")
def small_model(aligned, tmp_path_factory):
    """A blog VAE (latent 16) trained for one epoch (10 real steps) on the aligned faces; saved as model.pt."""
    from facevae.modelio import save_model

    model = train_vae(read_aligned(aligned)["data"], epochs=1, arch="blog", latent=16)
    path = tmp_path_factory.mktemp("attr_model") / "model.pt"
    save_model(path, model, {"epochs": 1})
    return path


@pytest.fixture(scope="module")
def actor_faces(aligned, tmp_path_factory):
    """A blog-format faces file (``data``) standing in for an actor's training faces."""
    import h5py

    path = tmp_path_factory.mktemp("attr_faces") / "faces.h5"
    with h5py.File(path, "w") as f:
        f["data"] = read_aligned(aligned)["data"][:120]
    return path


@pytest.fixture(scope="module")
def built(small_model, aligned, actor_faces, tmp_path_factory):
    out = tmp_path_factory.mktemp("attr_out")
    settings = dict(DEFAULTS, pca_components=3, mouth_faces=12, random_vectors=2, rows=2, probe_folds=3)
    result = build_attributes(small_model, aligned, actor_faces, out / "a.h5", out / "a/probe.tsv",
                              out / "a/probe.png", settings, "a")
    return out, settings, result


# --- library -------------------------------------------------------------------------------------


def test_attribute_vector_is_the_mean_difference(built):
    out, _, _ = built
    data = read_attributes_h5(out / "a.h5")
    fields = list(data["fields"])
    latent, attributes = data["latent_vars"], data["attributes"]
    for name in ("Smiling", "Male", "Eyeglasses"):
        k = fields.index(name)
        with_ = latent[attributes[:, k] == 1].astype(np.float64)
        without = latent[attributes[:, k] == -1].astype(np.float64)
        recomputed = with_.sum(axis=0) / len(with_) - without.sum(axis=0) / len(without)
        np.testing.assert_allclose(data["attribute_vectors"][k], recomputed, rtol=1e-5, atol=1e-6)
    assert data["attribute_vectors"].shape == (40, 16) and latent.shape == (len(data["filenames"]), 16)


def test_interface_names_the_render_stage_reads(built):
    out, _, _ = built
    data = read_attributes_h5(out / "a.h5")
    for key in ("latent_vars", "attributes", "fields", "attribute_vectors", "filenames"):
        assert key in data, key
    assert data["attributes"].dtype == np.int8 and data["attrs"]["actor"] == "a"


def test_orthogonalised_directions_are_orthogonal_to_the_others():
    rng = np.random.default_rng(1)
    latent = rng.standard_normal((400, 24))
    attributes = np.where(rng.random((400, 40)) < 0.4, 1, -1).astype(np.int8)
    vectors, _, _ = attribute_vectors(latent, attributes)
    fields = [f"a{i}" for i in range(40)]
    chosen = ["a3", "a7", "a9", "a20"]
    ortho = orthogonalise(vectors, fields, chosen)
    for i, name in enumerate(chosen):
        for other in chosen:
            if other != name:
                assert abs(ortho[i] @ vectors[fields.index(other)]) < 1e-5 * np.linalg.norm(vectors[fields.index(other)])
        # What is left still points along the attribute's own vector.
        assert ortho[i] @ vectors[fields.index(name)] > 0
    assert np.array_equal(orthogonalise(vectors, fields, ["a3"])[0], vectors[3])
    with pytest.raises(FacevaeError, match="unknown attribute"):
        orthogonalise(vectors, fields, ["Smilling"])


def test_stored_orthogonal_directions(built):
    out, settings, _ = built
    data = read_attributes_h5(out / "a.h5")
    fields = list(data["fields"])
    assert list(data["orthogonal_fields"]) == settings["orthogonalise"]
    for i, name in enumerate(data["orthogonal_fields"]):
        for other in data["orthogonal_fields"]:
            if other != name:
                v = data["attribute_vectors"][fields.index(other)]
                cos = data["orthogonal_vectors"][i] @ v / np.linalg.norm(v) / np.linalg.norm(data["orthogonal_vectors"][i])
                assert abs(cos) < 1e-4


def test_principal_components(built):
    out, _, _ = built
    data = read_attributes_h5(out / "a.h5")
    comps = data["pca_components"]
    np.testing.assert_allclose(comps @ comps.T, np.eye(len(comps)), atol=1e-5)
    assert np.all(np.diff(data["pca_std"]) <= 0) and 0 < data["pca_explained"].sum() <= 1
    with pytest.raises(FacevaeError, match="at least 2"):
        principal_components(np.zeros((1, 4)), 2)


def test_identity_folds_keep_people_apart(aligned):
    identity = read_aligned(aligned)["identity"]
    fold, how = identity_folds(identity, 5, seed=0)
    assert how == "identity" and set(fold) == set(range(5))
    for f in range(5):
        assert not set(identity[fold == f]) & set(identity[fold != f])
    sizes = np.bincount(fold)
    assert sizes.min() >= 0.6 * len(identity) / 5
    again, _ = identity_folds(identity, 5, seed=0)
    assert np.array_equal(fold, again)
    unknown, how = identity_folds(np.full(50, -1), 5, seed=0)
    assert how == "image" and np.array_equal(np.bincount(unknown), [10] * 5)


def test_probe_finds_smiles_in_real_pixels(aligned):
    """The probe itself on real features: the mouth region's pixels hold Smiling, the probe sees it;
    a shuffled label is at the majority rate."""
    data = read_aligned(aligned)
    mouth = data["data"][:, 40:60, 16:48].astype(np.float64).mean(axis=3)[:, ::2, ::2].reshape(len(data["data"]), -1)
    fields = list(data["fields"])
    attributes = data["attributes"].copy()
    rng = np.random.default_rng(0)
    attributes[:, fields.index("Blurry")] = rng.permutation(attributes[:, fields.index("Smiling")])
    rows = {r["attribute"]: r for r in probe(mouth, attributes, fields, data["identity"], 5, seed=0)}
    assert rows["Smiling"]["gain"] >= 0.1, rows["Smiling"]
    assert rows["Blurry"]["gain"] <= 0.05, rows["Blurry"]  # a permuted copy: nothing to find
    assert rows["Smiling"]["split"] == "identity" and rows["Smiling"]["faces"] == len(mouth)


def test_probe_table(built):
    out, _, result = built
    rows = read_tsv(out / "a/probe.tsv")
    assert [r["attribute"] for r in rows] == list(read_attributes_h5(out / "a.h5")["fields"])
    for r in rows:
        assert 0 <= r["accuracy"] <= 1 and 0.5 <= r["majority"] <= 1
        assert abs(r["gain"] - (r["accuracy"] - r["majority"])) < 1e-3
    assert "cross-validation split by identity" in (out / "a/probe.tsv").read_text().splitlines()[0]
    assert (out / "a/probe.png").stat().st_size > 10000


def test_mouth_width_of_real_smiles(aligned):
    """The measure the Smiling curve uses: CelebA's smiling faces have wider mouths."""
    data = read_aligned(aligned)
    width = mouth_width_ratio(data["landmarks"])
    smiling = data["attributes"][:, list(data["fields"]).index("Smiling")] == 1
    assert width[smiling].mean() > width[~smiling].mean() + 0.05


def test_edit_grids_and_mouth_curves(built, small_model, actor_faces, tmp_path):
    import cv2
    import h5py

    out, settings, _ = built
    driver = tmp_path / "driver.h5"
    with h5py.File(actor_faces, "r") as f:
        crops = f["data"][100:110]
    with h5py.File(driver, "w") as f:  # a track file: one row per frame, kept flag
        f["crops"] = np.concatenate([crops, np.zeros((2, 64, 64, 3), np.uint8)])
        f["kept"] = np.array([True] * 10 + [False] * 2)
    build_edits(small_model, out / "a.h5", actor_faces, {"drv": [str(driver)]}, out / "a", settings,
                decoded_face_geometry({}), "a")
    amounts = settings["amounts"]
    for name in settings["edit"]:
        image = cv2.imread(str(out / f"a/add_{name}.png"))
        # title + column labels + 2 blocks of (label + rows faces at 128 px)
        assert image.shape[1] == (len(amounts) + 1) * 128
        assert image.shape[0] == 22 + 18 + 2 * (18 + settings["rows"] * 128)
    for name in settings["orthogonalise"]:
        assert (out / f"a/orth_{name}.png").exists()
    for k in range(1, 4):
        assert (out / f"a/pca_{k}.png").exists()
    rows = read_tsv(out / "a/mouth.tsv")
    assert {r["direction"] for r in rows} == {"Smiling", "random_1", "random_2", "random_mean"}
    assert len(rows) == 4 * len(amounts)
    mean = [r["mouth_width"] for r in rows if r["direction"] == "random_mean"]
    each = [[r["mouth_width"] for r in rows if r["direction"] == f"random_{i}"] for i in (1, 2)]
    np.testing.assert_allclose(mean, np.mean(each, axis=0), atol=1e-3)
    norm = rows[0]["norm"]
    assert all(abs(r["norm"] - norm) < 1e-3 for r in rows)
    assert (out / "a/mouth.png").exists()


def test_schema_defaults_match_the_library():
    from facevae.config import validate

    config = validate(yaml.safe_load((REPO / "config.yaml").read_text()))
    assert config["attributes"] == DEFAULTS


# --- acceptance on the pipeline's shared actor ----------------------------------------------------


@pytest.fixture(scope="module")
def actor_results(pipeline):
    root = pipeline["workdir"] / "results" / "attributes"
    if not (root / f"{ACTOR}.h5").exists():
        pytest.fail(f"the pipeline wrote no {root}/{ACTOR}.h5 (is the celeba section in the test overrides?)")
    return root


def test_pipeline_vector_recomputes(actor_results):
    data = read_attributes_h5(actor_results / f"{ACTOR}.h5")
    k = list(data["fields"]).index("Smiling")
    pos = data["attributes"][:, k] == 1
    recomputed = data["latent_vars"][pos].mean(axis=0, dtype=np.float64) - data["latent_vars"][~pos].mean(axis=0, dtype=np.float64)
    np.testing.assert_allclose(data["attribute_vectors"][k], recomputed, rtol=1e-5, atol=1e-6)


def test_pipeline_orthogonalised_dot_products(actor_results):
    data = read_attributes_h5(actor_results / f"{ACTOR}.h5")
    fields = list(data["fields"])
    chosen = list(data["orthogonal_fields"])
    assert len(chosen) >= 2
    for i, name in enumerate(chosen):
        for other in chosen:
            if other != name:
                v = data["attribute_vectors"][fields.index(other)]
                assert abs(data["orthogonal_vectors"][i] @ v) < 1e-4 * np.linalg.norm(v) * np.linalg.norm(data["orthogonal_vectors"][i])


def test_pipeline_expression_probes_beat_majority(actor_results):
    rows = read_tsv(actor_results / ACTOR / "probe.tsv")
    print("\n".join(f"{r['attribute']:22s} acc {r['accuracy']:.3f} majority {r['majority']:.3f} gain {r['gain']:+.3f}"
                    for r in rows))
    by = {r["attribute"]: r for r in rows}
    assert len(rows) == 40 and by["Smiling"]["split"] == "identity"
    assert by["Smiling"]["gain"] >= 0.10, by["Smiling"]
    assert by["Mouth_Slightly_Open"]["gain"] >= 0.10, by["Mouth_Slightly_Open"]


MOUTH_EPOCHS = 20


@pytest.fixture(scope="module")
def mouth_curves_d6(pipeline, tmp_path_factory):
    """The Smiling and random-direction mouth curves of a d6 model whose decoder draws mouths.

    The pipeline's own d6 model is trained for the CI's two epochs only: its decoder draws a blurred
    mean face whatever the code, so no direction moves its mouth. This d6 model is trained here on
    the pipeline's d6 faces for MOUTH_EPOCHS epochs (about 30 s on one core); the Smiling vector
    comes from the pipeline's aligned CelebA faces, through the attribute stage's own functions."""
    from facevae.attribute_diagnostics import mouth_curves
    from facevae.faces.io import read_face_array
    from facevae.modelio import save_model

    results = pipeline["workdir"] / "results"
    faces = read_face_array(results / "faces" / f"{ACTOR}.h5")
    model = train_vae(faces, MOUTH_EPOCHS)
    out = tmp_path_factory.mktemp("mouth")
    save_model(out / "model.pt", model, {"epochs": MOUTH_EPOCHS})
    settings = dict(DEFAULTS, pca_components=2, random_vectors=8, mouth_faces=60)
    build_attributes(out / "model.pt", results / "celeba" / "aligned.h5", results / "faces" / f"{ACTOR}.h5",
                     out / "d6.h5", out / "probe.tsv", out / "probe.png", settings, ACTOR)
    rows = mouth_curves(model, faces, vector_of(read_attributes_h5(out / "d6.h5"), "Smiling"), settings["amounts"], settings,
                        decoded_face_geometry({}))
    curves = {}
    for r in rows:
        curves.setdefault(r["direction"], []).append((r["amount"], r["mouth_width"]))
    return {name: np.array([w for _, w in sorted(c)]) for name, c in curves.items()}, out


def test_smiling_widens_the_mouth_and_random_does_not(mouth_curves_d6):
    curves, out = mouth_curves_d6
    for name, curve in curves.items():
        print(f"{name:12s} {np.round(curve, 4)}")
    print("probes of this model:", {r["attribute"]: round(r["gain"], 3) for r in read_tsv(out / "probe.tsv")
                                    if r["attribute"] in ("Smiling", "Mouth_Slightly_Open")})
    smile, random = curves["Smiling"], curves["random_mean"]
    # Smiling widens the decoded mouth at every step (mean over the actor's faces).
    assert np.all(np.diff(smile) > 0), smile
    rise = smile[-1] - smile[0]
    # Random directions of the same norm, averaged: no steady widening, and far less change.
    assert not np.all(np.diff(random) > 0), random
    assert abs(random[-1] - random[0]) < 0.5 * rise, random


def test_pipeline_mouth_table(actor_results, pipeline):
    """The workflow's own mouth.tsv: Smiling, each random direction and their mean at every amount."""
    rows = read_tsv(actor_results / ACTOR / "mouth.tsv")
    directions = {r["direction"] for r in rows}
    assert {"Smiling", "random_mean"} <= directions and len(directions) == 2 + 6
    for name in sorted(directions):
        print(f"{name:12s} {[round(r['mouth_width'], 4) for r in rows if r['direction'] == name]}")
    assert all(r["faces"] == pipeline["config"]["attributes"]["mouth_faces"] for r in rows)


def test_pipeline_grids_exist(actor_results, pipeline):
    settings = pipeline["config"].get("attributes", {})
    for name in settings.get("edit", DEFAULTS["edit"]):
        assert (actor_results / ACTOR / f"add_{name}.png").stat().st_size > 5000


def test_attribute_edits_and_reenactment_agree_on_who_drives():
    """One definition of the (actor, driver) pairs: `reenact: []` renders nothing and the edit
    grids show no driver (the attributes stage read it as "every driver")."""
    from facevae.planning import drivers_of
    from facevae.planning import reenact_pairs

    config = {"actors": {"a": {}, "b": {}}, "drivers": {"me": {}}}
    assert drivers_of(config, "a") == ["me"] and reenact_pairs(config) == [("a", "me"), ("b", "me")]
    config["reenact"] = []
    assert drivers_of(config, "a") == [] and reenact_pairs(config) == []
    config["reenact"] = [{"actor": "a", "driver": "b"}]
    assert drivers_of(config, "a") == ["b"] and drivers_of(config, "b") == []
