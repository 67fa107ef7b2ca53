"""The actor's page (results/explore/d6/ of the session's pipeline run) in a real headless Chromium:
ONNX parity with PyTorch, the explorer's pointer semantics, the JavaScript alignment against
Python's, video-file mode against the pipeline's driving path, and live mode on Chromium's fake
camera fed by a real clip. Faces are judged in Python with the independent instrument (MediaPipe's
face mesh), never with the page's own landmarks."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from support.browser import PageSession, chromium_path, playwright_module, write_coded_y4m
from facevae.expression import pearson
from support.page_compare import compare_with_pipeline, copy_site, mesh_mouth, step_through

pytestmark = [pytest.mark.slow, pytest.mark.media]

ACTOR, DRIVER, VIDEO = "d6", "tpsmm", "driving"
# Video-file mode: the page's rendered mouth against the pipeline's on the same frames, face mesh r on the CI
# pipeline's d6. Issue 13's bar, 0.8, asserted as it stands. bench/archive/sweep_page_points.py on the page's own logged
# points (train.seed 0 / 1 / 2): 0.683 / 0.785 / 0.765 before (one landmark pass in the detector's box, the eye
# step pulling the decoded mouth); with the page's second landmark pass around its own answer and the eye step
# decoupled from the decoded mouth (render.retarget.eye_keeps_mouth) 0.832 / 0.856 / 0.849; this test's own
# run at seed 0 with both: 0.843 (median pixel difference 0.0118; 2026-12-06). With final-fit models (issue 40) the
# brows at half weight moved the two mouths apart again (face-api's brows vs dlib's): 0.773 / 0.929 / 0.890; the map
# reading no brows (brow_weight 0, docs/decisions/025): 0.937 / 0.936 / 0.934 (bench/quality/ci_seeds.py with
# BENCH_CI_PAGE=1, 2026-12-08).
PAGE_VS_PIPELINE_MOUTH = 0.8
# The PyTorch port of face-api's landmark net against the page's own points on the same frames, px.
PORT_MEDIAN_PX, PORT_P99_PX = 0.25, 1.0


@pytest.fixture(scope="module")
def site(pipeline, tmp_path_factory):
    """The built page served from a copy of it plus the driver's ingested clip (a copy: serve_page
    serves no link that leads out of its folder)."""
    from facevae.serve_page import serve

    wd = pipeline["workdir"]
    built = wd / f"results/explore/{ACTOR}"
    assert (built / "index.html").is_file(), sorted(p.name for p in built.iterdir())
    folder = copy_site(wd, ACTOR, DRIVER, VIDEO, tmp_path_factory.mktemp("site"))
    server = serve(folder)
    yield {"url": f"http://127.0.0.1:{server.server_address[1]}/", "folder": folder, "built": built, "wd": wd}
    server.shutdown()


@pytest.fixture(scope="module")
def playwright():
    chromium_path()  # skip / fail with the reason before starting Playwright
    with playwright_module()() as pw:
        yield pw


@pytest.fixture(scope="module")
def session(site, playwright):
    s = PageSession(playwright, site["url"])
    yield s
    s.close()


def _model(site):
    from facevae.modelio import load_model

    return load_model(site["wd"] / f"results/models/{ACTOR}/model.pt")


def _decode(model, z) -> np.ndarray:
    from facevae.page import DecodeImage

    with torch.no_grad():
        return DecodeImage(model)(torch.as_tensor(np.asarray(z, np.float32))).numpy()


def _track(site):
    from facevae.faces.io import DriverTrack

    return DriverTrack(site["wd"] / f"results/tracks/{DRIVER}/{VIDEO}.h5")


def _frame_landmarks(track, rows) -> np.ndarray:
    """The tracker's 68 landmarks of ``rows`` in frame px (crop landmarks through the inverse warp)."""
    from facevae.faces.align import invert_transform, transform_points

    crop = np.asarray(track.landmarks[:], np.float64)[rows]
    return np.stack([transform_points(invert_transform(track.transforms[r]), lm) for r, lm in zip(rows, crop)])


