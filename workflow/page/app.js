// The actor's page: Morphing Faces' latent explorer and live reenactment, all in this browser.
// Models: decoder.onnx and drive.onnx (rule page_models) on onnxruntime-web's wasm backend; faces:
// face-api's tiny detector and 68-point landmarks on tfjs' wasm backend. Nothing is sent anywhere.
// window.facevae is the test hook (tests/test_page.py) and the console's handle on the page.
import * as ort from "./vendor/ort/ort.wasm.min.mjs";
import { alignLandmarks, boxAround, neutralShape, normalise } from "./align.js";
import { loadVerified } from "./integrity.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const RANGE = 2; // the pointer spans [-2, 2] on both chosen dimensions (Morphing Faces)
const TOP_DIMS = 12; // dimensions offered for the pointer, most informative first
const TRACK_MARGIN = 1.25; // box around the last landmarks when the detector does not run
const RUNNING_FRAMES = 1500; // the running neutral's memory: about a minute of frames
const RUNNING_EVERY = 10; // frames between updates of the running neutral

const threads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
ort.env.wasm.wasmPaths = new URL("./vendor/ort/", location.href).href;
ort.env.wasm.numThreads = threads;

const page = { manifest: null, decoder: null, drive: null, faceapi: null };
const explore = { z: null, dims: [0, 1], frozen: false, attributes: {}, shown: null, image: null };
const live = {
  running: false, source: null, neutral: null, calibration: [], calibrationStart: null, last: null,
  frames: 0, log: [], keepLog: params.has("log"), frameCode: params.has("framecode"),
  detectEvery: Number(params.get("detect_every") || 0), times: [], stamps: [], neutralMode: "running", sinceUpdate: 0,
};

// ------------------------------------------------------------------------------- models

async function loadModels() {
  // page.json and the graphs, each checked against the sha256 the build recorded: a changed file
  // stops the page with a message naming it ("The page could not start: ...") -- not a blank canvas.
  const recorded = document.querySelector('meta[name="facevae-page-sha256"]')?.content;
  const { manifest, files } = await loadVerified(location.href, recorded);
  const options = { executionProviders: ["wasm"], graphOptimizationLevel: "all" };
  const [decoder, drive] = await Promise.all([
    ort.InferenceSession.create(files.decoder, options),
    ort.InferenceSession.create(files.drive, options),
  ]);
  Object.assign(page, { manifest, decoder, drive });
  live.detectEvery = live.detectEvery || manifest.live.detect_every;
  live.neutralMode = params.get("neutral") || manifest.live.neutral;
}

// z: Float32Array(n * D) -> Float32Array(n * 64 * 64 * 3) in [0, 1], channels last.
async function decode(z, n = 1) {
  const D = page.manifest.latent_dim;
  const out = await page.decoder.run({ z: new ort.Tensor("float32", Float32Array.from(z), [n, D]) });
  return out.image.data;
}

// landmarks: n x 68 [x, y] crop px; neutral: 68 [x, y] normalised -> Float32Array(n * D).
async function driveZ(landmarks, neutral) {
  const flat = Float32Array.from(landmarks.flat(2));
  const out = await page.drive.run({
    landmarks: new ort.Tensor("float32", flat, [landmarks.length, 68, 2]),
    driver_neutral: new ort.Tensor("float32", Float32Array.from(neutral.flat()), [68, 2]),
  });
  return out.z.data;
}

function drawFace(canvas, image) {
  const S = page.manifest.size, small = new OffscreenCanvas(S, S), ctx = small.getContext("2d");
  const rgba = new ImageData(S, S);
  for (let i = 0; i < S * S; i++) {
    for (let c = 0; c < 3; c++) rgba.data[4 * i + c] = Math.round(Math.min(1, Math.max(0, image[3 * i + c])) * 255);
    rgba.data[4 * i + 3] = 255;
  }
  ctx.putImageData(rgba, 0, 0);
  const big = canvas.getContext("2d");
  big.imageSmoothingEnabled = true;
  big.drawImage(small, 0, 0, canvas.width, canvas.height);
}

// ------------------------------------------------------------------------------ explore

function shownZ() {
  const z = Float32Array.from(explore.z);
  for (const [name, amount] of Object.entries(explore.attributes)) {
    const v = page.manifest.attributes[name];
    for (let j = 0; j < z.length; j++) z[j] += amount * v[j];
  }
  return z;
}

