"""Running an ASGI app on uvicorn with the limits a public socket needs.

uvicorn closes idle keep-alive connections, but a new connection that sends
nothing, or sends one header line every few seconds, stays open for as long
as the client likes, and a header may grow without bound. The protocol here
(uvicorn's httptools protocol plus three checks) closes such connections:
- a request's headers must be complete within ``header_timeout`` seconds of
  the connection opening or of the request's first byte (408);
- they may take at most ``max_header_bytes`` (431);
- at most ``max_connections`` connections are open at once; one more is
  answered 503 and closed.
Each refusal is logged with a request id that the client gets too. The body's
deadline and size are the app's (``mmf_rec.serving.service``), which answers
them as JSON like any other error.

The socket is bound before the server starts, so ``port=0`` gives a free
port that is known (and can be announced) before the first request.
"""

import asyncio
import json
import logging
import socket
import threading
import uuid
from dataclasses import dataclass
from typing import Callable, Optional

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

logger = logging.getLogger("mmf_rec.serving")


@dataclass(frozen=True)
class Limits:
    header_timeout: float = 10.0
    max_header_bytes: int = 16 * 1024
    max_connections: int = 256
    keep_alive: float = 5.0

    def __post_init__(self):
        for name in ("header_timeout", "keep_alive"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0 seconds, got {getattr(self, name)!r}")
        for name in ("max_header_bytes", "max_connections"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def request_id() -> str:
    return uuid.uuid4().hex[:16]


def raw_error(status: int, reason: str, message: str, rid: str) -> bytes:
    """A whole HTTP/1.1 error response that closes the connection."""
    body = json.dumps({"error": message, "status": status, "request_id": rid}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nx-request-id: {rid}\r\nconnection: close\r\n\r\n")
    return head.encode("latin-1") + body


def protocol_class(limits: Limits, on_refused: Optional[Callable[[str], None]] = None):
    """uvicorn's httptools protocol with the limits above."""

    class LimitedProtocol(HttpToolsProtocol):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._deadline: Optional[asyncio.TimerHandle] = None
            self._header_bytes = 0  # bytes read while the headers are incomplete
            self._header_size = 0   # the parsed request line and headers
            self._reading_headers = True
            if len(self.connections) > limits.max_connections:
                self._refuse(503, "Service Unavailable",
                             f"over the limit of {limits.max_connections} open connections; "
                             "retry later", "connection_limit")
                return
            self._arm()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._reading_headers:
                self._header_bytes += len(data)
            super().data_received(data)
            if (self._reading_headers and self._header_bytes > limits.max_header_bytes
                    and not self.transport.is_closing()):
                self._refuse(431, "Request Header Fields Too Large",
                             f"the request line and headers exceed {limits.max_header_bytes} "
                             "bytes", "header_size")

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._reading_headers = True
            self._header_size = 0
            if self._deadline is None:
                self._arm()

        def on_url(self, url: bytes) -> None:
            super().on_url(url)
            self._header_size += len(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            super().on_header(name, value)
            self._header_size += len(name) + len(value) + 4

        def on_headers_complete(self) -> None:
            self._reading_headers = False
            self._header_bytes = 0
            self._disarm()
            if self._header_size > limits.max_header_bytes:  # all of it in one read
                self._refuse(431, "Request Header Fields Too Large",
                             f"the request line and headers exceed {limits.max_header_bytes} "
                             "bytes", "header_size")
                return
            super().on_headers_complete()

        # -- the header deadline ----------------------------------------------------
        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(limits.header_timeout, self._expired)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self) -> None:
            self._deadline = None
            if not self._reading_headers or self.transport.is_closing():
                return
            if self._header_bytes == 0 and self.cycle is None:  # a silent new connection
                self.transport.close()
                if on_refused is not None:
                    on_refused("idle")
                return
            self._refuse(408, "Request Timeout",
                         f"the request headers were not complete within "
                         f"{limits.header_timeout:g} s", "header_timeout")

        def _refuse(self, status: int, reason: str, message: str, why: str) -> None:
            rid = request_id()
            client = "%s:%s" % self.client if self.client else "?"
            logger.warning("request %s from %s: %d %s", rid, client, status, message)
            self.transport.write(raw_error(status, reason, message, rid))
            self.transport.close()
            self._disarm()
            if on_refused is not None:
                on_refused(why)

    return LimitedProtocol


def bind(host: str, port: int, backlog: int = 1024) -> socket.socket:
    """A listening TCP socket on host:port (port 0: a free one)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as error:
        sock.close()
        raise OSError(f"cannot bind {host}:{port}: {error.strerror or error}") from None
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


def bound_port(sock: socket.socket) -> int:
    return sock.getsockname()[1]


def make_server(app, limits: Limits, on_refused=None, loop: str = "auto") -> uvicorn.Server:
    """A uvicorn server for ``app``: httptools with the limits, no access log
    of its own (the app writes one line per request, with its request id),
    and no logging configuration (the caller's stands)."""
    config = uvicorn.Config(
        app, http=protocol_class(limits, on_refused), loop=loop, lifespan="on",
        log_config=None, access_log=False, timeout_keep_alive=limits.keep_alive,
        server_header=False, date_header=False, timeout_graceful_shutdown=10)
    return uvicorn.Server(config)


class ServerThread:
    """A uvicorn server on its own event loop in a background thread (tests,
    notebooks), on a socket bound before it starts."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0,
                 limits: Optional[Limits] = None, on_refused=None):
        self.socket = bind(host, port)
        self.port = bound_port(self.socket)
        self.server = make_server(app, limits or Limits(), on_refused, loop="asyncio")
        self._error: Optional[BaseException] = None

        def run():
            try:
                self.server.run(sockets=[self.socket])
            except BaseException as error:  # noqa: BLE001 - reported to the caller
                self._error = error

        self.thread = threading.Thread(target=run, name="server", daemon=True)
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError(f"the server did not start: {self._error!r}")
            self.thread.join(0.01)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.socket.close()
