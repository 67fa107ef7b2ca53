"""Faces stage logic without video: verdicts, sampling, duplicates, dataset checks, config keys, rules."""

from __future__ import annotations

import copy
import http.server
import threading

import h5py
import numpy as np
import pytest

from facevae import FacevaeError
from facevae.config import ConfigError, validate
from facevae.faces import dataset as fds
from facevae.faces import io as fio
from facevae import planning as frules
from facevae.faces.align import AlignConfig, template_landmarks
from facevae.faces.track import TrackerSettings, decide, parse_frame_list

CFG = AlignConfig()


def _frame_landmarks(shift=(100.0, 50.0), zoom=3.0):
    """A frontal face in a frame: the template scaled/shifted (so pose = 0, size known)."""
    return (template_landmarks(64) * zoom + np.array(shift)).astype(np.float32)


def _meta(faces):
    """Face records as the tracker writes them: faces = [(frame, track, descriptor, zoom, blur)]."""
    from facevae.faces.align import alignment_matrix

    out = {k: [] for k in ("frame", "track", "box", "score", "landmarks", "transform", "descriptor", "blur")}
    for frame, track, desc, zoom, blur in faces:
        lm = _frame_landmarks(zoom=zoom)
        out["frame"].append(frame)
        out["track"].append(track)
        out["box"].append(np.array([0, 0, 10, 10], np.float32))
        out["score"].append(1.0)
        out["landmarks"].append(lm)
        out["transform"].append(alignment_matrix(lm, CFG))
        out["descriptor"].append(desc)
        out["blur"].append(blur)
    return {k: np.asarray(v) for k, v in out.items()}


def _desc(value):
    d = np.zeros(128, np.float32)
    d[0] = value
    return d


NAN = np.full(128, np.nan, np.float32)


def test_decide_identity_several_faces_and_filters():
    me, other = _desc(0.0), _desc(1.0)
    faces = [
        (0, 1, me, 3.0, 500.0),  # kept
        (1, 1, NAN, 3.0, 500.0),  # same track: shares its decision
        (1, 2, other, 3.0, 500.0),  # another person in frame 1: frame 1 keeps track 1
        (2, 2, NAN, 3.0, 500.0),  # only the other person
        (3, 1, NAN, 0.3, 500.0),  # too small (0.3 * 64 px template)
        (4, 1, NAN, 3.0, 5.0),  # blurred
        (5, 3, _desc(0.01), 3.0, 500.0),  # two faces that both look like the person: ambiguous
        (5, 4, _desc(0.02), 3.0, 500.0),
    ]
    settings = TrackerSettings(min_size=40, min_blur=40)
    ref = _desc(0.0)
    rows = decide(_meta(faces), 8, settings, CFG, "actor", ref, excluded={6})
    reasons = list(rows["reason"])
    assert reasons[:8] == ["", "", "not this person", "too small", "blurred", "several faces", "no face", "no face"]
    assert list(rows["kept"][:2]) == [True, True] and not rows["kept"][2:].any()
    assert rows["n_faces"].tolist() == [1, 2, 1, 1, 1, 2, 0, 0]
    assert rows["track_id"][1] == 1  # the person's face, not the other one
    assert rows["flags"][6] == "no face,excluded"
    assert np.isnan(rows["landmarks"][6]).all() and np.isnan(rows["transforms"][6]).all()
    np.testing.assert_allclose(rows["landmarks"][0], template_landmarks(64), atol=1e-3)
    assert abs(rows["yaw"][0]) < 1 and abs(rows["pitch"][0]) < 1  # the template's own pose is 0, 0
    assert rows["face_px"][0] == pytest.approx(3.0 * 64 * 1.029, rel=0.01)

    # a driver: only no face / not this person / several faces / excluded drop a frame
    rows = decide(_meta(faces), 8, settings, CFG, "driver", ref, excluded={6})
    assert list(rows["kept"][:8]) == [True, True, False, True, True, False, False, False]
    assert rows["flags"][3] == "too small" and rows["reason"][3] == ""


