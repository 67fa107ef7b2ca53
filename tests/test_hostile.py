"""Hostile inputs, second pass (issue 39): real files, real loopback servers, no mocks. The fast
cases live here (the inner loop); the ones that run Snakemake are in tests/test_faults.py."""

from __future__ import annotations

import http.server
import threading

import h5py
import numpy as np
import pytest

from facevae import FacevaeError
from facevae.faces import dataset as fds
from facevae.faces import io as fio


# --- item 1: a dataset file must not read bytes from outside itself -------------------------------


def _secret(tmp_path) -> tuple:
    """A local file whose bytes must never reach the faces (36864 bytes = 3 faces of 64 px)."""
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.random.default_rng(7).integers(0, 255, 3 * 64 * 64 * 3, dtype=np.uint8).tobytes())
    return secret, 3 * 64 * 64 * 3


def _external_storage(tmp_path):
    secret, n = _secret(tmp_path)
    path = tmp_path / "external.h5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("data", shape=(3, 64, 64, 3), dtype=np.uint8, external=[(str(secret), 0, n)])
    return path, "uses external storage", str(secret)


def _virtual(tmp_path):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as h5:
        h5.create_dataset("faces", data=np.full((3, 64, 64, 3), 9, np.uint8))
    layout = h5py.VirtualLayout(shape=(3, 64, 64, 3), dtype=np.uint8)
    layout[:] = h5py.VirtualSource(str(other), "faces", shape=(3, 64, 64, 3))
    path = tmp_path / "virtual.h5"
    with h5py.File(path, "w") as h5:
        h5.create_virtual_dataset("data", layout)
    return path, "is a virtual dataset", str(other)


def _external_link(tmp_path):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as h5:
        h5.create_dataset("faces", data=np.full((3, 64, 64, 3), 9, np.uint8))
    path = tmp_path / "link.h5"
    with h5py.File(path, "w") as h5:
        h5["data"] = h5py.ExternalLink(str(other), "/faces")
    return path, "is an external link", str(other)


def _soft_link_through_external_group(tmp_path):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as h5:
        h5.create_dataset("g/faces", data=np.full((3, 64, 64, 3), 9, np.uint8))
    path = tmp_path / "soft.h5"
    with h5py.File(path, "w") as h5:
        h5["elsewhere"] = h5py.ExternalLink(str(other), "/g")
        h5["data"] = h5py.SoftLink("/elsewhere/faces")
    return path, "is a soft link", "/elsewhere/faces"


@pytest.mark.parametrize("make", [_external_storage, _virtual, _external_link, _soft_link_through_external_group],
                         ids=["external-storage", "virtual", "external-link", "soft-link"])
def test_a_dataset_reading_outside_its_file_is_refused(tmp_path, make):
    path, construct, named = make(tmp_path)
    with pytest.raises(FacevaeError) as err:
        fds.fetch_dataset(str(path), tmp_path / "out" / "a.h5", actor="a", size=64)
    message = str(err.value)
    assert message.startswith(f"actors.a.dataset: {path} 'data' {construct}") and named in message, message
    assert not list((tmp_path / "out").iterdir())  # nothing kept, not even a temporary


def test_a_dataset_with_an_unavailable_filter_is_one_error(tmp_path):
    """Chunks written with a filter this HDF5 has no plugin for (zstd's registered id, 32015)
    fail the check with one error, not the report's read with a traceback."""
    path = tmp_path / "filtered.h5"
    with h5py.File(path, "w") as h5:
        node = h5.create_dataset("data", shape=(3, 64, 64, 3), dtype=np.uint8, chunks=(1, 64, 64, 3), compression=32015,
                                 allow_unknown_filter=True)
        for row in range(3):
            node.id.write_direct_chunk((row, 0, 0, 0), b"not zstd at all")
    with pytest.raises(FacevaeError, match=r"actors\.a\.dataset: .*filtered.h5 dataset 'data' cannot be read"):
        fds.fetch_dataset(str(path), tmp_path / "a.h5", actor="a", size=64)


# --- item 2: a dataset URL is downloaded under the download: limits, like a video ----------------


@pytest.fixture(scope="module")
def dataset_server(tmp_path_factory):
    """A loopback MediaServer (tests/support) serving one real blog-format HDF5 (5 faces)."""
    from support.media_server import MediaServer

    path = tmp_path_factory.mktemp("serve") / "blog.h5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("data", data=np.random.default_rng(3).integers(0, 255, (5, 64, 64, 3), dtype=np.uint8))
    with MediaServer({"blog.h5": path}) as server:
        yield server


