"""Acceptance of the render stage on the session's real pipeline run (tests/support/pipeline.py):
d6 trained on the first 25 s of its clip, driven by tpsmm_driving.mp4 (speech, paste-back), by an
HDTF talking head and by the rest of its own clip (self-reenactment)."""

from __future__ import annotations

import copy

import cv2
import imageio_ffmpeg
import numpy as np
import pandas as pd
import pytest

from facevae import modelio
from facevae.compose import Layout, Paster, resize_face
from facevae.config import validate
from facevae.driving import RetargetSettings, driver_landmarks, fit_actor_retarget, load_retarget, retarget_track
from facevae.faces.io import DriverTrack, read_track
from facevae.render import RenderConfig
from facevae.video import probe, read_frames

pytestmark = [pytest.mark.media, pytest.mark.slow]

COMPRESSION_MEAN, COMPRESSION_P99 = 4.0, 16.0


@pytest.fixture(scope="module")
def run(pipeline):
    config = validate(copy.deepcopy(pipeline["config"]))
    return pipeline["workdir"], config


def _diff(a, b):
    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return float(d.mean()), float(np.percentile(d, 99))


def test_tpsmm_drives_d6_frame_for_frame_with_audio(run, tmp_path):
    wd, config = run
    out = wd / "results/reenact/d6/tpsmm/driving.mp4"
    driver = wd / "results/videos/tpsmm/driving.mp4"
    # Decodes with imageio-ffmpeg, same frame count (+-1) and rate as the driver, with its audio.
    n_out, _ = imageio_ffmpeg.count_frames_and_secs(str(out))
    n_drv, _ = imageio_ffmpeg.count_frames_and_secs(str(driver))
    assert abs(n_out - n_drv) <= 1
    info = probe(out)
    assert info.has_audio and info.audio_codec == "aac"
    assert info.fps == pytest.approx(probe(driver).fps)
    # The actor panel is what the model says: decode(the retargeting map's z of the driver's
    # landmarks, relative to the driver's median face), resized to the panel.
    cfg = RenderConfig.from_config(config["render"])
    assert cfg.drive == "auto"  # the default: a stranger (tpsmm) is retargeted
    assert set(pd.read_csv(wd / "results/reenact/d6/tpsmm/driving.tsv", sep="\t")["drive"]) == {"retarget"}
    layout = Layout.for_reenactment(cfg, "d6", "tpsmm", "driving")
    frames = list(read_frames(out))
    assert frames[0].shape == (layout.height, layout.width, 3)
    track = read_track(wd / "results/tracks/tpsmm/driving.h5")
    model = modelio.load_model(wd / "results/models/d6/model.pt")
    kept = np.flatnonzero(track["kept"])
    assert len(kept) > 0.8 * len(track["kept"])
    sample = kept[np.linspace(0, len(kept) - 1, 8).round().astype(int)]
    # The drivers' points: dlib's with face-api's mouth (render.retarget.mouth_points faceapi, the default).
    weights = wd / "results/weights/face-api"
    with DriverTrack(wd / "results/tracks/tpsmm/driving.h5") as driver_track:
        points = driver_landmarks(driver_track, "faceapi", driver, weights)
        z, _ = retarget_track(load_retarget(wd / "results/models/d6/retarget.pt"), driver_track, landmarks=points)
        z_dlib, _ = retarget_track(load_retarget(wd / "results/models/d6/retarget.pt"), driver_track)
    assert np.abs(z[kept] - z_dlib[kept]).mean() > 0.05  # the mouth points change what is drawn
    faces = modelio.decode(model, z[sample])
    for face, i in zip(faces, sample):
        mean, p99 = _diff(layout.crop(frames[i], "actor"), resize_face(face, cfg.panel_size, cfg.interpolation))
        assert mean < COMPRESSION_MEAN and p99 < COMPRESSION_P99, (int(i), mean, p99)
    # ... and the check can tell models apart: the other actor's model (d10) says something else.
    other = modelio.load_model(wd / "results/models/d10/model.pt")
    # (d10 drives nothing in this run, so its map is fitted here, the way rule fit_retarget does.)
    other_map = {"map": tmp_path / "d10.retarget.pt", "table": tmp_path / "d10.retarget.tsv"}
    fit_actor_retarget(wd / "results/faces/d10.h5", wd / "results/models/d10/model.pt", other_map, RetargetSettings(), "d10")
    with DriverTrack(wd / "results/tracks/tpsmm/driving.h5") as driver_track:
        z_other, _ = retarget_track(load_retarget(other_map["map"]), driver_track, landmarks=points)
    theirs = modelio.decode(other, z_other[sample])
    far = [_diff(layout.crop(frames[i], "actor"), resize_face(face, cfg.panel_size, cfg.interpolation))[0]
           for face, i in zip(theirs, sample)]
    assert np.median(far) > 1.5 * COMPRESSION_MEAN, far


