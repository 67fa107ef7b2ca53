"""The face_alignment backend, for real: face-alignment's BlazeFace detector with its real weights
(shared/data/weights/blazeface) and a randomly initialised FAN saved under the exact file name
face-alignment loads from the torch hub cache (its 2DFAN4 weights cannot be downloaded here)."""

from __future__ import annotations

import subprocess

import cv2
import numpy as np
import pytest

from facevae import FacevaeError

pytestmark = pytest.mark.media

torch = pytest.importorskip("torch")
pytest.importorskip("face_alignment")


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A temporary torch hub folder holding a random FAN under face-alignment's file name.

    (FAN is a 4-stack hourglass: one forward pass takes seconds on a CPU, so the tests make few.)"""
    from face_alignment.api import models_urls
    from face_alignment.models import FAN

    tmp_path = tmp_path_factory.mktemp("torch")
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    fan_file = checkpoints / models_urls["2DFAN-4"].rsplit("/", 1)[-1]
    assert fan_file.name == "2DFAN4-11f355bf06.pth.tar"
    torch.manual_seed(0)
    torch.save(FAN(4).state_dict(), fan_file)
    try:
        yield fan_file
    finally:
        torch.hub.set_dir(previous)


@pytest.fixture(scope="module")
def blazeface(media):
    folder = media("weights/blazeface/blazeface.pth").parent
    return {"detector": "blazeface", "detector_path": str(folder / "blazeface.pth"), "anchors_path": str(folder / "anchors.npy")}


def test_face_alignment_adapter_and_auto(hub, blazeface, media):
    from facevae.faces.aligners import aligner_kwargs, make_aligner

    # auto picks face_alignment because its weights are now on disk (config keys as in config.yaml)
    kw = aligner_kwargs({"aligner": "auto", "device": "cpu", "face_alignment": blazeface})
    aligner = make_aligner(**kw)
    assert aligner.name == "face_alignment"

    image = cv2.imread(str(media("images/aflw-test.jpg")))[:, :, ::-1].copy()
    faces = aligner.detect(image)
    assert len(faces) == 1  # BlazeFace (real weights) finds the one face
    face = faces[0]
    x0, y0, x1, y1 = face.box
    assert 0 <= x0 < x1 <= image.shape[1] and 0 <= y0 < y1 <= image.shape[0] and face.score > 0.5
    # landmarks in the shared format: 68 points, float32, image pixels, inside FAN's crop of the box
    assert face.landmarks.shape == (68, 2) and face.landmarks.dtype == np.float32
    half = (x1 - x0 + y1 - y0) / 195 * 100 * 1.05  # face-alignment crops 200 * scale px around the box
    centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    assert np.all(np.abs(face.landmarks - centre) <= half + (y1 - y0) * 0.12)


def test_tracks_record_the_backend_that_ran(hub, blazeface, media, tmp_path):
    """A 1-frame clip through the tracker with face_alignment: the file says face_alignment."""
    from facevae.faces.io import read_track
    from facevae.faces.track import extract_track
    from facevae.video import ffmpeg_exe

    clip = tmp_path / "one.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(media("videos/tpsmm_driving.mp4")), "-frames:v", "1",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", str(clip)], check=True)
    out = tmp_path / "t.h5"
    extract_track(clip, out, person="p", name="one", role="driver", progress=False,
                  faces_cfg={"aligner": "auto", "face_alignment": blazeface})
    track = read_track(out)
    assert track["attrs"]["aligner"] == "face_alignment"
    assert len(track["frame"]) == 1 and track["kept"].all()
    assert np.isfinite(track["landmarks"]).all() and track["crops"].any()


def test_missing_fan_file_error_and_auto_fallback(hub, blazeface):
    """Without the FAN file: one clear error naming the file and where it goes; auto falls back."""
    from facevae.faces.aligners import make_aligner

    away = hub.with_name("moved-away")
    hub.rename(away)
    try:
        with pytest.raises(FacevaeError) as err:
            make_aligner("face_alignment", **blazeface)
        message = str(err.value)
        assert "2DFAN4-11f355bf06.pth.tar" in message and str(hub.parent) in message and "faces.aligner" in message
        assert make_aligner("auto", **blazeface).name == "dlib"
    finally:
        away.rename(hub)
