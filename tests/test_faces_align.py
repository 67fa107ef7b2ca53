"""Aligners, alignment geometry and crop measurements on real images (dlib backend)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facevae import FacevaeError
from facevae.faces import io as fio
from facevae.faces.align import AlignConfig, align_face, alignment_matrix, similarity_scale, transform_points
from facevae.faces.aligners import Face, make_aligner
from facevae.faces.measure import crop_landmarks, eye_errors

pytestmark = pytest.mark.media


def rgb(path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, path
    return np.ascontiguousarray(img[:, :, ::-1])


@pytest.fixture(scope="module")
def dlib_aligner():
    return make_aligner("dlib")


def test_dog_has_no_face(dlib_aligner, media):
    assert dlib_aligner.detect(rgb(media("images/liveportrait_s33.jpg"))) == []


def test_a_reference_photo_of_several_people_is_one_clear_error(dlib_aligner, media):
    """Six faces of similar size: picking the largest would reject every frame as "not this
    person" without saying why; the error names the key and the photo."""
    from facevae import FacevaeError
    from facevae.faces.identity import reference_descriptor

    photo = media("images/insightface_t1.jpg")
    with pytest.raises(FacevaeError, match=r"actors\.a\.reference: the reference photo .*insightface_t1.jpg shows 6 faces"):
        reference_descriptor(photo, dlib_aligner, key="actors.a.reference")
    assert reference_descriptor(media("images/fr_lin-manuel-miranda.png"), dlib_aligner).shape == (128,)


def test_group_photo_has_six_faces(dlib_aligner, media):
    faces = dlib_aligner.detect(rgb(media("images/insightface_t1.jpg")))
    assert len(faces) == 6
    for face in faces:
        assert isinstance(face, Face)
        assert face.landmarks.shape == (68, 2) and face.landmarks.dtype == np.float32
        x0, y0, x1, y1 = face.box
        assert x1 > x0 and y1 > y0
        # the nose tip lies inside the detector's box
        assert x0 <= face.landmarks[30, 0] <= x1 and y0 <= face.landmarks[30, 1] <= y1
    # six different people: no two boxes overlap
    centres = np.array([((f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2) for f in faces])
    gaps = np.linalg.norm(centres[:, None] - centres[None], axis=-1) + np.eye(6) * 1e9
    assert gaps.min() > 40


def test_align_face_contract(dlib_aligner, media):
    image = rgb(media("images/tpsmm_source.png"))
    (face,) = dlib_aligner.detect(image)
    cfg = AlignConfig.from_config({"size": 64})
    crop, lm, m = align_face(image, face.landmarks, cfg)
    assert crop.shape == (64, 64, 3) and crop.dtype == np.uint8
    assert lm.shape == (68, 2) and lm.dtype == np.float32
    assert m.shape == (2, 3) and m.dtype == np.float64
    np.testing.assert_allclose(transform_points(m, face.landmarks), lm, atol=1e-3)
    # the crop's eyes sit on the template's, measured again independently on the crop
    remeasured = crop_landmarks(crop[None], cfg)
    assert remeasured.shape == (1, 68, 2) and remeasured.dtype == np.float32
    assert eye_errors(remeasured, cfg)[0] < 2.0


def test_align_config_from_config_and_geometry():
    cfg = AlignConfig.from_config({"size": 128, "template_scale": 0.8, "template_offset_y": 0.05, "align_points": "all"})
    assert (cfg.size, cfg.template_scale, cfg.template_offset_y, cfg.points) == (128, 0.8, 0.05, "all")
    assert AlignConfig.from_attrs(cfg.as_attrs()) == cfg
    tpl = cfg.template()
    # template_scale zooms about the centre; the offset moves the face down by that fraction of size
    base = AlignConfig(size=128).template()
    np.testing.assert_allclose(tpl - 64, (base - 64) * 0.8 + [0, 0.05 * 128], atol=1e-9)
    # a known similarity is recovered exactly
    angle, scale = np.radians(20), 2.5
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    frame_pts = tpl @ rot.T + [300, 200]
    m = alignment_matrix(frame_pts, cfg)
    np.testing.assert_allclose(transform_points(m, frame_pts), tpl, atol=1e-6)
    assert similarity_scale(m) == pytest.approx(1 / scale)
    with pytest.raises(FacevaeError, match="size"):
        AlignConfig(size=4)
    with pytest.raises(FacevaeError, match="points"):
        AlignConfig.from_config({"align_points": "ears"})


def test_upsample_finds_small_faces(media):
    """CelebA-sized images (faces ~45 px) need the dlib backend's upsample option."""
    image = rgb(media("images/tpsmm_source.png"))
    small = cv2.resize(image, (90, 90), interpolation=cv2.INTER_AREA)
    assert make_aligner("dlib").detect(small) == []
    (face,) = make_aligner("dlib", upsample=2).detect(small)
    assert face.landmarks.max() < 90 and face.landmarks.min() > 0


def test_track_and_faces_files_round_trip(tmp_path):
    n, cfg = 5, AlignConfig()
    rows = {
        "crops": np.random.default_rng(0).integers(0, 255, (n, 64, 64, 3), dtype=np.uint8),
        "landmarks": np.full((n, 68, 2), np.nan, np.float32),
        "transforms": np.full((n, 2, 3), np.nan),
        "time": np.arange(n) / 25.0,
        "frame": np.arange(n, dtype=np.int64),
        "kept": np.array([True, False, True, True, False]),
        "reason": ["", "no face", "", "", "blur"],
    }
    attrs = {"person": "p", "video": "v", "role": "actor", "fps": 25.0, "width": 10, "height": 10,
             "frame_count": n, "aligner": "dlib", **cfg.as_attrs()}
    path = fio.write_track(tmp_path / "t.h5", rows, attrs)
    back = fio.read_track(path)
    np.testing.assert_array_equal(back["crops"], rows["crops"])
    assert list(back["reason"]) == rows["reason"]
    assert back["attrs"]["person"] == "p" and back["attrs"]["fps"] == 25.0 and back["attrs"]["size"] == 64
    assert not list(tmp_path.glob(".*tmp"))
    assert "crops" not in fio.read_track(path, crops=False)
    index = [4, 0, 4, 2]  # any order, repeats, read in chunks of 2 rows
    np.testing.assert_array_equal(fio.read_rows(path, index, chunk=2), rows["crops"][index])

    faces = fio.write_faces(tmp_path / "f.h5", rows["crops"][:3], {"aligner": "dlib"}, source=["v"] * 3,
                            frame=np.arange(3), time=np.zeros(3), landmarks=np.zeros((3, 68, 2), np.float32))
    got = fio.read_faces(faces)
    assert got["data"].shape == (3, 64, 64, 3) and list(got["source"]) == ["v"] * 3
    assert fio.check_blog_dataset(faces) == {"count": 3, "size": 64}
    with pytest.raises(FacevaeError, match="empty"):
        fio.write_faces(tmp_path / "e.h5", np.zeros((0, 64, 64, 3), np.uint8), {})
    with pytest.raises(FacevaeError, match="not a tracks file"):
        fio.read_track(faces)
