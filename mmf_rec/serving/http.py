"""A small HTTP/1.1 server on asyncio streams (standard library only).

Enough for a local JSON service and its page: request line, headers, a
``Content-Length`` body, keep-alive, and 4xx answers for what it refuses
(malformed request lines and headers, bodies over the limit, chunked
request bodies). The application is ``async def app(request) -> Response``;
anything slow in it must go to a thread (the event loop only parses and
writes).
"""

import asyncio
import json
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Dict, List, Optional

REASONS = {200: "OK", 204: "No Content", 400: "Bad Request", 404: "Not Found",
           405: "Method Not Allowed", 408: "Request Timeout", 411: "Length Required",
           413: "Payload Too Large", 415: "Unsupported Media Type",
           431: "Request Header Fields Too Large", 500: "Internal Server Error",
           501: "Not Implemented", 503: "Service Unavailable"}
MAX_HEADER_BYTES = 16 * 1024
MAX_HEADERS = 100


@dataclass
class Request:
    method: str
    path: str
    query: Dict[str, List[str]]
    headers: Dict[str, str]
    body: bytes = b""

    def arg(self, name: str, default: Optional[str] = None) -> Optional[str]:
        values = self.query.get(name)
        return values[-1] if values else default


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: Dict[str, str] = field(default_factory=dict)


def json_response(data: Any, status: int = 200) -> Response:
    return Response(status, json.dumps(data, allow_nan=False).encode())


def error_response(status: int, message: str) -> Response:
    return json_response({"error": message, "status": status}, status)


class _Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


App = Callable[[Request], Awaitable[Response]]


class HTTPServer:
    def __init__(self, app: App, host: str = "127.0.0.1", port: int = 0,
                 max_body: int = 64 * 1024, keepalive_s: float = 30.0,
                 on_refused: Optional[Callable[[int], None]] = None):
        self.app, self.host, self.port = app, host, port
        self.max_body = max_body
        self.keepalive_s = keepalive_s
        self.on_refused = on_refused
        self._server: Optional[asyncio.base_events.Server] = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._connection, self.host, self.port,
                                                  limit=MAX_HEADER_BYTES, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _read_request(self, reader: asyncio.StreamReader) -> Optional[Request]:
        try:
            line = await asyncio.wait_for(reader.readline(), self.keepalive_s)
        except asyncio.TimeoutError:
            return None
        except (ValueError, asyncio.LimitOverrunError):
            raise _Refused(431, "request line too long") from None
        if not line:
            return None
        parts = line.decode("latin-1").strip().split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _Refused(400, "malformed request line")
        method, target, version = parts
        headers: Dict[str, str] = {}
        size = 0
        while True:
            try:
                line = await asyncio.wait_for(reader.readline(), self.keepalive_s)
            except (ValueError, asyncio.LimitOverrunError):
                raise _Refused(431, "header line too long") from None
            except asyncio.TimeoutError:
                raise _Refused(408, "timed out reading the headers") from None
            size += len(line)
            if size > MAX_HEADER_BYTES or len(headers) > MAX_HEADERS:
                raise _Refused(431, "too many or too large headers")
            if not line:
                raise asyncio.IncompleteReadError(b"", None)
            if line in (b"\r\n", b"\n"):
                break
            name, sep, value = line.decode("latin-1").partition(":")
            if not sep or not name.strip():
                raise _Refused(400, "malformed header line")
            headers[name.strip().lower()] = value.strip()
        if version == "HTTP/1.0":
            headers.setdefault("connection", "close")
        if "transfer-encoding" in headers:
            raise _Refused(501, "chunked request bodies are not supported; send Content-Length")
        body = b""
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                raise _Refused(400, "malformed Content-Length")
            if int(length) > self.max_body:
                raise _Refused(413, f"request body over {self.max_body} bytes")
            body = await reader.readexactly(int(length))
        url = urllib.parse.urlsplit(target)
        return Request(method=method.upper(), path=urllib.parse.unquote(url.path) or "/",
                       query=urllib.parse.parse_qs(url.query, keep_blank_values=True),
                       headers=headers, body=body)

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    request = await self._read_request(reader)
                except _Refused as refused:
                    if self.on_refused is not None:
                        self.on_refused(refused.status)
                    await self._write(writer, error_response(refused.status, str(refused)),
                                      keep_alive=False)
                    await _discard(reader)
                    return
                if request is None:
                    return
                try:
                    response = await self.app(request)
                except Exception as error:  # noqa: BLE001 - the service keeps serving
                    response = error_response(500, f"internal error: {type(error).__name__}")
                keep_alive = request.headers.get("connection", "").lower() != "close"
                await self._write(writer, response, keep_alive, head=request.method == "HEAD")
                if not keep_alive:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    @staticmethod
    async def _write(writer: asyncio.StreamWriter, response: Response, keep_alive: bool,
                     head: bool = False) -> None:
        reason = REASONS.get(response.status, "Unknown")
        lines = [f"HTTP/1.1 {response.status} {reason}",
                 f"Content-Type: {response.content_type}",
                 f"Content-Length: {len(response.body)}",
                 f"Connection: {'keep-alive' if keep_alive else 'close'}"]
        lines += [f"{k}: {v}" for k, v in response.headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if not head:
            writer.write(response.body)
        await writer.drain()


async def _discard(reader: asyncio.StreamReader, limit: int = 4 << 20) -> None:
    """Read what the client is still sending (an oversized body) before
    closing: closing with unread data makes the kernel reset the connection,
    and the client may then lose the error response it has not read yet."""
    total = 0
    try:
        while total < limit:
            chunk = await asyncio.wait_for(reader.read(1 << 16), 0.2)
            if not chunk:
                return
            total += len(chunk)
    except (asyncio.TimeoutError, ConnectionError):
        return
