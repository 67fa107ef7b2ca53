"""Downloads: one path and one set of limits for every URL the workflow fetches.

A video URL goes through yt-dlp (:mod:`facevae.ingest`), a dataset URL (``actors.<a>.dataset``)
through :func:`fetch_file`; both run inside :class:`Watchdog` and retry only the errors a later
attempt may not see again (:func:`transient`), with the ``download:`` settings:
``retries``, ``stall_seconds``, ``min_speed_kbps`` and ``deadline_minutes``. A server that sends a
Content-Length and then one byte every few seconds never trips a socket timeout; the watchdog
stops it (before it, such a dataset URL kept ``faces_dataset`` running for ever).
"""

from __future__ import annotations

import http.client
import logging
import re
import shutil
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

from facevae import FacevaeError

log = logging.getLogger(__name__)

# Messages of errors that a later attempt may not see again.
TRANSIENT = ("HTTP Error 5", "HTTP Error 429", "timed out", "Connection reset", "Connection aborted",
             "Remote end closed", "IncompleteRead", "Temporary failure", "EOF occurred")

#: Seconds a socket may wait for the next byte (yt-dlp's socket_timeout, urllib's timeout).
SOCKET_TIMEOUT = 30


class DownloadError(FacevaeError):
    pass


# The password of a URL's user info (scheme://user:password@host): never written to a file or a log.
_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/@:\s]*:)(?P<password>[^/@\s]*)@")


def redact(url: str | None) -> str | None:
    """``url`` with the password in its user info replaced by ``***`` (the user name stays, so the
    message still says which account)."""
    return None if url is None else redact_text(url)


def redact_text(text: str) -> str:
    """Every URL password in ``text`` (a message, a log line) replaced by ``***``."""
    return _PASSWORD.sub(lambda m: m.group("head") + "***@", text)


def transient(message: str) -> bool:
    """Whether an error message is one that a later attempt may not see again."""
    return any(marker in message for marker in TRANSIENT)


def retry_wait(attempt: int) -> float:
    """Seconds to wait before attempt ``attempt + 1`` (1, 2, 4, ... at most 30)."""
    return min(2 ** (attempt - 1), 30)


def attempts(download: dict) -> int:
    return 1 + int(download.get("retries", 3))


class TooSlow(BaseException):
    """Raised by :class:`Watchdog`'s timer inside the download (BaseException: yt-dlp's
    ``except Exception`` blocks do not swallow it, and its ffmpeg downloader kills ffmpeg on it)."""


class Watchdog:
    """Stops a download that is too slow or too long: every second after ``download.stall_seconds``
    the bytes written so far (files in ``work``, whichever downloader writes them) are checked
    against ``download.min_speed_kbps``, and the whole download (all attempts) against
    ``download.deadline_minutes``. ``what`` starts the error (e.g. ``actor 'a', video 'v'``).
    Uses SIGALRM (rule scripts run in the main thread); elsewhere it does nothing."""

    def __init__(self, what: str, url: str, work: Path, download: dict, error=DownloadError):
        self.what, self.url, self.work, self.error = what, url, Path(work), error
        self.min_rate = float(download.get("min_speed_kbps", 10)) * 1000
        self.stall = float(download.get("stall_seconds", 60))
        self.deadline = float(download.get("deadline_minutes", 120)) * 60
        self.armed = False

    def _written(self) -> int:
        return sum(p.stat().st_size for p in self.work.rglob("*") if p.is_file())

    def _check(self, signum, frame):
        elapsed = time.monotonic() - self.t0
        if elapsed >= self.deadline:
            raise TooSlow(f"{self.what}: download of {self.url} did not finish within download.deadline_minutes "
                          f"({self.deadline / 60:g} min)")
        if self.min_rate > 0 and elapsed >= self.stall:
            rate = self._written() / elapsed
            if rate < self.min_rate:
                raise TooSlow(f"{self.what}: download of {self.url} is too slow: {rate / 1000:.2f} kB/s over "
                              f"{elapsed:.0f} s, below download.min_speed_kbps ({self.min_rate / 1000:g}); the server "
                              "stalls or trickles (raise download.stall_seconds or lower download.min_speed_kbps "
                              "for a slow link)")

    def __enter__(self):
        import threading

        self.t0 = time.monotonic()
        if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
            self.previous = signal.signal(signal.SIGALRM, self._check)
            first = min(self.stall, self.deadline)
            signal.setitimer(signal.ITIMER_REAL, first, 1.0)
            self.armed = True
        return self

    def __exit__(self, kind, err, tb):
        if self.armed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self.previous)
        if isinstance(err, TooSlow):
            raise self.error(str(err)) from None
        return False


def fetch_file(url: str, dest: Path | str, download: dict, what: str) -> Path:
    """Download ``url`` (http/https) to ``dest`` under the ``download:`` limits (see the module).

    ``dest``'s folder must be private to this download (the watchdog counts every byte in it).
    Transient errors are retried; any failure is one DownloadError starting with ``what`` and
    naming the URL. A body shorter than its Content-Length is an error, never a short file."""
    dest = Path(dest)
    tries = attempts(download)
    shown = redact(url)
    with Watchdog(what, shown, dest.parent, download):
        for attempt in range(1, tries + 1):
            message = redact_text(_get(url, dest) or "") or None
            if message is None:
                return dest
            if attempt < tries and transient(message):
                wait = retry_wait(attempt)
                log.warning("%s: attempt %d/%d of %s failed (%s); retrying in %d s", what, attempt, tries, shown, message, wait)
                time.sleep(wait)
                continue
            raise DownloadError(f"{what}: download of {shown} failed: {message}")
    raise AssertionError("unreachable")


def _get(url: str, dest: Path) -> str | None:
    """One attempt: None when ``dest`` holds the whole body, else why not (in :data:`TRANSIENT`'s words)."""
    try:
        with urllib.request.urlopen(url, timeout=SOCKET_TIMEOUT) as response, open(dest, "wb") as handle:
            shutil.copyfileobj(response, handle, 1 << 20)
            length, got = response.headers.get("Content-Length"), handle.tell()
    except (OSError, http.client.HTTPException, ValueError) as err:
        return _reason(err)
    # http.client's read(n) ends quietly at a closed connection, short of the Content-Length.
    if length is not None and length.strip().isdigit() and got != int(length):
        return f"IncompleteRead: the server sent {got} of {int(length)} bytes (its Content-Length) and closed the connection"
    return None


def _reason(err: BaseException) -> str:
    """An urllib/http.client error in the words :data:`TRANSIENT` matches."""
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP Error {err.code}: {err.reason}"
    if isinstance(err, http.client.IncompleteRead):
        return f"IncompleteRead: the server sent {len(err.partial)} bytes and closed the connection early"
    if isinstance(err, urllib.error.URLError):
        return str(err.reason)
    return f"{type(err).__name__}: {err}" if not str(err) else str(err)
