"""Shared fixtures: the real test media folder, a loopback HTTP server that serves it, and the
session's one real pipeline run. Helpers live in tests/support/ (imported as ``support.*``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from support.media import DEFAULT_MEDIA, GITHUB_RAW, MEDIA_ENV, PUBLIC_MEDIA, Media, unavailable
from support.media_server import MediaServer
from support.pipeline import pipeline_overrides
from support.workflow import deep_merge, loopback_config, run_snakemake


@pytest.fixture(scope="session")
def media() -> Media:
    """``media("videos/lp_d6.mp4")`` -> Path, or skip (fail under CI) with the reason."""
    root = Path(os.environ.get(MEDIA_ENV, DEFAULT_MEDIA))
    return Media(root if root.is_dir() else None)


@pytest.fixture(scope="session")
def media_server(media):
    """A loopback server that answers the public media URLs (same paths) from the media folder."""
    routes = {}
    for relpath, url in PUBLIC_MEDIA.items():
        if not relpath.startswith("videos/"):
            continue
        try:
            routes[url.removeprefix(GITHUB_RAW)] = media(relpath)
        except pytest.skip.Exception:
            continue  # a clip we cannot have here: its URL answers 404
    if not routes:
        unavailable("no test clip could be found or fetched")
    with MediaServer(routes) as server:
        yield server


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory, media_server, media):
    """ONE real run of the default config.yaml (URLs on the loopback server) per test session.

    Many tests read its outputs; none may modify them.
    """
    workdir = tmp_path_factory.mktemp("pipeline")
    config = deep_merge(loopback_config(media_server), pipeline_overrides(media))
    result = run_snakemake(workdir, config)
    return {"workdir": workdir, "config": config, "result": result, "server": media_server}


# Real runs -- Snakemake workflows, downloads through the loopback server, training, tracking
# clips, a browser -- are slow; ``pytest -m "not slow"`` is the inner loop of the rest (units,
# config, planning, driving maths, exports: about a minute on two cores, see README).
SLOW_FIXTURES = {"pipeline", "media_server", "kit"}
SLOW_MODULES = {"test_attributes", "test_celeba", "test_explore", "test_faces_fa", "test_faces_video", "test_faults",
                "test_ingest", "test_page", "test_render", "test_render_pipeline", "test_report", "test_slurm",
                "test_train", "test_train_featurenet"}


def pytest_collection_modifyitems(config, items):
    """Mark what needs a real run slow: tests using the session's pipeline run, the media server or
    the renderer's kit, and the modules made of real runs (SLOW_MODULES)."""
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1] if getattr(item, "module", None) else ""
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())) or module in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
