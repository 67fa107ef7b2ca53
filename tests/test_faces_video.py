"""Faces on real clips: the session pipeline's outputs (lp_d6, lp_d10, tpsmm), the Hamilton clip
against hand labels, and a clip without any face through a real Snakemake run."""

from __future__ import annotations

import json
import subprocess

import cv2
import h5py
import numpy as np
import pandas as pd
import pytest

from support.media import REPO
from support.workflow import run_snakemake
from support.timeouts import hang_guard
from facevae.faces.align import AlignConfig
from facevae.faces.dataset import sample_bins
from facevae.faces.io import read_faces, read_track
from facevae.faces.measure import crop_landmarks, eye_errors
from facevae.faces.track import extract_track
from facevae.video import ffmpeg_exe

pytestmark = pytest.mark.media


# --- the session pipeline (default config: actors d6, d10; driver tpsmm) -------------------------


@pytest.fixture(scope="module")
def results(pipeline):
    return pipeline["workdir"] / "results"


@pytest.fixture(scope="module")
def lp_d6(media, tmp_path_factory):
    """The whole of lp_d6.mp4 through the tracker and the training-set assembly (default filters,
    the pipeline's 10 faces/s sampling). The session pipeline trains d6 on part of the clip only."""
    from facevae.config import validate
    from facevae.faces.dataset import assemble

    clip = media("videos/lp_d6.mp4")
    faces_cfg = validate({"actors": {"d6": {"videos": {"d6": {"path": str(clip)}}}}, "faces": {"aligner": "dlib", "fps": 10}})["faces"]
    out = tmp_path_factory.mktemp("lp_d6")
    stale = out / ".d6.k1ll3d.blocks"  # what a SIGKILLed tracker leaves (its finally never ran)
    stale.mkdir()
    (stale / "w0-0.npz").write_bytes(b"partial")
    extract_track(clip, out / "d6.h5", person="d6", name="d6", role="actor", faces_cfg=faces_cfg, workers=2, progress=False)
    report = {k: out / f"{k}.{ext}" for k, ext in (("table", "tsv"), ("kept", "png"), ("rejected", "png"), ("counts", "json"))}
    assemble({"d6": out / "d6.h5"}, person="d6", role="actor", faces_cfg=faces_cfg, out_faces=out / "faces.h5",
             out_table=report["table"], out_kept=report["kept"], out_rejected=report["rejected"], out_counts=report["counts"])
    return out


def test_a_killed_runs_block_folder_is_removed(lp_d6):
    """The fixture's tracker ran over a SIGKILLed run's leftover .blocks folder: gone now."""
    assert not list(lp_d6.glob(".d6.*.blocks"))


def test_lp_d6_keep_rate_and_eye_centres(lp_d6):
    """Acceptance: a face kept on >= 95% of sampled frames; >= 95% of kept faces have both eye
    centres, re-measured on the aligned crop (predictor on the crop upscaled 4x, template box),
    within 2 px of the template's."""
    track = read_track(lp_d6 / "d6.h5")
    faces = read_faces(lp_d6 / "faces.h5")
    assert len(track["frame"]) == 1008
    slots = np.unique(sample_bins(track["time"], float(faces["attrs"]["fps_sampling"])))
    keep_rate = len(faces["data"]) / len(slots)
    print(f"lp_d6: tracks kept {track['kept'].mean():.3f} of every frame, {keep_rate:.3f} of {len(slots)} sampled slots")
    assert track["kept"].mean() >= 0.95 and keep_rate >= 0.95
    cfg = AlignConfig.from_attrs(faces["attrs"])
    errors = eye_errors(crop_landmarks(faces["data"], cfg, upscale=4), cfg)
    print(f"lp_d6: eye centres within 2 px on {(errors <= 2).mean():.3f} of kept faces (median {np.median(errors):.2f} px)")
    assert (errors <= 2.0).mean() >= 0.95
    # every frame's kept crop too (not only the sampled ones)
    all_errors = eye_errors(crop_landmarks(track["crops"][track["kept"]][::3], cfg), cfg)
    assert (all_errors <= 2.0).mean() >= 0.95


