"""The recommendation service: Starlette routes on uvicorn, dynamic
batching, Prometheus metrics, one log line per request.

    GET  /                       the demo page (mmf_rec/serving/page.py)
    GET  /recommend?user=ID&k=10[&exclude_seen=0]
    POST /recommend              a new user: JSON {"features": {...}, "history": [...],
                                 "k": 10} or the same as a form
    GET  /items/ID, /images/ID   an item's record, its image
    GET  /users[?count=N]        known users to pick from; /users/ID: features, history
    GET  /schema                 what a new user may give
    GET  /explain?user=ID&item=ID  Integrated Gradients of the ranker (optional)
    GET  /healthz, /metrics[?format=json]

Recommendation requests go through a :class:`DynamicBatcher`; the model runs
in its worker thread. Images and explanations are read or computed in other
threads; the event loop only parses, routes and writes.

Every answer carries an ``X-Request-ID`` header. An error is JSON
``{"error", "status", "request_id"}``: a 4xx names what was wrong with the
request (``mmf_rec.serving.requests``); a 5xx is the service's fault, and
its traceback is logged under the same request id.
"""

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import time
from typing import Any, Dict, Optional

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route, Router

from mmf_rec.serving import requests as checks
from mmf_rec.serving.batcher import BatchConfig, BatcherClosed, DynamicBatcher
from mmf_rec.serving.engine import Engine, RecRequest, RequestError
from mmf_rec.serving.metrics import CONTENT_TYPE, Metrics
from mmf_rec.serving.page import PAGE
from mmf_rec.serving.server import Limits, ServerThread, bind, bound_port, make_server, request_id

logger = logging.getLogger("mmf_rec.serving")
access = logging.getLogger("mmf_rec.serving.access")

MAX_USERS_LISTED = 1000
ROUTES = ("/", "/recommend", "/healthz", "/metrics", "/users", "/schema", "/explain")


def json_response(data: Any, status: int = 200, headers: Optional[Dict[str, str]] = None):
    return Response(json.dumps(data, allow_nan=False), status, headers,
                    media_type="application/json")


def error_response(status: int, message: str, rid: str, headers=None) -> Response:
    return json_response({"error": message, "status": status, "request_id": rid}, status,
                         headers)