def test_decide_dominant_identity_without_reference():
    me, other = _desc(0.0), _desc(1.0)
    faces = [(f, 1, me if f % 10 == 0 else NAN, 3.0, 500.0) for f in range(30)]
    faces += [(f, 2, other if f == 30 else NAN, 3.0, 500.0) for f in range(30, 35)]
    rows = decide(_meta(faces), 35, TrackerSettings(), CFG, "actor", None, excluded=set())
    assert rows["kept"][:30].all() and not rows["kept"][30:].any()
    assert set(rows["reason"][30:]) == {"not this person"}


def test_parse_frame_list():
    assert parse_frame_list([3, "10-12", 3]) == [(3, 3), (10, 12), (3, 3)]
    assert parse_frame_list(None) == []


def _track(n=10, fps=10.0):
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 255, (n, 64, 64, 3), dtype=np.uint8)
    return {
        "crops": crops, "kept": np.ones(n, bool), "blur": np.arange(n, dtype=float), "time": np.arange(n) / fps,
        "frame": np.arange(n), "reason": np.array([""] * n, dtype=object), "landmarks": np.zeros((n, 68, 2), np.float32),
    }


def test_select_sampling_takes_the_sharpest_kept_frame_per_slot():
    track = _track(10, fps=10.0)
    track["kept"][9] = False
    chosen, dup = fds.select(track, fps=2.0, duplicate=0.5)  # two slots of 5 frames in 1 s
    assert np.flatnonzero(chosen).tolist() == [4, 8]  # sharpest kept of each slot (frame 9 not kept)
    assert not dup.any()
    chosen, _ = fds.select(track, fps=None, duplicate=0.5)
    assert chosen.sum() == 9


def test_select_drops_near_duplicates():
    track = _track(6)
    track["crops"][2] = track["crops"][1]  # a repeated frame
    track["crops"][3] = np.clip(track["crops"][1].astype(int) + 1, 0, 255).astype(np.uint8)  # +1 grey level
    chosen, dup = fds.select(track, fps=None, duplicate=2.0)
    assert np.flatnonzero(dup).tolist() == [2, 3]
    _, dup = fds.select(track, fps=None, duplicate=0.0)
    assert not dup.any()


def _blog_file(path, data):
    with h5py.File(path, "w") as h5:
        if data is not None:
            h5.create_dataset("data", data=data)
        else:
            h5.create_dataset("images", data=np.zeros(3))
    return path


@pytest.mark.parametrize(
    "data, words",
    [
        (np.zeros((3, 64, 64, 3), np.float32), "must be uint8"),
        (np.zeros((3, 64, 48, 3), np.uint8), "N x S x S x 3"),
        (np.zeros((0, 64, 64, 3), np.uint8), "empty"),
        (None, "no dataset 'data'"),
    ],
)
def test_blog_dataset_checks(tmp_path, data, words):
    path = _blog_file(tmp_path / "bad.h5", data)
    with pytest.raises(FacevaeError, match=words):
        fds.fetch_dataset(str(path), tmp_path / "out.h5", actor="a", size=64)
    assert not (tmp_path / "out.h5").exists() and not list(tmp_path.glob(".out*"))


def test_blog_dataset_from_path_and_url(tmp_path):
    src = tmp_path / "serve"
    src.mkdir()
    faces = np.random.default_rng(1).integers(0, 255, (7, 64, 64, 3), dtype=np.uint8)
    _blog_file(src / "blog.h5", faces)
    (src / "junk.h5").write_bytes(b"not hdf5")

    got = fds.fetch_dataset(str(src / "blog.h5"), tmp_path / "a.h5", actor="a", size=64)
    assert got["count"] == 7
    np.testing.assert_array_equal(fio.read_faces(tmp_path / "a.h5")["data"], faces)

    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(src), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        got = fds.fetch_dataset(f"{base}/blog.h5", tmp_path / "b.h5", actor="b", size=64)
        assert got["count"] == 7 and fio.read_faces(tmp_path / "b.h5")["data"].shape == (7, 64, 64, 3)
        with pytest.raises(FacevaeError, match=r"actors\.c\.dataset: http://.*/junk.h5 is not a readable HDF5") as err:
            fds.fetch_dataset(f"{base}/junk.h5", tmp_path / "c.h5", actor="c", size=64)
        assert ".tmp" not in str(err.value)  # the user's URL, not the download's temporary name
        with pytest.raises(FacevaeError, match=r"actors\.d\.dataset: download .* failed"):
            fds.fetch_dataset(f"{base}/missing.h5", tmp_path / "d.h5", actor="d", size=64, download={"retries": 0})
        with pytest.raises(FacevaeError, match="faces.size is 128"):
            fds.fetch_dataset(f"{base}/blog.h5", tmp_path / "e.h5", actor="e", size=128)
    finally:
        server.shutdown()


