"""The explorer's local HTTP server: the standard library's, on loopback only.

* It listens on 127.0.0.1 (a free port unless one is given) and answers only requests
  whose Host header names that address or ``localhost`` with its port: a page on another
  site that rebinds its own name to 127.0.0.1 (DNS rebinding) gets 403.
* A POST must be ``application/json`` and, when the browser names an Origin, come from
  this server's own origin: another site cannot drive it with a form or a simple fetch.
* No path from the client touches the file system: the page's files are read once from
  the package (``static/``) into a table, and a URL is only a key into that table.
* API requests go to :class:`.api.ExploreApi`; anything unexpected is a one-line JSON
  error (500), logged as one line on stderr, never a traceback.
"""

from __future__ import annotations

import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from ..core.errors import ConfigError
from .api import LIMITS, ExploreApi

HOST = "127.0.0.1"
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png"}
# Nothing but this server: scripts, styles, data and images from 'self' only.
POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
          "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def static_files() -> dict[str, tuple[bytes, str]]:
    """{URL path: (bytes, content type)} of every file the page needs, from the package."""
    root = resources.files("handprop.explore") / "static"
    files: dict[str, tuple[bytes, str]] = {}

    def walk(folder: Any, prefix: str) -> None:
        for entry in folder.iterdir():
            if entry.is_dir():
                walk(entry, f"{prefix}{entry.name}/")
            elif "." + entry.name.rsplit(".", 1)[-1] in TYPES:
                kind = TYPES["." + entry.name.rsplit(".", 1)[-1]]
                files[f"/static/{prefix}{entry.name}"] = (entry.read_bytes(), kind)

    walk(root, "")
    files["/"] = files.pop("/static/index.html")
    return files


class Handler(BaseHTTPRequestHandler):
    """One request: check the Host (and Origin), then a static file or the API."""

    server: ExploreServer
    server_version = "handprop-explore"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    def _allowed(self) -> bool:
        asked = self.close_connection  # what the client's headers asked for
        self.close_connection = True  # until proven otherwise: an unread body must not linger
        host = self.headers.get("Host", "")
        if host not in self.server.hosts:
            self._send(403, b'{"error":"forbidden host"}', "application/json")
            return False
        origin = self.headers.get("Origin")
        if origin is not None and origin not in self.server.origins:
            self._send(403, b'{"error":"forbidden origin"}', "application/json")
            return False
        self.close_connection = asked
        return True

    def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
        if not self._allowed():
            return
        path = self.path.split("?", 1)[0]
        if path.startswith("/api/"):
            self._api("GET", path, None)
            return
        found = self.server.files.get(path)
        if found is None:
            self._send(404, b'{"error":"not found"}', "application/json")
            return
        self._send(200, *found)

    def do_POST(self) -> None:  # noqa: N802
        if not self._allowed():
            return
        path = self.path.split("?", 1)[0]
        body = self._body()
        if body is not None:
            self._api("POST", path, body)

    def _body(self) -> bytes | None:
        kind = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        length = self.headers.get("Content-Length")
        asked, self.close_connection = self.close_connection, True  # if the body stays unread
        if kind != "application/json":
            self._send(415, b'{"error":"a POST must be application/json"}', "application/json")
            return None
        if length is None or not length.isdigit():
            self._send(411, b'{"error":"a POST needs a Content-Length"}', "application/json")
            return None
        if int(length) > LIMITS["body_bytes"]:
            self._send(413, b'{"error":"request body too large"}', "application/json")
            return None
        self.close_connection = asked
        return self.rfile.read(int(length))

    def _api(self, method: str, path: str, body: bytes | None) -> None:
        try:
            status, payload = self.server.api.handle(method, path, body)
        except Exception as exc:  # a bug: say so in one line, keep serving
            sys.stderr.write(f"handprop explore: internal error on {method} {path}: "
                             f"{type(exc).__name__}: {exc}\n")
            status, payload = 500, b'{"error":"internal error (see the server\'s stderr)"}'
        self._send(status, payload, "application/json")

    def _send(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", POLICY)
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None
                   ) -> None:
        """The standard library's errors (bad request line, unknown method) as JSON."""
        self.close_connection = True
        text = (message or "error").replace('"', "'")[:200]
        self._send(code, f'{{"error":"{text}"}}'.encode(), "application/json")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Quiet: the page polls many times a second."""


class ExploreServer(ThreadingHTTPServer):
    """A threading server with the API, the files and the allowed Host names."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, api: ExploreApi | None = None, port: int = 0) -> None:
        try:
            super().__init__((HOST, port), Handler)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {HOST}:{port}: {exc.strerror or exc}") from None
        self.api = api  # may be attached after binding (the port is checked first)
        self.files = static_files()
        port = self.server_address[1]
        self.hosts = {f"{HOST}:{port}", f"localhost:{port}"}
        self.origins = {f"http://{host}" for host in self.hosts}

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.server_address[1]}/"


def start_in_thread(api: ExploreApi, port: int = 0) -> tuple[ExploreServer, threading.Thread]:
    """A server answering from a background thread (tests, notebooks); ``shutdown()``
    and ``server_close()`` stop it."""
    server = ExploreServer(api, port)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True)
    thread.start()
    return server, thread


def serve(server: ExploreServer, open_browser: bool = True) -> None:
    """Serve until Ctrl-C (KeyboardInterrupt propagates: the CLI exits 130)."""
    print(f"handprop explore: serving on {server.url}  (Ctrl-C stops)", flush=True)
    try:
        if open_browser:
            import webbrowser

            webbrowser.open(server.url)
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
