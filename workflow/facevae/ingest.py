"""Video ingest: a URL (through yt-dlp) or a local file -> a probed, portable mp4 plus metadata.

Everything is written into a private temporary folder beside the outputs and moved into place
only when complete, so a failure or a kill leaves no partial file or yt-dlp ``.part`` behind.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

from facevae import FacevaeError, __version__
from facevae import download as dl
from facevae.atomic import temp_folder
from facevae import video as vid

log = logging.getLogger(__name__)


class IngestError(FacevaeError):
    pass


def describe(entry: dict) -> str:
    return f"{entry['role']} '{entry['person']}', video '{entry['video']}'"


def ingest(entry: dict, out_video: Path, out_meta: Path, download: dict | None = None) -> dict:
    """Fetch/copy, trim and probe one video entry (see ``facevae.config.video_entry``).

    Returns the metadata written to ``out_meta``.
    """
    out_video, out_meta = Path(out_video), Path(out_meta)
    out_video.parent.mkdir(parents=True, exist_ok=True)
    work = temp_folder(out_video)  # a SIGKILLed run's folder is removed by the next run
    try:
        if entry.get("url"):
            fetched, how = _download(entry, work, download or {})
        else:
            fetched, how = _local(entry, work)
        info = vid.probe(fetched)
        if info.frame_count == 0:
            raise IngestError(f"{describe(entry)}: {_source(entry)} has no video frames")
        # Every later stage reads frame i as shown at i / fps: a variable-frame-rate source is
        # resampled to a constant rate here, so frames stay at their times (and with the audio).
        source_fps = info.fps
        cfr = vid.constant_rate_for(vid.frame_times(fetched))
        if cfr is not None:
            resampled = work / "constant_rate.mp4"
            vid.to_constant_rate(fetched, resampled, cfr, info.has_audio)
            fetched, how = resampled, f"{how}+constant-rate"
            info = vid.probe(fetched)
            log.info("%s: variable frame rate (%.3g fps on average): resampled to a constant %s fps", describe(entry),
                     source_fps, vid.fps_text(cfr))
        meta = {
            "person": entry["person"],
            "role": entry["role"],
            "video": entry["video"],
            "source": {**{k: entry.get(k) for k in ("url", "path", "start", "end")}, "url": dl.redact(entry.get("url"))},
            **info.as_dict(),
            "sha256": vid.sha256(fetched),
            "size_bytes": fetched.stat().st_size,
            "how": how,
            "variable_frame_rate": cfr is not None,
            **({"source_fps": source_fps} if cfr is not None else {}),
            "tools": {"facevae": __version__, "ffmpeg": vid.ffmpeg_version(), **_ytdlp_version(entry)},
        }
        tmp_meta = work / "meta.json"
        tmp_meta.write_text(json.dumps(meta, indent=2) + "\n")
        os.replace(fetched, out_video)
        os.replace(tmp_meta, out_meta)
        log.info("%s: %s -> %s (%d frames, %.2f s, %dx%d @ %.3g fps, audio=%s, %s)", describe(entry), _source(entry),
                 out_video, info.frame_count, info.duration, info.width, info.height, info.fps, info.has_audio, how)
        return meta
    except vid.VideoError as err:
        what = "the downloaded file" if entry.get("url") else err.path
        raise IngestError(f"{describe(entry)} from {_source(entry)}: {what} is not a decodable video: {err.reason}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _source(entry: dict) -> str:
    """The entry's URL (its password, if any, replaced by ***) or path: what messages and files show."""
    return dl.redact(entry["url"]) if entry.get("url") else entry.get("path")


def _ytdlp_version(entry: dict) -> dict:
    if not entry.get("url"):
        return {}
    from yt_dlp.version import __version__ as ytdlp_version

    return {"yt_dlp": ytdlp_version}


def _local(entry: dict, work: Path) -> tuple[Path, str]:
    src = Path(entry["path"])
    if not src.is_file():
        raise IngestError(f"{describe(entry)}: local file not found: {src}")
    if src.stat().st_size == 0:  # ffmpeg's word for it is "moov atom not found"
        raise IngestError(f"{describe(entry)}: {src} is empty (0 bytes): a copy or download that did not finish?")
    return _trim(entry, src, vid.probe(src), work / "video.mp4")


def _trim(entry: dict, src: Path, info, out: Path) -> tuple[Path, str]:
    """``src`` (probed as ``info``) cut to the entry's section as a portable mp4 ``out``. A start past
    the end, or a section shorter than one frame, is one error in the user's terms (it was ffmpeg's
    "no video stream" on ingest's temporary file)."""
    _check_section(entry, info.duration)
    how = vid.to_portable_mp4(src, out, info, entry.get("start"), entry.get("end"))
    if entry.get("start") is not None or entry.get("end") is not None:
        try:
            frames = vid.probe(out).frame_count
        except vid.VideoError:
            frames = 0
        if frames == 0:
            start, end = entry.get("start") or 0.0, entry.get("end")
            span = f"{start:g}-{end:g} s" if end is not None else f"from {start:g} s"
            raise IngestError(f"{describe(entry)}: the section {span} of {_source(entry)} holds no video frame "
                              f"({_source(entry)} is {info.duration:g} s long at {info.fps:g} fps): widen it")
    return out, how


def _check_section(entry: dict, duration: float) -> None:
    start = entry.get("start") or 0.0
    if duration and start >= duration:
        raise IngestError(f"{describe(entry)}: start {start:g} s is past the end of {_source(entry)} ({duration:g} s)")


