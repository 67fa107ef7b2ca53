"""Latent-space exploration: walk, interpolation, samples -- paths, videos, reproducibility."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from facevae import FacevaeError, modelio
from facevae.compose import Layout, resize_face
from facevae.explore import interpolate_latents, pick_faces, render_explore, walk_latents
from facevae.faces.align import template_landmarks
from facevae.faces.io import read_track, write_faces
from facevae.video import ffmpeg_exe, probe, read_frames
from support.render import render_kit


def test_walk_passes_through_its_anchors_in_straight_steps():
    path, anchors = walk_latents(6, points=4, steps=5, seed=3)
    assert path.shape == (16, 6) and anchors.shape == (4, 6)
    np.testing.assert_allclose(path[::5], anchors, atol=1e-6)
    np.testing.assert_allclose(path[1] - path[0], (anchors[1] - anchors[0]) / 5, atol=1e-6)
    again, _ = walk_latents(6, points=4, steps=5, seed=3)
    assert (again == path).all() and not np.allclose(walk_latents(6, 4, 5, seed=4)[0], path)
    # N(0, I): many anchors have unit variance.
    _, many = walk_latents(8, points=4000, steps=1, seed=0)
    assert abs(many.std() - 1) < 0.03 and abs(many.mean()) < 0.03
    with pytest.raises(FacevaeError):
        walk_latents(6, points=1, steps=5)


def test_interpolation_goes_there_and_back():
    a, b = np.zeros(3), np.array([2.0, 4.0, -6.0])
    codes, w = interpolate_latents(a, b, 5)
    assert len(codes) == 8
    np.testing.assert_allclose(codes[0], a)
    np.testing.assert_allclose(codes[4], b)
    np.testing.assert_allclose(codes[2], (a + b) / 2)
    np.testing.assert_allclose(w, [0, 0.25, 0.5, 0.75, 1, 0.75, 0.5, 0.25])


def test_pick_faces_by_mouth_opening():
    tpl = template_landmarks(64)
    lms = np.stack([tpl.copy() for _ in range(5)])
    for k, gap in enumerate([2.0, 0.0, 6.0, 1.0, 3.0]):
        lms[k, [65, 66, 67], 1] += gap
    assert pick_faces(lms, 5) == (1, 2)
    assert pick_faces(None, 5) == (0, 4)
    assert pick_faces(np.full((5, 68, 2), np.nan), 5) == (0, 4)


@pytest.mark.media
def test_render_explore(media, tmp_path_factory, tmp_path):
    kit = render_kit(media, tmp_path_factory)
    track = read_track(kit["track"])
    kept = track["kept"]
    faces_path = tmp_path / "faces.h5"
    write_faces(faces_path, track["crops"][kept], {"aligner": "dlib"}, landmarks=track["landmarks"][kept])
    cfg = {"panel_size": 128, "fps": 10, "seed": 5, "walk": {"points": 3, "steps": 4},
           "interpolate": {"faces": None, "steps": 6}, "samples": {"rows": 2, "cols": 3}}
    outputs = {"walk": tmp_path / "walk.mp4", "interpolate": tmp_path / "interpolate.mp4", "samples": tmp_path / "samples.png"}
    summary = render_explore(kit["model"], faces_path, outputs, cfg, actor="me", progress=False)
    assert probe(outputs["walk"]).frame_count == 9 and probe(outputs["walk"]).fps == 10
    assert probe(outputs["interpolate"]).frame_count == 10
    model = modelio.load_model(kit["model"])
    # The walk's first frame is the first anchor decoded.
    path, _ = walk_latents(model.config.latent_dim, 3, 4, seed=5)
    # (128-px panels: per-pixel colour noise of a barely trained decoder does not survive 4:2:0
    # chroma at 64 px, smooth upscaled faces do.)
    lay = Layout([["walk"]], 128, 8, (0, 0, 0), {"walk": "x"})
    first = next(read_frames(outputs["walk"]))
    assert np.abs(lay.crop(first, "walk").astype(int) - resize_face(modelio.decode(model, path[:1])[0], 128)).mean() < 4
    # Interpolation: the chosen faces are the most closed and most open mouths; frame 0 shows face a
    # beside its reconstruction, frame steps-1 face b's.
    a, b = summary["interpolate_faces"]
    assert (a, b) == pick_faces(track["landmarks"][kept], int(kept.sum()))
    mu = modelio.encode(model, track["crops"][kept][[a, b]])
    recon = modelio.decode(model, mu)
    frames = list(read_frames(outputs["interpolate"]))
    lay3 = Layout([["a", "mix", "b"]], 128, 8, (0, 0, 0), {"a": "x", "mix": "x", "b": "x"})
    for frame_index, face in ((0, recon[0]), (5, recon[1])):
        assert np.abs(lay3.crop(frames[frame_index], "mix").astype(int) - resize_face(face, 128)).mean() < 4
    assert np.abs(lay3.crop(frames[3], "a").astype(int) - resize_face(track["crops"][kept][a], 128)).mean() < 4
    # Samples: a 2 x 3 grid with the seed in the PNG text, identical when re-made.
    import matplotlib.image as mpimg

    grid = mpimg.imread(outputs["samples"])
    assert grid.shape[:2] == (2 * 64 + 3 * 2, 3 * 64 + 4 * 2)
    again = tmp_path / "again.png"
    render_explore(kit["model"], faces_path, {"samples": again}, cfg, actor="me", progress=False)
    assert (mpimg.imread(again) == grid).all()
    assert b'"seed": 5' in outputs["samples"].read_bytes()
    report = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(outputs["walk"]), "-f", "ffmetadata", "-"],
                            capture_output=True, text=True).stdout
    comment = next(line for line in report.splitlines() if line.startswith("comment="))
    assert json.loads(comment.removeprefix("comment=").replace("\\", ""))["seed"] == 5
    # A face row past the end is one clear error naming the key.
    with pytest.raises(FacevaeError, match="explore.interpolate.faces.1"):
        render_explore(kit["model"], faces_path, {"interpolate": tmp_path / "x.mp4"},
                       {**cfg, "interpolate": {"faces": [0, 10_000], "steps": 4}}, actor="me", progress=False)
    assert not (tmp_path / "x.mp4").exists()