// Latest request wins: pointer events come faster than the decoder on a slow machine.
let pending = null, busy = null;
function renderExplore() {
  pending = true;
  if (!busy) busy = (async () => {
    while (pending) {
      pending = false;
      const z = shownZ();
      const image = await decode(z);
      explore.shown = z; explore.image = image;
      drawFace($("explore-face"), image);
      const [dx, dy] = explore.dims, norm = Math.hypot(...z);
      $("z-readout").textContent = `z${dx} = ${z[dx].toFixed(2)}, z${dy} = ${z[dy].toFixed(2)}, |z| = ${norm.toFixed(2)}`;
      $("z-readout").title = Array.from(z, (v) => v.toFixed(2)).join(" ");
    }
    busy = null;
  })();
  return busy;
}

function pointerToValues(event) {
  const c = $("explore-face");
  const fx = Math.min(1, Math.max(0, event.offsetX / c.clientWidth));
  const fy = Math.min(1, Math.max(0, event.offsetY / c.clientHeight));
  return [-RANGE + 2 * RANGE * fx, RANGE - 2 * RANGE * fy];
}

function setupExplore() {
  const m = page.manifest;
  explore.z = new Float32Array(m.latent_dim);
  const top = m.dims.slice(0, Math.min(TOP_DIMS, m.dims.length));
  for (const [k, select] of [[0, $("dim-x")], [1, $("dim-y")]]) {
    for (const d of top) select.add(new Option(`z${d.dim} (KL ${d.kl.toFixed(2)})`, d.dim));
    select.value = top[Math.min(k, top.length - 1)].dim;
    select.addEventListener("change", () => chooseDims(Number($("dim-x").value), Number($("dim-y").value)));
  }
  chooseDims(Number($("dim-x").value), Number($("dim-y").value));
  const canvas = $("explore-face");
  canvas.addEventListener("pointermove", (e) => {
    if (explore.frozen) return;
    const [vx, vy] = pointerToValues(e);
    explore.z[explore.dims[0]] = vx;
    explore.z[explore.dims[1]] = vy;
    renderExplore();
  });
  canvas.addEventListener("click", () => setFrozen(!explore.frozen));
  $("random").addEventListener("click", randomFace);
  document.addEventListener("keydown", (e) => { if (e.key === "r" || e.key === "R") randomFace(); });
  $("real").addEventListener("click", () => realFace());
  $("zero").addEventListener("click", () => { explore.z.fill(0); renderExplore(); });
  const box = $("attributes");
  const names = Object.keys(m.attributes);
  if (names.length) box.insertAdjacentHTML("beforeend", "<p class='hint'>CelebA attribute directions (mean z with minus without):</p>");
  for (const name of names) {
    const label = document.createElement("label");
    label.textContent = name.replaceAll("_", " ") + " ";
    const slider = Object.assign(document.createElement("input"), { type: "range", min: -4, max: 4, step: 0.1, value: 0 });
    slider.dataset.attribute = name;
    const value = Object.assign(document.createElement("span"), { className: "readout", textContent: " 0.0" });
    slider.addEventListener("input", () => {
      explore.attributes[name] = Number(slider.value);
      value.textContent = ` ${Number(slider.value).toFixed(1)}`;
      renderExplore();
    });
    label.append(value, slider);
    box.append(label);
  }
  return renderExplore();
}

function chooseDims(dx, dy) {
  explore.dims = [dx, dy];
  $("axis-x").textContent = `z${dx}`;
  $("axis-y").textContent = `z${dy}`;
  setFrozen(false); // the new pair follows the pointer; the old pair keeps its values
}

function setFrozen(frozen) {
  explore.frozen = frozen;
  $("explore-face").classList.toggle("frozen", frozen);
  $("freeze-state").textContent = frozen ? "unfreeze" : "freeze";
}

function gaussian() {
  let u = 0;
  while (u === 0) u = Math.random();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * Math.random());
}

function randomFace() {
  for (let j = 0; j < explore.z.length; j++) explore.z[j] = gaussian();
  return renderExplore();
}

function realFace(k) {
  const faces = page.manifest.real_faces;
  const face = faces[k ?? Math.floor(Math.random() * faces.length)];
  explore.z.set(face.z);
  return renderExplore();
}

// --------------------------------------------------------------------------------- live