def test_page_loads_served_with_no_console_error_and_no_foreign_request(session, site):
    session.js("window.facevae.loadFaceApi()")
    status = session.page.text_content("#status")
    assert "d6" in status and "onnxruntime-web" in status, status
    assert session.errors == [], session.errors
    foreign = [u for u in session.requests if not u.startswith(site["url"]) and not u.startswith(("data:", "blob:"))]
    assert foreign == [], foreign  # the camera's frames and everything else stay on the page's origin
    manifest = json.loads((site["built"] / "page.json").read_text())
    kl = [d["kl"] for d in manifest["dims"]]
    assert kl == sorted(kl, reverse=True) and kl[0] > kl[-1]
    # The attribute stage ran in this pipeline: its directions are offered as sliders.
    assert session.page.locator("#attributes input[type=range]").count() == len(manifest["attributes"]) > 0
    versions = json.loads((site["built"] / "vendor/versions.json").read_text())["versions"]
    assert set(versions) == {"onnxruntime-web", "@vladmandic/face-api", "@tensorflow/tfjs-backend-wasm"}
    session.page.screenshot(path=str(site["wd"] / "page-explore.png"))


def test_opened_from_disk_the_page_says_to_serve_it(playwright, site):
    browser = playwright.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
    try:
        page = browser.new_page()
        page.goto((site["built"] / "index.html").as_uri())
        assert page.locator("#file-warning").is_visible()
        assert "make explore" in page.text_content("#file-warning")
    finally:
        browser.close()


def test_onnx_graphs_in_the_browser_equal_pytorch(session, site):
    from facevae.driving import load_retarget, neutral_shape, normalise_landmarks

    model = _model(site)
    z = np.random.default_rng(0).standard_normal((6, model.config.latent_dim)).astype(np.float32)
    browser = np.asarray(session.js("([z, n]) => window.facevae.decode(z, n)", [z.ravel().tolist(), len(z)]))
    reference = _decode(model, z)
    assert np.abs(browser.reshape(reference.shape) - reference).max() <= 1e-4

    retarget = load_retarget(site["wd"] / f"results/models/{ACTOR}/retarget.pt")
    drive = json.loads((site["built"] / "page.json").read_text())["drive"]  # the render.retarget the page was built with
    with _track(site) as track:
        rows = np.flatnonzero(track.kept)[::8][:24]
        landmarks = np.asarray(track.landmarks[:], np.float32)[rows]
    neutral = neutral_shape(normalise_landmarks(landmarks)).astype(np.float32)
    browser = np.asarray(session.js("([l, n]) => window.facevae.drive(l, n)", [landmarks.tolist(), neutral.tolist()]))
    reference = retarget.drive(landmarks, neutral, drive["transfer"], drive["gain"])
    assert np.abs(browser.reshape(reference.shape) - reference).max() <= 1e-4


def test_the_pointer_moves_two_dimensions_and_a_click_freezes_them(session, site):
    page = session.page
    session.js("window.facevae.showTab('explore')")
    box = page.locator("#explore-face").bounding_box()
    inner = page.evaluate("(() => { const c = document.getElementById('explore-face'); "
                          "return [c.clientLeft, c.clientTop, c.clientWidth, c.clientHeight]; })()")
    left, top, width, height = box["x"] + inner[0], box["y"] + inner[1], inner[2], inner[3]

    def move(fx, fy):
        page.mouse.move(left + fx * width, top + fy * height)
        session.js("window.facevae.idle()")
        return session.js("window.facevae.explored()")

    model = _model(site)
    first = move(0.8, 0.25)
    dx, dy = first["dims"]
    assert first["z"][dx] == pytest.approx(-2 + 4 * 0.8, abs=0.05)
    assert first["z"][dy] == pytest.approx(2 - 4 * 0.25, abs=0.05)
    reference = _decode(model, np.asarray([first["z"]], np.float32))[0]
    assert np.abs(np.asarray(first["image"]).reshape(reference.shape) - reference).max() <= 1e-3
    page.mouse.click(left + 0.8 * width, top + 0.25 * height)
    frozen = move(0.1, 0.9)
    assert frozen["frozen"] and frozen["z"] == first["z"] and frozen["image"] == first["image"]
    page.mouse.click(left + 0.1 * width, top + 0.9 * height)
    thawed = move(0.3, 0.6)
    assert not thawed["frozen"] and thawed["z"][dx] == pytest.approx(-2 + 4 * 0.3, abs=0.05)
    # Another pair chosen: the first pair keeps its values, the new one follows the pointer.
    manifest = json.loads((site["built"] / "page.json").read_text())
    other = [d["dim"] for d in manifest["dims"][2:4]]
    page.select_option("#dim-x", str(other[0]))
    page.select_option("#dim-y", str(other[1]))
    moved = move(0.5, 0.5)
    assert moved["dims"] == other and moved["z"][dx] == thawed["z"][dx] and moved["z"][dy] == thawed["z"][dy]
    # A random face (the R key) and one of the actor's own encoded faces.
    page.keyboard.press("r")
    session.js("window.facevae.idle()")
    assert session.js("window.facevae.explored()")["z"] != moved["z"]
    session.js("window.facevae.realFace(0)")
    assert session.js("window.facevae.explored()")["z"] == pytest.approx(manifest["real_faces"][0]["z"], abs=1e-6)
    # An attribute slider adds its direction.
    name = next(iter(manifest["attributes"]))
    page.locator(f"#attributes input[data-attribute={name}]").fill("2")
    session.js("window.facevae.idle()")
    edited = np.asarray(session.js("window.facevae.explored()")["z"])
    want = np.asarray(manifest["real_faces"][0]["z"]) + 2 * np.asarray(manifest["attributes"][name])
    assert np.abs(edited - want).max() <= 1e-4
    page.locator(f"#attributes input[data-attribute={name}]").fill("0")
    page.screenshot(path=str(site["wd"] / "page-explore-moved.png"))
    assert session.errors == [], session.errors