class Service:
    """The app and what it serves from: the engine, the batcher, the metrics."""

    def __init__(self, engine: Engine, batching: Optional[BatchConfig] = None,
                 max_body: int = 64 * 1024, body_timeout: float = 10.0,
                 max_in_flight: int = 1024):
        if max_body < 1 or body_timeout <= 0 or max_in_flight < 1:
            raise ValueError("max_body and max_in_flight must be >= 1 and body_timeout > 0")
        self.engine = engine
        self.batching = batching or BatchConfig()
        self.metrics = Metrics()
        self.batcher = DynamicBatcher(engine.recommend_batch, self.batching,
                                      on_batch=self.metrics.observe_batch)
        self.max_body = max_body
        self.body_timeout = body_timeout
        self.max_in_flight = max_in_flight
        self._in_flight = 0
        self._io = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="io")
        self._images: Dict[int, tuple] = {}
        routes = [
            Route("/", self._page),
            Route("/recommend", self._recommend, methods=["GET", "POST"]),
            Route("/items/{ident}", self._item),
            Route("/images/{ident}", self._image),
            Route("/users", self._users),
            Route("/users/{ident}", self._user),
            Route("/schema", self._schema),
            Route("/explain", self._explain),
            Route("/healthz", self._health),
            Route("/metrics", self._metrics),
        ]
        self.router = Router(routes=routes, lifespan=self._lifespan)
        self.announce = None  # called with no argument once the app has started

    # -- the ASGI app: request id, errors, metrics and the access log around the routes ---
    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.router(scope, receive, send)
        rid = request_id()
        scope.setdefault("state", {})["request_id"] = rid
        scope["app"] = self  # the router raises HTTPException for 404 / 405
        started = time.perf_counter()
        status = {"code": 500, "sent": False}

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                status["code"], status["sent"] = message["status"], True
                message["headers"] = [*message.get("headers", []),
                                      (b"x-request-id", rid.encode())]
            await send(message)

        self._in_flight += 1
        self.metrics.in_flight.inc()
        try:
            if self._in_flight > self.max_in_flight:
                logger.warning("request %s: 503, %d requests in flight (limit %d)", rid,
                               self._in_flight - 1, self.max_in_flight)
                response = error_response(503, f"over {self.max_in_flight} requests in flight; "
                                          "retry later", rid, {"Retry-After": "1"})
                await response(scope, receive, send_with_id)
            else:
                await self.router(scope, receive, send_with_id)
        except HTTPException as error:  # the router's own 404 and 405
            headers = dict(error.headers or {})
            if error.status_code == 404:
                message = f"no route {scope['path'][:100]}"
            else:
                headers["Allow"] = ", ".join(sorted(headers.get("Allow", "GET").split(", ")))
                message = f"method not allowed; use {headers['Allow']}"
            await error_response(error.status_code, message, rid, headers)(
                scope, receive, send_with_id)
        except Exception:  # noqa: BLE001 - logged with its traceback, answered 500
            logger.exception("request %s: %s %s failed", rid, scope["method"], _target(scope))
            if not status["sent"]:
                response = error_response(
                    500, f"internal error (request id {rid}; the service log has the "
                    "traceback)", rid)
                await response(scope, receive, send_with_id)
        finally:
            self._in_flight -= 1
            self.metrics.in_flight.dec()
            seconds = time.perf_counter() - started
            route = route_name(scope["path"], scope["method"])
            self.metrics.observe_request(route, status["code"], seconds)
            client = scope.get("client")
            access.info('%s "%s %s" %d %.1fms id=%s', f"{client[0]}:{client[1]}" if client
                        else "-", scope["method"], _target(scope), status["code"],
                        seconds * 1e3, rid)

    @contextlib.asynccontextmanager
    async def _lifespan(self, app):
        if self.announce is not None:
            self.announce()
        try:
            yield
        finally:
            await self.batcher.close()
            self._io.shutdown(wait=False)

    # -- helpers ------------------------------------------------------------------------
    async def _guard(self, request: Request, handler, *args) -> Response:
        """The handler's response, or the JSON 4xx of a refused request."""
        rid = request.scope["state"]["request_id"]
        try:
            return await handler(request, *args)
        except RequestError as error:
            return error_response(error.status, str(error), rid)
        except BatcherClosed:
            logger.warning("request %s: 503, the service is shutting down", rid)
            return error_response(503, "the service is shutting down", rid)

    async def _body(self, request: Request) -> bytes:
        """The body, at most ``max_body`` bytes, within ``body_timeout`` seconds."""
        length = request.headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                raise RequestError("malformed Content-Length")
            if int(length) > self.max_body:
                raise RequestError(f"the body is over {self.max_body} bytes", 413)

        async def read() -> bytes:
            chunks, size = [], 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > self.max_body:
                    raise RequestError(f"the body is over {self.max_body} bytes", 413)
                chunks.append(chunk)
            return b"".join(chunks)

        try:
            return await asyncio.wait_for(read(), self.body_timeout)
        except asyncio.TimeoutError:
            raise RequestError(f"the body did not arrive within {self.body_timeout:g} s",
                               408) from None
        except ClientDisconnect:
            raise RequestError("the client closed the connection before its body arrived",
                               400) from None

    def _args(self, request: Request, allowed: Dict[str, str]) -> Dict[str, str]:
        return checks.query_args(request.scope.get("query_string", b""), allowed)

    def _id(self, text: str, what: str) -> int:
        return checks.integer(text, what, low=0)

    # -- routes -------------------------------------------------------------------------
    async def _recommend(self, request: Request) -> Response:
        if request.method == "POST":
            return await self._guard(request, self._recommend_new)
        return await self._guard(request, self._recommend_known)

    async def _recommend_known(self, request: Request) -> Response:
        args = self._args(request, {"user": "user=ID", "k": "k=N",
                                    "exclude_seen": "exclude_seen=0|1"})
        if "user" not in args:
            raise RequestError("missing query parameter 'user' (GET /recommend?user=ID&k=10)")
        user = self._id(args["user"], "user")
        self.engine.check_user(user)
        rec = RecRequest(user=user, k=self.engine.check_k(args.get("k", "10")),
                         exclude_seen=checks.flag(args.get("exclude_seen"), "exclude_seen",
                                                  True))
        return json_response(await self.batcher.submit(rec))

    async def _recommend_new(self, request: Request) -> Response:
        self._args(request, {})
        body = checks.new_user(await self._body(request), request.headers.get("content-type"))
        history = self.engine.check_items(body.history, "history")
        fields = self.engine.new_user_fields(body.features, history)
        rec = RecRequest(fields=fields, history=history, k=self.engine.check_k(body.k),
                         exclude_seen=checks.flag(body.exclude_seen, "exclude_seen", True))
        return json_response(await self.batcher.submit(rec))

    async def _page(self, request: Request) -> Response:
        async def page(request):
            self._args(request, {"user": "user=ID"})  # the page reads ?user= itself
            return Response(PAGE, media_type="text/html; charset=utf-8",
                            headers={"Cache-Control": "no-cache"})
        return await self._guard(request, page)

    async def _item(self, request: Request) -> Response:
        async def item(request):
            self._args(request, {})
            return json_response(self.engine.item(self._id(request.path_params["ident"],
                                                           "item")))
        return await self._guard(request, item)

    async def _user(self, request: Request) -> Response:
        async def user(request):
            self._args(request, {})
            return json_response(self.engine.user(self._id(request.path_params["ident"],
                                                           "user")))
        return await self._guard(request, user)

    async def _image(self, request: Request) -> Response:
        async def image(request):
            self._args(request, {})
            ident = self._id(request.path_params["ident"], "item")
            cached = self._images.get(ident)
            if cached is None:
                path, kind = self.engine.image(ident)
                data = await asyncio.get_running_loop().run_in_executor(self._io, path.read_bytes)
                cached = (data, kind)
                if len(self._images) < 4096:
                    self._images[ident] = cached
            return Response(cached[0], media_type=cached[1],
                            headers={"Cache-Control": "max-age=3600"})
        return await self._guard(request, image)

    async def _users(self, request: Request) -> Response:
        async def users(request):
            args = self._args(request, {"count": "count=N"})
            count = checks.integer(args.get("count", "50"), "count", 1, MAX_USERS_LISTED)
            return json_response({"num_users": self.engine.num_users,
                                  "users": self.engine.example_users(count)})
        return await self._guard(request, users)

    async def _schema(self, request: Request) -> Response:
        async def schema(request):
            self._args(request, {})
            return json_response(self.engine.schema())
        return await self._guard(request, schema)

    async def _explain(self, request: Request) -> Response:
        async def explain(request):
            args = self._args(request, {"user": "user=ID", "item": "item=ID"})
            if "user" not in args or "item" not in args:
                raise RequestError("GET /explain?user=ID&item=ID")
            user, item = self._id(args["user"], "user"), self._id(args["item"], "item")
            self.engine.check_user(user)
            self.engine.check_item(item)
            loop = asyncio.get_running_loop()
            return json_response(await loop.run_in_executor(self._io, self.engine.explain,
                                                            user, item))
        return await self._guard(request, explain)

    async def _health(self, request: Request) -> Response:
        async def health(request):
            self._args(request, {})
            engine, rec = self.engine, self.engine.recommender
            return json_response({
                "status": "ok", "items": engine.num_items, "users": engine.num_users,
                "index_items": len(rec.index), "ranker": rec.ranker is not None,
                "ranking": (f"fused, {engine.precision}" if engine.fused is not None
                            else None),
                "final_score": engine.final_score, "k_retrieve": engine.k_retrieve,
                "max_k": engine.max_k,
                "batching": {"max_batch_size": self.batching.max_batch_size,
                             "max_wait_ms": self.batching.max_wait_ms,
                             "workers": self.batching.workers},
            })
        return await self._guard(request, health)

    async def _metrics(self, request: Request) -> Response:
        async def metrics(request):
            args = self._args(request, {"format": "format=json|prometheus"})
            wanted = args.get("format", "")
            if wanted not in ("", "json", "prometheus"):
                raise RequestError(f"'format' must be json or prometheus, got {wanted[:40]!r}")
            if wanted == "json" or (not wanted and "application/json" in
                                    request.headers.get("accept", "")):
                return json_response(self.metrics.to_dict())
            return Response(self.metrics.prometheus(), media_type=CONTENT_TYPE)
        return await self._guard(request, metrics)