async function loadFaceApi() {
  if (page.faceapi) return page.faceapi;
  const faceapi = await import("./vendor/face-api/face-api.esm.js");
  faceapi.tf.setWasmPaths(new URL("./vendor/tfjs/", location.href).href);
  await faceapi.tf.setBackend("wasm");
  await faceapi.tf.ready();
  await faceapi.nets.tinyFaceDetector.loadFromUri("vendor/face-api/model");
  await faceapi.nets.faceLandmark68Net.loadFromUri("vendor/face-api/model");
  page.faceapi = faceapi;
  return faceapi;
}

const frameCanvas = document.createElement("canvas");

// The test clip carries its frame number as 16 black/white cells across the top edge (cell b,
// bit b, is W/16 wide and W/32 high; tests/test_page.py writes them); the face is far below it.
function readFrameCode(ctx, width) {
  const row = ctx.getImageData(0, Math.floor(width / 64), width, 1).data;
  let code = 0;
  for (let b = 0; b < 16; b++) {
    const i = 4 * Math.floor((b + 0.5) * width / 16);
    if (row[i] + row[i + 1] + row[i + 2] > 382) code |= 1 << b;
  }
  return code;
}

// One frame: landmarks (detector every N frames, else the landmark net around the last face),
// alignment, neutral, driving path, decoder, drawing. Returns what it did (the log entry).
async function processFrame(video, mediaTime) {
  const faceapi = page.faceapi, t = { start: performance.now() };
  frameCanvas.width = video.videoWidth; frameCanvas.height = video.videoHeight;
  const fctx = frameCanvas.getContext("2d", { willReadFrequently: true });
  fctx.drawImage(video, 0, 0);
  const entry = { time: mediaTime, frame: live.frameCode ? readFrameCode(fctx, frameCanvas.width) : live.frames };
  let landmarks = null;
  if (!live.last || live.frames % live.detectEvery === 0) {
    const found = await faceapi.detectSingleFace(frameCanvas, new faceapi.TinyFaceDetectorOptions({ inputSize: 224, scoreThreshold: 0.4 }));
    t.detect = performance.now();
    if (found) {
      const b = found.box, box = new faceapi.Rect(Math.floor(b.x), Math.floor(b.y), Math.floor(b.width), Math.floor(b.height));
      entry.box = [box.x, box.y, box.width, box.height];
      landmarks = await landmarksIn(faceapi, box);
      // Once more in the box around its own answer, as the pipeline takes face-api's points (a box
      // around the face, then around the net's answer): the detector's box sits elsewhere on the
      // face, and the net's points move with the box -- on the CI clip the page's mouth series
      // follows the pipeline's at r 0.68 without this pass, 0.79 with it (bench/results/page_points.md).
      if (landmarks) {
        const again = trackBox(landmarks);
        entry.box = [again.x, again.y, again.width, again.height]; // the box the final points come from
        landmarks = await landmarksIn(faceapi, again);
      }
    }
  } else {
    t.detect = performance.now();
    const box = trackBox(live.last);
    entry.box = [box.x, box.y, box.width, box.height]; // the box the landmark net ran in (the test hook's)
    landmarks = await landmarksIn(faceapi, box);
  }
  t.landmarks = performance.now();
  live.frames += 1;
  live.last = landmarks;
  drawCamera(video, landmarks);
  if (!landmarks) { entry.face = false; t.end = performance.now(); return finish(entry, t); }
  const aligned = alignLandmarks(landmarks, page.manifest.align);
  const shape = normalise(aligned.crop, page.manifest.align);
  t.align = performance.now();
  entry.landmarks = landmarks; entry.crop = aligned.crop; entry.face = true;
  if (!live.neutral) {
    // The neutral: the median shape of the frames in [start, start + calibration_seconds).
    live.calibrationStart ??= mediaTime;
    if (mediaTime - live.calibrationStart < page.manifest.drive.calibration_seconds) {
      live.calibration.push(shape);
      $("live-status").textContent = "Calibrating: look at the camera with a neutral face\u2026";
      t.end = performance.now();
      return finish(entry, t);
    }
    live.neutral = neutralShape(live.calibration);
    live.sinceUpdate = 0;
    $("live-status").textContent = `Calibrated on ${live.calibration.length} frames; now make faces.`;
  } else if (live.neutralMode === "running") {
    // The neutral keeps following the median of every frame since calibration (the pipeline's
    // default, the whole video's median, for a stream that has no end).
    live.calibration.push(shape);
    if (live.calibration.length > RUNNING_FRAMES) live.calibration.shift();
    if (++live.sinceUpdate >= RUNNING_EVERY) { live.neutral = neutralShape(live.calibration); live.sinceUpdate = 0; }
  }
  const z = await driveZ([aligned.crop], live.neutral);
  t.drive = performance.now();
  const image = await decode(z);
  t.decode = performance.now();
  drawFace($("live-face"), image);
  t.end = performance.now();
  entry.z = Array.from(z);
  if (live.keepLog) entry.image = Array.from(image, (v) => Math.round(v * 255));
  return finish(entry, t);
}