@pytest.mark.parametrize("download, words", [
    ({"retries": 0, "min_speed_kbps": 5, "stall_seconds": 1}, "is too slow"),
    ({"retries": 0, "min_speed_kbps": 0, "deadline_minutes": 0.02}, "did not finish within download.deadline_minutes (0.02 min)"),
], ids=["min-speed", "deadline"])
def test_a_trickling_dataset_server_is_stopped(tmp_path, dataset_server, download, words):
    """Content-Length, then one byte a second: before, faces_dataset waited for ever on a 0-byte temp."""
    import time

    url = f"{dataset_server.url}/trickle/blog.h5"
    started = time.monotonic()
    with pytest.raises(FacevaeError) as err:
        fds.fetch_dataset(url, tmp_path / "out" / "a.h5", actor="a", size=64, download=download)
    assert time.monotonic() - started < 30
    assert str(err.value).startswith(f"actors.a.dataset: download of {url} ") and words in str(err.value), str(err.value)
    assert not list((tmp_path / "out").iterdir())


def test_a_dataset_download_retries_transient_errors_only(tmp_path, dataset_server):
    url = dataset_server.url
    got = fds.fetch_dataset(f"{url}/flaky/blog.h5", tmp_path / "a.h5", actor="a", size=64, download={"retries": 1})
    assert got["count"] == 5 and dataset_server.requests["flaky/blog.h5"] == 2  # the 503, then the file
    with pytest.raises(FacevaeError, match=r"actors\.b\.dataset: download of .*/nothing.h5 failed: HTTP Error 404"):
        fds.fetch_dataset(f"{url}/nothing.h5", tmp_path / "b.h5", actor="b", size=64, download={"retries": 3})
    assert dataset_server.requests["nothing.h5"] == 1  # a 404 is not retried


def test_a_dataset_cut_short_is_an_error_not_a_short_file(tmp_path, dataset_server):
    url = f"{dataset_server.url}/short/blog.h5"
    with pytest.raises(FacevaeError, match=r"actors\.a\.dataset: download of .*short/blog.h5 failed: IncompleteRead") as err:
        fds.fetch_dataset(url, tmp_path / "out" / "a.h5", actor="a", size=64, download={"retries": 0})
    from facevae.download import transient

    assert transient(str(err.value))  # a later attempt may get it whole: retried like a 503
    assert not list((tmp_path / "out").iterdir())


# --- item 9: serve_page serves the page's own files and answers only to this machine's names ------


@pytest.fixture(scope="module")
def page_site(tmp_path_factory):
    """A page folder (index, a module, a vendor subfolder, a hidden temp, links in and out) served
    by the real serve_page on a loopback port."""
    from facevae.serve_page import serve

    tmp_path = tmp_path_factory.mktemp("page")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("private")
    site = tmp_path / "site"
    (site / "vendor").mkdir(parents=True)
    (site / "index.html").write_text("<!doctype html><title>t</title>")
    (site / "app.js").write_text("export default 1;")
    (site / "vendor" / "ort.mjs").write_text("export const ort = 1;")
    (site / ".page.json.1234.tmp").write_text("{half a file")  # an atomic writer's temporary
    (site / ".git").mkdir()
    (site / ".git" / "config").write_text("[core]")
    (site / "passwd").symlink_to(outside / "secret.txt")  # ln -s /etc/passwd
    (site / "up").symlink_to(outside, target_is_directory=True)
    (site / "same.js").symlink_to(site / "app.js")  # a link that stays inside: the page's own file
    (site / "empty").mkdir()
    server = serve(site)
    yield {"port": server.server_address[1], "site": site}
    server.shutdown()
    server.server_close()


def _get(port: int, path: str, host: str | None = None) -> tuple[int, bytes]:
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
    connection.putheader("Host", host if host is not None else f"127.0.0.1:{port}")
    connection.endheaders()
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response.status, body


@pytest.mark.parametrize("path", ["/passwd", "/up/secret.txt", "/up/", "/.page.json.1234.tmp", "/.git/config",
                                  "/vendor/", "/empty/", "/vendor/../.git/config", "/%2e%2e/outside/secret.txt"],
                         ids=["link-out", "dir-link-out", "dir-link-listing", "hidden-temp", "hidden-dir", "listing",
                              "empty-listing", "dotdot-hidden", "encoded-dotdot"])
