"""Render library on real media: paste-back, video writing, and whole reenactments of a real
3-second driver clip through a real (briefly trained) VAE."""

from __future__ import annotations

import json
import subprocess

import cv2
import numpy as np
import pytest

from facevae import FacevaeError, modelio
from facevae.compose import Layout, Paster, resize_face
from facevae.faces.io import DriverTrack, read_track
from facevae.render import RenderConfig, render_reenactment
from facevae.video import VideoError, VideoWriter, ffmpeg_exe, probe, read_frames
from support.render import faceapi_weights, make_track, render_kit

pytestmark = pytest.mark.media

# Mean and 99th-percentile absolute differences (0-255) H.264 at crf 18 leaves on these frames;
# a wrong face or frame differs by several times more (checked in the tests themselves).
COMPRESSION_MEAN, COMPRESSION_P99 = 4.0, 16.0


@pytest.fixture(scope="module")
def kit(media, tmp_path_factory):
    return render_kit(media, tmp_path_factory)


def _diff(a, b):
    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return float(d.mean()), float(np.percentile(d, 99))


# --------------------------------------------------------------------------- real media: pieces



def test_paste_back_inverts_the_alignment(kit):
    """Pasting a frame's own aligned crop back reproduces the frame: the inverse transform is right."""
    track = read_track(kit["track"])
    frames = list(read_frames(kit["clip"]))
    paster = Paster(64)
    i = int(np.flatnonzero(track["kept"])[20])
    frame, m = frames[i], track["transforms"][i]
    pasted = paster.paste(frame, track["crops"][i], m)
    alpha = paster.alpha(m, frame.shape)
    assert (pasted[alpha == 0] == frame[alpha == 0]).all()
    inner = alpha >= 0.99
    assert inner.sum() > 2000
    mean, _ = _diff(pasted[inner], frame[inner])
    assert mean < 8.0  # only the 64-px crop's loss of detail
    other = paster.paste(frame, track["crops"][(i + 40) % len(frames)], m)
    assert _diff(other[inner], frame[inner])[0] > mean  # a different face is visibly different
    # No transform (no face): the frame comes back unchanged.
    assert (paster.paste(frame, track["crops"][i], np.full((2, 3), np.nan)) == frame).all()


def test_video_writer_frames_audio_and_failure(kit, tmp_path):
    out = tmp_path / "v.mp4"
    rng = np.random.default_rng(0)
    frames = [np.full((50, 70, 3), k * 10, np.uint8) for k in range(12)]
    with VideoWriter(out, 70, 50, 25.0, audio_from=kit["clip"]) as writer:
        for f in frames:
            writer.write(f)
    info = probe(out)
    assert info.frame_count == 12 and info.has_audio and (info.width, info.height) == (70, 50) and info.fps == 25.0
    got = list(read_frames(out))
    assert max(_diff(a, b)[0] for a, b in zip(got, frames)) < 2.0
    assert not list(tmp_path.glob(".*tmp*"))
    # A frame of the wrong size is refused and nothing is left behind.
    bad = tmp_path / "bad.mp4"
    with pytest.raises(FacevaeError, match="does not match"):
        with VideoWriter(bad, 70, 50, 25.0) as writer:
            writer.write(rng.integers(0, 255, (50, 70, 3), dtype=np.uint8))
            writer.write(np.zeros((10, 10, 3), np.uint8))
    assert not bad.exists() and not list(tmp_path.glob(".bad*"))
    # An audio source that is not a video: the encoder's error names the output.
    with pytest.raises(VideoError, match="bad2.mp4"):
        with VideoWriter(tmp_path / "bad2.mp4", 70, 50, 25.0, audio_from=tmp_path / "missing.mp4") as writer:
            for f in frames * 50:
                writer.write(f)
    assert not (tmp_path / "bad2.mp4").exists()


# ------------------------------------------------------------------------- real media: renders


@pytest.fixture(scope="module")
def side_by_side(kit):
    out = kit["folder"] / "sbs"
    outputs = {k: str(out / f"clip{suffix}") for k, suffix in
               [("video", ".mp4"), ("score", ".tsv"), ("series", ".series.tsv"), ("plot", ".expression.png"), ("sheet", ".sheet.png")]}
    summary = render_reenactment(kit["track"], kit["clip"], kit["model"], outputs, RenderConfig(panel_size=128, drive="encoder"),
                                 "actor", "driver", "clip", meta_path=kit["meta"], faces_path=kit["faces"], progress=False)
    return outputs, summary


