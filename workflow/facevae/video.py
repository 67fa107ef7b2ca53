"""ffmpeg helpers shared by every stage: where the binary is, probing, trimming, re-encoding, and
streaming RGB frames in (:func:`read_frames`, OpenCV's decoder: the tracker's and the renderer's)
and out (:class:`VideoWriter`, with muxed audio).

imageio-ffmpeg ships a static ffmpeg under another file name and no ffprobe, so probing reads
ffmpeg's own report of a fast demux-only pass (``-c copy -f null``): it gives the stream layout,
the exact packet (frame) count and the demuxer's complaints about truncated or corrupt files.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from facevae import FacevaeError

if TYPE_CHECKING:  # annotations only; see the note on the frame streams below
    import numpy as np

# Codecs every later rule (OpenCV, imageio-ffmpeg) decodes and mp4 carries; others are re-encoded.
PORTABLE_VIDEO_CODECS = {"h264"}
PORTABLE_AUDIO_CODECS = {"aac", "mp3"}
# Lines of ffmpeg's report that mean the file is damaged, not merely unusual.
_DAMAGE = re.compile(r"partial file|corrupt input packet|Packet corrupt|Invalid data found|moov atom not found|Error opening input")


class VideoError(FacevaeError):
    """A video file that cannot be used; the message names the file, ``reason`` says why."""

    def __init__(self, path: Path | str, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path} is not a decodable video: {reason}")


@functools.lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


@functools.lru_cache(maxsize=1)
def ffmpeg_dir() -> str:
    """A folder holding a program named ``ffmpeg`` (a link to imageio-ffmpeg's), for yt-dlp.

    yt-dlp looks for the exact name ``ffmpeg``; its section downloader even ignores
    ``ffmpeg_location`` and searches PATH, so callers also put this folder on PATH.
    """
    exe = ffmpeg_exe()
    if Path(exe).name == "ffmpeg":
        return str(Path(exe).parent)
    folder = Path(tempfile.gettempdir()) / f"facevae-ffmpeg-{os.getuid()}-{hashlib.sha1(exe.encode()).hexdigest()[:8]}"
    link = folder / "ffmpeg"
    if not link.exists():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".ffmpeg.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(exe)
        os.replace(tmp, link)  # atomic: parallel jobs may race here
    return str(folder)


@functools.lru_cache(maxsize=1)
def ffmpeg_version() -> str:
    out = subprocess.run([ffmpeg_exe(), "-version"], capture_output=True, text=True).stdout
    return out.split("\n", 1)[0].removeprefix("ffmpeg version ").split(" ")[0]


@dataclasses.dataclass
class VideoInfo:
    duration: float
    fps: float
    width: int
    height: int
    frame_count: int
    has_audio: bool
    video_codec: str
    audio_codec: str | None
    container: str
    rotation: int = 0

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def probe(path: Path | str) -> VideoInfo:
    """Stream layout and exact frame count of a video; VideoError if it is missing or damaged."""
    path = Path(path)
    if not path.is_file():
        raise VideoError(path, "file not found")
    result = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path), "-map", "0:v:0", "-c", "copy", "-f", "null", "-"],
        capture_output=True,
        text=True,
        errors="replace",
    )
    report = result.stderr
    damage = [line.strip() for line in report.splitlines() if _DAMAGE.search(line)]
    if result.returncode != 0 or damage:
        # The most telling line first: "partial file" says truncated, "moov atom" says incomplete.
        damage.sort(key=lambda line: not re.search(r"partial file|moov atom", line))
        reason = damage[0] if damage else report.strip().splitlines()[-1] if report.strip() else f"ffmpeg exit {result.returncode}"
        reason = re.sub(r"^\[[^\]]*\]\s*", "", reason)
        if "matches no streams" in report:
            reason = "it has no video stream"
        raise VideoError(path, reason)
    return _parse_report(path, report)


def _parse_report(path: Path, report: str) -> VideoInfo:
    inputs = report.split("Stream mapping:", 1)[0]
    container = (re.search(r"Input #0, ([^,\s]+)", inputs) or [None, "?"])[1]
    duration = re.search(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)", inputs)
    video = re.search(r"Stream #\S+: Video: (\w+).*", inputs)
    if not video:
        raise VideoError(path, "it has no video stream")
    size = re.search(r", (\d{2,5})x(\d{2,5})\b", video.group(0))
    fps = re.search(r", ([\d.]+) fps", video.group(0)) or re.search(r", ([\d.]+k?) tbr", video.group(0))
    audio = re.search(r"Stream #\S+: Audio: (\w+)", inputs)
    rotation = re.search(r"rotation of (-?[\d.]+) degrees", inputs)
    frames = re.findall(r"frame=\s*(\d+)", report)
    width, height = (int(size.group(1)), int(size.group(2))) if size else (0, 0)
    rot = int(round(float(rotation.group(1)))) % 360 if rotation else 0
    if rot in (90, 270):  # decoders apply the display matrix: report the size frames come out at
        width, height = height, width
    fps_value = float(fps.group(1).rstrip("k")) * (1000 if fps and fps.group(1).endswith("k") else 1) if fps else 0.0
    seconds = int(duration.group(1)) * 3600 + int(duration.group(2)) * 60 + float(duration.group(3)) if duration else 0.0
    return VideoInfo(
        duration=round(seconds, 3),
        fps=fps_value,
        width=width,
        height=height,
        frame_count=int(frames[-1]) if frames else 0,
        has_audio=audio is not None,
        video_codec=video.group(1),
        audio_codec=audio.group(1) if audio else None,
        container=container,
        rotation=rot,
    )


def sha256(path: Path | str, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def run_ffmpeg(args: list[str], what: str) -> None:
    """Run ffmpeg quietly; VideoError with ffmpeg's last lines if it fails."""
    result = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args],
        capture_output=True,
        text=True,
        errors="replace",
    )
    if result.returncode != 0:
        tail = " | ".join(result.stderr.strip().splitlines()[-3:])
        raise VideoError(args[args.index("-i") + 1], f"{what} failed: {tail or f'ffmpeg exit {result.returncode}'}")


