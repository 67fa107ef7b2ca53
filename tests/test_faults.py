"""Faults a user's machine throws at the workflow: a full disk (a small tmpfs in a user and mount
namespace, `unshare -rm`) during ingest and during tracking -- one line naming the file and "no
space left", no traceback, no segfault, nothing partial."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from support.media import REPO
from support.timeouts import hang_guard
from facevae.video import ffmpeg_exe

pytestmark = pytest.mark.media


def _unshare_works() -> str | None:
    """None when `unshare -rm` can mount a tmpfs here, else why not."""
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"], capture_output=True,
                           text=True)
    return None if probe.returncode == 0 else f"unshare -rm cannot mount a tmpfs here: {probe.stderr.strip()}"


@pytest.fixture(scope="module")
def namespaces():
    reason = _unshare_works()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.mark.parametrize("full, size, target", [
    ("videos", "100k", "results/videos/a/v.mp4"),
    ("tracks", "300k", "results/tracks/a/v.h5"),  # the tracker's worker blocks fill it
    ("tracks", "1500k", "results/tracks/a/v.h5"),  # the blocks fit, the track file does not (h5py)
], ids=["ingest", "tracking-blocks", "tracking-hdf5"])
def test_a_full_disk_is_one_line_and_leaves_nothing(namespaces, media, tmp_path, full, size, target):
    clip = tmp_path / "clip.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(media("videos/lp_d6.mp4")), "-t", "3", "-c", "copy", str(clip)],
                   check=True)
    work = tmp_path / "work"
    (work / "results" / full).mkdir(parents=True)
    config = work / "config.yaml"
    config.write_text(yaml.safe_dump({"actors": {"a": {"videos": {"v": {"path": str(clip)}}}}, "faces": {"aligner": "dlib"}}))
    snakemake = Path(sys.executable).parent / "snakemake"
    inside = (f"mount -t tmpfs -o size={size} tmpfs {work}/results/{full} && "
              f"{snakemake} --snakefile {REPO / 'Snakefile'} --directory {work} --configfile {config} --cores 2 {target}; "
              f"echo rc=$?; echo LEFT; find {work}/results/{full} -mindepth 1")
    done = subprocess.run(["unshare", "-rm", "sh", "-c", inside], capture_output=True, text=True, timeout=hang_guard(600))
    output = done.stdout + done.stderr
    assert "rc=1" in output, output[-3000:]
    errors = [line for line in output.splitlines() if line.startswith("facevae error")]
    assert len(errors) == 1, output[-3000:]
    assert "no space left on the device writing " + target in errors[0]
    assert "Traceback" not in output and "SIGSEGV" not in output, output[-3000:]
    left = done.stdout.split("LEFT", 1)[1].split()  # what the full folder holds afterwards
    assert not [p for p in left if Path(p).is_file() or Path(p).suffix], left


# --- issue 39, item 10: messages that mislead -----------------------------------------------------


@pytest.fixture(scope="module")
def clip_server(media):
    from support.media_server import MediaServer

    with MediaServer({"d5.mp4": media("videos/lp_d5.mp4")}) as server:
        yield server


def _ingest(tmp_path, **source):
    from facevae.ingest import ingest

    entry = {"person": "a", "role": "actor", "video": "v", "url": None, "path": None, "start": None, "end": None, **source}
    out = tmp_path / "videos"
    return ingest(entry, out / "v.mp4", out / "v.json", {"retries": 0}), out


@pytest.mark.parametrize("where, start, end, words", [
    ("url", 100.0, None, "start 100 s is past the end of"),
    ("url", 4.93, 4.94, "the section 4.93-4.94 s of"),
    ("path", 4.93, 4.94, "the section 4.93-4.94 s of"),
], ids=["url-start-past-end", "url-tiny-section", "local-tiny-section"])
def test_a_section_without_frames_says_so(tmp_path, media, clip_server, where, start, end, words):
    """Was: "the downloaded file ... has no video stream", and a local section named ingest's
    temporary folder (.v.xxxx.tmp/video.mp4)."""
    from facevae import FacevaeError

    source = f"{clip_server.url}/d5.mp4" if where == "url" else str(media("videos/lp_d5.mp4"))
    with pytest.raises(FacevaeError) as err:
        _ingest(tmp_path, **{where: source}, start=start, end=end)
    message = str(err.value)
    assert words in message and source in message and "4.94 s" in message, message
    assert ".tmp" not in message and "no video stream" not in message, message
    assert not list((tmp_path / "videos").iterdir())


def test_a_password_in_a_url_is_not_written_anywhere(tmp_path, clip_server, caplog):
    import json
    import logging

    url = clip_server.url.replace("http://", "http://user:hunter2@") + "/d5.mp4"
    with caplog.at_level(logging.INFO):
        meta, out = _ingest(tmp_path, url=url, start=1.0, end=2.0)
    assert meta["frame_count"] > 0
    assert json.loads((out / "v.json").read_text())["source"]["url"] == url.replace("hunter2", "***")
    assert "hunter2" not in (out / "v.json").read_text() and "hunter2" not in caplog.text
    assert "user:***@" in caplog.text  # the log still says which URL


# --- issue 39, item 8: raw tracebacks where one line should say what happened ---------------------


@pytest.fixture(scope="module")
def file_pointer_server():
    """A loopback server that answers with a redirect to file:///etc/passwd, or an HTML page whose
    video points there."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            if self.path.startswith("/redirect"):
                self.send_response(302)
                self.send_header("Location", "file:///etc/passwd")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = b'<html><body><video src="file:///etc/passwd"></video></body></html>'
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("path", ["redirect.mp4", "page.html"])
def test_a_url_that_leads_to_a_local_file_is_one_error(tmp_path, file_pointer_server, path):
    """yt-dlp raised its RequestError (not a DownloadError): a traceback."""
    from facevae import FacevaeError
    from facevae.faces import dataset as fds

    url = f"{file_pointer_server}/{path}"
    with pytest.raises(FacevaeError) as err:
        _ingest(tmp_path, url=url)
    assert f"download of {url} failed: the server redirected or pointed to a local file" in str(err.value)
    assert not list((tmp_path / "videos").iterdir())
    if path.startswith("redirect"):  # a dataset URL too (urllib refuses the redirect)
        with pytest.raises(FacevaeError, match=rf"actors\.a\.dataset: download of {url} failed: HTTP Error 302"):
            fds.fetch_dataset(url, tmp_path / "d" / "a.h5", actor="a", size=64, download={"retries": 0})


