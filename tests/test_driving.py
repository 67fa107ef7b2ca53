"""Driving pieces on synthetic landmark sets whose answer is known (no media, no models)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facevae import FacevaeError
from facevae.driving import (
    BROWS,
    DrivePlan,
    LEFT_EYE_BROW,
    MOUTH,
    READOUT_MIN_R,
    RIGHT_EYE_BROW,
    LandmarkRetarget,
    RetargetSettings,
    calibrate_eye_step,
    decouple_eye_step,
    fit_and_calibrate,
    driver_landmarks,
    export_onnx,
    fit_retarget,
    load_retarget,
    neutral_shape,
    normalise_landmarks,
    retarget_shapes,
    retarget_track,
    transfer_nearest,
    transferred_neutral,
    save_retarget,
    shape_features,
    shape_openings,
)
from facevae.expression import EYELIDS, LEFT_EYE, RIGHT_EYE, eye_open_ratio, mouth_open_ratio
from facevae.faces.align import template_landmarks

TEMPLATE = template_landmarks(64)
MOUTH_LOWER = [56, 57, 58, 65, 66, 67]  # lower lip: moves down when the mouth opens


def face(scale=1.0, shift=(0.0, 0.0), mouth=0.0, brows=0.0, base=TEMPLATE):
    """A face shape in crop px: ``base`` scaled about its eye midpoint and shifted, with the lower
    lip dropped by ``mouth`` and the brows raised by ``brows`` inter-ocular distances."""
    lm = np.array(base, np.float64)
    mid = (lm[LEFT_EYE].mean(0) + lm[RIGHT_EYE].mean(0)) / 2
    iod = np.linalg.norm(lm[RIGHT_EYE].mean(0) - lm[LEFT_EYE].mean(0))
    lm[MOUTH_LOWER, 1] += mouth * iod
    lm[17:27, 1] -= brows * iod
    return (lm - mid) * scale + mid + np.asarray(shift)


def test_normalise_puts_the_eye_midpoint_at_zero_and_the_eyes_one_apart():
    lm = np.stack([face(), face(scale=1.7, shift=(5, -3))])
    norm = normalise_landmarks(lm)
    for one in norm:
        left, right = one[LEFT_EYE].mean(0), one[RIGHT_EYE].mean(0)
        np.testing.assert_allclose((left + right) / 2, 0, atol=1e-12)
        assert np.linalg.norm(right - left) == pytest.approx(1.0)
    np.testing.assert_allclose(norm[0], norm[1], atol=1e-12)  # size and position are gone


def test_normalise_keeps_a_missing_face_missing_and_checks_the_shape():
    lm = np.stack([face(), np.full((68, 2), np.nan)])
    norm = normalise_landmarks(lm)
    assert np.isfinite(norm[0]).all() and np.isnan(norm[1]).all()
    with pytest.raises(FacevaeError, match=r"\(N, 68, 2\)"):
        normalise_landmarks(np.zeros((3, 5, 2)))


def test_neutral_is_the_median_shape_or_that_of_a_calibration_window():
    shapes = np.stack([face(mouth=m) for m in (0.0, 0.0, 0.0, 0.4, 0.5)])
    norm = normalise_landmarks(shapes)
    np.testing.assert_allclose(neutral_shape(norm), norm[0], atol=1e-12)  # 3 of 5 frames closed
    times = np.arange(5) / 10
    np.testing.assert_allclose(neutral_shape(norm, times, (0.25, None)), np.median(norm[3:], axis=0))
    with pytest.raises(FacevaeError, match="between 9 s and 10 s"):
        neutral_shape(norm, times, (9, 10))


def test_retargeting_moves_the_drivers_change_onto_the_actors_own_face():
    # The driver: another face shape (wide jaw), larger and elsewhere in the crop; his neutral has
    # the mouth closed. The actor's neutral is the template with the mouth a little open.
    driver_base = TEMPLATE.copy()
    driver_base[:17, 0] = 32 + (driver_base[:17, 0] - 32) * 1.15
    driver = np.stack([face(1.3, (4, 2), mouth=m, brows=b, base=driver_base) for m, b in ((0, 0), (0.3, 0), (0, 0.1))])
    actor_neutral = normalise_landmarks(face(mouth=0.05)[None])[0]
    d_norm = normalise_landmarks(driver)
    out = retarget_shapes(d_norm, neutral_shape(d_norm[:1]), actor_neutral)
    expected = normalise_landmarks(np.stack([face(mouth=0.05 + m, brows=b) for m, b in ((0, 0), (0.3, 0), (0, 0.1))]))
    np.testing.assert_allclose(out, expected, atol=1e-9)  # the actor's jaw, the driver's expression
    half = retarget_shapes(d_norm, neutral_shape(d_norm[:1]), actor_neutral, gain=0.5)
    np.testing.assert_allclose(half[1], (out[1] + out[0]) / 2, atol=1e-9)  # frame 0 is the driver's neutral
    assert mouth_open_ratio(half[1]) < mouth_open_ratio(out[1])


def test_neutral_transfer_keeps_a_share_of_the_drivers_own_face():
    # transfer 1: the driver's change on the actor's neutral; 0: the driver's own shapes; between:
    # the driver's shape moved by that share of the gap between the two neutrals.
    driver_base = TEMPLATE.copy()
    driver_base[:17, 0] = 32 + (driver_base[:17, 0] - 32) * 1.15
    d_norm = normalise_landmarks(np.stack([face(1.3, (4, 2), mouth=m, base=driver_base) for m in (0.0, 0.3)]))
    actor_neutral = normalise_landmarks(face(mouth=0.05)[None])[0]
    driver_neutral = neutral_shape(d_norm[:1])
    full = retarget_shapes(d_norm, driver_neutral, actor_neutral)
    np.testing.assert_allclose(retarget_shapes(d_norm, driver_neutral, actor_neutral, transfer=1.0), full)
    np.testing.assert_allclose(retarget_shapes(d_norm, driver_neutral, actor_neutral, transfer=0.0), d_norm, atol=1e-12)
    part = retarget_shapes(d_norm, driver_neutral, actor_neutral, transfer=0.75)
    np.testing.assert_allclose(part, d_norm + 0.75 * (actor_neutral - driver_neutral)[None], atol=1e-12)
    np.testing.assert_allclose(part - part[:1], full - full[:1], atol=1e-12)  # the change itself is kept whole
    np.testing.assert_allclose(transferred_neutral(driver_neutral, actor_neutral, 0.25),
                               0.75 * actor_neutral + 0.25 * driver_neutral)


def _synthetic_actor(n=300, latent=6, seed=0):
    """An actor whose latent code is a known linear function of mouth and brow movement."""
    rng = np.random.default_rng(seed)
    mouth = np.clip(np.sin(np.arange(n) / 7) * 0.25 + 0.2 + rng.normal(0, 0.02, n), 0, None)
    brows = np.sin(np.arange(n) / 11 + 1) * 0.08
    shapes = np.stack([face(1 + rng.normal(0, 0.05), rng.normal(0, 1, 2), m, b) for m, b in zip(mouth, brows)])
    shapes += rng.normal(0, 0.05, shapes.shape)  # landmark noise, px
    mix = rng.normal(0, 1, (2, latent))
    mu = np.stack([mouth, brows], axis=1) @ mix + rng.normal(0, 0.01, (n, latent))
    return shapes, mu, mix


@pytest.mark.parametrize("kind", ["kernel", "linear"])
@pytest.mark.parametrize("features", ["local", "face"])
def test_fit_recovers_the_code_and_drives_it_from_a_stranger(kind, features):
    shapes, mu, mix = _synthetic_actor()
    # This actor's code is half brows: a map that reads them (brow_weight 1, not the default 0) recovers it.
    module, report = fit_retarget(shapes, mu, RetargetSettings(features=features, map=kind, l2=1e-3, brow_weight=1.0))
    assert report["cv_r2"] > 0.8, report
    assert report["faces"] == len(shapes) and report["centres"] == (len(shapes) if kind == "kernel" else 0)
    # A stranger (other scale and place) opens the mouth by 0.2 IOD from his closed neutral: the
    # actor's code moves by 0.2 * the mouth row of the mixing matrix, whatever the actor's neutral.
    stranger = np.stack([face(1.4, (6, -5), mouth=m) for m in (0.0, 0.0, 0.2)])
    z = module.drive(stranger, neutral_shape(normalise_landmarks(stranger)))
    np.testing.assert_allclose(z[1], z[0], atol=1e-5)
    moved, expected = z[2] - z[0], 0.2 * mix[0]
    assert np.corrcoef(moved, expected)[0, 1] > 0.95
    np.testing.assert_allclose(np.linalg.norm(moved), np.linalg.norm(expected), rtol=0.25)


def test_kernel_map_on_a_subset_of_centres_stays_close_to_the_full_one():
    shapes, mu, _ = _synthetic_actor(n=240)
    full, _ = fit_retarget(shapes, mu, RetargetSettings(l2=1e-2))
    subset, report = fit_retarget(shapes, mu, RetargetSettings(l2=1e-2, max_centres=60))
    assert report["centres"] == 60
    neutral = neutral_shape(normalise_landmarks(shapes))
    a, b = full.drive(shapes[::5], neutral), subset.drive(shapes[::5], neutral)
    assert np.abs(a - b).max() < 0.1 * np.abs(a - a.mean(0)).max()


def test_settings_and_fit_name_the_key_to_change():
    shapes, mu, _ = _synthetic_actor(n=6)
    with pytest.raises(FacevaeError, match="render.retarget.folds"):
        fit_retarget(shapes, mu)
    with pytest.raises(FacevaeError, match="render.retarget.features"):
        RetargetSettings(features="ears")
    with pytest.raises(FacevaeError, match="render.retarget.bandwidth"):
        RetargetSettings(bandwidth=float("nan"))
    with pytest.raises(FacevaeError, match="render.retarget.map"):
        RetargetSettings(map="knn")


def test_local_features_ignore_where_the_mouth_and_eyes_sit():
    base = normalise_landmarks(np.stack([face(), face(mouth=0.2)]))
    moved = base.copy()
    moved[:, 48:68] += np.array([0.05, 0.1])  # the whole mouth lower (head pitch), same shape
    a, b = shape_features(torch.from_numpy(base)), shape_features(torch.from_numpy(moved))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a[0], a[1])  # an open mouth is a different feature vector


@pytest.mark.parametrize("kind", ["local", "face"])
def test_brow_weight_scales_the_brows_features_only(kind):
    shapes = torch.from_numpy(normalise_landmarks(np.stack([face(brows=0.1), face(mouth=0.2, brows=-0.05)])))
    full, half = shape_features(shapes, kind, brow_weight=1.0), shape_features(shapes, kind, brow_weight=0.5)
    # The points in feature order (local: the mouth, then each eye with its brow), x and y each.
    points = MOUTH + LEFT_EYE_BROW + RIGHT_EYE_BROW if kind == "local" else list(range(68))
    brow = torch.tensor(np.repeat([p in BROWS for p in points], 2))
    assert full.shape[1] == 2 * len(points) and int(brow.sum()) == 20
    torch.testing.assert_close(half[:, ~brow], full[:, ~brow])  # everything else as it was
    torch.testing.assert_close(half[:, brow], 0.5 * full[:, brow])  # the brows' coordinates halved


def test_a_map_fitted_with_brow_weight_0_ignores_the_brows():
    shapes, mu, mix = _synthetic_actor()
    module, report = fit_retarget(shapes, mu, RetargetSettings(brow_weight=0.0, l2=1e-3))
    assert report["brow_weight"] == 0.0 and module.brow_weight == 0.0
    stranger = np.stack([face(1.4, (6, -5), mouth=m, brows=b) for m, b in ((0.0, 0.0), (0.0, 0.1), (0.2, 0.0))])
    z = module.drive(stranger, neutral_shape(normalise_landmarks(stranger)))
    np.testing.assert_allclose(z[1], z[0], atol=1e-5)  # raised brows: the same code
    assert np.corrcoef(z[2] - z[0], 0.2 * mix[0])[0, 1] > 0.95  # the mouth still drives it
    weighted, _ = fit_retarget(shapes, mu, RetargetSettings(brow_weight=1.0, l2=1e-3))
    zw = weighted.drive(stranger, neutral_shape(normalise_landmarks(stranger)))
    assert np.abs(zw[1] - zw[0]).max() > 1e-3  # at weight 1 the brows move it
    for bad in (-0.1, 1.5, True, "half"):
        with pytest.raises(FacevaeError, match="render.retarget.brow_weight must be a number in \\[0, 1\\]"):
            RetargetSettings(brow_weight=bad)


@pytest.mark.parametrize("kind", ["kernel", "linear"])
def test_module_survives_save_and_load(tmp_path, kind):
    shapes, mu, _ = _synthetic_actor(latent=4)
    module, report = fit_retarget(shapes, mu, RetargetSettings(map=kind, brow_weight=0.5))
    driver = shapes[::7] * 1.2 + 3
    neutral = neutral_shape(normalise_landmarks(driver))
    module.info = {"actor": "synthetic", **report}
    path = save_retarget(tmp_path / "retarget.pt", module)
    loaded = load_retarget(path)
    assert loaded.info["actor"] == "synthetic" and loaded.brow_weight == 0.5
    np.testing.assert_array_equal(loaded.drive(driver, neutral), module.drive(driver, neutral))
    (tmp_path / "bad.pt").write_bytes(b"not a file")
    with pytest.raises(FacevaeError, match="bad.pt cannot be read.*--forcerun fit_retarget"):
        load_retarget(tmp_path / "bad.pt")


def test_onnx_export_gives_the_same_codes(tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is a project dependency; install with make install")
    shapes, mu, _ = _synthetic_actor(latent=5)
    module, _ = fit_retarget(shapes, mu)  # the default: kernel map on local features, read-out step
    assert module.has_readout
    path = export_onnx(module, tmp_path / "retarget.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    driver = (shapes[::13] * 0.9 + 2).astype(np.float32)
    neutral = neutral_shape(normalise_landmarks(driver)).astype(np.float32)
    (z,) = session.run(None, {"landmarks": driver, "driver_neutral": neutral})
    with torch.no_grad():
        np.testing.assert_allclose(z, module(torch.from_numpy(driver), torch.from_numpy(neutral)).numpy(), atol=1e-4)
    assert isinstance(module, LandmarkRetarget) and z.shape == (len(driver), 5)
    # The neutral transfer (render.retarget.transfer) is part of the graph: the page passes its own
    # neutral and gets the pipeline's z; it matches retarget_shapes' blend.
    (z_part,) = ort.InferenceSession(str(export_onnx(module, tmp_path / "part.onnx", transfer=0.75)),
                                     providers=["CPUExecutionProvider"]).run(None, {"landmarks": driver, "driver_neutral": neutral})
    blended = (0.25 * module.actor_neutral.numpy() + 0.75 * neutral).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(z_part, module(torch.from_numpy(driver), torch.from_numpy(blended)).numpy(), atol=1e-4)
    assert np.abs(z_part - z).max() > 1e-3  # and it changes something
    # The brow weight is part of the graph too (a map fitted with it).
    weighted, _ = fit_retarget(shapes, mu, RetargetSettings(brow_weight=0.25))
    (z_brows,) = ort.InferenceSession(str(export_onnx(weighted, tmp_path / "brows.onnx")),
                                      providers=["CPUExecutionProvider"]).run(None, {"landmarks": driver, "driver_neutral": neutral})
    with torch.no_grad():
        np.testing.assert_allclose(z_brows, weighted(torch.from_numpy(driver), torch.from_numpy(neutral)).numpy(), atol=1e-4)


def _blinking_actor(n=400, latent=6, seed=1):
    """An actor who blinks in 3% of its frames, always with the mouth open; its code is a known
    linear function of the eye and mouth openings (as measured on each frame's shape)."""
    rng = np.random.default_rng(seed)
    mouth = np.clip(np.sin(np.arange(n) / 7) * 0.25 + 0.2, 0, None)
    closed = np.zeros(n)
    closed[rng.choice(np.flatnonzero(mouth > 0.3), n * 3 // 100, replace=False)] = 0.9
    shapes = np.stack([close_eyes(face(1 + rng.normal(0, 0.05), rng.normal(0, 1, 2), m), c) for m, c in zip(mouth, closed)])
    shapes += rng.normal(0, 0.05, shapes.shape)
    openings = np.stack([eye_open_ratio(shapes), mouth_open_ratio(shapes)], axis=1)
    mix = rng.normal(0, 1, (2, latent))
    return shapes, openings @ mix + rng.normal(0, 0.002, (n, latent)), mix


def close_eyes(lm, amount):
    """Upper eyelids moved ``amount`` of the way to the lower ones."""
    lm = lm.copy()
    for upper, lower in EYELIDS:
        lm[upper] += amount * (lm[lower] - lm[upper])
    return lm


def test_shape_openings_are_the_expression_ratios():
    shapes, _, _ = _blinking_actor(n=40)
    got = shape_openings(torch.from_numpy(shapes)).numpy()
    np.testing.assert_allclose(got, np.stack([eye_open_ratio(shapes), mouth_open_ratio(shapes)], axis=1), rtol=1e-12)


def test_readout_carries_a_blink_the_kernel_map_averages_away():
    """The actor's code is linear in its openings, so the code's eye coordinate is known. A stranger
    blinks with the mouth closed, which the actor never did: the kernel map alone answers with its
    nearest faces (closed mouth, open eyes); with the read-out the code's eye coordinate lands on the
    retargeted shape's eye opening."""
    shapes, mu, mix = _blinking_actor()
    plain, _ = fit_retarget(shapes, mu, RetargetSettings(readout=False))
    steered, report = fit_retarget(shapes, mu, RetargetSettings())
    assert report["readout"] and report["readout_eye_r"] > 0.99 and report["readout_mouth_r"] > 0.99
    stranger = np.stack([close_eyes(face(1.3, (4, -2)), c) for c in (0.0, 0.0, 0.0, 0.9)])
    neutral = neutral_shape(normalise_landmarks(stranger))
    target = eye_open_ratio(retarget_shapes(normalise_landmarks(stranger), neutral, steered.actor_neutral.numpy()))
    eye_of = lambda z: np.linalg.lstsq(mix.T, z.T, rcond=None)[0][0]  # noqa: E731
    plain_eye, steered_eye = eye_of(plain.drive(stranger, neutral)), eye_of(steered.drive(stranger, neutral))
    open_eye = target[0]
    assert abs(steered_eye[3] - target[3]) < 0.1 * (open_eye - target[3]), (steered_eye, target)
    assert abs(plain_eye[3] - target[3]) > 2 * abs(steered_eye[3] - target[3]), (plain_eye, steered_eye, target)
    np.testing.assert_allclose(steered_eye[:3], open_eye, atol=0.1 * (open_eye - target[3]))  # open stays open


def test_readout_off_maps_have_no_step_and_old_map_versions_are_refitted(tmp_path):
    shapes, mu, _ = _blinking_actor(n=120)
    module, report = fit_retarget(shapes, mu, RetargetSettings(readout=False))
    assert not module.has_readout and report["readout"] is False
    path = save_retarget(tmp_path / "plain.pt", module)
    loaded = load_retarget(path)
    assert not loaded.has_readout
    np.testing.assert_array_equal(loaded.drive(shapes[:9], module.actor_neutral.numpy()), module.drive(shapes[:9], module.actor_neutral.numpy()))
    blob = torch.load(path, weights_only=True)
    blob["version"] = 2  # a map from before the read-out's range: refused, with the command that refits it
    torch.save(blob, tmp_path / "v2.pt")
    with pytest.raises(FacevaeError, match="v2.pt is format version 2.*--forcerun fit_retarget"):
        load_retarget(tmp_path / "v2.pt")
    with pytest.raises(FacevaeError, match="render.retarget.readout"):
        RetargetSettings(readout="yes")


def test_an_opening_the_code_does_not_carry_gets_no_step():
    """The code follows only the eyes (the mouth moves but mu ignores it, as lp_d3's mouth in its
    9 s looking down): the mouth's held-out r is near 0, so only the eye step is kept."""
    shapes, _, mix = _blinking_actor()
    eyes = eye_open_ratio(shapes)
    mu = (eyes - eyes.mean())[:, None] * mix[:1] + np.random.default_rng(3).normal(0, 0.002, (len(shapes), mix.shape[1]))
    module, report = fit_retarget(shapes, mu)
    assert report["readout_eye"] and report["readout_eye_r"] > 0.9
    assert not report["readout_mouth"] and abs(report["readout_mouth_r"]) < READOUT_MIN_R, report
    np.testing.assert_array_equal(module.readout_steps[1].numpy(), 0.0)


@pytest.mark.parametrize("response, gain_max, gain", [(0.5, 4.0, 2.0), (0.4, 4.0, 2.5), (0.25, 2.0, 2.0), (2.0, 4.0, 1.0)])
def test_eye_step_is_scaled_by_how_far_the_decoded_eye_moves(response, gain_max, gain):
    """A decoder whose eyes move ``response`` of the code's eye coordinate (the bench's decoders:
    0.2-0.5): the calibration measures that slope and scales the eye step by its inverse, within
    [1, gain_max]; the mouth step is left alone; a face the measure fails on is skipped."""
    shapes, mu, mix = _blinking_actor()
    module, report = fit_retarget(shapes, mu)
    before = module.readout_steps.numpy().copy()
    eye_of = lambda z: np.linalg.lstsq(mix.T, z.T, rcond=None)[0][0]  # noqa: E731
    mean_eye = eye_of(mu).mean()
    calls = []

    def decoded_eye(z):
        calls.append(len(z))
        measured = mean_eye + response * (eye_of(z) - mean_eye)
        measured[::7] = np.nan  # dlib found no face on these
        return measured

    out = calibrate_eye_step(module, mu, report["eye_sd"], decoded_eye, gain_max)
    assert calls == [48 * 4]
    assert out["eye_response"] == pytest.approx(response, rel=0.05) and out["eye_gain"] == pytest.approx(gain, rel=0.05)
    np.testing.assert_allclose(module.readout_steps[0].numpy(), before[0] * out["eye_gain"])
    np.testing.assert_array_equal(module.readout_steps[1].numpy(), before[1])


def test_eye_calibration_without_an_eye_step_or_a_response_changes_nothing():
    shapes, mu, _ = _blinking_actor(n=120)
    plain, _ = fit_retarget(shapes, mu, RetargetSettings(readout=False))
    assert calibrate_eye_step(plain, mu, 0.1, lambda z: np.zeros(len(z)), 2.0)["eye_gain"] == 1.0
    module, report = fit_retarget(shapes, mu)
    before = module.readout_steps.numpy().copy()
    for measure in (lambda z: np.full(len(z), np.nan), lambda z: -np.arange(len(z), dtype=float)):  # none / wrong way
        assert calibrate_eye_step(module, mu, report["eye_sd"], measure, 2.0)["eye_gain"] == 1.0
    np.testing.assert_array_equal(module.readout_steps.numpy(), before)
    for bad in (0.5, float("nan"), True):
        with pytest.raises(FacevaeError, match="render.retarget.eye_gain_max"):
            RetargetSettings(eye_gain_max=bad)


@pytest.mark.parametrize("leak", [0.4, -0.3])
def test_eye_step_is_decoupled_from_the_decoded_mouth(leak):
    """A decoder whose mouth also opens by ``leak`` per unit of the code's eye coordinate (eye and
    mouth entangled, as a VAE trained on one person draws them): the decoupling measures the leak
    and the mouth direction's own response, and takes the share of the mouth direction out of the
    eye step that cancels it -- stepping along the new eye step, the decoded mouth stays, the
    decoded eye moves as before; the mouth step is left alone."""
    shapes, mu, mix = _blinking_actor()
    module, report = fit_retarget(shapes, mu)
    before = module.readout_steps.numpy().copy()
    coords = lambda z: np.linalg.lstsq(mix.T, np.asarray(z).T, rcond=None)[0]  # noqa: E731 -- (eye, mouth) x M

    def decoded(z):
        eye, mouth = coords(z)
        out = np.stack([mouth + leak * eye, eye], axis=1)
        out[::11] = np.nan  # dlib found no face on these
        return out

    def slopes(direction):  # decoded (mouth, eye) change per unit step along direction
        z0 = mu[:5]
        return (np.nan_to_num(decoded(z0 + direction[None])) - np.nan_to_num(decoded(z0)))[1:5].mean(axis=0)

    assert abs(slopes(before[0])[0]) > 0.2  # the eye step moved the decoded mouth
    out = decouple_eye_step(module, mu, (report["eye_sd"], report["mouth_sd"]), report["mouth_direction"], decoded)
    assert out["eye_mouth_response"] == pytest.approx(leak, rel=0.05) and out["mouth_response"] == pytest.approx(1.0, rel=0.05)
    mouth_moves, eye_moves = slopes(module.readout_steps[0].numpy())
    assert abs(mouth_moves) < 0.02 and eye_moves == pytest.approx(slopes(before[0])[1], rel=0.05)
    np.testing.assert_array_equal(module.readout_steps[1].numpy(), before[1])
    # No mouth lever (the mouth direction does not move the decoded mouth): nothing is changed.
    module, report = fit_retarget(shapes, mu)
    flat = lambda z: np.stack([np.zeros(len(z)), coords(z)[0]], axis=1)  # noqa: E731
    assert decouple_eye_step(module, mu, (report["eye_sd"], report["mouth_sd"]), report["mouth_direction"],
                             flat)["eye_mouth_removed"] == 0.0
    np.testing.assert_array_equal(module.readout_steps.numpy(), before)


def test_fit_and_calibrate_decouples_then_scales_the_eye_step():
    """rule fit_retarget's sequence: with eye_keeps_mouth the leak is taken out first, then the eye
    gain is measured on the decoupled step (here the decoded eye moves half the code's: gain 2)."""
    shapes, mu, mix = _blinking_actor()
    coords = lambda z: np.linalg.lstsq(mix.T, np.asarray(z).T, rcond=None)[0]  # noqa: E731

    def decoded(z):
        eye, mouth = coords(z)
        return np.stack([mouth + 0.4 * eye, 0.5 * eye], axis=1)

    module, report = fit_and_calibrate(shapes, mu, RetargetSettings(eye_keeps_mouth=True), decoded)
    assert report["eye_mouth_removed"] == pytest.approx(0.4, rel=0.05) and report["eye_gain"] == pytest.approx(2.0, rel=0.05)
    eye, mouth = coords(module.readout_steps[0].numpy()[None])[:, 0]
    assert abs(mouth + 0.4 * eye) < 0.02 * abs(eye)
    plain, report = fit_and_calibrate(shapes, mu, RetargetSettings(eye_keeps_mouth=False), decoded)
    assert report["eye_mouth_removed"] == 0.0 and np.isnan(report["eye_mouth_response"])
    with pytest.raises(FacevaeError, match="render.retarget.eye_keeps_mouth"):
        RetargetSettings(eye_keeps_mouth="yes")


def test_step_targets_stay_within_the_actors_own_range(tmp_path):
    """A stranger opens the eyes wider than the actor ever did: the step goes as far as the actor's
    widest eyes, not past them (the decoder has nothing to draw there). A version-2 map, which has
    no range, loads unbounded."""
    shapes, mu, mix = _blinking_actor()
    module, _ = fit_retarget(shapes, mu)
    eye_of = lambda z: np.linalg.lstsq(mix.T, z.T, rcond=None)[0][0]  # noqa: E731
    widest = eye_open_ratio(shapes).max()
    assert module.readout_hi[0].item() == pytest.approx(widest)
    stranger = np.stack([face(1.2), close_eyes(face(1.2), -0.8)])  # lids pulled 80 % further apart
    neutral = neutral_shape(normalise_landmarks(stranger[:1]))
    target = eye_open_ratio(retarget_shapes(normalise_landmarks(stranger), neutral, module.actor_neutral.numpy()))
    assert target[1] > widest + 0.05
    held = eye_of(module.drive(stranger, neutral))[1]
    assert held == pytest.approx(widest, abs=0.1 * (target[1] - widest)), (held, widest, target[1])
    unbounded = eye_of(_unbounded(module).drive(stranger, neutral))[1]
    assert unbounded == pytest.approx(target[1], abs=0.1 * (target[1] - widest)), (unbounded, target[1])


def _unbounded(module: LandmarkRetarget) -> LandmarkRetarget:
    """The same map with the read-out's targets not held in the actor's range (as before the range)."""
    state = {k: v.numpy() for k, v in module.state_dict().items()}
    readout = {"w": state["readout_w"], "y": state["readout_y"], "steps": state["readout_steps"]}
    return LandmarkRetarget(state["actor_neutral"], state["centres"], state["coef"], state["x_mean"], state["z_mean"],
                            module.inv_width, module.features, module.kind, readout, module.brow_weight).eval()


def test_onnx_export_holds_targets_in_range_and_exports_an_unbounded_map(tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is a project dependency; install with make install")
    shapes, mu, _ = _blinking_actor()
    module, _ = fit_retarget(shapes, mu)
    stranger = np.stack([face(1.2), close_eyes(face(1.2), 0.5), close_eyes(face(1.2), -0.8)]).astype(np.float32)
    neutral = neutral_shape(normalise_landmarks(stranger[:1])).astype(np.float32)
    wide = shape_openings(torch.from_numpy(retarget_shapes(normalise_landmarks(stranger), neutral, module.actor_neutral.numpy())))
    assert wide[2, 0] > module.readout_hi[0]  # the clip is active on the last frame
    for name, m in (("bounded", module), ("unbounded", _unbounded(module))):
        session = ort.InferenceSession(str(export_onnx(m, tmp_path / f"{name}.onnx")), providers=["CPUExecutionProvider"])
        (z,) = session.run(None, {"landmarks": stranger, "driver_neutral": neutral})
        np.testing.assert_allclose(z, m.drive(stranger, neutral), atol=1e-5, err_msg=name)
        assert np.isfinite(z).all()
    assert not np.allclose(module.drive(stranger, neutral)[2], _unbounded(module).drive(stranger, neutral)[2])


def test_the_faceapi_mouth_replaces_only_the_mouths_twenty_points():
    from facevae.faces.faceapi_landmarks import with_faceapi_mouth

    rng = np.random.default_rng(0)
    dlib, faceapi = rng.normal(size=(5, 68, 2)), rng.normal(size=(5, 68, 2))
    mixed = with_faceapi_mouth(dlib, faceapi)
    assert np.array_equal(mixed[:, 48:], faceapi[:, 48:]) and np.array_equal(mixed[:, :48], dlib[:, :48])
    assert not np.shares_memory(mixed, dlib)


class _Track:
    """The part of a DriverTrack driver_landmarks reads."""

    def __init__(self, kept):
        self.kept = np.asarray(kept, bool)
        self.landmarks = np.zeros((len(kept), 68, 2), np.float32)


def test_driver_landmarks_names_a_bad_mouth_points_value_and_what_faceapi_needs():
    assert driver_landmarks(_Track([True, False]), "dlib") is None  # the track's own points
    assert driver_landmarks(_Track([False]), "faceapi") is None  # nothing kept: nothing to run
    with pytest.raises(FacevaeError, match="render.retarget.mouth_points must be one of faceapi, dlib, not 'mesh'"):
        driver_landmarks(_Track([True]), "mesh")
    with pytest.raises(FacevaeError, match="rule faceapi_weights"):
        driver_landmarks(_Track([True]), "faceapi", video_path="x.mp4", faceapi_model=None)


def test_retarget_track_drives_with_the_landmarks_it_is_given():
    """retarget_track(landmarks=...) uses those points for the kept frames, not the track's."""
    rng = np.random.default_rng(1)
    template = template_landmarks(64)
    own = template[None] + rng.normal(scale=0.6, size=(60, 68, 2))
    module, _ = fit_retarget(own, rng.normal(size=(60, 4)), RetargetSettings(readout=False))

    class Track:
        kept = np.array([True] * 30 + [False] * 2)
        n, time = 32, np.arange(32) / 25.0
        landmarks = np.concatenate([own[:30], np.full((2, 68, 2), np.nan)]).astype(np.float32)

    given = own[30:60].astype(np.float32)
    z_track, _ = retarget_track(module, Track())
    z_given, _ = retarget_track(module, Track(), landmarks=given)
    assert np.isnan(z_given[30:]).all() and np.isfinite(z_given[:30]).all()
    expected = module.drive(given, neutral_shape(normalise_landmarks(given)), transfer=DrivePlan.transfer)  # retarget_track's default
    assert np.allclose(z_given[:30], expected, atol=1e-6) and not np.allclose(z_given[:30], z_track[:30])


def test_own_clip_transfer_is_the_one_whose_codes_come_nearest_the_encoders():
    """render.self_transfer encoder: an own clip spoken with the mouth more open than the training
    clip (its median face has the mouth open) -- the true codes (what the actor's encoder gives)
    pick transfer 0, the clip's own shapes; codes made at transfer 0.3 pick 0.3. retarget_track
    drives with the pick and says so; the module's own transfer is left as it was."""
    shapes, mu, mix = _synthetic_actor()
    module, _ = fit_retarget(shapes, mu, RetargetSettings(map="linear", l2=1e-3, readout=False))
    mouth = np.clip(np.sin(np.arange(80) / 5) * 0.2 + 0.35, 0, None)  # opens more than in training (mean 0.2)
    clip = np.stack([face(mouth=m) for m in mouth])
    neutral = neutral_shape(normalise_landmarks(clip))
    true_codes = np.stack([mouth, np.zeros_like(mouth)], axis=1) @ mix
    chosen, distances, _ = transfer_nearest(module, clip, neutral, true_codes)
    assert chosen == 0.0 and len(distances) == 11 and np.argmin(distances) == 0
    at_03 = module.drive(clip, neutral, transfer=0.3)
    assert transfer_nearest(module, clip, neutral, at_03)[0] == 0.3

    class Track:
        kept = np.array([True] * 80 + [False])
        n, time = 81, np.arange(81) / 25.0
        landmarks = np.concatenate([clip, np.full((1, 68, 2), np.nan)]).astype(np.float32)

    reference = np.concatenate([at_03, np.full((1, at_03.shape[1]), np.nan, np.float32)])
    z, info = retarget_track(module, Track(), transfer=0.75, nearest_to=reference)
    assert info["transfer"] == 0.3 and info["transfer_distances"]["0.3"] == min(info["transfer_distances"].values())
    np.testing.assert_allclose(z[:80], at_03, atol=1e-5)
    assert np.isnan(z[80]).all()


def test_blend_latents_mixes_by_share_and_keeps_missing_rows_missing():
    from facevae.driving import blend_latents

    enc = np.array([[0.0, 2.0], [np.nan, np.nan], [4.0, -4.0]], np.float32)
    ret = np.array([[2.0, 0.0], [np.nan, np.nan], [0.0, 0.0]], np.float32)
    assert np.allclose(blend_latents(enc, ret, 0.5)[[0, 2]], [[1.0, 1.0], [2.0, -2.0]])
    assert np.isnan(blend_latents(enc, ret, 0.5)[1]).all()
    assert np.array_equal(blend_latents(enc, ret, 0.0)[[0, 2]], enc[[0, 2]])
    assert np.array_equal(blend_latents(enc, ret, 1.0)[[0, 2]], ret[[0, 2]])


def test_nadaraya_map_lands_a_wider_mouth_than_the_actor_ever_made_at_its_widest_not_its_mean(tmp_path):
    """Issue 38's known answer: a driver whose mouth opens twice as wide as the actor's ever did
    lands at the actor's widest code through the normalised-kernel (Nadaraya-Watson) map, which
    averages the actor's own codes -- while kernel ridge regression, fitted on the same faces,
    shrinks such a far shape back towards the mean code (the control)."""
    shapes, mu, mix = _synthetic_actor(latent=4)
    mouth_of = lambda z: np.linalg.lstsq(mix.T, np.asarray(z, np.float64).T, rcond=None)[0][0]  # noqa: E731
    actor_mouth = mouth_of(mu)
    widest, mean = actor_mouth.max(), actor_mouth.mean()
    stranger = np.stack([face(1.3, (4, -2), mouth=m) for m in (0.0, 0.0, 0.0, 2 * widest)])
    neutral = neutral_shape(normalise_landmarks(stranger))
    nw, report = fit_retarget(shapes, mu, RetargetSettings(map="nadaraya", bandwidth=0.05, readout=False))
    krr, _ = fit_retarget(shapes, mu, RetargetSettings(readout=False))
    assert report["map"] == "nadaraya" and report["cv_r2"] > 0.8
    at_nw, at_krr = mouth_of(nw.drive(stranger, neutral, transfer=1.0))[3], mouth_of(krr.drive(stranger, neutral, transfer=1.0))[3]
    assert at_nw == pytest.approx(widest, abs=0.1 * (widest - mean)), (at_nw, widest, mean)
    assert at_krr < widest - 0.3 * (widest - mean), (at_krr, widest)  # the shrinkage the normalised weights remove
    # Far beyond every face of the actor the weights stay finite (shifted by the nearest centre), and
    # a closed mouth stays closed.
    far = np.stack([face(mouth=0.0), face(mouth=8.0)])
    z_far = nw.drive(far, neutral_shape(normalise_landmarks(far[:1])), transfer=1.0)
    assert np.isfinite(z_far).all() and mouth_of(z_far)[1] == pytest.approx(widest, abs=0.1 * (widest - mean))
    assert mouth_of(z_far)[0] < mean
    # Saved, loaded and exported, it gives the same codes.
    np.testing.assert_array_equal(load_retarget(save_retarget(tmp_path / "nw.pt", nw)).drive(stranger, neutral),
                                  nw.drive(stranger, neutral))
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is a project dependency; install with make install")
    session = ort.InferenceSession(str(export_onnx(nw, tmp_path / "nw.onnx", transfer=0.75)), providers=["CPUExecutionProvider"])
    (z,) = session.run(None, {"landmarks": stranger.astype(np.float32), "driver_neutral": neutral.astype(np.float32)})
    np.testing.assert_allclose(z, nw.drive(stranger, neutral, transfer=0.75), atol=1e-5)


def _stranger_blinks():
    """A stranger with the mouth closed throughout: eyes open in three frames, closed in the fourth."""
    stranger = np.stack([close_eyes(face(1.3, (4, -2)), c) for c in (0.0, 0.0, 0.0, 0.9)])
    return stranger, neutral_shape(normalise_landmarks(stranger))


def test_additive_map_keeps_a_blink_off_the_mouth_and_closes_the_eye():
    """Issue 38: the actor blinks only while talking; a stranger blinks with the mouth closed. The
    additive map (one kernel on the mouth, one on the eyes and brows, fitted together) gives z =
    f_mouth + f_eyes, so the blink moves the code's eye coordinate and leaves its mouth coordinate
    where the closed mouth put it; the joint kernel map answers the blink with its nearest faces,
    whose mouths are open, and barely closes the eye (known answer: the code is linear in the openings)."""
    shapes, mu, mix = _blinking_actor()
    coords = lambda z: np.linalg.lstsq(mix.T, np.asarray(z).T, rcond=None)[0]  # noqa: E731
    stranger, neutral = _stranger_blinks()
    eye = {}
    for kind in ("kernel", "additive"):
        module, report = fit_retarget(shapes, mu, RetargetSettings(map=kind, readout=False))
        assert report["cv_r2"] > 0.99
        eye[kind], mouth = coords(module.drive(stranger, neutral))
        if kind == "additive":
            assert abs(mouth[3] - mouth[0]) < 0.002, mouth
    assert eye["kernel"][0] - eye["kernel"][3] < 0.6 * (eye["additive"][0] - eye["additive"][3]), eye


def test_decoded_mouth_readout_holds_the_drawn_mouth_through_a_blink(tmp_path):
    """A decoder whose drawn mouth opens as the eyes close (drawn mouth = the code's mouth + 0.4 x its
    eye coordinate), and an eye step left coupled to it (eye_keeps_mouth off): with the faces' read-out
    the stranger's blink opens the drawn mouth; with the read-out fitted on decoded faces the mouth step,
    taken after the eye step, holds it where the closed mouth asks. Saved and loaded, it drives the same."""
    shapes, mu, mix = _blinking_actor()
    coords = lambda z: np.linalg.lstsq(mix.T, np.asarray(z).T, rcond=None)[0]  # noqa: E731

    def decoded(z):
        eye, mouth = coords(z)
        return np.stack([mouth + 0.4 * eye, 0.5 * eye], axis=1)

    stranger, neutral = _stranger_blinks()
    drawn = {}
    for readout in ("faces", "decoded"):
        module, report = fit_and_calibrate(shapes, mu, RetargetSettings(eye_keeps_mouth=False, mouth_readout=readout), decoded)
        drawn[readout] = decoded(module.drive(stranger, neutral))[:, 0]
    assert report["mouth_readout_r"] > 0.99 and module.mouth_after_eye
    leak, held = drawn["faces"][0] - drawn["faces"][3], abs(drawn["decoded"][0] - drawn["decoded"][3])
    assert leak > 0.03 and held < 0.15 * leak, drawn
    save_retarget(tmp_path / "map.pt", module)
    loaded = load_retarget(tmp_path / "map.pt")
    assert loaded.mouth_after_eye
    np.testing.assert_allclose(loaded.drive(stranger, neutral), module.drive(stranger, neutral), atol=1e-6)
    with pytest.raises(FacevaeError, match="expert.render.retarget.mouth_readout"):
        RetargetSettings(mouth_readout="mesh")


def test_onnx_export_of_the_additive_map_and_the_late_mouth_step(tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is a project dependency; install with make install")
    shapes, mu, mix = _blinking_actor(n=200)
    coords = lambda z: np.linalg.lstsq(mix.T, np.asarray(z).T, rcond=None)[0]  # noqa: E731
    decoded = lambda z: np.stack([coords(z)[1] + 0.4 * coords(z)[0], 0.5 * coords(z)[0]], axis=1)  # noqa: E731
    module, _ = fit_and_calibrate(shapes, mu, RetargetSettings(map="additive", mouth_readout="decoded"), decoded)
    assert module.kind == "additive" and module.mouth_after_eye
    save_retarget(tmp_path / "map.pt", module)
    module = load_retarget(tmp_path / "map.pt")
    driver = (shapes[::9] * 0.9 + 2).astype(np.float32)
    neutral = neutral_shape(normalise_landmarks(driver)).astype(np.float32)
    session = ort.InferenceSession(str(export_onnx(module, tmp_path / "m.onnx")), providers=["CPUExecutionProvider"])
    (z,) = session.run(None, {"landmarks": driver, "driver_neutral": neutral})
    with torch.no_grad():
        np.testing.assert_allclose(z, module(torch.from_numpy(driver), torch.from_numpy(neutral)).numpy(), atol=1e-4)
