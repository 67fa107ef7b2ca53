"""Video ingest through real Snakemake runs: yt-dlp downloads from a loopback server, trimming,
caching and the error cases (each must leave no partial file behind)."""

import json
import time

import pytest

from support.workflow import run_snakemake
from facevae import video as vid
from facevae.config import time_to_seconds

LP = "KwaiVGI/LivePortrait/1986663be3b6902605d32200c01f4bfd36cda83d/assets/examples/driving/"
TPSMM = "yoyo-nb/Thin-Plate-Spline-Motion-Model/c616878812c9870ed81ac72561be2676fd7180e2/assets/driving.mp4"

pytestmark = pytest.mark.media


def run_ingest(workdir, config, **kwargs):
    """Run only the ingest stage (its outputs as targets): these tests need no faces or training."""
    targets = [
        f"results/videos/{person}/{video}.{ext}"
        for section in ("actors", "drivers")
        for person, entry in (config.get(section) or {}).items()
        for video in (entry.get("videos") or {})
        for ext in ("mp4", "json")
    ]
    return run_snakemake(workdir, config, *targets, **kwargs)


def leftovers(workdir):
    """Every file or folder under results/videos (hidden temporary ones included)."""
    root = workdir / "results" / "videos"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def test_default_config_downloads_every_clip(pipeline, media):
    workdir, config = pipeline["workdir"], pipeline["config"]
    expected = {("d6", "d6"): "videos/lp_d6.mp4", ("d10", "d10"): "videos/lp_d10.mp4", ("tpsmm", "driving"): "videos/tpsmm_driving.mp4"}
    for (person, video), relpath in expected.items():
        mp4, meta = workdir / f"results/videos/{person}/{video}.mp4", workdir / f"results/videos/{person}/{video}.json"
        info = json.loads(meta.read_text())
        source = vid.probe(media(relpath))
        entry = {**config.get("actors", {}), **config.get("drivers", {})}[person]["videos"][video]
        assert info["source"]["url"] == entry["url"] and info["tools"]["yt_dlp"]
        assert info["sha256"] == vid.sha256(mp4)
        assert info["fps"] == source.fps and (info["width"], info["height"]) == (source.width, source.height)
        if "start" in entry or "end" in entry:  # the test session trims some clips: only that section
            end = time_to_seconds(entry.get("end")) or source.duration
            assert info["duration"] == pytest.approx(end - (time_to_seconds(entry.get("start")) or 0), abs=0.15)
        else:  # no start/end: the clip arrives byte for byte as published
            assert info["sha256"] == vid.sha256(media(relpath))
            assert info["frame_count"] == source.frame_count > 0
    driver = json.loads((workdir / "results/videos/tpsmm/driving.json").read_text())
    assert driver["has_audio"] and driver["frame_count"] == 169 and driver["duration"] == pytest.approx(6.76, abs=0.05)
    for rule_file in ["logs/ingest_video/d6/d6.log", "benchmarks/ingest_video/d6/d6.tsv"]:
        assert (workdir / "results" / rule_file).stat().st_size > 0
    assert not [p for p in leftovers(workdir) if p.split("/")[-1].startswith(".")]


def test_second_run_does_nothing(pipeline):
    result = run_snakemake(pipeline["workdir"], pipeline["config"], "--dry-run")
    assert "Nothing to be done" in result.output


def test_sections_are_trimmed_url_and_local(tmp_path, media_server, media):
    config = {
        "actors": {
            "d6": {
                "videos": {
                    # Only the section is downloaded (yt-dlp + ffmpeg over HTTP ranges).
                    "part": {"url": f"{media_server.url}/{LP}d6.mp4", "start": "00:00:05", "end": "00:00:08.5"},
                    "local": {"path": str(media("videos/lp_d6.mp4")), "start": 30},
                    "whole": {"path": str(media("videos/tpsmm_driving.mp4"))},
                }
            }
        }
    }
    run_ingest(tmp_path, config)
    part = json.loads((tmp_path / "results/videos/d6/part.json").read_text())
    assert part["duration"] == pytest.approx(3.5, abs=0.15)
    assert part["frame_count"] == pytest.approx(105, abs=4)  # 30 fps
    assert vid.probe(tmp_path / "results/videos/d6/part.mp4").frame_count == part["frame_count"]
    local = json.loads((tmp_path / "results/videos/d6/local.json").read_text())
    assert local["duration"] == pytest.approx(33.62 - 30, abs=0.15) and local["how"] == "re-encode"
    assert local["source"]["path"] == str(media("videos/lp_d6.mp4"))
    whole = json.loads((tmp_path / "results/videos/d6/whole.json").read_text())
    assert whole["how"] == "copy" and whole["sha256"] == vid.sha256(media("videos/tpsmm_driving.mp4"))
    assert whole["has_audio"] and whole["frame_count"] == 169