def route_name(path: str, method: str = "GET") -> str:
    """The metrics label of a request: its route, ids replaced by {id}."""
    path = path.rstrip("/") or "/"
    if path == "/recommend" and method == "POST":
        return "/recommend[new]"
    if path in ROUTES:
        return path
    parts = path.split("/")
    if len(parts) == 3 and parts[1] in ("items", "images", "users"):
        return f"/{parts[1]}/{{id}}"
    return "other"


def _target(scope) -> str:
    query = scope.get("query_string", b"")
    path = scope.get("path", "")
    target = f"{path}?{query.decode('latin-1')}" if query else path
    return target if len(target) <= 200 else target[:197] + "..."


# -- running it ----------------------------------------------------------------------------
class ServiceThread:
    """The service on uvicorn in a background thread of this process (tests,
    notebooks); ``service`` stays inspectable."""

    def __init__(self, engine: Engine, batching: Optional[BatchConfig] = None,
                 host: str = "127.0.0.1", port: int = 0, limits: Optional[Limits] = None,
                 **kwargs):
        self.service = Service(engine, batching, **kwargs)
        self.host = host
        self._server = ServerThread(self.service, host, port, limits,
                                    on_refused=self.service.metrics.refused_connection)

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def close(self) -> None:
        self._server.close()


def serve_forever(engine: Engine, batching: BatchConfig, host: str, port: int,
                  max_body: int, limits: Limits, body_timeout: float = 10.0,
                  max_in_flight: int = 1024, announce=print) -> None:
    """Serve until interrupted; ``announce`` gets the start-up line with the
    bound port once the app has started."""
    service = Service(engine, batching, max_body=max_body, body_timeout=body_timeout,
                      max_in_flight=max_in_flight)
    sock = bind(host, port)
    shown = host if ":" not in host else f"[{host}]"
    service.announce = lambda: announce(
        f"serving on http://{shown}:{bound_port(sock)}/  (batching: max_batch_size "
        f"{batching.max_batch_size}, max_wait_ms {batching.max_wait_ms}; ranking: "
        f"{'fused, ' + engine.precision if engine.fused is not None else 'retrieval only'})")
    server = make_server(service, limits, on_refused=service.metrics.refused_connection)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
