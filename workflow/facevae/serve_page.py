"""Serve an actor's page on 127.0.0.1 (``make explore ACTOR=<name>`` runs this).

Any static file server works; this one adds what makes the page fast and correct: JavaScript and
wasm MIME types (module scripts and wasm streaming refuse others), the COOP/COEP headers that
make the page cross-origin isolated, which multi-threaded wasm needs (without them onnxruntime-web
runs on one thread), and byte ranges (Python's plain server has none, and a browser cannot seek
in a video served without them). ``python -m facevae.serve_page results/explore/d6 [--port 8000]``.

It serves the page's own files and nothing else: no file whose real path (symlinks resolved) is
outside the folder (a link to /etc/passwd), no hidden file or folder (an atomic writer's
``.page.json.<pid>.tmp``), no directory listing; and it answers only requests whose ``Host`` is
this machine's loopback name (localhost, 127.0.0.1, [::1]): a page on another site whose name is
rebound to 127.0.0.1 (DNS rebinding) gets 421 instead of the actor's models. A request whose path
holds a NUL byte gets 400 (it was a traceback).
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import re
import sys
import threading
import urllib.parse
from pathlib import Path

TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".wasm": "application/wasm",
         ".json": "application/json", ".onnx": "application/octet-stream", ".css": "text/css"}


class _Limited:
    """A file object that ends after ``left`` bytes (the rest of a byte range)."""

    def __init__(self, handle, left: int):
        self.handle, self.left = handle, left

    def read(self, n: int = -1) -> bytes:
        n = self.left if n is None or n < 0 else min(n, self.left)
        data = self.handle.read(n)
        self.left -= len(data)
        return data

    def close(self) -> None:
        self.handle.close()


#: The names of this machine's loopback interface, with an optional port (case-insensitive).
ALLOWED_HOST = re.compile(r"(localhost|127\.0\.0\.1|\[::1\])(:[0-9]{1,5})?", re.IGNORECASE)


class PageHandler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, **TYPES}

    def _refused(self) -> bool:
        """Answer and return True when the request is not for one of the page's own files."""
        host = self.headers.get("Host", "")
        if not ALLOWED_HOST.fullmatch(host.strip()):
            self.send_error(421, "this server answers only to localhost, 127.0.0.1 and [::1]")
            return True
        raw = urllib.parse.unquote(self.path.split("?", 1)[0].split("#", 1)[0], errors="replace")  # %ff: not UTF-8
        if "\x00" in raw:
            self.send_error(400, "bad path")
            return True
        parts = [part for part in raw.split("/") if part not in ("", ".")]
        if any(part.startswith(".") for part in parts):  # hidden files and folders, and every ".."
            self.send_error(404)
            return True
        root = os.path.realpath(self.directory)
        real = os.path.realpath(self.translate_path(self.path))
        if real != root and not real.startswith(root + os.sep):  # a symlink that leads out of the page
            self.send_error(404)
            return True
        if os.path.isdir(real) and not os.path.isfile(os.path.join(real, "index.html")):
            self.send_error(404)  # no directory listing (a folder with index.html serves that)
            return True
        if os.path.exists(real) and not os.path.isdir(real) and not os.path.isfile(real):
            self.send_error(404)  # a FIFO or a device: reading it would hold the handler for ever
            return True
        return False

    def list_directory(self, path):  # never reached after _refused; kept shut for safety
        self.send_error(404)
        return None

    def send_head(self):
        """Byte ranges (RFC 7233, one range): a browser seeks in a served video only with them."""
        if self._refused():
            return None
        spec = self.headers.get("Range", "")
        path = Path(self.translate_path(self.path))
        if not spec.startswith("bytes=") or "," in spec or not path.is_file():
            return super().send_head()
        size = path.stat().st_size
        first, _, last = spec[6:].partition("-")
        try:
            start = int(first) if first else max(0, size - int(last))
            stop = min(int(last), size - 1) if first and last else size - 1
        except ValueError:
            return super().send_head()
        if start >= size or start > stop:
            self.send_error(416, "range not satisfiable")
            return None
        handle = open(path, "rb")
        handle.seek(start)
        self.send_response(206)
        self.send_header("Content-Type", self.guess_type(str(path)))
        self.send_header("Content-Range", f"bytes {start}-{stop}/{size}")
        self.send_header("Content-Length", str(stop - start + 1))
        self.end_headers()
        return _Limited(handle, stop - start + 1)

    def end_headers(self):
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Accept-Ranges", "bytes")
        super().end_headers()

    def log_message(self, format, *args):  # quiet: one line per request is noise here
        pass


def serve(folder: str | Path, port: int = 0, host: str = "127.0.0.1") -> http.server.ThreadingHTTPServer:
    """Start serving ``folder`` in a background thread; returns the server (``server_address``)."""
    folder = Path(folder)
    if not (folder / "index.html").is_file():
        raise SystemExit(f"{folder / 'index.html'} does not exist: build it with "
                         f"snakemake --cores all {folder / 'index.html'}")
    handler = functools.partial(PageHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer((host, port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535; 0 picks a free one)") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is out of range: a port is 0-65535 (0 picks a free one)")
    return port


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="results/explore/<actor>")
    parser.add_argument("--port", type=_port, default=8000, help="0-65535; 0 picks a free one")
    args = parser.parse_args(argv)
    try:
        server = serve(args.folder, args.port)
    except OSError as err:  # one line, not a traceback: the port is taken or needs privileges
        import errno

        hint = {errno.EADDRINUSE: "another server (an earlier make explore?) has it: stop it, or pick another port",
                errno.EACCES: "ports below 1024 need privileges: pick one above 1023"}.get(err.errno, "pick another port")
        raise SystemExit(f"cannot serve on 127.0.0.1:{args.port}: {err.strerror or err} -- {hint} "
                         f"(--port N, or make explore PORT=N)") from None
    host, port = server.server_address[:2]
    print(f"Serving {args.folder} at http://{host}:{port}/ (Ctrl-C stops)", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.shutdown()
        sys.exit(0)


if __name__ == "__main__":
    main()
