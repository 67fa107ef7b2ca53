"""Render library pieces without media: config, latent smoothing, layout, masks."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from facevae import FacevaeError
from facevae.compose import Layout, letterbox, template_mask
from facevae.render import RenderConfig, edit_vector, shown_index, smooth_latents


# ------------------------------------------------------------------------------- pure functions


def test_render_config_from_config():
    cfg = RenderConfig.from_config({"layout": "grid", "border_color": "#FF8000", "smooth": 5, "score": {"upscale": 2, "seed": 7}})
    assert cfg.layout == "grid" and cfg.border_color == (255, 128, 0) and cfg.smooth == 5
    assert cfg.score_upscale == 2 and cfg.seed == 7
    with pytest.raises(FacevaeError, match="odd"):
        RenderConfig.from_config({"smooth": 4})
    with pytest.raises(FacevaeError, match="layout"):
        RenderConfig.from_config({"layout": "mosaic"})


def test_smooth_latents_is_a_centred_average_over_kept_frames():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(40, 3)).astype(np.float32)
    valid = np.ones(40, bool)
    valid[[0, 7, 8, 9, 25]] = False
    z[~valid] = np.nan
    out = smooth_latents(z, valid, 5)
    for i in range(40):
        if not valid[i]:
            assert np.isnan(out[i]).all()
            continue
        window = [j for j in range(i - 2, i + 3) if 0 <= j < 40 and valid[j]]
        np.testing.assert_allclose(out[i], z[window].mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(smooth_latents(z, valid, 1)[valid], z[valid])
    # Smoothing lowers frame-to-frame jitter of a noisy constant track.
    jitter = lambda a: np.abs(np.diff(a[10:24], axis=0)).mean()  # noqa: E731
    assert jitter(smooth_latents(z, valid, 9)) < 0.5 * jitter(z)


def test_shown_index_hold_and_blank():
    kept = np.array([False, True, True, False, False, True, False])
    np.testing.assert_array_equal(shown_index(kept, "hold"), [-1, 1, 2, 2, 2, 5, 5])
    np.testing.assert_array_equal(shown_index(kept, "blank"), [-1, 1, 2, -1, -1, 5, -1])
    assert shown_index(np.zeros(0, bool)).shape == (0,)


def test_layout_geometry_borders_and_labels():
    cfg = RenderConfig(panel_size=100, border=7, border_color=(10, 20, 30))
    lay = Layout.for_reenactment(cfg, "trump", "me")
    assert lay.width % 2 == 0 and lay.height % 2 == 0
    (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = lay.boxes["driver"], lay.boxes["actor"]
    assert (ax1 - ax0, ay1 - ay0) == (100, 100) and ax0 == 7 and bx0 == ax1 + 7 and ay0 == by0 == 7
    # Panels are clean border colour in the canvas; the name is written in the strip below each one.
    assert (lay.crop(lay.canvas, "driver") == (10, 20, 30)).all()
    strip = lay.canvas[ay1 : ay1 + lay.label_height, ax0:ax1]
    assert (strip != (10, 20, 30)).any(axis=-1).sum() > 30
    face = np.full((100, 100, 3), 200, np.uint8)
    frame = lay.compose({"driver": face, "actor": None})
    assert (lay.crop(frame, "driver") == 200).all() and (lay.crop(frame, "actor") == (10, 20, 30)).all()
    assert (lay.canvas == Layout.for_reenactment(cfg, "trump", "me").canvas).all()
    grid = Layout.for_reenactment(RenderConfig(layout="grid", panel_size=64, labels=False), "a", "b")
    assert set(grid.boxes) == {"frame", "paste", "driver", "actor"} and grid.label_height == 0


def test_letterbox_keeps_aspect():
    frame = np.zeros((100, 200, 3), np.uint8)
    frame[:, :, 0] = 255
    box = letterbox(frame, 64, (0, 0, 255))
    assert box.shape == (64, 64, 3)
    assert (box[32, :, 0] == 255).all() and (box[0, 0] == (0, 0, 255)).all() and (box[32, 32] == (255, 0, 0)).all()


def test_template_mask_is_zero_outside_the_face_and_one_inside():
    mask = template_mask(256, feather=0.08)
    assert mask.dtype == np.float32 and mask.min() == 0.0 and mask.max() == 1.0
    assert mask[0, 0] == 0 and mask[0, 255] == 0 and mask[140, 128] == 1.0
    soft = ((mask > 0) & (mask < 1)).sum()
    assert soft > 0.05 * (mask > 0).sum()  # a real feathered edge
    assert ((template_mask(256, feather=0.0) > 0) & (template_mask(256, feather=0.0) < 1)).sum() < soft


def test_edit_vector(tmp_path):
    path = tmp_path / "attrs.h5"
    vectors = np.arange(3 * 4, dtype=np.float32).reshape(3, 4)
    with h5py.File(path, "w") as h5:
        h5["attribute_vectors"] = vectors
        h5.create_dataset("fields", data=np.array(["Male", "Smiling", "Young"], dtype=object), dtype=h5py.string_dtype())
    np.testing.assert_allclose(edit_vector(path, {"Smiling": 1.5, "Young": -1}, 4), 1.5 * vectors[1] - vectors[2])
    with pytest.raises(FacevaeError, match="render.edit.Bald"):
        edit_vector(path, {"Bald": 1}, 4)
    with pytest.raises(FacevaeError, match="dimensions"):
        edit_vector(path, {"Smiling": 1}, 8)
    with pytest.raises(FacevaeError, match="attribute vectors file"):
        edit_vector(tmp_path / "none.h5", {"Smiling": 1}, 4)


def test_blog_preset_is_a_valid_config_layer():
    """presets/blog2017.yaml laid over config.yaml (as `--configfile config.yaml presets/blog2017.yaml` does)."""
    import yaml

    from support.media import REPO
    from support.workflow import DEFAULT_CONFIG, deep_merge
    from facevae.config import validate

    preset = yaml.safe_load((REPO / "presets" / "blog2017.yaml").read_text())
    assert set(preset) <= {"faces", "train", "render"}  # never the user's actors or drivers
    config = validate(deep_merge(yaml.safe_load(DEFAULT_CONFIG.read_text()), preset))
    train = config["train"]
    assert (train["model"], train["latent_dim"], train["recon_loss"], train["batch_size"]) == ("blog", 100, "bce", 128)
    assert (train["lr"], train["adam_eps"], train["epochs"], train["min_steps"], train["flip"]) == (0.01, 1.0, 100, 0, False)
    assert config["faces"]["size"] == 64 and config["render"]["layout"] == "side_by_side"


@pytest.mark.parametrize("arch", ["blog", "conv"])
def test_fast_codec_agrees_with_modelio(arch):
    import torch

    from facevae import modelio
    from facevae.models import ModelConfig, build_model
    from facevae.modelio import Codec

    torch.manual_seed(0)
    model = build_model(ModelConfig(arch=arch, latent_dim=12, width=8)).eval()
    images = np.random.default_rng(0).integers(0, 256, (37, 64, 64, 3), dtype=np.uint8)
    codec = Codec(model, batch_size=16)
    mu = codec.encode(images)
    np.testing.assert_allclose(mu, modelio.encode(model, images), atol=1e-4, rtol=1e-4)
    faces = codec.decode(mu)
    assert faces.dtype == np.uint8 and faces.shape == (37, 64, 64, 3)
    assert np.abs(faces.astype(int) - modelio.decode(model, mu)).max() <= 1
    assert codec.encode(images[:0]).shape == (0, 12) and codec.decode(mu[:0]).shape == (0, 64, 64, 3)


def test_match_color_moves_mean_and_spread_inside_the_mask():
    from facevae.compose import match_color

    rng = np.random.default_rng(0)
    face = rng.normal(180, 10, (64, 64, 3)).clip(0, 255).astype(np.uint8)
    target = rng.normal(90, 11, (64, 64, 3)).clip(0, 255).astype(np.uint8)
    mask = template_mask(64)
    out = match_color(face, target, mask)
    inside = mask > 0.5
    np.testing.assert_allclose(out[inside].mean(axis=0), target[inside].mean(axis=0), atol=1.0)
    np.testing.assert_allclose(out[inside].std(axis=0), target[inside].std(axis=0), rtol=0.05)
    # Contrast moves at most 1.25x: a blurred face is not stretched to a sharp face's contrast.
    flat = match_color(face, (target.astype(float) * 3 - 180).clip(0, 255).astype(np.uint8), mask)
    assert flat[inside].std() <= 1.25 * face[inside].std() + 1
    assert (match_color(face, target, np.zeros((64, 64), np.float32)) == face).all()


def test_render_and_retarget_defaults_are_the_schemas():
    """One source of defaults: the render schema's defaults build the same RenderConfig and
    RetargetSettings as the dataclasses' own."""
    from facevae.config import validate
    from facevae.driving import DrivePlan, RetargetSettings

    section = validate({"actors": {"a": {"videos": {"v": {"url": "https://example.org/x.mp4"}}}}})["render"]
    import dataclasses

    # The retarget section stays a dict (its fit keys go to RetargetSettings, checked below).
    assert dataclasses.replace(RenderConfig.from_config(section), retarget={}) == RenderConfig()
    assert section["drive"] == "auto" and section["same_person_distance"] == 0.35
    assert section["retarget"]["neutral"] == "video"
    assert RetargetSettings.from_config(section["retarget"]) == RetargetSettings()
    assert section["retarget"]["gain"] == 1.0
    assert section["retarget"]["transfer"] == DrivePlan.transfer == 0.75