function trackBox(landmarks) {
  const b = boxAround(landmarks, TRACK_MARGIN, frameCanvas.width, frameCanvas.height);
  return new page.faceapi.Rect(Math.floor(b.x), Math.floor(b.y), Math.floor(b.width), Math.floor(b.height));
}

async function landmarksIn(faceapi, box) {
  if (box.width < 16 || box.height < 16) return null;
  const [crop] = await faceapi.extractFaces(frameCanvas, [box]);
  const found = await faceapi.nets.faceLandmark68Net.detectLandmarks(crop);
  return found.positions.map((p) => [p.x + box.x, p.y + box.y]);
}

function drawCamera(video, landmarks) {
  const c = $("camera-view"), ctx = c.getContext("2d");
  const scale = Math.min(c.width / video.videoWidth, c.height / video.videoHeight);
  const w = video.videoWidth * scale, h = video.videoHeight * scale, ox = (c.width - w) / 2, oy = (c.height - h) / 2;
  ctx.fillStyle = "#000"; ctx.fillRect(0, 0, c.width, c.height);
  ctx.drawImage(frameCanvas, ox, oy, w, h);
  if (!landmarks) return;
  ctx.fillStyle = "#3f6";
  for (const [x, y] of landmarks) ctx.fillRect(ox + x * scale - 1, oy + y * scale - 1, 2, 2);
}

function finish(entry, t) {
  const split = {};
  let prev = t.start;
  for (const step of ["detect", "landmarks", "align", "drive", "decode", "end"]) {
    if (t[step] !== undefined) { split[step === "end" ? "draw" : step] = t[step] - prev; prev = t[step]; }
  }
  entry.ms = split;
  entry.total = t.end - t.start;
  live.times.push(split); live.stamps.push(performance.now());
  if (live.times.length > 60) { live.times.shift(); live.stamps.shift(); }
  live.log.push(entry);
  if (!live.keepLog && live.log.length > 300) live.log.shift();
  showSpeed();
  return entry;
}

function showSpeed() {
  const n = live.stamps.length;
  if (n < 2) return;
  const fps = (n - 1) / ((live.stamps[n - 1] - live.stamps[0]) / 1000);
  const mean = {};
  for (const s of live.times) for (const [k, v] of Object.entries(s)) mean[k] = (mean[k] || 0) + v / live.times.length;
  $("fps").textContent = `${fps.toFixed(1)} frames/s \u00b7 ` + Object.entries(mean).map(([k, v]) => `${k} ${v.toFixed(1)} ms`).join(" \u00b7 ")
    + ` \u00b7 wasm threads ${threads}`;
}

function resetLive() {
  Object.assign(live, { neutral: null, calibration: [], calibrationStart: null, last: null, frames: 0, times: [], stamps: [], sinceUpdate: 0 });
}

// Real time: the newest frame the browser has presented (requestVideoFrameCallback), processed as
// soon as the last one is done. The callback stays registered while a frame is processed, so a
// frame presented meanwhile starts at once instead of the loop waiting for the next one: waiting
// cost half a camera interval a frame (measured: 42 ms of work a frame gave 14 frames/s at 25
// presented, not 24). Frames presented while one is processed are dropped but the newest.
function runLoop(video) {
  live.running = true;
  let working = false, newest = null;
  const work = async () => {
    working = true;
    while (newest && live.running) {
      const { now, meta } = newest;
      newest = null;
      // A camera's media time is not a clock the calibration window can use; a file's is.
      const time = live.source === "camera" ? now / 1000 : meta.mediaTime;
      try { await processFrame(video, time); } catch (err) { console.error(err); }
    }
    working = false;
  };
  const onFrame = (now, meta) => {
    if (!live.running) return;
    video.requestVideoFrameCallback(onFrame);
    newest = { now, meta };
    if (!working) work();
  };
  video.requestVideoFrameCallback(onFrame);
}

