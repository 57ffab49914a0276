"""A real threaded HTTP/1.1 server (optionally TLS) for tests of HTTP clients.

Tests register a handler per path; the server records every request it received and counts the TCP
connections it accepted and still holds open, so tests can see connection reuse and leaks from the
server side.  `serving()` stops it (closing every connection) even when the test fails.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.harness import free_port

GATE_TIMEOUT = 10.0
"""Longest a gated handler waits for the test to release it (it is released at stop anyway)."""


@dataclass(frozen=True)
class Seen:
    """A request as the server received it."""

    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes
    client_cn: str | None
    """The common name of the client certificate (mutual TLS), if one was presented."""

    def header(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]


class Exchange(BaseHTTPRequestHandler):
    """One connection; `reply` and the raw `wfile` are what route handlers use."""

    protocol_version = "HTTP/1.1"  # keep-alive, so that connection reuse is visible
    disable_nagle_algorithm = True  # headers and body go out in two writes: no delayed-ACK stall between
    server: HttpTestServer
    query: dict[str, list[str]]

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            # Done here, in the connection's own thread, so a slow or failing handshake blocks nobody.
            self.request.do_handshake()
        super().setup()

    def handle_any(self) -> None:
        split = urlsplit(self.path)
        self.query = parse_qs(split.query)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.record(
            Seen(self.command, split.path, list(self.headers.items()), body, self._client_cn())
        )
        handler = self.server.routes.get(split.path)
        if handler is None:
            self.reply(404, b"no such route\n")
        else:
            handler(self)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = handle_any

    def reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def wait_for_client_to_leave(self) -> None:
        """Block until the client closes the connection (or the server stops)."""
        with contextlib.suppress(OSError):
            while self.connection.recv(1024):
                pass
        self.server.client_disconnected.set()

    def _client_cn(self) -> str | None:
        if not isinstance(self.request, ssl.SSLSocket):
            return None
        cert: Any = self.request.getpeercert()
        for rdn in (cert or {}).get("subject", ()):
            for key, value in rdn:
                if key == "commonName":
                    return str(value)
        return None

    def log_message(self, format: str, *args: Any) -> None:
        pass


Route = Callable[[Exchange], None]


def _ok(exchange: Exchange) -> None:
    exchange.reply(200, b"ok")


def _ok_and_close(exchange: Exchange) -> None:
    exchange.close_connection = True
    exchange.reply(200, b"ok", {"Connection": "close"})


@dataclass(eq=False)
class _State:
    routes: dict[str, Route] = field(default_factory=lambda: {"/ok": _ok, "/close": _ok_and_close})
    requests: list[Seen] = field(default_factory=list)
    accepted: int = 0
    open_sockets: set[socket.socket] = field(default_factory=set)
    errors: list[BaseException] = field(default_factory=list)


class HttpTestServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.tls = tls
        self.state = _State()
        self.lock = threading.Lock()
        self.release = threading.Event()
        """Set by the test to let gated handlers go on."""
        self.request_arrived = threading.Event()
        self.client_disconnected = threading.Event()
        super().__init__(("127.0.0.1", free_port()), Exchange)
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.05}, name="http-test-server", daemon=True
        )

    # -- what tests read and set

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.server_address[1]}"

    @property
    def routes(self) -> dict[str, Route]:
        return self.state.routes

    @property
    def requests(self) -> list[Seen]:
        with self.lock:
            return list(self.state.requests)

    @property
    def accepted(self) -> int:
        """TCP connections accepted so far."""
        with self.lock:
            return self.state.accepted

    @property
    def open_connections(self) -> int:
        """Connections accepted and not yet closed (by either side)."""
        with self.lock:
            return len(self.state.open_sockets)

    def record(self, seen: Seen) -> None:
        with self.lock:
            self.state.requests.append(seen)
        self.request_arrived.set()

    # -- socketserver hooks

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        if self.tls is not None:
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        with self.lock:
            self.state.accepted += 1
            self.state.open_sockets.add(sock)
        return sock, addr

    def shutdown_request(self, request: Any) -> None:
        with self.lock:
            self.state.open_sockets.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Failed handshakes are expected in TLS tests; they are kept for inspection, not printed.
        exc = sys.exc_info()[1]
        if exc is not None:
            with self.lock:
                self.state.errors.append(exc)

    # -- lifecycle

    def start(self) -> HttpTestServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        self.shutdown()
        with self.lock:
            sockets = list(self.state.open_sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.server_close()  # joins the connection threads
        self._thread.join(timeout=GATE_TIMEOUT)


@contextlib.contextmanager
def serving(tls: ssl.SSLContext | None = None) -> Iterator[HttpTestServer]:
    server = HttpTestServer(tls).start()
    try:
        yield server
    finally:
        server.stop()