def test_javascript_alignment_equals_python(session, site):
    from facevae.driving import normalise_landmarks
    from facevae.faces.align import alignment_matrix, transform_points

    with _track(site) as track:
        rows = np.flatnonzero(track.kept)[::5][:40]
        frame_lm = _frame_landmarks(track, rows)
        cfg = track.align_config(64)
    python = np.stack([transform_points(alignment_matrix(lm, cfg), lm) for lm in frame_lm])
    browser = np.asarray([session.js("(l) => window.facevae.align(l).crop", lm.tolist()) for lm in frame_lm])
    assert np.abs(browser - python).max() < 1.0  # the acceptance: within 1 px (float64 on both sides)
    assert np.abs(browser - python).max() < 1e-6
    normalised = np.asarray([session.js("(l) => window.facevae.normalise(l)", lm.tolist()) for lm in python])
    assert np.abs(normalised - normalise_landmarks(python)).max() < 1e-9


@pytest.fixture(scope="module")
def video_file_log(session, site) -> list[dict]:
    """The page's video-file mode stepped through every frame of the driver's clip (its log)."""
    log = step_through(session, site["wd"], DRIVER, VIDEO)
    session.page.screenshot(path=str(site["wd"] / "page-video-file.png"))
    if os.environ.get("FACEVAE_PAGE_LOG"):  # the page's own points for bench/archive/sweep_page_points.py
        Path(os.environ["FACEVAE_PAGE_LOG"]).write_text(json.dumps(log))
    return log


def test_video_file_mode_matches_the_pipelines_driving_path(session, site, video_file_log):
    """Every frame of the driver's clip, stepped through in the page, against the pipeline's own
    path on the same clip (its dlib track, the same retargeting map, the same calibration window,
    PyTorch's decoder): the faces match and the mouth moves the same way."""
    wd = site["wd"]
    manifest = json.loads((site["built"] / "page.json").read_text())
    log = video_file_log
    c = compare_with_pipeline(log, wd, ACTOR, DRIVER, VIDEO, manifest)
    lm = c["landmarks"]
    print(f"\nvideo-file mode, {c['frames']} frames: median |page - pipeline| {c['median_diff']:.4f} of full scale, "
          f"mesh mouth r {c['mouth_r']:.3f}; face-api vs dlib landmarks: mean {lm['all']:.4f}, median {lm['median']:.4f} "
          f"inter-ocular distances (mouth {lm['mouth']:.4f}, eyes {lm['eyes']:.4f}); mouth r with "
          f"the driver's crops: page {c['page_transfer']:.3f}, pipeline {c['pipeline_transfer']:.3f}; page vs "
          f"PyTorch's path on face-api's landmarks {c['page_vs_pytorch_on_page_landmarks']:.3f}, face-api vs dlib "
          f"mouth opening r {c['landmark_mouth_r']:.3f}")
    assert c["frames"] >= 0.9 * c["kept"], (c["frames"], c["kept"])
    assert c["median_diff"] <= 0.05
    # The page's mouth follows the pipeline's beyond what the series' smoothness gives, and at the
    # issue's 0.8 (PAGE_VS_PIPELINE_MOUTH's comment) although the page's eyes and brows are
    # face-api's where the pipeline's are dlib's.
    assert c["mouth_r"] > c["shift_p95"] and c["mouth_r"] >= PAGE_VS_PIPELINE_MOUTH, (c["mouth_r"], c["shift_p95"])
    # And carries the driver's mouth at least as well as the pipeline's path with the same neutral
    # (measured: page 0.47, pipeline 0.29 -- face-api's mouth points move more than dlib's).
    assert c["page_transfer"] >= c["pipeline_transfer"] - 0.05
    assert session.errors == [], session.errors


