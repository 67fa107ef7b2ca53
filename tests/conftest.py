"""Shared fixtures: the real test media folder and a loopback HTTP server that serves it.

The media folder comes from FACEVAE_MEDIA (default: ../shared/data beside the repository).
Where it is missing, the public files whose URLs are known are fetched into a cache; tests whose
files cannot be had skip with the reason -- except under CI=true, where a missing file fails the
run (CI must never be green by skipping).
"""

from __future__ import annotations

import os
import shutil
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MEDIA_ENV = "FACEVAE_MEDIA"
DEFAULT_MEDIA = REPO.parent / "shared" / "data"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "facevae" / "media"

_LP = "https://raw.githubusercontent.com/KwaiVGI/LivePortrait/1986663be3b6902605d32200c01f4bfd36cda83d/"
_TPSMM = (
    "https://raw.githubusercontent.com/yoyo-nb/Thin-Plate-Spline-Motion-Model/"
    "c616878812c9870ed81ac72561be2676fd7180e2/"
)
_FR = "https://raw.githubusercontent.com/ageitgey/face_recognition/master/examples/"
_FA = "https://raw.githubusercontent.com/1adrianb/face-alignment/master/test/assets/"

# Public sources of the shared media (see ../shared/data/README.md), for machines without it.
PUBLIC_MEDIA = {
    **{
        f"videos/lp_{n}.mp4": f"{_LP}assets/examples/driving/{n}.mp4"
        for n in ["d0", "d3", "d5", "d6", "d7", "d8", "d10", "d11", "d12", "d13", "d18", "d19", "d20"]
    },
    **{f"videos/lp_{n}.mp4": f"{_LP}assets/examples/source/{n}.mp4" for n in ["s18", "s20", "s29", "s32"]},
    "videos/tpsmm_driving.mp4": f"{_TPSMM}assets/driving.mp4",
    "images/tpsmm_source.png": f"{_TPSMM}assets/source.png",
    "videos/fr_hamilton_clip.mp4": f"{_FR}short_hamilton_clip.mp4",
    "images/fr_lin-manuel-miranda.png": f"{_FR}lin-manuel-miranda.png",
    "images/fr_two_people.jpg": f"{_FR}two_people.jpg",
    "images/aflw-test.jpg": f"{_FA}aflw-test.jpg",
    **{
        f"images/liveportrait_{n}.jpg": f"{_LP}assets/examples/driving/{n}.jpg"
        for n in ["d8", "d9", "d12", "d19", "d30", "d38"]
    },
    **{f"images/liveportrait_{n}.jpg": f"{_LP}assets/examples/source/{n}.jpg" for n in ["s2", "s12", "s33"]},
    "images/insightface_t1.jpg": f"{_LP}src/utils/dependencies/insightface/data/images/t1.jpg",
}


def _unavailable(reason: str):
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI=true and test media is missing: {reason}", pytrace=False)
    pytest.skip(reason)


class Media:
    """Finds a media file by its path relative to the media folder (e.g. ``videos/lp_d6.mp4``)."""

    def __init__(self, root: Path | None):
        self.root = root

    def __call__(self, relpath: str) -> Path:
        if self.root is not None:
            path = self.root / relpath
            if path.exists():
                return path
            _unavailable(f"{path} is missing from the media folder ({MEDIA_ENV})")
        cached = CACHE / relpath
        if cached.exists():
            return cached
        url = PUBLIC_MEDIA.get(relpath)
        if url is None:
            _unavailable(f"no media folder ({MEDIA_ENV} or {DEFAULT_MEDIA}) and no public URL for {relpath}")
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(cached.suffix + ".part")
        try:
            with urllib.request.urlopen(url, timeout=30) as response, open(tmp, "wb") as out:
                shutil.copyfileobj(response, out)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            _unavailable(f"no media folder and fetching {url} failed: {err}")
        tmp.replace(cached)
        return cached


@pytest.fixture(scope="session")
def media() -> Media:
    """``media("videos/lp_d6.mp4")`` -> Path, or skip (fail under CI) with the reason."""
    root = Path(os.environ.get(MEDIA_ENV, DEFAULT_MEDIA))
    return Media(root if root.is_dir() else None)


# --- real Snakemake runs -------------------------------------------------------------------------

import subprocess  # noqa: E402
import sys  # noqa: E402

import yaml  # noqa: E402

GITHUB_RAW = "https://raw.githubusercontent.com/"
DEFAULT_CONFIG = REPO / "config.yaml"


@pytest.fixture(scope="session")
def media_server(media):
    """A loopback server that answers the public media URLs (same paths) from the media folder."""
    from media_server import MediaServer

    routes = {}
    for relpath, url in PUBLIC_MEDIA.items():
        if not relpath.startswith("videos/"):
            continue
        try:
            routes[url.removeprefix(GITHUB_RAW)] = media(relpath)
        except pytest.skip.Exception:
            continue  # a clip we cannot have here: its URL answers 404
    if not routes:
        _unavailable("no test clip could be found or fetched")
    with MediaServer(routes) as server:
        yield server


def loopback_config(server, config: dict | None = None) -> dict:
    """``config`` (default: the repository's config.yaml) with its public URLs pointed at ``server``."""
    config = config if config is not None else yaml.safe_load(DEFAULT_CONFIG.read_text())
    text = yaml.safe_dump(config).replace(GITHUB_RAW, server.url + "/")
    return yaml.safe_load(text)


def deep_merge(base: dict, extra: dict) -> dict:
    """``base`` updated by ``extra``, nested dicts merged key by key (new dicts; inputs unchanged)."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def run_snakemake(workdir: Path, config: dict, *args: str, timeout: int = 900, check: bool = True):
    """Run the real workflow in ``workdir`` with ``config``; returns the CompletedProcess."""
    workdir.mkdir(parents=True, exist_ok=True)
    configfile = workdir / "config.yaml"
    configfile.write_text(yaml.safe_dump(config, sort_keys=False))
    cmd = [
        str(Path(sys.executable).parent / "snakemake"),
        "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir),
        "--configfile", str(configfile),
        "--cores", "2",
        *args,
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    result.output = result.stdout + result.stderr
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake failed ({result.returncode}):\n{result.output[-6000:]}")
    return result


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory, media_server, media):
    """ONE real run of the default config.yaml (URLs on the loopback server) per test session.

    Many tests read its outputs; none may modify them.
    """
    from pipeline_overrides import pipeline_overrides

    workdir = tmp_path_factory.mktemp("pipeline")
    config = deep_merge(loopback_config(media_server), pipeline_overrides(media))
    result = run_snakemake(workdir, config)
    return {"workdir": workdir, "config": config, "result": result, "server": media_server}