def test_side_by_side_frames_audio_and_panels(kit, side_by_side):
    outputs, summary = side_by_side
    track = read_track(kit["track"])
    n = len(track["kept"])
    info = probe(outputs["video"])
    assert abs(info.frame_count - kit["info"].frame_count) <= 1 and info.frame_count == n
    assert info.has_audio and info.fps == pytest.approx(kit["info"].fps)
    frames = list(read_frames(outputs["video"]))
    model = modelio.load_model(kit["model"])
    lay = Layout.for_reenactment(RenderConfig(panel_size=128, drive="encoder"), "actor", "driver", "clip")
    kept = np.flatnonzero(track["kept"])
    sample = [int(kept[k]) for k in (0, 5, 20, 40, -1)]
    faces = modelio.decode(model, modelio.encode(model, track["crops"][sample]))
    for k, i in enumerate(sample):
        assert track["kept"][i]
        mean, p99 = _diff(lay.crop(frames[i], "actor"), resize_face(faces[k], 128))
        assert mean < COMPRESSION_MEAN and p99 < COMPRESSION_P99, (i, mean, p99)
        mean, p99 = _diff(lay.crop(frames[i], "driver"), resize_face(track["crops"][i], 128))
        assert mean < COMPRESSION_MEAN and p99 < COMPRESSION_P99, (i, mean, p99)
    # The check has teeth: another frame's face is farther off than compression.
    wrong = _diff(lay.crop(frames[sample[1]], "driver"), resize_face(track["crops"][sample[-1]], 128))[0]
    assert wrong > 2 * COMPRESSION_MEAN
    # Dropped frames (no face) hold the last good frame's panels.
    for i in kit["dropped"]:
        last = int(kept[kept < i].max())
        assert _diff(lay.crop(frames[i], "actor"), lay.crop(frames[last], "actor"))[0] < 1.5
    assert summary["kept"] == track["kept"].sum() and not track["kept"][kit["dropped"]].any()


def test_score_outputs(kit, side_by_side):
    import pandas as pd

    from facevae.expression import mouth_open_ratio, pearson

    outputs, summary = side_by_side
    score = pd.read_csv(outputs["score"], sep="\t")
    assert list(zip(score.instrument, score.measure)) == [("mesh", "mouth_open"), ("mesh", "eye_open"),
                                                          ("dlib", "mouth_open"), ("dlib", "eye_open")]
    n = len(read_track(kit["track"])["kept"])
    assert (score.frames == n).all() and (score.kept_frames == summary["kept"]).all()
    assert (score.scored_frames <= score.kept_frames).all()
    np.testing.assert_allclose(score.scored_share, score.scored_frames / score.kept_frames)
    series = pd.read_csv(outputs["series"], sep="\t")
    # The kit's 10-step model draws blobs: the face mesh finds no face on them and says so -- a
    # scored share of 0, not an r over a silent subset -- while dlib (no detector) scores all.
    kept = series.kept == 1
    assert series.mesh_driver_mouth[kept].notna().all() and series.mesh_baseline_mouth[kept].notna().all()
    assert (score.scored_frames == series[kept][["mesh_actor_mouth", "dlib_actor_mouth"]].notna().sum().repeat(2).values).all()
    dl = score[score.instrument == "dlib"]
    assert (dl.scored_share == 1).all()
    for col in ("pearson", "shuffled_pearson", "circular_p95", "shuffled_p95", "baseline_pearson"):
        assert dl[col].between(-1, 1).all(), col
    assert len(series) == n and series.kept.sum() == summary["kept"]
    assert series.loc[kit["dropped"], ["mesh_driver_mouth", "dlib_driver_mouth", "mesh_actor_mouth"]].isna().all().all()
    rows = score.set_index(["instrument", "measure"])
    for instrument in ("mesh", "dlib"):
        row = rows.loc[(instrument, "mouth_open")]
        assert pearson(series[f"{instrument}_driver_mouth"], series[f"{instrument}_actor_mouth"]) == pytest.approx(
            row.pearson, abs=1e-5, nan_ok=True)
        assert pearson(series[f"{instrument}_driver_mouth"], series[f"{instrument}_baseline_mouth"]) == pytest.approx(
            row.baseline_pearson, abs=1e-5)
        both = series[f"{instrument}_actor_mouth"].notna() & series[f"{instrument}_baseline_mouth"].notna()
        if both.sum() >= 2:  # the amplitude: the render's s.d. over the baseline's, on the same frames
            assert series[f"{instrument}_actor_mouth"][both].std(ddof=0) / series[f"{instrument}_baseline_mouth"][both].std(
                ddof=0) == pytest.approx(row.amplitude_ratio, rel=1e-4)
    # The dlib driver series is the track's own landmarks; the instrument measures the driver's
    # crops the way it measures the actor's faces, and on real faces it agrees with the track.
    track = read_track(kit["track"])
    np.testing.assert_allclose(series.dlib_driver_mouth[track["kept"]], mouth_open_ratio(track["landmarks"][track["kept"]]),
                               rtol=1e-4)
    assert rows.loc[("dlib", "mouth_open")].instrument_pearson > 0.7
    # The two instruments agree on the driver's own crops (the mesh reads the 64-px crop).
    assert pearson(series.mesh_driver_mouth, series.dlib_driver_mouth) > 0.7
    # Identity: every third kept frame's render gets a descriptor (render.score.identity_every).
    assert score.identity_frames.iloc[0] == series.identity_actor_distance.notna().sum() >= summary["kept"] // 3
    assert 0 <= score.identity_kept.iloc[0] <= 1
    # The retrieval baseline of a person by their own training faces copies their own mouth.
    assert rows.loc[("mesh", "mouth_open")].baseline_pearson > 0.7
    for key in ("plot", "sheet"):
        image = cv2.imread(outputs[key])
        assert image is not None and image.std() > 10