def frame_times(path: Path | str) -> list[float]:
    """Presentation times (s) of the first video stream's frames, sorted -- read from the packets
    (a stream copy: nothing is decoded)."""
    result = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(path), "-map", "0:v:0", "-c", "copy",
         "-f", "mkvtimestamp_v2", "-"],
        capture_output=True, text=True, errors="replace",
    )
    if result.returncode != 0:
        raise VideoError(path, f"reading frame times failed: {result.stderr.strip()[-300:] or result.returncode}")
    return sorted(float(line) / 1000.0 for line in result.stdout.splitlines() if line and not line.startswith("#"))


MAX_RESAMPLED_FPS = 60.0
COMMON_FPS = (10.0, 12.0, 15.0, 24000 / 1001, 24.0, 25.0, 30000 / 1001, 30.0, 48.0, 50.0, 60000 / 1001, 60.0)


def constant_rate_for(times: list[float]) -> float | None:
    """None when ``times`` are evenly spaced (every interval within 50 % of the median: ms rounding
    and ordinary jitter), else the rate to resample the video to so each frame keeps its time: that
    of its densest stretch (the 10th percentile interval), at most MAX_RESAMPLED_FPS -- slower
    stretches get repeated frames, nothing shown is dropped."""
    gaps = sorted(b - a for a, b in zip(times, times[1:]) if b > a)
    if len(gaps) < 2:
        return None
    median = gaps[len(gaps) // 2]
    if all(abs(g - median) <= 0.5 * median for g in gaps):
        return None
    rate = min(1.0 / gaps[len(gaps) // 10], MAX_RESAMPLED_FPS)
    # The packet times come in whole milliseconds (33 ms -> 30.3 fps): snap to a common rate.
    common = [r for r in COMMON_FPS if abs(rate - r) <= 0.02 * r]
    return min(common, key=lambda r: abs(rate - r)) if common else round(rate, 2)


def to_constant_rate(src: Path, dst: Path, fps: float, has_audio: bool) -> None:
    """Re-encode ``src`` at ``fps`` frames per second, each output frame the source frame shown at
    its time (a variable-frame-rate clip read frame by frame would drift from its audio)."""
    audio = ["-c:a", "aac", "-b:a", "160k"] if has_audio else []
    run_ffmpeg(["-i", str(src), "-map", "0:v:0", "-map", "0:a:0?", "-fps_mode", "cfr", "-r", fps_text(fps), "-c:v", "libx264",
                "-preset", "veryfast", "-crf", "17", "-pix_fmt", "yuv420p", *audio, "-movflags", "+faststart", str(dst)],
               "resampling to a constant frame rate")


def to_portable_mp4(
    src: Path,
    dst: Path,
    info: VideoInfo,
    start: float | None = None,
    end: float | None = None,
) -> str:
    """Write ``src`` (optionally cut to [start, end) seconds) to ``dst`` as an mp4 every stage decodes.

    Returns what was done: "copy", "remux" or "re-encode". Cutting re-encodes, because a
    stream copy can only cut at keyframes and the requested section must be exact.
    """
    trimming = start is not None or end is not None
    portable_video = info.video_codec in PORTABLE_VIDEO_CODECS and info.rotation == 0
    portable_audio = not info.has_audio or info.audio_codec in PORTABLE_AUDIO_CODECS
    if not trimming and portable_video and portable_audio and info.container.startswith("mov"):
        with open(src, "rb") as fin, open(dst, "wb") as fout:
            while block := fin.read(1 << 20):
                fout.write(block)
        return "copy"
    cut = ["-ss", f"{start:.3f}"] if start else []
    length = ["-t", f"{end - (start or 0.0):.3f}"] if end is not None else []
    if not trimming and portable_video and portable_audio:
        run_ffmpeg(["-i", str(src), "-map", "0:v:0", "-map", "0:a:0?", "-c", "copy", "-movflags", "+faststart", str(dst)], "remuxing")
        return "remux"
    audio = ["-c:a", "aac", "-b:a", "160k"] if info.has_audio else []
    run_ffmpeg(
        [*cut, "-i", str(src), *length, "-map", "0:v:0", "-map", "0:a:0?", "-c:v", "libx264", "-preset", "veryfast", "-crf", "17",
         "-pix_fmt", "yuv420p", *audio, "-movflags", "+faststart", str(dst)],
        "re-encoding",
    )
    return "re-encode"


# ------------------------------------------------------------------------------- frame streams
# numpy, cv2 (and facevae.atomic, which imports numpy) are imported inside these functions, not
# at the top: the ingest rules import this module in envs/ingest.yaml, which has neither.


def fps_text(fps: float) -> str:
    """ffmpeg frame-rate text: NTSC rates as exact fractions (29.97 -> 30000/1001)."""
    for base in (24, 30, 60, 120):
        if abs(fps - base * 1000 / 1001) < 0.005:
            return f"{base * 1000}/1001"
    return f"{fps:.6g}"


class VideoWriter:
    """Stream RGB frames into an H.264 mp4 through ffmpeg, optionally with another file's audio.

    Written to a temporary file beside ``path`` and moved into place by :meth:`close` (after the
    encoder succeeded), so no partial video is ever left under the final name::

        with VideoWriter(path, width, height, fps, audio_from=driver_mp4) as out:
            out.write(frame)
    """

    def __init__(self, path, width: int, height: int, fps: float, audio_from=None, crf: int = 18,
                 preset: str = "veryfast", metadata: dict | None = None, threads: int = 0):
        from facevae.atomic import temp_path  # imports numpy: see the frame streams note

        self.path = Path(path)
        self.tmp = temp_path(self.path, self.path.suffix)  # ffmpeg picks the container from the suffix
        self.width, self.height, self.frames = int(width), int(height), 0
        cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{self.width}x{self.height}", "-r", fps_text(fps), "-i", "-"]
        if audio_from:
            cmd += ["-i", str(audio_from), "-map", "0:v:0", "-map", "1:a:0", "-c:a", "copy"]
        cmd += ["-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", "-c:v", "libx264", "-preset", preset, "-crf", str(crf),
                "-pix_fmt", "yuv420p", "-movflags", "+faststart"]
        if threads:
            cmd += ["-threads", str(threads)]
        for key, value in (metadata or {}).items():
            cmd += ["-metadata", f"{key}={value}"]
        cmd.append(str(self.tmp))
        self._err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=self._err)
        self.encode_seconds = 0.0  # time blocked handing frames to the encoder

    def write(self, frame: np.ndarray) -> None:
        import numpy as np

        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise FacevaeError(f"frame {frame.shape} {frame.dtype} does not match the video's {self.height}x{self.width}x3 uint8")
        start = time.perf_counter()
        try:
            self.proc.stdin.write(np.ascontiguousarray(frame).data)
        except BrokenPipeError:
            self._fail("the encoder stopped taking frames")
        self.encode_seconds += time.perf_counter() - start
        self.frames += 1

    def _fail(self, what: str):
        self.proc.kill()
        self.proc.wait()
        self._err.seek(0)
        tail = " | ".join(self._err.read().decode(errors="replace").strip().splitlines()[-3:])
        self.tmp.unlink(missing_ok=True)
        raise VideoError(self.path, f"{what}: {tail or 'ffmpeg exit ' + str(self.proc.returncode)}")

    def close(self) -> Path:
        start = time.perf_counter()
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        code = self.proc.wait()
        self.encode_seconds += time.perf_counter() - start
        if code != 0:
            self._fail("encoding failed")
        os.replace(self.tmp, self.path)
        self._err.close()
        return self.path

    def abort(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.tmp.unlink(missing_ok=True)
        self._err.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False


def open_capture(path, threads: int | None = None):
    """OpenCV's FFmpeg capture of ``path``; ``threads`` limits the decoder's threads (the tracker's
    workers already use every core). A video OpenCV cannot open is one FacevaeError naming it."""
    import cv2

    if threads:
        cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, int(threads)])
        if cap.isOpened():
            return cap
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise FacevaeError(f"{path}: OpenCV cannot open this video")
    return cap


def read_frames(path, start: int = 0, stop: int | None = None, threads: int | None = None) -> Iterator[np.ndarray]:
    """The one frame decoder: frames ``[start, stop)`` of a video as RGB H x W x 3 uint8 arrays,
    streamed. The tracker reads a driver with it and the renderer reads the same video with it
    again, so a track's row i and the renderer's frame i are the same decoded frame (frames before
    ``start`` are only demuxed and decoded, not converted)."""
    import cv2

    cap = open_capture(path, threads)
    try:
        index = 0
        while index < start and cap.grab():
            index += 1
        while stop is None or index < stop:
            ok, bgr = cap.read()
            if not ok:
                break
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            index += 1
    finally:
        cap.release()
