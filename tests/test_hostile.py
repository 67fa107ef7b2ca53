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


@pytest.fixture
def dataset_server(tmp_path):
    """A loopback MediaServer (tests/support) serving one real blog-format HDF5 (5 faces)."""
    from support.media_server import MediaServer

    path = tmp_path / "serve" / "blog.h5"
    path.parent.mkdir()
    with h5py.File(path, "w") as h5:
        h5.create_dataset("data", data=np.random.default_rng(3).integers(0, 255, (5, 64, 64, 3), dtype=np.uint8))
    with MediaServer({"blog.h5": path}) as server:
        yield server


@pytest.mark.parametrize("download, words", [
    ({"retries": 0, "min_speed_kbps": 5, "stall_seconds": 2}, "is too slow"),
    ({"retries": 0, "min_speed_kbps": 0, "deadline_minutes": 0.05}, "did not finish within download.deadline_minutes (0.05 min)"),
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
    with pytest.raises(FacevaeError, match=r"actors\.a\.dataset: download of .*short/blog.h5 failed: IncompleteRead"):
        fds.fetch_dataset(url, tmp_path / "out" / "a.h5", actor="a", size=64, download={"retries": 1})
    assert dataset_server.requests["short/blog.h5"] == 2  # retried once (transient), then the error
    assert not list((tmp_path / "out").iterdir())