def test_retarget_drive_renders_the_maps_codes(kit, tmp_path, tmp_path_factory):
    """A stranger's driving: the actor panel is decode(map(landmarks relative to the driver's
    neutral)), the landmarks being the track's dlib points with face-api's mouth (the default)."""
    from facevae.driving import driver_landmarks, load_retarget, retarget_track

    weights = faceapi_weights(tmp_path_factory)
    cfg = RenderConfig(panel_size=96, drive="retarget", retarget={"neutral": [0.0, 1.0]})
    outputs = {"video": str(tmp_path / "r.mp4")}
    summary = render_reenactment(kit["track"], kit["clip"], kit["model"], outputs, cfg, "actor", "driver", "clip",
                                 meta_path=kit["meta"], retarget_path=kit["retarget"], faceapi_model=weights,
                                 score=False, progress=False)
    assert summary["drive"]["retarget"]["mouth_points"] == "faceapi"
    with DriverTrack(kit["track"]) as track:
        points = driver_landmarks(track, "faceapi", kit["clip"], weights)
        # Only the mouth's 20 points differ from the track's, and they do differ.
        dlib = np.asarray(track.landmarks[:])[track.kept]
        assert np.array_equal(points[:, :48], dlib[:, :48]) and np.abs(points[:, 48:] - dlib[:, 48:]).mean() > 0.1
        z, info = retarget_track(load_retarget(kit["retarget"]), track, [0.0, 1.0], landmarks=points)
        kept = np.flatnonzero(track.kept)
        assert info["neutral_frames"] == int((track.time[track.kept] < 1.0).sum()) > 10
    model = modelio.load_model(kit["model"])
    sample = kept[[0, 15, 40, -1]]
    faces = modelio.decode(model, z[sample])
    frames = list(read_frames(outputs["video"]))
    lay = Layout.for_reenactment(cfg, "actor", "driver", "clip")
    for face, i in zip(faces, sample):
        mean, p99 = _diff(lay.crop(frames[i], "actor"), resize_face(face, 96))
        assert mean < COMPRESSION_MEAN and p99 < COMPRESSION_P99, (int(i), mean, p99)
    # Without the map the retarget drive is one clear error, and no video is left.
    with pytest.raises(FacevaeError, match="fit_retarget"):
        render_reenactment(kit["track"], kit["clip"], kit["model"], {"video": str(tmp_path / "none.mp4")}, cfg,
                           "actor", "driver", "clip", score=False, progress=False)
    assert not (tmp_path / "none.mp4").exists()
    # A calibration window with no face in it names the key.
    with pytest.raises(FacevaeError, match="render.retarget.neutral"):
        render_reenactment(kit["track"], kit["clip"], kit["model"], {"video": str(tmp_path / "none.mp4")},
                           RenderConfig(drive="retarget", retarget={"neutral": [50, 60]}), "actor", "driver", "clip",
                           retarget_path=kit["retarget"], faceapi_model=weights, score=False, progress=False)
    assert not (tmp_path / "none.mp4").exists()


