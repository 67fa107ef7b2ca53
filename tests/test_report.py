"""Snakemake's own report of the session's real pipeline run: every stage's pictures, videos and
numbers under one category each, per actor; results/summary.tsv equal to its sources."""

from __future__ import annotations

import copy
import html
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import yaml

from support.media import REPO
from support.timeouts import hang_guard
from facevae.modelio import load_model_info

pytestmark = [pytest.mark.media, pytest.mark.slow]

STAGES = ("0. Summary", "1. Faces", "2. Training", "3. Reenactment", "4. Exploration", "5. Attributes")


def build_report(workdir: Path, config: dict, out: Path) -> dict:
    """``snakemake --report out`` on ``workdir``'s results (the config written beside ``out``, so
    the pipeline's folder is only read); returns the report's results, categories and members."""
    configfile = out.with_suffix(".yaml")
    configfile.write_text(yaml.safe_dump(config, sort_keys=False))
    cmd = [str(Path(sys.executable).parent / "snakemake"), "--snakefile", str(REPO / "Snakefile"), "--directory",
           str(workdir), "--configfile", str(configfile), "--cores", "1", "--report", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=hang_guard(600))
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    with zipfile.ZipFile(out) as z:
        members = {name: z.read(name) for name in z.namelist()}
    html = members["report/report.html"].decode()

    def var(name):
        found = re.search(rf'<script id="{name}">\s*var {name} = (.*?);\s*</script>', html, re.S)
        return json.loads(found.group(1))

    return {"results": var("results"), "categories": var("categories"), "members": members}


def _entry(report, path: str) -> dict:
    found = [r for key, r in report["results"].items() if key.endswith(path)]
    assert len(found) == 1, f"{path}: {len(found)} entries in the report"
    return found[0]


def _data(report, entry) -> bytes:
    return report["members"]["report/" + entry["data_uri"]]


@pytest.fixture(scope="module")
def full_report(pipeline, tmp_path_factory):
    return build_report(pipeline["workdir"], pipeline["config"], tmp_path_factory.mktemp("report") / "report.zip")


def test_report_has_every_stage_per_actor(pipeline, full_report):
    config, report = pipeline["config"], full_report
    cats = report["categories"]
    assert sorted(cats) == sorted(STAGES), list(cats)
    actors = sorted(config["actors"])
    for stage in ("2. Training", "4. Exploration", "5. Attributes"):
        assert sorted(cats[stage]) == actors, (stage, cats[stage])
    assert set(cats["1. Faces"]) == set(actors) | set(config["drivers"])
    # Every entry has its file in the zip, not empty, and a caption.
    for key, entry in report["results"].items():
        assert len(_data(report, entry)) > 0, key
        assert entry["caption"].strip(), key
    for actor in actors:
        for name in ("faces/{a}/kept.png", "faces/{a}/rejected.png", "faces/{a}/counts.json", "models/{a}/loss.png",
                     "models/{a}/reconstructions.png", "models/{a}/samples.png", "explore/{a}/walk.mp4",
                     "explore/{a}/interpolate.mp4", "explore/{a}/samples.png", "attributes/{a}/probe.png",
                     "attributes/{a}/probe.tsv", "attributes/{a}/mouth.png"):
            _entry(report, "results/" + name.format(a=actor))
        # The actor's page: the report cannot run it (it needs its files and a server), so its
        # caption says how to open it.
        page = _entry(report, f"results/explore/{actor}/index.html")
        text = html.unescape(re.sub(r"<[^>]+>", "", page["caption"]))  # docutils splits literals into spans
        assert "make explore ACTOR=<name>" in " ".join(text.split()), page["caption"]
    # The reenactment entries: the video (playable: an mp4 the report embeds), its plot, sheet,
    # paste-back video, and the scores table, labelled by driver and video.
    for pair in config["reenact"]:
        a, d = pair["actor"], pair["driver"]
        for video in config["drivers"][d]["videos"]:
            base = f"results/reenact/{a}/{d}/{video}"
            movie = _entry(report, base + ".mp4")
            assert movie["mime_type"] == "video/mp4" and movie["labels"] == {"driver": d, "video": video, "figure": "video"}
            assert f"{a} driven by {d}" in movie["caption"]
            for suffix in (".paste.mp4", ".expression.png", ".sheet.png", ".scores.tsv"):
                _entry(report, base + suffix)
    assert "facevae" in report["members"]["report/report.html"].decode()  # the workflow description