def test_the_pytorch_port_of_faceapi_gives_the_pages_landmarks(site, video_file_log):
    """facevae.faces.faceapi_landmarks (face-api's 68-point net in PyTorch, the package's own weights)
    on the frames the page stepped through, in the boxes the page's net ran in: the page's points.
    The frames are decoded twice (Chromium's decoder, ffmpeg's through OpenCV), so they may differ
    by a grey level here and there; the net input is otherwise the browser's, bit for bit."""
    import cv2

    from facevae.faces.faceapi_landmarks import faceapi_landmarks, load_faceapi_landmark_net

    net = load_faceapi_landmark_net(site["built"] / "vendor/face-api/model")
    entries = {e["frame"]: e for e in video_file_log if e.get("box") and e.get("landmarks")}
    cap = cv2.VideoCapture(str(site["wd"] / f"results/videos/{DRIVER}/{VIDEO}.mp4"))
    errors, index = [], 0
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        if index in entries:
            e = entries[index]
            ours = faceapi_landmarks(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), e["box"], net)
            errors.append(np.linalg.norm(ours - np.asarray(e["landmarks"]), axis=1))
        index += 1
    cap.release()
    errors = np.asarray(errors)
    print(f"\nport vs page on {len(errors)} frames: landmark distance median {np.median(errors):.4f} px, "
          f"p99 {np.percentile(errors, 99):.4f} px, max {errors.max():.4f} px")
    assert len(errors) == len(entries) >= 0.9 * len(video_file_log), (len(errors), len(entries), len(video_file_log))
    assert np.median(errors) < PORT_MEDIAN_PX and np.percentile(errors, 99) < PORT_P99_PX


def test_live_mode_on_the_fake_camera_follows_the_mouth(playwright, site, tmp_path):
    """Chromium's fake camera plays the driver's clip in real time; the page detects, aligns,
    drives and decodes as fast as it can. Frames are identified by the code in the picture."""
    wd = site["wd"]
    clip = tmp_path / "camera.y4m"
    n_frames = write_coded_y4m(wd / f"results/videos/{DRIVER}/{VIDEO}.mp4", clip)
    fps = json.loads((wd / f"results/videos/{DRIVER}/{VIDEO}.json").read_text())["fps"]
    args = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-video-capture={clip}"]
    s = PageSession(playwright, site["url"] + "?log=1&framecode=1", args)
    try:
        s.js("window.facevae.showTab('live')")
        s.js("window.facevae.startCamera()")
        deadline = time.time() + 3 * n_frames / fps + 30
        while time.time() < deadline:  # until the clip has looped once after calibration
            log = s.js("window.facevae.live.log.map(e => [e.frame, !!e.image])")
            driven = [f for f, has in log if has]
            if len(driven) > 10 and len(set(f for f, _ in log)) >= 0.5 * n_frames and driven[-1] < driven[0]:
                break
            time.sleep(1)
        s.page.screenshot(path=str(wd / "page-live.png"))
        entries = s.js("window.facevae.live.log.filter(e => e.image).map(e => [e.frame, e.image, e.total])")
        seen = s.js("window.facevae.live.log.map(e => e.frame)")
        s.js("window.facevae.live.running = false")
        assert s.errors == [], s.errors
    finally:
        s.close()
    codes = set(seen)
    assert codes <= set(range(n_frames)), sorted(codes - set(range(n_frames)))[:5]  # the codes read back
    # One pass of the clip (frame numbers increase until the loop restarts it).
    first = [seen[0]] + [f for prev, f in zip(seen, seen[1:]) if f > prev]
    processed = len(set(seen)) / n_frames
    print(f"\nlive: {len(seen)} frames processed, {len(set(seen))} of the clip's {n_frames} distinct "
          f"({processed:.0%}); {len(entries)} driven; median {np.median([e[2] for e in entries]):.1f} ms a frame")
    assert processed >= 0.5, (processed, first[:20])
    with _track(site) as track:
        by_frame = {int(f): i for i, f in enumerate(track.frame)}
        keep = [(f, img) for f, img, _ in entries if f in by_frame and track.kept[by_frame[f]]]
        keep = list({f: img for f, img in keep}.items())  # one face per frame number
        rows = [by_frame[f] for f, _ in keep]
        driver = np.concatenate([track.read_crops(r, r + 1) for r in rows])
    rendered = np.asarray([img for _, img in keep], np.uint8).reshape(-1, 64, 64, 3)
    r = pearson(mesh_mouth(rendered), mesh_mouth(driver))
    print(f"live: mesh mouth r {r:.3f} on {len(keep)} frames (rendered vs the camera's crops)")
    assert len(keep) >= 0.3 * n_frames
    assert r >= 0.5