def test_auto_drive_blends_encoder_and_map_for_the_actors_own_face(kit, tmp_path, tmp_path_factory):
    """render.drive auto (the default): the kit's driver is the actor's own clip, so its faces'
    mean descriptor sits within same_person_distance of the actor's and the panel is the decode of
    the blend of the encoder's z and the retargeted z (render.self_blend), the retargeting's neutral
    transfer the one whose z comes nearest the encoder's (render.self_transfer encoder; a stranger is
    retargeted: tests/test_render_pipeline.py, tpsmm driving d6)."""
    from facevae.driving import (TRANSFER_GRID, blend_latents, driver_landmarks, encode_track, load_retarget, resolve_drive,
                                 retarget_track)

    assert RenderConfig().drive == "auto" and RenderConfig().self_blend == 0.5
    assert resolve_drive("auto", 0.2, 0.35) == "blend" and resolve_drive("auto", 0.5, 0.35) == "retarget"
    assert resolve_drive("auto", 0.2, 0.35, self_blend=0.0) == "encoder"
    assert resolve_drive("retarget", 0.0, 0.35) == "retarget" and resolve_drive("auto", None, 0.35) == "retarget"
    weights = faceapi_weights(tmp_path_factory)
    outputs = {"video": str(tmp_path / "auto.mp4")}
    cfg = RenderConfig(panel_size=96)
    summary = render_reenactment(kit["track"], kit["clip"], kit["model"], outputs, cfg, "actor",
                                 "driver", "clip", meta_path=kit["meta"], faces_path=kit["faces"],
                                 retarget_path=kit["retarget"], faceapi_model=weights, score=False, progress=False)
    drive = summary["drive"]
    assert drive["method"] == "blend" and drive["identity_distance"] < 0.35 and drive["self_blend"] == 0.5, drive
    assert drive["self_transfer"] == "encoder" and drive["retarget"]["transfer"] in TRANSFER_GRID, drive
    model = modelio.load_model(kit["model"])
    with DriverTrack(kit["track"]) as track:
        z_encoder = encode_track(modelio.Codec(model), track)
        z_map, used = retarget_track(load_retarget(kit["retarget"]), track, nearest_to=z_encoder,
                                     landmarks=driver_landmarks(track, "faceapi", kit["clip"], weights))
        kept = np.flatnonzero(track.kept)
    assert used["transfer"] == drive["retarget"]["transfer"]
    z = blend_latents(z_encoder, z_map, 0.5)
    faces = modelio.decode(model, z[kept[[0, 30, -1]]])
    frames = list(read_frames(outputs["video"]))
    lay = Layout.for_reenactment(cfg, "actor", "driver", "clip")
    for face, i in zip(faces, kept[[0, 30, -1]]):
        mean, p99 = _diff(lay.crop(frames[i], "actor"), resize_face(face, 96))
        assert mean < COMPRESSION_MEAN and p99 < COMPRESSION_P99, (int(i), mean, p99)
    with pytest.raises(FacevaeError, match=r"render.self_blend must be in \[0, 1\]"):
        RenderConfig(self_blend=1.5)
    with pytest.raises(FacevaeError, match=r"render.self_transfer must be encoder or a number in \[0, 1\]"):
        RenderConfig(self_transfer="video")


def test_grid_and_paste_back(kit, tmp_path):
    cfg = RenderConfig(layout="grid", panel_size=96, paste_back=True, missing="blank", smooth=3, border_color=(40, 40, 40),
                       drive="retarget", retarget={"mouth_points": "dlib"})  # the layout, not the landmarks, is tested
    outputs = {"video": str(tmp_path / "g.mp4"), "paste": str(tmp_path / "g.paste.mp4")}
    render_reenactment(kit["track"], kit["clip"], kit["model"], outputs, cfg, "actor", "driver", "clip",
                       meta_path=kit["meta"], retarget_path=kit["retarget"], score=False, progress=False)
    track = DriverTrack(kit["track"])
    n = track.n
    for key in ("video", "paste"):
        info = probe(outputs[key])
        assert info.frame_count == n and info.has_audio
    info = probe(outputs["paste"])
    assert (info.width, info.height) == (kit["info"].width, kit["info"].height)
    driver = list(read_frames(kit["clip"]))
    pasted = list(read_frames(outputs["paste"]))
    paster = Paster(track.crop_size, feather=cfg.feather)
    changed = 0
    for i in range(0, n, 7):
        alpha = paster.alpha(track.transforms[i], driver[i].shape) if track.kept[i] else np.zeros(driver[i].shape[:2])
        # Compare beyond a 4-px margin: 4:2:0 chroma and the codec's blocks bleed across the edge.
        outside = cv2.dilate((alpha > 0).astype(np.uint8), np.ones((9, 9), np.uint8)) == 0
        mean, p99 = _diff(pasted[i][outside], driver[i][outside])
        assert mean < COMPRESSION_MEAN and p99 < COMPRESSION_P99, (i, mean, p99)
        if track.kept[i]:
            changed += _diff(pasted[i][alpha > 0.5], driver[i][alpha > 0.5])[0] > 2 * COMPRESSION_MEAN
    assert changed >= 3  # inside the mask it is the actor's face, not the driver's
    # Blank policy: the dropped frames show border-coloured panels in the grid.
    frames = list(read_frames(outputs["video"]))
    lay = Layout.for_reenactment(cfg, "actor", "driver", "clip")
    for i in kit["dropped"]:
        assert _diff(lay.crop(frames[i], "actor"), np.full((96, 96, 3), 40, np.uint8))[0] < 3
    track.close()


