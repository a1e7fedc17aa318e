"""One small HTTP server per process, on threads of its own beside the loop.

Routes:

- ``GET /metrics``: Prometheus text format (``exposition``).
- ``GET /healthz``: 200 while the loop comes round (with records or idle), 503 once it has not
  for ``board.HEALTH_DEADLINE_S`` seconds.
- ``GET /readyz``: 200 once a model is loaded and partitions are assigned (and, for a learner,
  its writer lease is held); a standby learner is alive but not ready.
- ``GET /`` and ``GET /static/<file>``: the live dashboard, shipped in the package.
- ``GET /api/status?since=T``: what the dashboard draws, as JSON: the snapshot, and the
  history points after ``T`` (Unix time).
- ``POST /predict`` (``serve`` only): ``predict.HttpPredict``; with ``--http-token``, it needs
  ``Authorization: Bearer <token>``.

The server is the standard library's threading HTTP server (HTTP/1.1, keep-alive), with at
most ``MAX_CONNECTIONS`` connections at once, each closed after ``IDLE_S`` seconds of silence,
so that no client can hold more than a bounded share of the process. A handler's error is
answered with 500 and logged; it never reaches the loop.
"""

from __future__ import annotations

import contextlib
import hmac
import importlib.resources
import logging
import socket
import threading
import urllib.parse
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST

from stream_learner.errors import StreamLearnerError
from stream_learner.observe.board import Board
from stream_learner.observe.exposition import Exposition
from stream_learner.observe.predict import HttpPredict

log = logging.getLogger("stream_learner.http")

MAX_CONNECTIONS = 64
IDLE_S = 30.0
STATIC = {"index.html": "text/html; charset=utf-8", "dashboard.js": "text/javascript; charset=utf-8",
          "dashboard.css": "text/css; charset=utf-8", "favicon.svg": "image/svg+xml"}
JSON = "application/json"


def _static(name: str) -> bytes:
    return importlib.resources.files("stream_learner.observe").joinpath("dashboard", name).read_bytes()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = MAX_CONNECTIONS

    def __init__(self, address: tuple[str, int], app: HttpServer) -> None:
        self.app = app
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):  # full: refuse rather than queue without end
            with contextlib.suppress(OSError):
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                                b"Connection: close\r\n\r\n")
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("HTTP connection from %s failed", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = IDLE_S
    server: _Server
    server_version = "stream-learner"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._answer(self.server.app.get)

    def do_POST(self) -> None:
        self._answer(self.server.app.post)

    def _answer(self, route: Any) -> None:
        try:
            status, kind, body = route(self)
        except Exception:
            log.exception("HTTP %s %s failed", self.command, self.path)
            status, kind, body = 500, JSON, b'{"reason":"internal_error"}'
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if status == 401:
            self.send_header("WWW-Authenticate", "Bearer")
        self.end_headers()
        self.wfile.write(body)


class HttpServer:
    """The process's HTTP server; ``predict`` only for ``serve``. ``start`` binds and serves in a
    thread; ``port`` is the bound one (useful with port 0)."""

    def __init__(self, board: Board, exposition: Exposition, *, host: str, port: int,
                 predict: HttpPredict | None = None, token: str = "") -> None:
        self.board = board
        self.exposition = exposition
        self.host, self.port = host, port
        self.predict = predict
        self.token = token.encode()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        try:
            self._server = _Server((self.host, self.port), self)
        except (OSError, OverflowError) as exc:
            raise StreamLearnerError(f"--http-port {self.port}: cannot listen on {self.host}: {exc}") from exc
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="http", daemon=True)
        self._thread.start()
        log.info("HTTP on http://%s:%d/ (metrics, health, dashboard%s)", _shown_host(self.host), self.port,
                 ", predictions" if self.predict else "")

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> HttpServer:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- routes ----------------------------------------------------------------------------

    def get(self, request: _Handler) -> tuple[int, str, bytes]:
        url = urllib.parse.urlsplit(request.path)
        path = url.path
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, self.exposition.render()
        if path in ("/healthz", "/readyz"):
            snap = self.board.snapshot()
            ok = snap.healthy if path == "/healthz" else snap.ready
            body = {"status": "ok" if ok else "unavailable", "loop_seconds_ago": round(snap.beat_age_s, 3),
                    "model_loaded": snap.model_loaded, "partitions": snap.assigned,
                    "lease_held": snap.lease_held}
            return (200 if ok else 503), JSON, orjson.dumps(body)
        if path == "/api/status":
            since = urllib.parse.parse_qs(url.query).get("since", ["0"])[0]
            return 200, JSON, self.status(float(since) if _is_number(since) else 0.0)
        name = "index.html" if path == "/" else path.removeprefix("/static/")
        if name in STATIC and (path == "/" or path.startswith("/static/")):
            return 200, STATIC[name], _static(name)
        return 404, JSON, b'{"reason":"not_found"}'

    def status(self, since: float) -> bytes:
        snap = self.board.snapshot()
        points, versions, marks = self.board.history(since)
        doc = asdict(snap)
        doc["lags"] = [{"topic": t, "partition": p, "lag": n} for (t, p), n in sorted(snap.lags.items())]
        doc["partitions"] = [{"partition": p, **figures} for p, figures in sorted(snap.partitions.items())]
        doc.update(healthy=snap.healthy, ready=snap.ready, points=[asdict(p) for p in points],
                   versions=[{"at": at, "version": v} for at, v in versions],
                   marks=[asdict(m) for m in marks])
        return orjson.dumps(doc)

    def post(self, request: _Handler) -> tuple[int, str, bytes]:
        if urllib.parse.urlsplit(request.path).path != "/predict":
            return 404, JSON, b'{"reason":"not_found"}'
        if self.predict is None:
            return 404, JSON, b'{"reason":"not_found","error":"stream-learner serve answers predictions"}'
        if self.token and not hmac.compare_digest(request.headers.get("Authorization", "").encode(),
                                                  b"Bearer " + self.token):
            return 401, JSON, b'{"reason":"unauthorized"}'
        try:
            length = int(request.headers.get("Content-Length", ""))
        except ValueError:
            request.close_connection = True
            return 411, JSON, b'{"reason":"length_required"}'
        if length < 0 or length > self.predict.max_body:
            request.close_connection = True  # the body is not read
            return 413, JSON, orjson.dumps({"reason": "too_large",
                                            "error": f"{length} bytes > limit of {self.predict.max_body}"})
        body = request.rfile.read(length)
        with self.exposition.predict_seconds.time():
            status, answer = self.predict(body)
        return status, JSON, answer


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _shown_host(host: str) -> str:
    return socket.gethostname() if host in ("", "0.0.0.0", "::") else host
