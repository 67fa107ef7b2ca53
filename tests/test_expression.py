"""Expression measures (interface 6) and the transfer score's statistics."""

from __future__ import annotations

import numpy as np
import pytest

from facevae import FacevaeError
from facevae.expression import (
    eye_open_ratio,
    interocular_distance,
    mouth_open_ratio,
    pearson,
    transfer_score,
)
from facevae.faces.align import template_landmarks


def _similarity(points, angle_deg, scale, shift):
    a = np.deg2rad(angle_deg)
    rot = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return points @ rot.T + np.asarray(shift)


def _open_mouth(lm, amount):
    """Move the lower inner lip (65-67) and the lower outer lip (55-59) down by ``amount`` px."""
    out = lm.copy()
    out[[55, 56, 57, 58, 59, 65, 66, 67], 1] += amount
    return out


def test_template_values_and_shapes():
    tpl = template_landmarks(64)
    assert np.ndim(mouth_open_ratio(tpl)) == 0
    batch = np.stack([tpl, tpl, tpl])
    assert mouth_open_ratio(batch).shape == (3,)
    assert eye_open_ratio(batch[None]).shape == (1, 3)
    # The mean face has its lips nearly closed and its eyes open.
    assert 0.0 < mouth_open_ratio(tpl) < 0.15
    assert 0.05 < eye_open_ratio(tpl) < 0.25


def test_scale_rotation_translation_free():
    tpl = template_landmarks(64)
    moved = _similarity(tpl, 23.0, 7.3, (410.0, -55.0))
    np.testing.assert_allclose(mouth_open_ratio(moved), mouth_open_ratio(tpl), rtol=1e-9)
    np.testing.assert_allclose(eye_open_ratio(moved), eye_open_ratio(tpl), rtol=1e-9)
    np.testing.assert_allclose(interocular_distance(moved), 7.3 * interocular_distance(tpl), rtol=1e-9)


def test_mouth_ratio_grows_exactly_with_the_lip_gap():
    tpl = template_landmarks(64)
    iod = interocular_distance(tpl)
    base = mouth_open_ratio(tpl)
    gaps = np.array([1.0, 3.0, 8.0])
    ratios = mouth_open_ratio(np.stack([_open_mouth(tpl, g) for g in gaps]))
    # (the template's lip pairs are not exactly vertical: the gap grows almost exactly by the shift)
    np.testing.assert_allclose(ratios - base, gaps / iod, rtol=2e-3)
    # Opening the mouth leaves the eyes alone.
    np.testing.assert_allclose(eye_open_ratio(_open_mouth(tpl, 8.0)), eye_open_ratio(tpl))


def test_closing_the_eyes_lowers_the_eye_ratio():
    tpl = template_landmarks(64)
    shut = tpl.copy()
    for upper, lower in [(37, 41), (38, 40), (43, 47), (44, 46)]:
        shut[[upper, lower]] = (tpl[upper] + tpl[lower]) / 2
    assert eye_open_ratio(shut) == pytest.approx(0.0, abs=1e-12)
    assert mouth_open_ratio(shut) == pytest.approx(mouth_open_ratio(tpl))


def test_missing_face_gives_nan_and_bad_shape_is_an_error():
    batch = np.stack([template_landmarks(64), np.full((68, 2), np.nan)])
    ratios = mouth_open_ratio(batch)
    assert np.isfinite(ratios[0]) and np.isnan(ratios[1])
    with pytest.raises(FacevaeError, match="68, 2"):
        mouth_open_ratio(np.zeros((5, 5, 2)))


def test_pearson_matches_numpy_and_skips_nan():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=200), rng.normal(size=200)
    b = 0.6 * a + b
    assert pearson(a, b) == pytest.approx(np.corrcoef(a, b)[0, 1], abs=1e-12)
    a_nan = a.copy()
    a_nan[::7] = np.nan
    keep = np.isfinite(a_nan)
    assert pearson(a_nan, b) == pytest.approx(np.corrcoef(a[keep], b[keep])[0, 1], abs=1e-12)
    assert np.isnan(pearson([1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0]))
    assert np.isnan(pearson([1.0, np.nan], [2.0, 3.0]))


def test_transfer_score_controls():
    rng = np.random.default_rng(0)
    t = np.arange(300)
    # Smooth, expression-like series: slow bumps, the actor following the driver with noise.
    driver = np.convolve(rng.normal(size=320), np.ones(21) / 21, mode="same")[10:310]
    actor = 0.8 * driver + 0.02 * rng.normal(size=300)
    actor[::25] = np.nan  # frames without a kept face are left out
    score = transfer_score(driver, actor, seed=3, permutations=500)
    assert score["frames"] == 300 - len(t[::25])
    assert score["pearson"] > 0.9
    assert abs(score["shuffled_pearson"]) < 0.2
    assert abs(score["shuffled_mean"]) < 0.02
    assert score["shuffled_p95"] < 0.2
    assert score["p_shuffle"] <= 1 / 500
    # Same seed, same numbers.
    assert transfer_score(driver, actor, seed=3, permutations=500) == score
    # An unrelated smooth series: r is small only under the circular control's spread.
    other = np.convolve(rng.normal(size=320), np.ones(21) / 21, mode="same")[10:310]
    unrelated = transfer_score(driver, other, seed=3, permutations=500)
    assert abs(unrelated["pearson"]) <= max(unrelated["circular_p95"], 0.2) + 0.15
    assert unrelated["circular_p95"] > unrelated["shuffled_p95"]  # autocorrelation widens the null


def test_transfer_score_too_few_frames():
    score = transfer_score([1.0, np.nan, 2.0], [np.nan, 1.0, 2.0])
    assert score["frames"] == 1 and np.isnan(score["pearson"])
    with pytest.raises(FacevaeError, match="equal in length"):
        transfer_score([1.0, 2.0], [1.0])


def test_transfer_score_constant_actor_is_nan_not_a_warning():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        score = transfer_score(np.arange(50.0), np.ones(50), permutations=20)
    assert np.isnan(score["pearson"]) and np.isnan(score["shuffled_mean"]) and score["frames"] == 50