def test_missing_track_is_one_clear_error(kit, tmp_path):
    with pytest.raises(FacevaeError, match="nothing.h5"):
        render_reenactment(tmp_path / "nothing.h5", kit["clip"], kit["model"], {"video": str(tmp_path / "x.mp4")},
                           RenderConfig(), "a", "d", "v", progress=False)
    assert not list(tmp_path.iterdir())


def test_track_without_a_kept_face_is_an_error_not_a_blank_video(kit, tmp_path):
    """A driver video with no usable face stops with the counts by reason and writes nothing
    (it used to render a blank "reenactment" and an empty score table)."""
    track = make_track(kit["clip"], tmp_path / "noface.h5", count=12, drop=set(range(12)))
    out = tmp_path / "out"
    out.mkdir()
    outputs = {"video": str(out / "v.mp4"), "score": str(out / "v.tsv"), "sheet": str(out / "v.sheet.png")}
    with pytest.raises(FacevaeError, match=r"driver 'd': no usable face in its video v: 12 frames, rejected by reason \{\"no face\": 12\}"):
        render_reenactment(track, kit["clip"], kit["model"], outputs, RenderConfig(), "a", "d", "v",
                           faces_path=kit["faces"], retarget_path=kit["retarget"], progress=False)
    assert not list(out.iterdir())


def test_output_metadata_names_the_render(side_by_side):
    outputs, _ = side_by_side
    report = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", outputs["video"], "-f", "ffmetadata", "-"],
                            capture_output=True, text=True).stdout
    line = next(line for line in report.splitlines() if line.startswith("comment="))
    meta = json.loads(line.removeprefix("comment=").replace("\\", ""))
    assert meta["actor"] == "actor" and meta["layout"] == "side_by_side"


def test_workflow_plans_cross_reenactment_and_edits(media, tmp_path):
    """Dry run: an actor drives another actor (its own tracks), render.edit pulls in the attribute
    vectors, paste_back adds the face-swap video; every reenact job gets what it needs."""
    import yaml

    from support.workflow import run_snakemake

    celeba = media("celeba/list_attr_celeba.txt").parent
    config = {
        "actors": {"a": {"videos": {"v5": {"path": str(media("videos/lp_d5.mp4"))}}},
                   "b": {"videos": {"v7": {"path": str(media("videos/lp_d7.mp4"))}}}},
        "reenact": [{"actor": "a", "driver": "b"}],
        "celeba": {"images": str(celeba / "img_align_celeba_89x109"), "attributes": str(celeba / "list_attr_celeba.txt")},
        "render": {"edit": {"Smiling": 1.5}, "paste_back": True},
    }
    result = run_snakemake(tmp_path, config, "--dry-run", "--quiet", "all", "--detailed-summary")
    out = result.output
    for path in ("results/reenact/a/b/v7.mp4", "results/reenact/a/b/v7.paste.mp4", "results/reenact/a/b/v7.tsv",
                 "results/explore/a/walk.mp4", "results/explore/b/samples.png"):
        assert path in out, path
    assert "results/reenact/b/" not in out  # only the configured pair
    # The reenact job's inputs, as Snakemake planned them.
    plan = run_snakemake(tmp_path, config, "--dry-run", "--forceall", "results/reenact/a/b/v7.mp4").output
    block = plan[plan.index("rule reenact:"):]
    inputs = block[block.index("input:"):].split("\n", 1)[0]
    for path in ("results/tracks/b/v7.h5", "results/videos/b/v7.mp4", "results/videos/b/v7.json",
                 "results/models/a/model.pt", "results/attributes/a.h5", "results/faces/a.h5",
                 "results/models/a/retarget.pt"):
        assert path in inputs, (path, inputs)
    # Edits without the celeba section: one error naming the key, before any job.
    del config["celeba"]
    bad = run_snakemake(tmp_path / "bad", config, "--dry-run", check=False)
    assert bad.returncode != 0 and "render.edit.Smiling" in bad.output and "celeba" in bad.output
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["reenact"][0]["driver"] == "b"