def test_a_folder_where_an_output_goes_is_one_line(tmp_path, media):
    """A non-empty folder at results/videos/a/v.json: os.replace's IsADirectoryError was a traceback."""
    work = tmp_path / "work"
    (work / "results/videos/a/v.json").mkdir(parents=True)
    (work / "results/videos/a/v.json/notes.txt").write_text("mine")
    config = work / "config.yaml"
    config.write_text(yaml.safe_dump({"actors": {"a": {"videos": {"v": {"path": str(media("videos/lp_d5.mp4"))}}}}}))
    done = subprocess.run([str(Path(sys.executable).parent / "snakemake"), "--snakefile", str(REPO / "Snakefile"),
                           "--directory", str(work), "--configfile", str(config), "--cores", "1",
                           "results/videos/a/v.mp4"], capture_output=True, text=True, timeout=hang_guard(300))
    output = done.stdout + done.stderr
    errors = [line for line in output.splitlines() if line.startswith("facevae error")]
    assert done.returncode != 0 and len(errors) == 1, output[-3000:]
    assert "results/videos/a/v.json: Is a directory -- a folder is in the way: move or remove it" in errors[0], errors[0]
    assert "Traceback" not in output, output[-3000:]
    assert (work / "results/videos/a/v.json/notes.txt").read_text() == "mine"


def test_an_empty_local_video_says_it_is_empty(tmp_path):
    from facevae import FacevaeError

    empty = tmp_path / "clip.mp4"
    empty.write_bytes(b"")
    with pytest.raises(FacevaeError, match=r"clip.mp4 is empty \(0 bytes\)"):  # was: "moov atom not found"
        _ingest(tmp_path, path=str(empty))