def test_paste_back_leaves_the_frame_outside_the_mask(run):
    wd, config = run
    cfg = RenderConfig.from_config(config["render"])
    pasted = list(read_frames(wd / "results/reenact/d6/tpsmm/driving.paste.mp4"))
    driver = list(read_frames(wd / "results/videos/tpsmm/driving.mp4"))
    assert abs(len(pasted) - len(driver)) <= 1 and pasted[0].shape == driver[0].shape
    track = read_track(wd / "results/tracks/tpsmm/driving.h5")
    paster = Paster(track["crops"].shape[1], float(track["attrs"]["template_scale"]),
                    float(track["attrs"]["template_offset_y"]), cfg.feather)
    inside_changed = []
    for i in np.flatnonzero(track["kept"])[::10]:
        alpha = paster.alpha(track["transforms"][i], driver[i].shape)
        assert 0.02 < (alpha > 0).mean() < 0.6
        outside = cv2.dilate((alpha > 0).astype(np.uint8), np.ones((9, 9), np.uint8)) == 0
        mean, p99 = _diff(pasted[i][outside], driver[i][outside])
        assert mean < COMPRESSION_MEAN and p99 < COMPRESSION_P99, (int(i), mean, p99)
        inside_changed.append(_diff(pasted[i][alpha > 0.5], driver[i][alpha > 0.5])[0])
    assert np.median(inside_changed) > 2 * COMPRESSION_MEAN


def _score(wd, pair: str) -> pd.DataFrame:
    return pd.read_csv(wd / f"results/reenact/d6/{pair}.tsv", sep="\t").set_index(["instrument", "measure"])


# Measured on the CI pipeline's d6 <- d6rest with render.drive auto's blend (self_blend 0.5, its transfer picked by
# the encoder), final-fit models (train.holdout.final_fit 0.2) and the map reading no brows (brow_weight 0,
# docs/decisions/025), bench/quality/ci_seeds.py at train.seed 0 / 1 / 2 (2026-12-08): face-mesh mouth r 0.723 /
# 0.764 / 0.738, dlib 0.832 / 0.824 / 0.828 (brows at half weight: 0.707 / 0.749 / 0.697, dlib 0.837 / 0.837 / 0.824).
# Through the encoder alone it was 0.416 at seed 0 (before the final fit). Bars 0.1 below the lowest.
SELF_MESH_BAR = 0.62
SELF_DLIB_BAR = 0.72