@pytest.mark.parametrize("clip", [f"{LP}d6.mp4", TPSMM], ids=["moov-at-end", "moov-at-start"])
def test_a_section_from_a_server_without_range_requests(tmp_path, media_server, clip):
    """yt-dlp's section download seeks with HTTP ranges; a server that ignores them made ffmpeg
    fail ("ffmpeg exited with code 183"). Ingest falls back to the whole file, trims it locally
    and says so."""
    url = f"{media_server.url}/norange/{clip}"
    config = {"actors": {"a": {"videos": {"v": {"url": url, "start": 1.0, "end": 3.5}}}}}
    run_ingest(tmp_path, config)
    meta = json.loads((tmp_path / "results/videos/a/v.json").read_text())
    assert meta["duration"] == pytest.approx(2.5, abs=0.15)
    if clip != TPSMM:  # its index comes first: ffmpeg reads the section without seeking
        assert meta["how"] == "download(whole)+trim"
        log = (tmp_path / "results/logs/ingest_video/a/v.log").read_text()
        assert "downloading the whole file and trimming it here" in log


def test_editing_one_entry_reruns_only_its_job(tmp_path, media):
    clip = str(media("videos/lp_d5.mp4"))
    config = {"actors": {"a": {"videos": {"one": {"path": clip, "end": 2}, "two": {"path": clip, "end": 3}}}}}
    run_ingest(tmp_path, config)
    before = {v: (tmp_path / f"results/videos/a/{v}.mp4").stat().st_mtime_ns for v in ("one", "two")}
    config["actors"]["a"]["videos"]["two"]["end"] = 4
    result = run_ingest(tmp_path, config)
    assert result.output.count("rule ingest_video:") == 1
    after = {v: (tmp_path / f"results/videos/a/{v}.mp4").stat().st_mtime_ns for v in ("one", "two")}
    assert after["one"] == before["one"] and after["two"] != before["two"]
    assert json.loads((tmp_path / "results/videos/a/two.json").read_text())["duration"] == pytest.approx(4, abs=0.1)


def test_transient_503_is_retried(tmp_path, media_server):
    route = f"flaky/{LP}d5.mp4"
    config = {"actors": {"a": {"videos": {"v": {"url": f"{media_server.url}/{route}"}}}}}
    run_ingest(tmp_path, config)
    assert media_server.requests[route] >= 2  # the 503, then the successful attempt
    assert json.loads((tmp_path / "results/videos/a/v.json").read_text())["frame_count"] > 0
    assert "retrying" in (tmp_path / "results/logs/ingest_video/a/v.log").read_text()


@pytest.mark.parametrize("download, words", [
    ({"min_speed_kbps": 5, "stall_seconds": 4}, ["is too slow", "below download.min_speed_kbps (5)"]),
    ({"min_speed_kbps": 0, "deadline_minutes": 0.1}, ["did not finish within download.deadline_minutes (0.1 min)"]),
], ids=["min-speed", "deadline"])
def test_a_trickling_server_stops_with_the_key_to_change(tmp_path, media_server, download, words):
    """A server that sends one byte a second never trips a socket timeout (it hung ingest for
    days): the watchdog stops it, with one error naming the key, and leaves nothing."""
    url = f"{media_server.url}/trickle/{LP}d5.mp4"
    config = {"actors": {"a": {"videos": {"v": {"url": url}}}}, "download": {"retries": 0, **download}}
    started = time.monotonic()
    result = run_ingest(tmp_path, config, check=False)
    assert result.returncode != 0 and time.monotonic() - started < 120
    error_lines = [line for line in result.output.splitlines() if line.startswith("facevae error")]
    assert len(error_lines) == 1, result.output[-3000:]
    assert "actor 'a', video 'v'" in error_lines[0] and url in error_lines[0]
    for word in words:
        assert word in error_lines[0], error_lines[0]
    assert leftovers(tmp_path) == [] or leftovers(tmp_path) == ["a"], leftovers(tmp_path)


@pytest.mark.parametrize(
    "url_path, words",
    [
        ("no/such/clip.mp4", ["HTTP Error 404"]),
        (f"truncated/{LP}d6.mp4", ["not a decodable video"]),
        (f"truncated/{TPSMM}", ["not a decodable video", "partial file"]),
    ],
    ids=["404", "truncated-moov-at-end", "truncated-moov-at-start"],
)
def test_bad_url_fails_clearly_and_leaves_nothing(tmp_path, media_server, url_path, words):
    url = f"{media_server.url}/{url_path}"
    config = {"actors": {"ok": {"videos": {"v": {"url": f"{media_server.url}/{LP}d5.mp4"}}}},
              "drivers": {"bob": {"videos": {"talk": {"url": url}}}}}
    result = run_ingest(tmp_path, config, check=False)
    assert result.returncode != 0
    error_lines = [line for line in result.output.splitlines() if line.startswith("facevae error")]
    assert len(error_lines) == 1, result.output[-3000:]
    assert "driver 'bob', video 'talk'" in error_lines[0] and url in error_lines[0]
    for word in words:
        assert word in error_lines[0]
    assert leftovers(tmp_path) == ["ok", "ok/v.json", "ok/v.mp4"], "partial output left behind"
    assert not list(tmp_path.rglob("*.part")) and not list(tmp_path.rglob("*.tmp"))