def test_serve_page_refuses_what_is_not_the_page(page_site, path):
    status, body = _get(page_site["port"], path)
    assert status == 404, (status, body[:200])
    assert b"private" not in body and b"[core]" not in body and b"ort.mjs" not in body and b"half a file" not in body


def test_serve_page_serves_the_page_and_links_inside_it(page_site):
    port = page_site["port"]
    assert _get(port, "/") == (200, b"<!doctype html><title>t</title>")
    assert _get(port, "/vendor/ort.mjs") == (200, b"export const ort = 1;")
    assert _get(port, "/same.js") == (200, b"export default 1;")
    for host in ("localhost", f"localhost:{port}", "127.0.0.1", f"127.0.0.1:{port}", "[::1]", f"[::1]:{port}",
                 "LOCALHOST:1"):
        assert _get(port, "/app.js", host)[0] == 200, host


@pytest.mark.parametrize("host", ["evil.example", f"evil.example:8000", "127.0.0.1.evil.example", "localhost.evil",
                                  "", "[::2]"], ids=["name", "name-port", "suffix", "prefix", "empty", "other-v6"])
def test_serve_page_refuses_other_hosts(page_site, host):
    """DNS rebinding: a page elsewhere whose name resolves to 127.0.0.1 must not read the models."""
    status, body = _get(page_site["port"], "/app.js", host)
    assert status == 421 and b"export" not in body, (status, body[:200])


@pytest.mark.parametrize("path", ["/%00", "/app.js%00.png", "/%00/x"])
def test_serve_page_answers_400_to_a_nul_byte(page_site, path, capfd):
    status, _ = _get(page_site["port"], path)
    assert status == 400
    assert "Traceback" not in capfd.readouterr().err


# --- item 4: exclude ranges -----------------------------------------------------------------------


def _exclude_config(frames):
    return {"actors": {"a": {"videos": {"v": {"url": "https://example.org/a.mp4"}}, "exclude": {"v": frames}}}}


@pytest.mark.parametrize("frames, index", [(["20-10"], 0), ([3, "5-6", "9-8"], 2)])
def test_a_reversed_exclude_range_names_the_key(frames, index):
    """"20-10" excluded nothing, without a word."""
    from facevae.config import ConfigError, validate

    with pytest.raises(ConfigError) as err:
        validate(_exclude_config(frames))
    assert err.value.key == f"actors.a.exclude.v.{index}"
    assert f"the range '{frames[index]}' runs backwards" in str(err.value)


def test_a_huge_exclude_range_stays_a_range():
    """"0-1000000000" built a set of a billion ints (~380 MB per 5 M); now a range, clipped to the video."""
    import time
    import tracemalloc

    from facevae.config import validate
    from facevae.faces.track import exclusion_mask, parse_frame_list

    validate(_exclude_config(["0-1000000000"]))
    tracemalloc.start()
    started = time.perf_counter()
    ranges = parse_frame_list([7, "0-5000000", "4999990-1000000000", 12])
    mask = exclusion_mask(ranges, 300)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1_000_000 and time.perf_counter() - started < 1.0, peak
    assert mask.shape == (300,) and mask.all()
    assert exclusion_mask(parse_frame_list([3, "10-12", 3, "400-500"]), 20).nonzero()[0].tolist() == [3, 10, 11, 12]
    assert not exclusion_mask(parse_frame_list(None), 5).any()


# --- item 8: serve_page on a port it cannot have ------------------------------------------------


@pytest.mark.parametrize("port, words", [("busy", "Address already in use -- another server"),
                                         ("70000", "70000 is out of range: a port is 0-65535"),
                                         ("-1", "-1 is out of range"), ("http", "'http' is not a port number")])
def test_serve_page_on_a_port_it_cannot_have_is_one_line(tmp_path, port, words):
    import os
    import socket
    import subprocess
    import sys

    (tmp_path / "index.html").write_text("<!doctype html>")
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    if port == "busy":
        port = str(holder.getsockname()[1])
    try:
        done = subprocess.run([sys.executable, "-m", "facevae.serve_page", str(tmp_path), "--port", port],
                              capture_output=True, text=True, timeout=30, env={**os.environ, "PYTHONPATH": "workflow"})
    finally:
        holder.close()
    assert done.returncode != 0 and words in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


# --- item 5: the page notices broken or stale inputs ----------------------------------------------


