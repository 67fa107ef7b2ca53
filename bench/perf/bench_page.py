"""The actor's page in headless Chromium on this machine (issue 13's speed targets): decoder-only
frames per second, and the live loop's frames per second with its time split (detect, landmarks,
align, drive, decode, draw), on Chromium's fake camera fed by a real clip; plus video-file mode
(every frame) against the pipeline's own driving path on the same clip -- pixel difference, face
mesh mouth r between the two renders -- and how far face-api's landmarks sit from dlib's.

The page is built by the real workflow in a work folder: actor lp_d6 (its first 25 s, default
training -- the render comparison needs a model that moves its mouth), driver tpsmm_driving.mp4. No GPU:
onnxruntime-web and tfjs on their wasm backends. Rows with and without cross-origin isolation
(COOP/COEP, which `make explore` sends: wasm threads) -- the plain row is any static server.

Writes bench/results/page.md. Run on an otherwise idle machine:
.venv/bin/python bench/perf/bench_page.py (~15 min the first time: tracking and training; then ~4 min).
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "workflow"))
sys.path.insert(0, str(REPO / "tests"))
MEDIA = Path(os.environ.get("FACEVAE_MEDIA", REPO.parent / "shared" / "data"))
WORK = Path(os.environ.get("FACEVAE_BENCH_WORK", Path(tempfile.gettempdir()) / "facevae-bench-page"))
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
DECODES = 300
LIVE_SECONDS = 20
TARGETS = {"decoder": 60.0, "live": 15.0}


def cpu_times() -> np.ndarray:
    """The machine's CPU time counters (Linux /proc/stat: user nice system idle iowait irq softirq steal)."""
    return np.array(Path("/proc/stat").read_text().split("\n")[0].split()[1:9], dtype=float)


def steal_share(before: np.ndarray, after: np.ndarray) -> float:
    """Share of CPU time the host took from this machine between two readings: frames per second
    measured under steal are not this machine's speed (the table says how much there was)."""
    d = after - before
    return float(d[7] / d.sum()) if d.sum() > 0 else 0.0


def build() -> Path:
    config = {
        "actors": {"d6": {"videos": {"d6": {"path": str(MEDIA / "videos/lp_d6.mp4"), "end": 25.0}}}},
        "drivers": {"tpsmm": {"videos": {"driving": {"path": str(MEDIA / "videos/tpsmm_driving.mp4")}}}},
        "faces": {"aligner": "dlib", "fps": 15},
        "train": {"checkpoint_minutes": 0},  # the defaults: the video-file row compares renders
    }
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "config.yaml").write_text(yaml.safe_dump(config))
    targets = ["results/explore/d6/index.html", "results/tracks/tpsmm/driving.h5", "results/videos/tpsmm/driving.json"]
    subprocess.run([SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(WORK), "--configfile",
                    str(WORK / "config.yaml"), "--cores", "2", *targets], check=True)
    return WORK / "results/explore/d6"


from facevae.serve_page import PageHandler  # noqa: E402


class PlainHandler(http.server.SimpleHTTPRequestHandler):
    """A static server with correct MIME types and no isolation headers (one wasm thread)."""

    extensions_map = PageHandler.extensions_map

    def log_message(self, *args):
        pass