def test_tracks_contract_one_row_per_frame(results):
    for person, video in (("d6", "d6"), ("d10", "d10"), ("tpsmm", "driving")):
        track = read_track(results / f"tracks/{person}/{video}.h5")
        meta = json.loads((results / f"videos/{person}/{video}.json").read_text())
        n = meta["frame_count"]
        assert track["frame"].tolist() == list(range(n))
        assert track["crops"].shape == (n, 64, 64, 3) and track["crops"].dtype == np.uint8
        assert track["landmarks"].shape == (n, 68, 2) and track["landmarks"].dtype == np.float32
        assert track["transforms"].shape == (n, 2, 3) and track["transforms"].dtype == np.float64
        assert track["time"].dtype == np.float64 and track["kept"].dtype == bool
        np.testing.assert_allclose(np.diff(track["time"]), 1 / meta["fps"], rtol=1e-6)
        attrs = track["attrs"]
        assert (attrs["person"], attrs["video"], attrs["frame_count"], attrs["aligner"]) == (person, video, n, "dlib")
        assert attrs["role"] == ("driver" if person == "tpsmm" else "actor") and attrs["size"] == 64
        assert (attrs["width"], attrs["height"]) == (meta["width"], meta["height"])
        face = ~np.isnan(track["landmarks"][:, 0, 0])
        assert face.mean() > 0.95
        assert (track["reason"][track["kept"]] == "").all() and (track["reason"][~track["kept"]] != "").all()
        assert (track["reason"][~face] == "no face").all() and not track["crops"][~face].any()
        assert np.isnan(track["transforms"][~face]).all()


def test_transforms_paste_back(results):
    """crop = the frame warped by the stored crop<-frame transform (what the renderer relies on)."""
    from facevae.faces.align import warp_crop

    track = read_track(results / "tracks/tpsmm/driving.h5")
    cap = cv2.VideoCapture(str(results / "videos/tpsmm/driving.mp4"))
    checked = 0
    for index in range(60):
        ok, bgr = cap.read()
        assert ok
        if index % 20 or not track["kept"][index]:
            continue
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        again = warp_crop(rgb, track["transforms"][index], 64)
        assert np.abs(again.astype(int) - track["crops"][index].astype(int)).mean() < 1.0
        checked += 1
    assert checked >= 2


def test_actor_dataset_and_reports(results):
    for actor in ("d6", "d10"):
        faces = read_faces(results / f"faces/{actor}.h5")
        n = len(faces["data"])
        assert faces["data"].shape == (n, 64, 64, 3) and faces["data"].dtype == np.uint8 and n > 50
        assert faces["landmarks"].shape == (n, 68, 2) and set(faces["source"]) == {actor}
        assert np.all(np.diff(faces["frame"]) > 0) and faces["attrs"]["aligner"] == "dlib"
        settings = json.loads(faces["attrs"]["settings"])
        assert settings["identity_distance"] == 0.6 and faces["attrs"]["size"] == 64
        # the blog's reader: plain h5py, dataset "data"
        with h5py.File(results / f"faces/{actor}.h5", "r") as h5:
            assert h5["data"].shape == (n, 64, 64, 3)
        table = pd.read_csv(results / f"faces/{actor}/table.tsv", sep="\t", keep_default_na=False)
        track = read_track(results / f"tracks/{actor}/{actor}.h5")
        assert len(table) == len(track["frame"]) and int(table["in_dataset"].sum()) == n
        counts = json.loads((results / f"faces/{actor}/counts.json").read_text())
        assert counts["in_dataset"] == n and counts["frames"] == len(table)
        assert sum(counts["by_reason"].values()) + n == len(table)
        for sheet in ("kept", "rejected"):
            image = cv2.imread(str(results / f"faces/{actor}/{sheet}.png"))
            assert image is not None and image.shape[0] > 24
    # the driver gets a report, no training set
    assert not (results / "faces/tpsmm.h5").exists()
    counts = json.loads((results / "faces/tpsmm/counts.json").read_text())
    assert counts["role"] == "driver" and counts["in_dataset"] >= 0.95 * counts["frames"]


# --- Hamilton: identity against a reference photo, hand-labelled frames ---------------------------