def test_self_reenactment_follows_the_mouth(run):
    wd, _ = run
    score = _score(wd, "d6rest/rest")
    mouth = score.loc[("dlib", "mouth_open")]
    print("\nself-reenactment d6 <- d6rest:\n" + score.to_string())
    table = score.to_string()
    assert mouth.scored_frames > 200, table
    # The controls hold whatever the model: chance sits at 0.
    assert abs(mouth.shuffled_pearson) <= 0.2, table
    assert abs(mouth.shuffled_mean) <= 0.05, table
    # The instrument itself follows the driver's mouth on real faces.
    assert mouth.instrument_pearson >= 0.7, table
    # The other pictures of the job exist and are not empty.
    for name in ("rest.expression.png", "rest.sheet.png"):
        image = cv2.imread(str(wd / "results/reenact/d6/d6rest" / name))
        assert image is not None and image.std() > 10
    series = pd.read_csv(wd / "results/reenact/d6/d6rest/rest.series.tsv", sep="\t")
    assert len(series) == mouth.frames
    # render.drive auto recognised the actor in its own held-out footage: encoder and map blended.
    assert set(score["drive"]) == {"blend"}, table
    # The acceptance bar: the rendered actor opens its mouth when the driver does -- by dlib, and
    # by the independent instrument (MediaPipe's face mesh on the driver's crop and the render),
    # beyond what the series' smoothness alone gives (bars: SELF_MESH_BAR's comment).
    assert mouth.pearson >= SELF_DLIB_BAR, table
    mesh = score.loc[("mesh", "mouth_open")]
    assert mesh.pearson > mesh.circular_p95 and mesh.pearson >= SELF_MESH_BAR, table


# Measured on this pipeline's config (d6 trained on its first 25 s -- 375 faces, the last 0.2 of the steps on all of
# them (final fit); the map fits all -- driven by tpsmm_driving.mp4), with the defaults: the read-out step (its eye
# step decoupled from the decoded mouth, eye_keeps_mouth, and calibrated on the decoder, eye_gain_max 2, targets held
# in the actor's range), render.retarget.transfer 0.75, the drivers' mouth points from face-api (mouth_points
# faceapi) and no brows in what the map reads (brow_weight 0, docs/decisions/025). bench/quality/ci_seeds.py at
# train.seed 0 / 1 / 2 (2026-12-08, bf16 training on this CPU): face-mesh mouth-opening r 0.744 / 0.758 / 0.769,
# eye-opening r 0.600 / 0.566 / 0.478 (brows at half weight: 0.729 / 0.804 / 0.785 and 0.499 / 0.591 / 0.468);
# identity kept 1.00. The bars sit 0.1 below the lowest seed.
CROSS_SEEDS = (0.744, 0.758, 0.769)
CROSS_MOUTH_BAR = round(min(CROSS_SEEDS) - 0.1, 2)
CROSS_EYE_SEEDS = (0.600, 0.566, 0.478)
CROSS_EYE_BAR = round(min(CROSS_EYE_SEEDS) - 0.1, 2)


def test_a_stranger_drives_the_actor(run):
    """Cross-identity: tpsmm (a man, talking) drives d6 (a woman): the actor makes his mouth
    movements, by the instrument that plays no part in driving, and stays d6."""
    wd, _ = run
    score = _score(wd, "tpsmm/driving")
    table = score.to_string()
    print("\ncross-reenactment d6 <- tpsmm:\n" + table)
    mouth = score.loc[("mesh", "mouth_open")]
    # Landmark failures are counted, not dropped: the mesh reads nearly every kept frame.
    assert (score.scored_share >= 0.9).all(), table
    assert mouth.pearson > mouth.circular_p95, table  # beyond what the series' own smoothness gives
    assert mouth.pearson >= CROSS_MOUTH_BAR, table
    assert score.loc[("mesh", "eye_open")].pearson >= CROSS_EYE_BAR, table  # the eyes follow too
    assert abs(mouth.shuffled_pearson) <= 0.2, table
    # Identity: the renders are nearer d6's mean descriptor than tpsmm's, and within 0.6 of d6's.
    assert mouth.identity_kept >= 0.9, table
    assert mouth.actor_distance < mouth.driver_distance, table
    # The map's fit says what it did: the eye step was calibrated on the decoder (seeds 0-2: the
    # decoded eye moved 0.22-0.25 of the step at brow weight 0, so the gain is the cap, 2).
    fit = pd.read_csv(wd / "results/models/d6/retarget.tsv", sep="\t").iloc[0]
    assert fit.readout_eye and 0 < fit.eye_response < 1 and 1 < fit.eye_gain <= 2, fit.to_dict()


