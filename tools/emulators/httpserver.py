"""A threaded HTTPS server for the emulators: one TLS handshake per connection in its worker thread,
keep-alive, one buffered write per response, and an abrupt reset when a handler asks for one.

An emulator supplies ``handle(method, target, headers, body) -> Reply | None`` (None: reset the
connection with no response, an injected fault).
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import ssl
import struct
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self

from tools.emulators.tls import TlsFiles, ensure_tls_files
from tools.shutdown import wait_for_shutdown

logger = logging.getLogger("emulators")
JSON_TYPE = "application/json;charset=UTF-8"


@dataclass
class Reply:
    status: int
    body: Any = None  # dict/list → JSON; bytes → as is; None → empty
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = JSON_TYPE

    def payload(self) -> bytes:
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        return json.dumps(self.body).encode()


class Application(Protocol):
    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Reply | None: ...


class TlsHttpServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        emulator: Application,
        context: ssl.SSLContext,
    ) -> None:
        self.emulator = emulator
        self.context = context
        super().__init__(address, handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        # TLS handshake in the worker thread, so a slow client never blocks accept().
        request.settimeout(30)
        try:
            connection = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        try:
            super().finish_request(connection, client_address)
        except (ConnectionError, ssl.SSLError, OSError):
            pass
        finally:
            with contextlib.suppress(OSError):
                connection.close()


class Handler(BaseHTTPRequestHandler):
    received = 0.0  # perf_counter() when the current request line arrived
    protocol_version = "HTTP/1.1"
    # One buffered write per response and no Nagle: headers and body in separate small segments
    # would meet the client's delayed ACK and cost ~40 ms per request.
    wbufsize = 64 * 1024
    disable_nagle_algorithm = True
    server_version = "Emulator"
    sys_version = ""
    timeout = 120
    server: TlsHttpServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature from the base class
        logger.debug("%s " + format, self.address_string(), *args)

    def parse_request(self) -> bool:
        self.received = time.perf_counter()  # the request line is in: the server's time starts
        return super().parse_request()

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        reply = self.server.emulator.handle(self.command, self.path, headers, body)
        if reply is None:
            # Injected reset: abort the TCP connection with RST, no response.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()
            return
        payload = reply.payload()
        self.send_response(reply.status)
        if payload or reply.status not in (204,):
            self.send_header("Content-Type", reply.content_type)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        # The server's own time for the request (W3C Server-Timing): a benchmark tells it from the client's.
        self.send_header("Server-Timing", f"server;dur={(time.perf_counter() - self.received) * 1000:.1f}")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if payload:
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve  # noqa: N815 - names the base class dispatches to


def serve(address: tuple[str, int], application: Application, context: ssl.SSLContext, name: str) -> TlsHttpServer:
    """Start serving in a daemon thread; ``shutdown()`` and ``server_close()`` stop it."""
    server = TlsHttpServer(address, Handler, application, context)
    threading.Thread(target=server.serve_forever, name=name, daemon=True).start()
    return server


# The secret values of emulators already stopped (see TlsEmulator.secret_values).
STOPPED_SECRET_VALUES: set[str] = set()


class TlsEmulator:
    """What every emulator shares: HTTPS on (host, port) with the local test CA, start and stop."""

    thread_name = "emulator"
    # Every emulator created in this process: the test suite's secret scan asks each for the secret
    # values it has seen (passwords, client secrets, tokens it issued or stored).
    instances: ClassVar[weakref.WeakSet[TlsEmulator]] = weakref.WeakSet()

    def __init__(self, host: str, port: int, tls_dir: Path) -> None:
        self.tls: TlsFiles = ensure_tls_files(tls_dir)
        self.address = (host, port)
        self.httpd: TlsHttpServer | None = None
        TlsEmulator.instances.add(self)

    def secret_values(self) -> set[str]:
        """The credential values this emulator knows; none may ever appear in a log."""
        return set()

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Reply | None:
        raise NotImplementedError

    @property
    def url(self) -> str:
        assert self.httpd is not None, "start() the emulator first"
        host, port = self.httpd.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else host
        # The certificate names localhost; a wildcard bind is still reached through it.
        name = "localhost" if host in ("127.0.0.1", "0.0.0.0") else host  # noqa: S104 - a comparison, not a bind  # nosec B104
        return f"https://{name}:{port}"

    @property
    def ca_pem(self) -> Path:
        return self.tls.ca_pem

    def start(self) -> Self:
        self.httpd = serve(self.address, self, self.tls.server_context(), self.thread_name)
        return self

    def stop(self) -> None:
        STOPPED_SECRET_VALUES.update(self.secret_values())
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()

    def serve_until_stopped(self, banner: Callable[[], Iterable[str]]) -> int:
        """For an emulator's command: start, print the banner, serve until Ctrl-C or SIGTERM.

        Returns the exit code: 2 (with the reason on stderr) when the address cannot be listened on.
        """
        try:
            self.start()
        except OSError as exc:
            host, port = self.address
            print(f"cannot listen on {host}:{port}: {exc.strerror}", file=sys.stderr)
            return 2
        for line in banner():
            print(line, flush=True)
        wait_for_shutdown()
        self.stop()
        return 0