@pytest.fixture
def built_page(tmp_path):
    """A page folder as page_models leaves it: two graph files and a sealed page.json (real
    sha256 over real files; the check does not parse the graphs)."""
    import json

    from facevae.webruntime import seal_manifest

    folder = tmp_path / "explore" / "a"
    folder.mkdir(parents=True)
    (folder / "decoder.onnx").write_bytes(np.random.default_rng(0).bytes(50_000))
    (folder / "drive.onnx").write_bytes(np.random.default_rng(1).bytes(20_000))
    model = tmp_path / "model.pt"
    model.write_bytes(b"weights")
    manifest = {"format": "facevae-page", "version": 1, "actor": "a", "latent_dim": 8, "gain": 1.25,
                "files": {"decoder": "decoder.onnx", "drive": "drive.onnx"}}
    (folder / "page.json").write_text(json.dumps(seal_manifest(manifest, folder, model), indent=1) + "\n")
    return folder


def test_the_page_build_refuses_a_changed_graph_or_page_json(built_page):
    """Truncating decoder.onnx or editing page.json re-ran only the page rule, which exited 0."""
    import hashlib
    import json

    from facevae.webruntime import check_page_files, copy_page_files

    sha = check_page_files(built_page)
    assert sha == hashlib.sha256((built_page / "page.json").read_bytes()).hexdigest()
    copy_page_files(built_page, page_sha256=sha)
    assert f'name="facevae-page-sha256" content="{sha}"' in (built_page / "index.html").read_text()
    assert (built_page / "integrity.js").is_file() and not list(built_page.glob(".*.tmp"))

    manifest = json.loads((built_page / "page.json").read_text())
    (built_page / "page.json").write_text(json.dumps(manifest))  # re-indented, same content: fine
    check_page_files(built_page)

    data = (built_page / "decoder.onnx").read_bytes()
    (built_page / "decoder.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(FacevaeError, match=r"decoder.onnx does not match page.json .*--forcerun page_models"):
        check_page_files(built_page)
    (built_page / "decoder.onnx").write_bytes(data)

    (built_page / "page.json").write_text(json.dumps({**manifest, "gain": 2.0}))
    with pytest.raises(FacevaeError, match=r"page.json was edited after page_models wrote it"):
        check_page_files(built_page)
    (built_page / "page.json").write_text('{"format": "facevae-page", "files": {')
    with pytest.raises(FacevaeError, match=r"page.json cannot be read as JSON"):
        check_page_files(built_page)


def test_the_page_itself_refuses_a_changed_file(built_page):
    """The page's own check (workflow/page/integrity.js) in node against the real serve_page: the
    file page.json lists, and page.json against index.html's record, each named when they differ."""
    import hashlib
    import json
    import shutil
    import subprocess

    from facevae.serve_page import serve
    from facevae.webruntime import PAGE_SOURCE, check_page_files, copy_page_files

    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (the page's JavaScript check runs in node here)")
    copy_page_files(built_page, page_sha256=check_page_files(built_page))
    server = serve(built_page)
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    script = ("import { loadVerified } from %s;\n"
              "try { const { manifest, files } = await loadVerified(process.argv[1], process.argv[2]);\n"
              "  console.log('OK', manifest.actor, files.decoder.length, files.drive.length); }\n"
              "catch (err) { console.log(err.constructor.name + ': ' + err.message); }\n") % json.dumps(
        (PAGE_SOURCE / "integrity.js").as_uri())

    def page_check(recorded: str) -> str:
        done = subprocess.run([node, "--input-type=module", "-e", script, url, recorded], capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    try:
        recorded = hashlib.sha256((built_page / "page.json").read_bytes()).hexdigest()
        assert page_check(recorded) == "OK a 50000 20000"
        data = (built_page / "drive.onnx").read_bytes()
        (built_page / "drive.onnx").write_bytes(data[:100])
        assert page_check(recorded).startswith("IntegrityError: drive.onnx does not match what the build recorded")
        (built_page / "drive.onnx").write_bytes(data)
        assert page_check("0" * 64).startswith("IntegrityError: page.json does not match what the build recorded")
        assert page_check("").startswith("IntegrityError: no sha256 recorded for page.json")
    finally:
        server.shutdown()
        server.server_close()


# --- item 7: the render's memory is bounded by bytes, and the rule says how much it needs ---------


@pytest.mark.parametrize("width, height, frames", [(480, 480, 256), (1920, 1080, 86), (3840, 2160, 21),
                                                   (7680, 4320, 5), (30000, 30000, 1)])
def test_the_render_chunk_is_bounded_by_bytes(width, height, frames):
    """256 full-resolution frames per chunk held ~6.5 GB at 4K (grid / paste_back); the chunk's
    frames now stay under RENDER_FRAME_BUFFER_BYTES (one frame at least)."""
    from facevae.planning import RENDER_FRAME_BUFFER_BYTES
    from facevae.render import frames_per_chunk

    n = frames_per_chunk(width, height, 256)
    assert n == frames
    assert n == 1 or n * width * height * 3 <= RENDER_FRAME_BUFFER_BYTES


def test_reenact_declares_the_memory_the_drivers_resolution_needs(tmp_path):
    import json

    from facevae.planning import reenact_mem_mb

    def mem(width, height, **render):
        meta = tmp_path / f"{width}x{height}.json"
        meta.write_text(json.dumps({"width": width, "height": height}))
        return reenact_mem_mb(str(meta), render)

    plain = mem(3840, 2160)
    assert plain == mem(480, 480)  # side_by_side never holds full frames: resolution does not matter
    assert mem(480, 480, paste_back=True) < mem(1920, 1080, paste_back=True) < mem(3840, 2160, paste_back=True) \
        < mem(7680, 4320, paste_back=True)
    assert mem(3840, 2160, layout="grid") > plain
    # before ingest the meta does not exist: the 4K figure until Snakemake re-evaluates with the file
    assert reenact_mem_mb(str(tmp_path / "missing.json"), {"paste_back": True}) == mem(3840, 2160, paste_back=True)


def test_the_reenact_rule_declares_mem_mb():
    from support.media import REPO

    text = (REPO / "rules" / "reenact.smk").read_text()
    rule = text[text.index("rule reenact:"):]
    assert "mem_mb=lambda wc, input: reenact_mem_mb(input.meta, config[\"render\"])" in rule


def test_a_dataset_with_any_object_stored_elsewhere_is_refused(tmp_path):
    """read_faces reads every top-level dataset (landmarks, frame, ...), not only data: an external
    link or external storage under another name read a local file just the same."""
    secret, n = _secret(tmp_path)
    for name, make in [("landmarks", lambda h5: h5.create_dataset("landmarks", shape=(n // 4,), dtype=np.float32,
                                                                  external=[(str(secret), 0, n)])),
                       ("frame", lambda h5: h5.__setitem__("frame", h5py.ExternalLink(str(secret), "/x"))),
                       ("g/deep", lambda h5: h5.__setitem__("g/deep", h5py.ExternalLink(str(secret), "/x")))]:
        path = tmp_path / f"{name.replace('/', '_')}.h5"
        with h5py.File(path, "w") as h5:
            h5.create_dataset("data", data=np.zeros((3, 64, 64, 3), np.uint8))
            make(h5)
        with pytest.raises(FacevaeError, match=rf"actors\.a\.dataset: .* '{name}' (is an external link|reads its bytes)"):
            fds.fetch_dataset(str(path), tmp_path / "out.h5", actor="a", size=64)


def test_serve_page_does_not_open_a_fifo(tmp_path):
    """A FIFO in the page's folder held a handler thread for ever (open() blocks until a writer comes)."""
    import os

    from facevae.serve_page import serve

    (tmp_path / "index.html").write_text("<!doctype html>")
    os.mkfifo(tmp_path / "pipe.js")
    server = serve(tmp_path)
    try:
        assert _get(server.server_address[1], "/pipe.js")[0] == 404
    finally:
        server.shutdown()
        server.server_close()


def test_a_killed_download_s_folder_is_removed_by_the_next_run(tmp_path, dataset_server):
    """SIGKILL runs no cleanup: the download's hidden work folder (mkdtemp's random name) stayed
    for ever with the partial file in it. Named by pid now, the next run removes it."""
    out = tmp_path / "faces" / "a.h5"
    stale = out.parent / f".{out.name}.999999999.tmp"  # no such pid (above pid_max)
    stale.mkdir(parents=True)
    (stale / "dataset.h5").write_bytes(b"\0" * 1000)
    fds.fetch_dataset(f"{dataset_server.url}/blog.h5", out, actor="a", size=64, download={"retries": 0})
    assert out.is_file() and sorted(p.name for p in out.parent.iterdir()) == ["a.h5"]


def test_serve_page_answers_404_to_a_path_that_is_not_utf8(page_site, capfd):
    """/%ff%fe: the Host/hidden check decoded it strictly and the handler died with a traceback."""
    assert _get(page_site["port"], "/%ff%fe")[0] == 404
    assert "Traceback" not in capfd.readouterr().err