def test_report_scores_are_the_score_files(pipeline, full_report):
    wd = pipeline["workdir"]
    for pair in pipeline["config"]["reenact"]:
        a, d = pair["actor"], pair["driver"]
        for video in pipeline["config"]["drivers"][d]["videos"]:
            score = pd.read_csv(wd / f"results/reenact/{a}/{d}/{video}.tsv", sep="\t").set_index(["instrument", "measure"])
            shown = _data(full_report, _entry(full_report, f"results/reenact/{a}/{d}/{video}.scores.tsv")).decode()
            table = pd.read_csv(pd.io.common.StringIO(shown), sep="\t").set_index(["instrument", "measure"])
            for key in (("mesh", "mouth_open"), ("mesh", "eye_open"), ("dlib", "mouth_open")):
                assert table.loc[key, "pearson"] == pytest.approx(score.loc[key, "pearson"], abs=1e-4)
            assert table.loc[("mesh", "mouth_open"), "identity_kept"] == pytest.approx(score.identity_kept.iloc[0], abs=1e-4)


def test_summary_equals_its_sources(pipeline, full_report):
    wd, config = pipeline["workdir"], pipeline["config"]
    summary = pd.read_csv(wd / "results/summary.tsv", sep="\t")
    shown = _data(full_report, _entry(full_report, "results/summary.tsv")).decode()
    pd.testing.assert_frame_equal(pd.read_csv(pd.io.common.StringIO(shown), sep="\t"), summary)
    pairs = [(p["actor"], p["driver"], v) for p in config["reenact"] for v in config["drivers"][p["driver"]]["videos"]]
    assert len(summary) == len(pairs) + len(set(config["actors"]) - {a for a, _, _ in pairs})
    for row in summary.itertuples():
        counts = json.loads((wd / f"results/faces/{row.actor}/counts.json").read_text())
        metrics = pd.read_csv(wd / f"results/models/{row.actor}/metrics.tsv", sep="\t")
        info = load_model_info(wd / f"results/models/{row.actor}/model.pt")
        assert (row.faces_kept, row.faces_frames, row.epochs) == (counts["in_dataset"], counts["frames"], len(metrics))
        # the measured model's (its last split-phase epoch); the final fit's rows carry none (issue 40)
        assert row.heldout_mse == pytest.approx(metrics.heldout_mse.dropna().iloc[-1], rel=1e-5)
        assert row.heldout_mse == pytest.approx(info["heldout_mse"], rel=1e-5)
        assert row.meanface_mse == pytest.approx(info["meanface_mse"], rel=1e-5)
        assert row.heldout_vs_meanface < 1  # every model beats the average face on held-out faces
        if isinstance(row.driver, str):
            score = pd.read_csv(wd / f"results/reenact/{row.actor}/{row.driver}/{row.video}.tsv", sep="\t")
            score = score.set_index(["instrument", "measure"])
            assert row.mesh_mouth_r == pytest.approx(score.loc[("mesh", "mouth_open"), "pearson"], abs=1e-5)
            assert row.dlib_eye_r == pytest.approx(score.loc[("dlib", "eye_open"), "pearson"], abs=1e-5)
            assert row.identity_kept == pytest.approx(score.identity_kept.iloc[0], abs=1e-5)
            assert row.drive == score.drive.iloc[0]


def test_report_builds_without_the_celeba_stage(pipeline, tmp_path):
    """The same results, the config without ``celeba:``: the report builds (no second pipeline
    run), with every stage but the attributes."""
    config = copy.deepcopy(pipeline["config"])
    config.pop("celeba")
    report = build_report(pipeline["workdir"], config, tmp_path / "report.zip")
    assert sorted(report["categories"]) == [s for s in STAGES if s != "5. Attributes"]
    assert not any("results/attributes/" in key for key in report["results"])
    _entry(report, "results/summary.tsv")
