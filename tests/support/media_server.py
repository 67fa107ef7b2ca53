"""A loopback HTTP server (127.0.0.1 only) that serves real media files for download tests.

It answers Range requests (yt-dlp and ffmpeg seek with them when downloading a section) and can
misbehave on purpose, per path:

- ``/<route>``            the file registered for that route
- ``/flaky/<route>``      503 on the first request for that route, then the file
- ``/truncated/<route>``  the first half of the file's bytes, served as if complete
- ``/trickle/<route>``    the file, one byte a second (a stalled server no socket timeout catches)
- ``/norange/<route>``    the file whole, whatever Range asks (a server without range requests)
- ``/short/<route>``      the file's Content-Length, then half of its bytes and a closed connection
- anything else           404
"""

from __future__ import annotations

import collections
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class MediaServer:
    def __init__(self, routes: dict[str, Path]):
        self.routes = {route.lstrip("/"): Path(path) for route, path in routes.items()}
        self.requests: collections.Counter[str] = collections.Counter()
        self._failed_once: set[str] = set()
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "MediaServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _resolve(self, path: str) -> tuple[bytes | None, int]:
        """Body bytes for a request path (None for 404) and the status to send first."""
        path = path.split("?", 1)[0].lstrip("/")
        with self._lock:
            self.requests[path] += 1
        mode, _, route = path.partition("/")
        if mode == "flaky" and route in self.routes:
            with self._lock:
                if route not in self._failed_once:
                    self._failed_once.add(route)
                    return None, 503
            return self.routes[route].read_bytes(), 200
        if mode in ("trickle", "norange", "short") and route in self.routes:
            return self.routes[route].read_bytes(), 200
        if mode == "truncated" and route in self.routes:
            data = self.routes[route].read_bytes()
            return data[: len(data) // 2], 200
        if path in self.routes:
            return self.routes[path].read_bytes(), 200
        return None, 404

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_HEAD(self):
                self._serve(head=True)

            def do_GET(self):
                self._serve(head=False)

            def _serve(self, head: bool):
                body, status = server._resolve(self.path)
                if body is None:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start, end = 0, len(body) - 1
                ranged = not self.path.lstrip("/").startswith("norange/")
                match = ranged and re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
                if match and (match.group(1) or match.group(2)):
                    if match.group(1):
                        start = int(match.group(1))
                        end = int(match.group(2)) if match.group(2) else end
                    else:  # suffix range: the last N bytes
                        start = max(0, len(body) - int(match.group(2)))
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    end = min(end, len(body) - 1)
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{end}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Type", "video/mp4")
                if ranged:
                    self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(end - start + 1))
                self.end_headers()
                if not head and self.path.lstrip("/").startswith("trickle/"):
                    import time

                    try:
                        for i in range(start, end + 1):
                            self.wfile.write(body[i : i + 1])
                            self.wfile.flush()
                            time.sleep(1.0)
                    except (BrokenPipeError, ConnectionResetError):
                        pass
                    return
                if not head and self.path.lstrip("/").startswith("short/"):
                    self.wfile.write(body[start : start + (end + 1 - start) // 2])
                    self.close_connection = True
                    return
                if not head:
                    try:
                        self.wfile.write(body[start : end + 1])
                    except (BrokenPipeError, ConnectionResetError):
                        pass  # ffmpeg closes connections early when it has what it needs

        return Handler