def test_undecodable_local_file(tmp_path):
    fake = tmp_path / "notes.mp4"
    fake.write_text("not a video")
    config = {"actors": {"a": {"videos": {"v": {"path": str(fake)}}}}}
    result = run_ingest(tmp_path / "run", config, check=False)
    assert result.returncode != 0
    assert f"actor 'a', video 'v' from {fake}: {fake} is not a decodable video" in result.output
    assert leftovers(tmp_path / "run") == []


@pytest.mark.parametrize(
    "config, message",
    [
        ({"actors": {"a": {"videos": {"v": {"url": "http://127.0.0.1:9/x.mp4", "strat": "00:00:01"}}}}},
         "config error at actors.a.videos.v.strat: unknown key 'strat'"),
        ({"actors": {"a": {"videos": {}}}}, "config error at actors.a.videos: actor 'a' has no videos"),
    ],
    ids=["unknown-key", "actor-without-videos"],
)
def test_config_error_stops_before_any_job(tmp_path, config, message):
    result = run_ingest(tmp_path, config, check=False)
    assert result.returncode != 0
    assert message in result.output
    assert not (tmp_path / "results").exists()


def _flash_and_click(video: "Path") -> tuple[float, float, float]:
    """(time of the white flash frame = index / fps, time of the audio click, fps) of an mp4 read
    the way every stage reads it: frame by frame at its frame rate."""
    import subprocess

    import numpy as np

    from facevae.video import read_frames

    fps = vid.probe(video).fps
    brightness = [float(f.mean()) for f in read_frames(video)]
    flash = int(np.argmax(brightness))
    assert brightness[flash] > 200, "no flash frame"
    pcm = subprocess.run([vid.ffmpeg_exe(), "-v", "error", "-i", str(video), "-map", "0:a:0", "-ac", "1", "-ar", "16000",
                          "-f", "s16le", "-"], capture_output=True, check=True).stdout
    samples = np.abs(np.frombuffer(pcm, np.int16).astype(np.float32))
    assert samples.max() > 10000, "no click"
    return flash / fps, float(np.argmax(samples) / 16000), fps


def test_variable_frame_rate_driver_stays_in_sync(tmp_path):
    """A variable-frame-rate clip (40 frames at 15 fps, then 30 fps) with a white flash frame and
    an audio click at the same source time (3.33 s). Read frame by frame at its average rate
    (22 fps) the flash came 0.67 s early; ingest resamples it to a constant rate, and a video
    written from its frames with its audio, as the reenactment is, keeps the two within a frame."""
    from facevae.video import VideoWriter, read_frames

    clip = tmp_path / "vfr.mp4"
    video = ("color=c=gray:s=160x120:r=30:d=4,drawbox=enable='eq(n,60)':color=white:t=fill,"
             "setpts='if(lt(N,40),N*2,80+(N-40))/30/TB'")
    audio = "aevalsrc='if(between(t,3.3333,3.3433),0.9,0)':s=16000:d=5.4"
    subprocess_run([vid.ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", video, "-f", "lavfi", "-i", audio, "-c:v", "libx264",
                    "-pix_fmt", "yuv420p", "-fps_mode", "vfr", "-c:a", "aac", "-shortest", str(clip)])
    assert vid.constant_rate_for(vid.frame_times(clip)) == pytest.approx(30, abs=0.5)
    flash, click, fps = _flash_and_click(clip)
    assert abs(flash - click) > 0.5  # the source read frame by frame: out of sync (the old behaviour)

    run_ingest(tmp_path / "run", {"drivers": {"vfr": {"videos": {"v": {"path": str(clip)}}}},
                                  "actors": {"a": {"videos": {"a": {"path": str(clip)}}}}})
    ingested = tmp_path / "run/results/videos/vfr/v.mp4"
    meta = json.loads((tmp_path / "run/results/videos/vfr/v.json").read_text())
    assert meta["variable_frame_rate"] is True and meta["fps"] == pytest.approx(30, abs=0.01) and "constant-rate" in meta["how"]
    flash, click, fps = _flash_and_click(ingested)
    assert abs(flash - click) <= 1 / fps, (flash, click)
    rendered = tmp_path / "rendered.mp4"
    with VideoWriter(rendered, 160, 120, meta["fps"], audio_from=ingested) as out:
        for frame in read_frames(ingested):
            out.write(frame)
    flash, click, fps = _flash_and_click(rendered)
    assert abs(flash - click) <= 1 / fps, (flash, click)


def test_constant_rate_clip_is_not_resampled(tmp_path, media):
    assert vid.constant_rate_for(vid.frame_times(media("videos/tpsmm_driving.mp4"))) is None


def subprocess_run(cmd):
    import subprocess

    subprocess.run(cmd, check=True)