def serve(folder: Path, isolated: bool):
    handler = functools.partial(PageHandler if isolated else PlainHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def decoder_fps(session) -> float:
    return session.js(f"""(async () => {{
        const D = window.facevae.page.manifest.latent_dim, z = new Float32Array(D);
        for (let i = 0; i < 20; i++) await window.facevae.decode(z);
        const t = performance.now();
        for (let i = 0; i < {DECODES}; i++) {{ z[i % D] = Math.sin(i); await window.facevae.decode(z); }}
        return {DECODES} / ((performance.now() - t) / 1000); }})()""")


def live_row(playwright, url: str, clip: Path, n_frames: int, detect_every: int) -> dict:
    from support.browser import PageSession

    args = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-video-capture={clip}"]
    s = PageSession(playwright, url + ("&" if "?" in url else "?") + f"framecode=1&detect_every={detect_every}", args)
    try:
        s.js("window.facevae.showTab('live')")
        s.js("window.facevae.startCamera()")
        time.sleep(3)  # calibration and warm-up
        s.js("window.facevae.live.log.length = 0")
        # Frames processed = the page's own counter over its own clock: the log keeps only the last
        # 300 entries in live use (no ?log), so counting it capped the rate at 300 / 20 s = 15.0.
        start = s.js("[window.facevae.live.frames, performance.now()]")
        before = cpu_times()
        time.sleep(LIVE_SECONDS)
        end = s.js("[window.facevae.live.frames, performance.now()]")
        log = s.js("window.facevae.live.log.map(e => [e.frame, e.ms, e.total])")
        steal = steal_share(before, cpu_times())
        threads = s.js("window.facevae.threads")
        s.js("window.facevae.live.running = false")
    finally:
        s.close()
    split = {k: float(np.median([e[1].get(k, 0.0) for e in log])) for k in
             ("detect", "landmarks", "align", "drive", "decode", "draw")}
    return {"fps": (end[0] - start[0]) / ((end[1] - start[1]) / 1000), "threads": threads, "split": split,
            "total_ms": float(np.median([e[2] for e in log])), "frames": len(log), "steal": steal}


def quietest(measure, attempts: int = 3, steal_ok: float = 0.10) -> dict:
    """Repeat a live measurement while the host took more than ``steal_ok`` of the CPU (measured here:
    at 23-34 % steal the live loop ran 9.5-14 frames/s, at 0-11 % 16.8-19.6), at most ``attempts``
    times; the attempt with the least steal is kept, and how many were made."""
    tries = []
    while len(tries) < attempts and (not tries or min(t["steal"] for t in tries) > steal_ok):
        tries.append(measure())
    best = min(tries, key=lambda t: t["steal"])
    return {**best, "attempts": len(tries)}


def video_file_row(playwright, url: str, work: Path) -> dict:
    """Video-file mode, every frame of the driver clip, against the pipeline's own driving path on the
    same clip (tests/support/page_compare.py): pixel difference, mesh mouth r, landmark distance."""
    from support.browser import PageSession
    from support.page_compare import compare_with_pipeline, step_through

    manifest = json.loads((work / "results/explore/d6/page.json").read_text())
    s = PageSession(playwright, url)
    try:
        log = step_through(s, work, "tpsmm", "driving")
    finally:
        s.close()
    return compare_with_pipeline(log, work, "d6", "tpsmm", "driving", manifest)


def main() -> None:
    from support.browser import chromium_path, write_coded_y4m
    from playwright.sync_api import sync_playwright

    from support.page_compare import copy_site

    folder = build()
    clip_src = WORK / "results/videos/tpsmm/driving.mp4"
    site = WORK / "site"
    # A copy, not links: serve_page serves only files whose real location is inside its folder.
    shutil.rmtree(site, ignore_errors=True)
    copy_site(WORK, "d6", "tpsmm", "driving", site)
    clip = WORK / "camera.y4m"
    n_frames = write_coded_y4m(clip_src, clip)
    chromium = chromium_path()
    rows = []
    with sync_playwright() as pw:
        from support.browser import PageSession

        for isolated in (True, False):
            server, url = serve(site, isolated)
            try:
                s = PageSession(pw, url)
                try:
                    before = cpu_times()
                    dec = decoder_fps(s)
                    dec_steal = steal_share(before, cpu_times())
                    threads = s.js("window.facevae.threads")
                finally:
                    s.close()
                for every in (1, 5):
                    live = quietest(lambda: live_row(pw, url, clip, n_frames, every))
                    rows.append({"isolated": isolated, "threads": threads, "decoder": dec, "decoder_steal": dec_steal,
                                 "every": every, **live})
                if isolated:
                    video_file = video_file_row(pw, url, WORK)
            finally:
                server.shutdown()
    version = subprocess.run([chromium, "--version"], capture_output=True, text=True).stdout.strip()
    versions = json.loads((folder / "vendor/versions.json").read_text())["versions"]
    lines = [
        "# The actor's page in headless Chromium (bench/perf/bench_page.py)",
        "",
        f"Machine: {os.cpu_count()} CPU cores, {platform.machine()}, no GPU; {version}; "
        + ", ".join(f"{k} {v}" for k, v in versions.items()) + " (wasm backends).",
        f"Decoder-only: {DECODES} decodes of one z in a row (batch 1), after 20 warm-up ones. Live: Chromium's "
        f"fake camera playing tpsmm_driving.mp4 (410x412, {n_frames} frames) in real time for {LIVE_SECONDS} s; "
        "frames per second = frames the page processed (its own counter over its own clock; the others are "
        "dropped while it works); the split is each step's median ms over the last 300 frames. "
        "`detect every` 1: the face detector on every frame; 5: the detector every "
        "5th frame and the landmark net in a box around the last landmarks in between (the page's default). "
        "CPU steal = the share of CPU time the host took from this virtual machine during that measurement "
        "(/proc/stat; decoder / live): above a few percent the frames per second understate the machine, so a "
        "live row is measured again (at most 3 attempts) while the steal exceeded 10 % and the quietest attempt is shown.",
        "",
        f"Targets: decoder-only >= {TARGETS['decoder']:.0f} frames/s, live loop >= {TARGETS['live']:.0f} frames/s.",
        "",
        "| COOP/COEP | wasm threads | decoder frames/s | detect every | live frames/s | detect | landmarks | align | drive | decode | draw | ms a frame | CPU steal | attempts | met |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        sp = r["split"]
        met = "yes" if r["decoder"] >= TARGETS["decoder"] and r["fps"] >= TARGETS["live"] else "no"
        lines.append(f"| {'yes' if r['isolated'] else 'no'} | {r['threads']} | {r['decoder']:.0f} | {r['every']} | "
                     f"{r['fps']:.1f} | {sp['detect']:.1f} | {sp['landmarks']:.1f} | {sp['align']:.2f} | "
                     f"{sp['drive']:.1f} | {sp['decode']:.1f} | {sp['draw']:.1f} | {r['total_ms']:.1f} | "
                     f"{r['decoder_steal']:.0%} / {r['steal']:.0%} | {r['attempts']} | {met} |")
    v = video_file
    d = v["landmarks"]
    lines += [
        "",
        f"Video-file mode (every frame of the clip stepped through, {v['frames']} of the track's {v['kept']} kept "
        "frames) against the pipeline's own driving path on the same clip (its dlib track, the same map, the same "
        "calibration window, PyTorch's decoder), face mesh on both renders:",
        "",
        "| median abs pixel difference (bar <= 0.05) | mouth r page vs pipeline (bar >= 0.8) | its shift p95 | "
        "mouth r with the driver: page | pipeline |",
        "|---|---|---|---|---|",
        f"| {v['median_diff']:.3f} | {v['mouth_r']:.2f} | {v['shift_p95']:.2f} | {v['page_transfer']:.2f} | "
        f"{v['pipeline_transfer']:.2f} |",
        "",
        "Where the two renders part: PyTorch's driving path fed the page's own (face-api's) landmarks "
        "instead of the track's dlib ones, and the two landmark models' mouth openings (68-point ratio) "
        "against each other and against the driver's face mesh mouth:",
        "",
        "| mouth r page vs PyTorch on face-api's landmarks | face-api vs dlib mouth opening r | "
        "face-api opening vs driver mesh | dlib opening vs driver mesh |",
        "|---|---|---|---|",
        f"| {v['page_vs_pytorch_on_page_landmarks']:.2f} | {v['landmark_mouth_r']:.2f} | "
        f"{v['faceapi_driver_r']:.2f} | {v['dlib_driver_r']:.2f} |",
        "",
        f"face-api's 68 landmarks against dlib's (the workflow's track) on those frames, both "
        "aligned to the template, in inter-ocular distances: "
        f"mean {d['all']:.3f}, median {d['median']:.3f}; mouth {d['mouth']:.3f}, eyes {d['eyes']:.3f}, jaw {d['jaw']:.3f}.",
        "",
    ]
    out = REPO / "bench/results/page.md"
    out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