async function startCamera() {
  await loadFaceApi();
  const video = $("video");
  video.srcObject = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 640 }, height: { ideal: 480 } }, audio: false });
  await video.play();
  live.source = "camera";
  resetLive();
  $("calibrate").disabled = false;
  runLoop(video);
}

async function startFile(url) {
  await loadFaceApi();
  const video = $("video");
  video.srcObject = null;
  video.src = url;
  video.loop = true;
  await video.play();
  live.source = "file";
  resetLive();
  $("calibrate").disabled = false;
  runLoop(video);
}

// Video-file mode, exact: every frame in turn (seek, then process), no real-time dropping. The
// neutral comes from the first calibration_seconds, so those frames are driven once it is known.
async function stepThrough(url, fps) {
  await loadFaceApi();
  live.running = false;
  const video = $("video");
  video.srcObject = null;
  video.src = url;
  await new Promise((ok, fail) => { video.onloadeddata = ok; video.onerror = () => fail(new Error(`cannot read ${url}`)); });
  resetLive();
  const mode = live.neutralMode;
  const keepLog = live.keepLog;
  live.neutralMode = "calibration"; // the exact comparison: one neutral, from the calibration window
  live.keepLog = true;
  live.log = [];
  const n = Math.round(video.duration * fps);
  const pending = [];
  for (let i = 0; i < n; i++) {
    video.currentTime = (i + 0.5) / fps;
    await new Promise((ok) => { video.onseeked = ok; });
    live.last = null; // detect in every frame: the exact comparison with the pipeline's track
    const entry = await processFrame(video, i / fps);
    entry.frame = i;
    if (entry.face && !entry.z) pending.push(entry);
  }
  for (const entry of pending) {
    entry.z = Array.from(await driveZ([entry.crop], live.neutral));
    entry.image = Array.from(await decode(entry.z), (v) => Math.round(v * 255));
  }
  live.neutralMode = mode;
  live.keepLog = keepLog; // back to the page's own setting (?log): live use keeps a bounded log
  return live.log;
}

// ---------------------------------------------------------------------------------- page

function showTab(name) {
  for (const tab of ["explore", "live"]) {
    $(tab).hidden = tab !== name;
    $(`tab-${tab}`).classList.toggle("active", tab === name);
  }
}

async function main() {
  await loadModels();
  const m = page.manifest;
  $("actor").textContent = m.actor;
  document.title = `facevae: ${m.actor}`;
  $("tab-explore").addEventListener("click", () => showTab("explore"));
  $("tab-live").addEventListener("click", () => showTab("live"));
  $("camera").addEventListener("click", () => startCamera().catch(showError));
  $("file").addEventListener("change", (e) => e.target.files[0] && startFile(URL.createObjectURL(e.target.files[0])).catch(showError));
  $("calibrate").addEventListener("click", () => { live.neutral = null; live.calibration = []; live.calibrationStart = null; live.sinceUpdate = 0; });
  await setupExplore();
  $("status").textContent = `Latent space of ${m.actor}: ${m.latent_dim} dimensions. onnxruntime-web ${ort.env.versions?.web ?? ""} (wasm, ${threads} thread${threads > 1 ? "s" : ""}).`;
}

function showError(err) {
  console.error(err);
  $("live-status").textContent = `Error: ${err.message || err}`;
}

const ready = main();
ready.catch((err) => { $("status").textContent = `The page could not start: ${err.message || err}`; console.error(err); });

window.facevae = {
  ready, page, explore, live, threads,
  decode: async (z, n = 1) => Array.from(await decode(z, n)),
  drive: async (landmarks, neutral) => Array.from(await driveZ(landmarks, neutral)),
  align: (landmarks) => alignLandmarks(landmarks, page.manifest.align),
  normalise: (landmarks) => normalise(landmarks, page.manifest.align),
  idle: () => busy || Promise.resolve(),
  realFace, randomFace, chooseDims, startFile, startCamera, stepThrough, loadFaceApi, showTab,
  explored: () => ({ z: Array.from(explore.shown), dims: explore.dims, frozen: explore.frozen, image: Array.from(explore.image) }),
};