# Issue 38: an HDTF talking head (natural speech: small, fast mouth movements, the mouth half open at
# rest) drives the same d6. Measured with bench/quality/ci_seeds.py (this pipeline's config, train.seed 0 / 1 / 2,
# 2026-12-08, final fit, brow_weight 0): face-mesh mouth-opening r 0.436 / 0.543 / 0.564 against circular-shift
# p95s of 0.237 / 0.205 / 0.214; amplitude ratio (the render's mouth s.d. over the retrieval baseline's) 0.352 /
# 0.432 / 0.500 -- this 50-epoch model's mouth moves about 0.35-0.5 as widely as d6's own frames for a talker
# (issue 38; fully trained actors: bench/results/mouth_sweep.md). The amplitude bar sits 0.1 below the lowest seed.
TALKER_SEEDS = (0.436, 0.543, 0.564)
TALKER_AMP_SEEDS = (0.352, 0.432, 0.500)
TALKER_AMP_BAR = round(min(TALKER_AMP_SEEDS) - 0.1, 2)


def test_a_talker_moves_the_actors_mouth(run):
    """A person who simply talks moves the actor's mouth, at the right time (r beyond what the
    series' own smoothness gives) and widely enough to see (amplitude against the actor's own faces)."""
    wd, _ = run
    score = _score(wd, "hdtf/talk")
    table = score.to_string()
    print("\ncross-reenactment d6 <- hdtf (talking head):\n" + table)
    mouth = score.loc[("mesh", "mouth_open")]
    assert set(score["drive"]) == {"retarget"}, table
    assert (score.scored_share >= 0.9).all(), table
    assert mouth.pearson > mouth.circular_p95, table
    assert mouth.amplitude_ratio >= TALKER_AMP_BAR, table
    assert mouth.identity_kept >= 0.9, table


def test_a_driver_without_a_usable_face_stops_before_rendering(pipeline, media, tmp_path):
    """A driver whose video holds no human face (a dog) gets faces_driver's "no usable face"
    error and no reenactment files -- not a blank video and an empty score table -- and the
    actor's built model is not touched (a copy of the session's pipeline run)."""
    import shutil
    import subprocess

    from support.workflow import run_snakemake
    from facevae.video import ffmpeg_exe

    work = tmp_path / "run"
    shutil.copytree(pipeline["workdir"], work, symlinks=True)
    clip = tmp_path / "dog.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-loop", "1", "-framerate", "10", "-t", "2", "-i",
                    str(media("images/liveportrait_s33.jpg")), "-vf", "scale=320:-2", "-pix_fmt", "yuv420p",
                    "-c:v", "libx264", str(clip)], check=True)
    config = copy.deepcopy(pipeline["config"])
    config["drivers"]["dog"] = {"videos": {"walk": {"path": str(clip)}}}
    config["reenact"] = [*config["reenact"], {"actor": "d6", "driver": "dog"}]
    model = work / "results/models/d6/model.pt"
    before = model.stat().st_mtime_ns
    result = run_snakemake(work, config, "results/reenact/d6/dog/walk.mp4", timeout=600, check=False)
    assert result.returncode != 0
    assert "driver 'dog': no usable face in its video(s) walk: 20 frames" in result.output, result.output[-3000:]
    assert not (work / "results/reenact/d6/dog").exists() or not list((work / "results/reenact/d6/dog").iterdir())
    assert model.stat().st_mtime_ns == before


def test_explore_outputs(run):
    wd, config = run
    ex = config["explore"]
    for actor in config["actors"]:
        folder = wd / "results/explore" / actor
        assert probe(folder / "walk.mp4").frame_count == (ex["walk"]["points"] - 1) * ex["walk"]["steps"] + 1
        assert probe(folder / "interpolate.mp4").frame_count == 2 * ex["interpolate"]["steps"] - 2
        grid = cv2.imread(str(folder / "samples.png"))
        assert grid.shape[:2] == (ex["samples"]["rows"] * 66 + 2, ex["samples"]["cols"] * 66 + 2)
