"""A real headless Chromium for the page's tests: Debian's ``chromium`` driven by Playwright with
the executable path given (Playwright's own browser download is never used).

Where no chromium is installed the helper installs it with apt when it can (root, apt-get); where
it cannot, the tests skip with the reason -- except under CI=true, where that fails the run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

import pytest

CHROMIUM_ENV = "FACEVAE_CHROMIUM"
# --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
BASE_ARGS = ["--no-sandbox"]


def _unavailable(reason: str):
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI=true and the browser test cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


def chromium_path() -> str:
    """The chromium executable ($FACEVAE_CHROMIUM, else on PATH, else installed with apt)."""
    path = os.environ.get(CHROMIUM_ENV) or shutil.which("chromium") or shutil.which("chromium-browser")
    if path:
        return path
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "install", "-y", "--no-install-recommends", "chromium"],
                    ["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]):
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
            if cmd[1] == "install" and done.returncode == 0:
                break
        path = shutil.which("chromium")
        if path:
            return path
        _unavailable(f"apt-get could not install chromium: {(done.stderr or done.stdout).strip()[-300:]}")
    _unavailable(f"no chromium on PATH (apt install chromium, or set {CHROMIUM_ENV})")


def playwright_module():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as err:
        _unavailable(f"playwright is not installed (pip install -e '.[test]'): {err}")
    return sync_playwright


class PageSession:
    """One browser and one tab on ``url``, recording console errors and every request's origin."""

    def __init__(self, playwright, url: str, args: list[str] = ()):
        self.browser = playwright.chromium.launch(executable_path=chromium_path(), args=[*BASE_ARGS, *args])
        self.page = self.browser.new_page(viewport={"width": 1280, "height": 760})
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.set_default_timeout(120_000)
        self.page.goto(url)
        self.page.evaluate("window.facevae.ready")

    def js(self, expression: str, arg=None):
        return self.page.evaluate(expression, arg)

    def close(self):
        self.browser.close()


def write_coded_y4m(src: Path, dest: Path) -> int:
    """The clip as y4m (what Chromium's fake camera reads), each frame's number drawn as 16
    black/white cells across the top edge (app.js reads them back); returns the frame count."""
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(src))
    info = next(reader)
    w, h = info["size"]
    fps = info["fps"]
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
           "-s", f"{w}x{h}", "-r", str(fps), "-i", "-", "-pix_fmt", "yuv420p", str(dest)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
    n = 0
    for raw in reader:
        frame = np.frombuffer(raw, np.uint8).reshape(h, w, 3).copy()
        cell_h = max(2, w // 32)
        for b in range(16):
            x0, x1 = int(b * w / 16), int((b + 1) * w / 16)
            frame[:cell_h, x0:x1] = 255 if (n >> b) & 1 else 0
        proc.stdin.write(frame.tobytes())
        n += 1
    proc.stdin.close()
    assert proc.wait() == 0
    return n