def _download(entry: dict, work: Path, download: dict) -> tuple[Path, str]:
    """Download through yt-dlp's Python API, retrying transient network errors."""
    from yt_dlp.utils import download_range_func

    # yt-dlp's section downloader finds ffmpeg on PATH only (it ignores ffmpeg_location).
    os.environ["PATH"] = vid.ffmpeg_dir() + os.pathsep + os.environ.get("PATH", "")
    options = {
        "outtmpl": str(work / "download.%(ext)s"),
        "paths": {"temp": str(work)},
        "format": download.get("format", "bv*+ba/b"),
        "format_sort": download.get("format_sort", ["res:1080", "vcodec:h264", "acodec:aac"]),
        "merge_output_format": "mp4",
        "ffmpeg_location": vid.ffmpeg_dir(),
        "noplaylist": True,
        "retries": 3,
        "fragment_retries": 3,
        "socket_timeout": dl.SOCKET_TIMEOUT,
        "quiet": True,
        "noprogress": True,
        "no_warnings": False,
        "logger": _YtdlpLogger(),
        "cachedir": False,
    }
    start, end = entry.get("start"), entry.get("end")
    if start is not None or end is not None:
        # Fetch only the section; cutting at exact times (not keyframes) re-encodes around the cuts.
        options["download_ranges"] = download_range_func(None, [(start or 0.0, end if end is not None else float("inf"))])
        options["force_keyframes_at_cuts"] = True
    attempts = dl.attempts(download)
    section = "download_ranges" in options
    with dl.Watchdog(describe(entry), _source(entry), work, download, error=IngestError):
        try:
            info = _fetch(entry, options, work, attempts)
            fetched = _downloaded_file(entry, info, work)
            probed = vid.probe(fetched)
        except (IngestError, vid.VideoError) as err:
            if not section or not any(marker in str(err) for marker in _SECTION_FAILURES):
                raise
            # ffmpeg fetches a section by seeking with HTTP range requests; a server without them
            # (or a container ffmpeg cannot seek over HTTP) fails there. The whole file works.
            log.warning("%s: the section download failed (%s): the server may not answer range requests; "
                        "downloading the whole file and trimming it here", describe(entry), err)
            whole = {k: v for k, v in options.items() if k not in ("download_ranges", "force_keyframes_at_cuts")}
            info = _fetch(entry, whole, work, attempts)
            fetched = _downloaded_file(entry, info, work)
            out, _ = _trim(entry, fetched, vid.probe(fetched), work / "trimmed.mp4")
            return out, "download(whole)+trim"
    if fetched.suffix == ".mp4" and probed.video_codec in vid.PORTABLE_VIDEO_CODECS and probed.rotation == 0 and (
        not probed.has_audio or probed.audio_codec in vid.PORTABLE_AUDIO_CODECS
    ):
        return fetched, "download"
    # Not something every stage decodes (e.g. VP9/AV1 in webm): convert once, here.
    out = work / "portable.mp4"
    vid.to_portable_mp4(fetched, out, probed)
    return out, "download+re-encode"


# yt-dlp's words when ffmpeg could not fetch a section (183: ffmpeg's "server returned an error",
# what a range request to a server without range support ends in).
_SECTION_FAILURES = ("ffmpeg exited with code", "has no video stream")


def _fetch(entry: dict, options: dict, work: Path, attempts: int) -> dict:
    """yt-dlp's extract_info with retries of transient network errors; IngestError otherwise."""
    import yt_dlp

    for attempt in range(1, attempts + 1):
        for leftover in work.glob("download*"):
            leftover.unlink()
        try:
            with yt_dlp.YoutubeDL(options) as ydl:
                return ydl.extract_info(entry["url"], download=True)
        except yt_dlp.utils.YoutubeDLError as err:  # DownloadError and the rest (RequestError on a file:// redirect)
            message = str(err).removeprefix("ERROR: ").strip()
            if "file://" in message or "file:/" in message:  # yt-dlp refuses local files; say who asked for one
                message = (f"the server redirected or pointed to a local file (a file:// URL), which is refused "
                           f"({message})")
            if attempt < attempts and dl.transient(message):
                wait = dl.retry_wait(attempt)
                log.warning("%s: attempt %d/%d failed (%s); retrying in %d s", describe(entry), attempt, attempts,
                            dl.redact_text(message), wait)
                time.sleep(wait)
                continue
            raise IngestError(f"{describe(entry)}: download of {_source(entry)} failed: {dl.redact_text(message)}") from None
    raise AssertionError("unreachable")


def _downloaded_file(entry: dict, info: dict, work: Path) -> Path:
    if info.get("_type") == "playlist":
        raise IngestError(f"{describe(entry)}: {_source(entry)} is a playlist; give one video URL per entry")
    files = [Path(d["filepath"]) for d in info.get("requested_downloads", []) if d.get("filepath")]
    files = [f for f in files if f.exists()] or sorted(work.glob("download.*"))
    if not files:
        raise IngestError(f"{describe(entry)}: yt-dlp reported success for {_source(entry)} but wrote no file")
    return files[0]


class _YtdlpLogger:
    """Route yt-dlp's messages into our log (the rule's log file) instead of the console, with any
    password in a URL replaced by *** (yt-dlp names the URL it extracts)."""

    def debug(self, msg: str) -> None:
        if not msg.startswith("[debug] "):
            log.info("yt-dlp: %s", dl.redact_text(msg))

    def info(self, msg: str) -> None:
        log.info("yt-dlp: %s", dl.redact_text(msg))

    def warning(self, msg: str) -> None:
        log.warning("yt-dlp: %s", dl.redact_text(msg))

    def error(self, msg: str) -> None:
        log.error("yt-dlp: %s", dl.redact_text(msg))