def test_hamilton_singer_precision_recall(media, tmp_path):
    """Kept frames must all be frames where the singer's face is visible (labelled by eye in
    tests/data/fr_hamilton_singer_frames.tsv) and cover >= 80% of them; the exclude list drops frames."""
    labels = pd.read_csv(REPO / "tests/data/fr_hamilton_singer_frames.tsv", sep="\t")
    visible = labels["singer_visible"].to_numpy().astype(bool)
    out = tmp_path / "clip.h5"
    summary = extract_track(media("videos/fr_hamilton_clip.mp4"), out, person="lmm", name="clip", role="actor",
                            faces_cfg={"aligner": "dlib"}, reference=str(media("images/fr_lin-manuel-miranda.png")),
                            exclude=["150-152"], workers=2, progress=False)
    track = read_track(out)
    kept = track["kept"]
    assert len(kept) == len(labels) == 275
    precision, recall = visible[kept].mean(), kept[visible].mean()
    print(f"hamilton: kept {kept.sum()}, precision {precision:.3f}, recall {recall:.3f}, {summary}")
    assert precision == 1.0 and recall >= 0.8
    assert set(track["reason"][150:153]) == {"excluded"}
    # the pianist's close-up and the audience are rejected, never kept
    assert not kept[20:82].any() and not kept[211:].any()
    assert track["attrs"]["identity"] == "reference"


# --- no usable face: one clear error with the counts; a given dataset is used as is -------------


def test_clip_without_faces_fails_with_counts(tmp_path):
    clip = tmp_path / "noface.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=10:duration=2",
                    "-pix_fmt", "yuv420p", "-c:v", "libx264", str(clip)], check=True)
    blog = tmp_path / "blog.h5"
    faces = np.random.default_rng(0).integers(0, 255, (5, 64, 64, 3), dtype=np.uint8)
    with h5py.File(blog, "w") as h5:
        h5.create_dataset("data", data=faces)
    config = {
        "actors": {"empty": {"videos": {"bars": {"path": str(clip)}}}, "blog": {"dataset": str(blog)}},
        "faces": {"aligner": "dlib"},
    }
    work = tmp_path / "run"
    result = run_snakemake(work, config, "--keep-going", "results/faces/empty.h5", "results/faces/blog.h5",
                           timeout=600, check=False)
    assert result.returncode != 0
    assert "actor 'empty': no usable face in its video(s) bars: 20 frames" in result.output
    assert '{"no face": 20}' in result.output
    assert not (work / "results/faces/empty.h5").exists()
    np.testing.assert_array_equal(read_faces(work / "results/faces/blog.h5")["data"], faces)
    assert json.loads((work / "results/faces/blog/counts.json").read_text())["in_dataset"] == 5


def test_workers_survive_a_parent_that_used_opencv_threads(media, tmp_path):
    """OpenCV's thread pool does not survive fork(): the tracker must not hang when the calling
    process already ran multi-threaded OpenCV code (here: big colour conversions) before forking."""
    import subprocess
    import sys

    clip, package = media("videos/tpsmm_driving.mp4"), str(REPO / "workflow")
    code = (f"import sys; sys.path.insert(0, {package!r}); import cv2, numpy as np\n"
            "big = np.random.default_rng(0).integers(0, 255, (1080, 1920, 3), dtype=np.uint8)\n"
            "[cv2.cvtColor(big, cv2.COLOR_BGR2RGB) for _ in range(3)]\n"
            "from facevae.faces.track import extract_track\n"
            f"s = extract_track({str(clip)!r}, {str(tmp_path / 't.h5')!r}, person='p', name='v', role='driver',"
            " faces_cfg={'aligner': 'dlib'}, workers=2, progress=False)\n"
            "print(s['frames'], s['workers'])\n")
    log = tmp_path / "out.txt"
    with open(log, "w") as out:  # (with pipes instead of a file the hang is rarer, not gone)
        code_rc = subprocess.run([sys.executable, "-c", code], stdout=out, stderr=subprocess.STDOUT, timeout=hang_guard(120)).returncode
    assert code_rc == 0, log.read_text()[-2000:]
    assert log.read_text().split()[-2:] == ["169", "2"]
