"""Checks facevae.faces.faceapi_landmarks (the PyTorch port of face-api's faceLandmark68Net) against
the real face-api 1.7.15 running in node on tfjs 4.22.0's wasm backend (the page's backend),
on the same inputs:

(a) raw net output (136 values) on a fixed random 112x112 input;
(b) 68 landmarks in image pixels on 10 frames of tpsmm_driving.mp4, each with two boxes: the
    box of face-api's tinyFaceDetector (inputSize 224, floored, as the page) and the page's
    tracking box (align.js boxAround(landmarks, 1.25) floored, as app.js trackBox):
    - tensor path, end to end: JS extractFaceTensors + detectLandmarks on a tf.Tensor frame vs
      resample="tensor" (face-api's own padToSquare + resizeBilinear);
    - canvas path (the page's), in node: drawImage cannot run in node, so both sides get the
      port's emulation of it (the same 112x112 uint8 tensor); JS maps the output with its own
      postProcess / FaceLandmarks68 for the crop's size, plus the box origin;
    - box_around against align.js boxAround + floor on the JS landmarks (must be equal);
    - how far the two resampling paths put the landmarks apart;
(c) where Chromium and Playwright are installed (the page tests' Debian chromium): the page's
    real path in headless Chromium -- frame on a canvas, extractFaces + detectLandmarks, and the
    exact 112x112 tensor the net got -- on the boxes of (b) plus random ones (sides 16..420,
    clipped at the frame, both aspect ratios): net input and landmarks against the port's
    resample="canvas".
Also: one 112x112 inference in PyTorch on one thread.

JS dependencies are npm-installed (pinned versions, from the npm registry) into --js-dir the first
time. Needs node >= 18. ~25 s. Run: .venv/bin/python bench/archive/check_faceapi_port.py

Measured (2 busy CPU cores, node 20.20, Chromium 150.0.7871.100, torch 2.13 CPU), --random-boxes 6:
  (a) raw output max |diff| 3.1e-07 (target 1e-4)
  (b) tensor path end to end 4.9e-05 px; canvas path on the same tensor 6.4e-05 px (target
      0.05 px); box_around == boxAround + floor 10/10; canvas vs tensor resampling up to 2.2 px
  (c) net input identical on 80 boxes (0 values differ); landmarks max |diff| 1.3e-04 px;
      resample="tensor" against the browser: 40 px on the most elongated random boxes
  PyTorch, 1 thread: 2.4-5.9 ms per 112x112 inference (minimum 2.4 ms; the cores were busy)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))
MEDIA = Path(os.environ.get("FACEVAE_MEDIA", REPO.parent / "shared" / "data"))
JS_DIR = Path(os.environ.get("FACEAPI_JS_DIR", Path(tempfile.gettempdir()) / "facevae-faceapi-js"))
JS_PACKAGES = ["@vladmandic/face-api@1.7.15", "@tensorflow/tfjs@4.22.0", "@tensorflow/tfjs-backend-wasm@4.22.0"]
TRACK_MARGIN = 1.25  # app.js

JS = r"""
const fs = require('fs'), path = require('path'), { pathToFileURL } = require('url');
const [jsDir, work, alignMjs] = process.argv.slice(2);
const faceapi = require(require.resolve('@vladmandic/face-api/dist/face-api.node-wasm.js', { paths: [jsDir] }));
const tf = faceapi.tf;
const bytes = (f) => new Uint8Array(fs.readFileSync(path.join(work, f)));
const floats = (f) => new Float32Array(bytes(f).slice().buffer);

async function tensorPath(img, box) {  // the page's landmarksIn, with a tensor for the canvas
  const [crop] = await faceapi.extractFaceTensors(img, [box]);
  const found = await faceapi.nets.faceLandmark68Net.detectLandmarks(crop);
  crop.dispose();
  return found.positions.map((p) => [p.x + box.x, p.y + box.y]);
}