@pytest.mark.parametrize("section, key", [
    ({"render": {"drive": "mirror"}}, "render.drive"),
    ({"expert": {"render": {"same_person_distance": 0}}}, "expert.render.same_person_distance"),
    ({"render": {"retarget": {"neutral": "first"}}}, "render.retarget.neutral"),
    ({"render": {"retarget": {"neutral": [0, 3, 4]}}}, "render.retarget.neutral"),
    ({"render": {"retarget": {"gain": 0}}}, "render.retarget.gain"),
    ({"render": {"retarget": {"transfer": 1.5}}}, "render.retarget.transfer"),
    ({"expert": {"render": {"retarget": {"map": "knn"}}}}, "expert.render.retarget.map"),
    ({"render": {"retarget": {"ears": 1}}}, "render.retarget"),
    ({"expert": {"render": {"score": {"identity_every": 0}}}}, "expert.render.score.identity_every"),
])
def test_bad_driving_keys_name_themselves(section, key):
    from facevae.config import ConfigError, validate

    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate({"actors": {"a": {"videos": {"v": {"url": "https://example.org/x.mp4"}}}}, **section})


def test_blog_preset_drives_with_the_encoder():
    import yaml

    from support.media import REPO

    assert yaml.safe_load((REPO / "presets" / "blog2017.yaml").read_text())["render"]["drive"] == "encoder"


def test_amplitude_ratio_is_the_renders_spread_over_the_baselines_on_shared_frames():
    from facevae.scoring import amplitude_ratio

    t = np.linspace(0, 6, 200)
    baseline = 0.3 + 0.1 * np.sin(t)
    still = 0.3 + 0.025 * np.sin(t)  # moves at the right time, a quarter as wide: r says 1, this says 0.25
    assert amplitude_ratio(still, baseline) == pytest.approx(0.25)
    assert amplitude_ratio(baseline * 2, baseline) == pytest.approx(2.0)
    gappy = still.copy()
    gappy[::3] = np.nan  # frames the instrument missed on one side leave both out
    ok = np.isfinite(gappy)
    assert amplitude_ratio(gappy, baseline) == pytest.approx(still[ok].std() / baseline[ok].std())
    assert np.isnan(amplitude_ratio(still, np.full_like(t, 0.3))) and np.isnan(amplitude_ratio([np.nan, 1.0], [1.0, 2.0]))