def _config(**faces):
    config = {"actors": {"a": {"videos": {"v": {"url": "https://example.org/a.mp4"}}}}}
    if faces:
        config["faces"] = faces
    return config


def test_faces_config_defaults():
    config = validate(_config())
    faces = config["faces"]
    assert faces["aligner"] == "auto" and faces["size"] == 64 and faces["fps"] is None
    assert faces["filters"]["identity_distance"] == 0.6 and faces["detect"]["redetect_every"] == 15
    assert TrackerSettings.from_config(faces) == TrackerSettings()
    assert AlignConfig.from_config(faces) == AlignConfig()


@pytest.mark.parametrize(
    "faces, key, words",
    [
        ({"aligner": "openface"}, "faces.aligner", "auto, dlib or face_alignment"),
        ({"size": 4}, "faces.size", "from 8 to 1024"),
        ({"fps": 0}, "faces.fps", "positive number"),
        ({"filters": {"max_yaw": 120}}, "faces.filters.max_yaw", "0 to 90"),
        ({"filters": {"blur": 3}}, "faces.filters.blur", "unknown key"),
        ({"face_alignment": {"detector": "mtcnn"}}, "faces.face_alignment.detector", "sfd or blazeface"),
        ({"device": "gpu"}, "faces.device", "cpu, cuda"),
    ],
)
def test_faces_config_errors_name_the_key(faces, key, words):
    with pytest.raises(ConfigError) as err:
        validate(_config(**faces))
    assert err.value.key == key and words in str(err.value)


def test_person_keys_checked(tmp_path):
    config = _config()
    config["actors"]["a"]["reference"] = str(tmp_path / "nope.png")
    with pytest.raises(ConfigError, match=r"actors\.a\.reference: reference photo not found"):
        validate(copy.deepcopy(config))
    config = _config()
    config["actors"]["a"]["exclude"] = {"w": [1, "3-5"]}
    with pytest.raises(ConfigError, match=r"actors\.a\.exclude\.w: 'w' is not one of a's videos \(v\)"):
        validate(config)
    config = {"actors": {"b": {"dataset": str(tmp_path / "none.h5")}}}
    with pytest.raises(ConfigError, match=r"actors\.b\.dataset: file not found"):
        validate(config)
    validate({"actors": {"b": {"dataset": "https://example.org/faces.h5"}}})  # URLs are checked when fetched


def test_rule_helpers():
    config = validate({
        "actors": {"a": {"videos": {"v2": {"url": "https://x.org/1.mp4"}, "v1": {"url": "https://x.org/2.mp4"}}},
                   "b": {"dataset": "https://x.org/b.h5"}},
        "drivers": {"d": {"videos": {"w": {"url": "https://x.org/3.mp4"}}}},
        "faces": {"fps": 5, "filters": {"duplicate": 2, "min_size": 50}},
    })
    info = frules.faces_people(config)
    assert info["video_actors"] == ["a"] and info["dataset_actors"] == ["b"] and info["drivers"] == ["d"]
    assert info["dataset_input"] == {"b": []}  # a URL is no input file
    # tracks do not depend on the assembly-only keys (changing fps must not redo every video)
    assert "fps" not in info["track_settings"] and info["track_settings"]["filters"] == {
        k: v for k, v in config["faces"]["filters"].items() if k != "duplicate"}
    assert frules.faces_tracks(config, "a") == ["results/tracks/a/v1.h5", "results/tracks/a/v2.h5"]
    targets = frules.faces_person_targets(config)
    assert "results/faces/a.h5" in targets and "results/faces/b.h5" in targets and "results/faces/d.h5" not in targets
    assert "results/faces/d/table.tsv" in targets and "results/tracks/d/w.h5" in targets
    assert "results/faces/b/table.tsv" not in targets
    import re

    assert re.fullmatch(frules.name_pattern(["a", "b-c"]), "b-c") and not re.fullmatch(frules.name_pattern([]), "")