(async () => {
  await tf.setBackend('wasm');
  await tf.ready();
  const model = path.join(path.dirname(require.resolve('@vladmandic/face-api/package.json', { paths: [jsDir] })), 'model');
  await faceapi.nets.faceLandmark68Net.loadFromDisk(model);
  await faceapi.nets.tinyFaceDetector.loadFromDisk(model);
  const { boxAround } = await import(pathToFileURL(alignMjs).href);
  const job = JSON.parse(fs.readFileSync(path.join(work, 'job.json')));
  const net = faceapi.nets.faceLandmark68Net;
  const out = { backend: tf.getBackend(), faceapi: faceapi.version, tensors: [], frames: [] };
  for (const t of job.tensors) {  // 112x112x3 float32: raw output and landmarks for a crop of w x h at (x, y)
    const x = tf.tensor3d(floats(t.file), [112, 112, 3], 'float32');
    const input = await faceapi.toNetInput(x);
    const raw = net.runNet(input);
    const rel = net.postProcess(raw, 112, [{ width: t.w, height: t.h }]);
    const v = Array.from(rel.dataSync());
    const lm = new faceapi.FaceLandmarks68(Array.from({ length: 68 }, (_, i) => new faceapi.Point(v[2 * i], v[2 * i + 1])), { width: t.w, height: t.h });
    out.tensors.push({ raw: Array.from(raw.dataSync()), landmarks: lm.positions.map((p) => [p.x + t.x, p.y + t.y]) });
    tf.dispose([x, raw, rel]);
  }
  for (const f of job.frames) {
    const img = tf.tensor3d(bytes(f.file), [f.height, f.width, 3], 'int32');
    const det = await faceapi.detectSingleFace(img, new faceapi.TinyFaceDetectorOptions({ inputSize: 224, scoreThreshold: 0.4 }));
    if (!det) { out.frames.push(null); img.dispose(); continue; }
    const b = det.box, box = new faceapi.Rect(Math.floor(b.x), Math.floor(b.y), Math.floor(b.width), Math.floor(b.height));
    const detected = await tensorPath(img, box);
    const t = boxAround(detected, job.margin, f.width, f.height);
    const track = new faceapi.Rect(Math.floor(t.x), Math.floor(t.y), Math.floor(t.width), Math.floor(t.height));
    const tracked = await tensorPath(img, track);
    out.frames.push({ boxes: [[box.x, box.y, box.width, box.height], [track.x, track.y, track.width, track.height]], landmarks: [detected, tracked] });
    img.dispose();
  }
  fs.writeFileSync(path.join(work, 'out.json'), JSON.stringify(out));
})().catch((e) => { console.error(e); process.exit(1); });
"""


BROWSER_JS = r"""
import * as faceapi from './face-api.esm.js';
window.ready = (async () => {
  faceapi.tf.setWasmPaths(new URL('./tfjs/', location.href).href);
  await faceapi.tf.setBackend('wasm');
  await faceapi.tf.ready();
  await faceapi.nets.faceLandmark68Net.loadFromUri('model');
  return faceapi.tf.getBackend();
})();
const b64 = (s) => Uint8Array.from(atob(s), (ch) => ch.charCodeAt(0));
// One frame on a canvas (putImageData: exact pixels), then for each box the page's landmarksIn,
// plus the exact 112x112 tensor the net got (toNetInput(crop).toBatchTensor(112, true)).
window.check = async ({ frame, width, height, boxes }) => {
  const rgb = b64(frame), rgba = new Uint8ClampedArray(width * height * 4);
  for (let i = 0; i < width * height; i++) { rgba.set(rgb.subarray(3 * i, 3 * i + 3), 4 * i); rgba[4 * i + 3] = 255; }
  const canvas = document.createElement('canvas');
  canvas.width = width; canvas.height = height;
  canvas.getContext('2d', { willReadFrequently: true }).putImageData(new ImageData(rgba, width, height), 0, 0);
  const out = [];
  for (const [x, y, w, h] of boxes) {
    const box = new faceapi.Rect(x, y, w, h);
    const [crop] = await faceapi.extractFaces(canvas, [box]);
    const found = await faceapi.nets.faceLandmark68Net.detectLandmarks(crop);
    const input = (await faceapi.toNetInput(crop)).toBatchTensor(112, true);
    const px = await input.data();
    input.dispose();
    out.push({ landmarks: found.positions.map((p) => [p.x + box.x, p.y + box.y]), input: Array.from(px) });
  }
  return out;
};
"""
MIME = {".js": "text/javascript", ".wasm": "application/wasm", ".json": "application/json", ".html": "text/html"}


def run_browser(js_dir: Path, frames: list[np.ndarray], boxes: dict[int, list]) -> tuple[str, dict] | None:
    """face-api in headless Chromium (Debian's chromium via Playwright) on the frames and boxes:
    {frame: [(landmarks (68, 2), 112x112x3 net input), ...]}; None where no chromium/playwright."""
    import base64

    chromium = os.environ.get("FACEVAE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if not chromium:
        return None
    mod = js_dir / "node_modules"
    files = {"index.html": b'<!doctype html><script type="module" src="check.js"></script>',
             "check.js": BROWSER_JS.encode(),
             "face-api.esm.js": mod / "@vladmandic/face-api/dist/face-api.esm.js"}
    for p in (mod / "@tensorflow/tfjs-backend-wasm/dist").glob("*.wasm"):
        files[f"tfjs/{p.name}"] = p
    for p in (mod / "@vladmandic/face-api/model").glob("face_landmark_68_model*"):
        files[f"model/{p.name}"] = p
    origin = "http://faceapi.check/"

    def serve(route):
        name = route.request.url[len(origin):].split("?")[0]
        body = files.get(name)
        if body is None:
            return route.fulfill(status=404, body="")
        body = body if isinstance(body, bytes) else body.read_bytes()
        route.fulfill(status=200, body=body, headers={"Content-Type": MIME.get(Path(name).suffix, "application/octet-stream")})

    out = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.route(origin + "**", serve)
            page.goto(origin + "index.html")
            backend = page.evaluate("window.ready")
            for i, bs in boxes.items():
                f = frames[i]
                res = page.evaluate("window.check", {"frame": base64.b64encode(f.tobytes()).decode(),
                                                     "width": f.shape[1], "height": f.shape[0], "boxes": bs})
                out[i] = [(np.array(r["landmarks"]), np.array(r["input"], np.float32).reshape(112, 112, 3)) for r in res]
            version = browser.version
        finally:
            browser.close()
    return f"Chromium {version}, tfjs backend '{backend}'", out


def ensure_js(js_dir: Path) -> None:
    if (js_dir / "node_modules/@vladmandic/face-api/package.json").exists():
        return
    js_dir.mkdir(parents=True, exist_ok=True)
    (js_dir / "package.json").write_text('{"private": true}\n')
    subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--ignore-scripts", *JS_PACKAGES],
                   cwd=js_dir, check=True)


def run_js(js_dir: Path, work: Path, job: dict) -> dict:
    (work / "job.json").write_text(json.dumps(job))
    align = work / "align.mjs"
    shutil.copy(REPO / "workflow/page/align.js", align)
    (work / "check.js").write_text(JS)
    subprocess.run(["node", str(work / "check.js"), str(js_dir), str(work), str(align)], check=True)
    return json.loads((work / "out.json").read_text())


def read_frames(path: Path, n: int) -> list[np.ndarray]:
    import cv2

    cap = cv2.VideoCapture(str(path))
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    want = set(np.linspace(0, total - 1, n).round().astype(int).tolist())
    frames, i = [], 0
    while len(frames) < len(want):
        ok, bgr = cap.read()
        if not ok:
            break
        if i in want:
            frames.append(np.ascontiguousarray(bgr[:, :, ::-1]))
        i += 1
    cap.release()
    return frames


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--js-dir", type=Path, default=JS_DIR)
    ap.add_argument("--video", type=Path, default=MEDIA / "videos" / "tpsmm_driving.mp4")
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--no-browser", action="store_true", help="skip (c), the check in headless Chromium")
    ap.add_argument("--random-boxes", type=int, default=3, help="random boxes per frame in (c)")
    args = ap.parse_args()

    import torch

    from facevae.faces import faceapi_landmarks as fl

    torch.set_num_threads(1)
    ensure_js(args.js_dir)
    net = fl.load_faceapi_landmark_net(args.js_dir / "node_modules/@vladmandic/face-api/model")
    frames = read_frames(args.video, args.frames)
    rng = np.random.default_rng(0)
    random_in = rng.integers(0, 256, (112, 112, 3)).astype(np.float32)

    with tempfile.TemporaryDirectory(prefix="faceapi-check-") as tmp:
        work = Path(tmp)
        random_in.tofile(work / "random.f32")
        job = {"margin": TRACK_MARGIN, "tensors": [{"file": "random.f32", "w": 112, "h": 112, "x": 0, "y": 0}],
               "frames": []}
        for i, f in enumerate(frames):
            f.tofile(work / f"frame{i}.u8")
            job["frames"].append({"file": f"frame{i}.u8", "width": f.shape[1], "height": f.shape[0]})
        t0 = time.perf_counter()
        js = run_js(args.js_dir, work, job)
        print(f"face-api {js['faceapi']} on tfjs backend '{js['backend']}' ({time.perf_counter() - t0:.1f} s)")

        # (a) raw output on the random tensor.
        with torch.no_grad():
            raw_py = net(torch.from_numpy(random_in[None])).numpy()[0]
        d_raw = np.abs(raw_py - np.array(js["tensors"][0]["raw"])).max()
        print(f"(a) random 112x112 input: raw output max |diff| {d_raw:.2e} (|output| up to {np.abs(raw_py).max():.2f})")

        # (b) frames: tensor path end to end; box_around against boxAround.
        pairs, d_tensor, box_bad, d_paths = [], [], 0, []
        for i, fr in enumerate(js["frames"]):
            if fr is None:
                print(f"  frame {i}: no face found by the detector")
                continue
            for box, lm_js in zip(fr["boxes"], fr["landmarks"]):
                lm_py = fl.faceapi_landmarks(frames[i], box, net, resample="tensor")
                d_tensor.append(np.abs(lm_py - np.array(lm_js)).max())
                pairs.append((i, box))
                d_paths.append(np.abs(fl.faceapi_landmarks(frames[i], box, net) - lm_py).max())
            h, w = frames[i].shape[:2]
            if fl.box_around(np.array(fr["landmarks"][0]), TRACK_MARGIN, w, h) != tuple(fr["boxes"][1]):
                box_bad += 1
        n_frames = sum(fr is not None for fr in js["frames"])
        print(f"(b) {len(pairs)} boxes on {n_frames} frames ({args.video.name}), sizes "
              + ", ".join(f"{b[2]}x{b[3]}" for _, b in pairs[:4]) + ", ...")
        print(f"    tensor path end to end: landmarks max |diff| {max(d_tensor):.2e} px")
        print(f"    box_around vs align.js boxAround + floor: {n_frames - box_bad}/{n_frames} equal")

        # (b) canvas path: the same emulated-drawImage tensor on both sides.
        job = {"margin": TRACK_MARGIN, "tensors": [], "frames": []}
        for k, (i, box) in enumerate(pairs):
            crop = fl.extract_face(frames[i], box)
            fl.canvas_square(crop).astype(np.float32).tofile(work / f"canvas{k}.f32")
            job["tensors"].append({"file": f"canvas{k}.f32", "w": crop.shape[1], "h": crop.shape[0],
                                   "x": box[0], "y": box[1]})
        js2 = run_js(args.js_dir, work, job)
        d_canvas = [np.abs(fl.faceapi_landmarks(frames[i], box, net) - np.array(t["landmarks"])).max()
                    for (i, box), t in zip(pairs, js2["tensors"])]
        print(f"    canvas path (same 112x112 emulated drawImage tensor): landmarks max |diff| {max(d_canvas):.2e} px")
        print(f"    canvas vs tensor resampling (port, same boxes): landmarks apart by up to {max(d_paths):.2f} px "
              f"(median of per-box max {np.median(d_paths):.2f} px)")

    # (c) the page's real path in Chromium: drawImage resampling included.
    d_browser = None
    if not args.no_browser:
        # The page's boxes, plus random ones (sides 16..420, some past the frame's edges: clipped;
        # none with a negative origin, which the page's boxes never have) for the resampling.
        by_frame: dict[int, list] = {}
        for i, box in pairs:
            by_frame.setdefault(i, []).append(list(box))
        for i in list(by_frame):
            h, w = frames[i].shape[:2]
            for _ in range(args.random_boxes):
                bw, bh = (int(v) for v in rng.integers(16, 421, 2))
                by_frame[i].append([int(rng.integers(0, w - 15)), int(rng.integers(0, h - 15)), bw, bh])
        got = run_browser(args.js_dir, frames, by_frame)
        if got is None:
            print("(c) skipped: no chromium (apt install chromium) or no playwright")
        else:
            what, res = got
            px, d_net, d_browser, d_tensor_b = [], [], [], []
            for i, bs in by_frame.items():
                for box, (lm_b, input_b) in zip(bs, res[i]):
                    crop = fl.extract_face(frames[i], box)
                    px.append(np.abs(fl.canvas_square(crop).astype(np.float32) - input_b))
                    with torch.no_grad():
                        raw = net(torch.from_numpy(input_b[None])).numpy()[0]
                    mine = fl.crop_landmarks(raw, crop.shape[1], crop.shape[0]) + np.array(box[:2], np.float64)
                    d_net.append(np.abs(mine - lm_b).max())
                    d_browser.append(np.abs(fl.faceapi_landmarks(frames[i], box, net) - lm_b).max())
                    d_tensor_b.append(np.abs(fl.faceapi_landmarks(frames[i], box, net, resample="tensor") - lm_b).max())
            px = np.stack(px)
            print(f"(c) {what}, the page's extractFaces + detectLandmarks on a canvas: the {len(pairs)} boxes "
                  f"of (b) and {len(d_net) - len(pairs)} random ones:")
            print(f"    net input (browser drawImage vs port's canvas_square): max |diff| {px.max():.0f} levels, "
                  f"{100 * (px > 0).mean():.2f}% of values differ")
            print(f"    port's net + mapping on the browser's own input: landmarks max |diff| {max(d_net):.2e} px")
            print(f"    port end to end, resample='canvas': landmarks max |diff| {max(d_browser):.2e} px "
                  f"(median of per-box max {np.median(d_browser):.2e} px)")
            print(f"    port end to end, resample='tensor': landmarks max |diff| {max(d_tensor_b):.2f} px")

    x = torch.from_numpy(random_in[None])
    with torch.no_grad():
        for _ in range(10):
            net(x)
        times = []
        for _ in range(100):
            t0 = time.perf_counter()
            net(x)
            times.append(time.perf_counter() - t0)
    print(f"PyTorch {torch.__version__}, 1 thread: {1000 * np.median(times):.2f} ms per 112x112 inference "
          f"(median of 100; min {1000 * min(times):.2f} ms)")
    ok = d_raw < 1e-4 and max(d_tensor) < 0.05 and max(d_canvas) < 0.05 and box_bad == 0
    ok = ok and (d_browser is None or max(d_browser) < 0.05)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
