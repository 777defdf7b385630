"""The recommendation service: routes, dynamic batching, metrics.

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
in its worker thread. Images and explanations are read/computed in other
threads; the event loop only parses, routes and writes.
"""

import asyncio
import concurrent.futures
import json
import re
import threading
import time
import urllib.parse
from typing import Any, Dict, Optional, Tuple

from mmf_rec.serving.batcher import BatchConfig, DynamicBatcher
from mmf_rec.serving.engine import Engine, RecRequest, RequestError
from mmf_rec.serving.http import HTTPServer, Request, Response, error_response, json_response
from mmf_rec.serving.metrics import Metrics
from mmf_rec.serving.page import PAGE

TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")
_ITEM = re.compile(r"^/(items|images|users)/([^/]+)$")


class Service:
    def __init__(self, engine: Engine, batching: Optional[BatchConfig] = None,
                 host: str = "127.0.0.1", port: int = 0, max_body: int = 64 * 1024):
        self.engine = engine
        self.batching = batching or BatchConfig()
        self.metrics = Metrics()
        self.batcher = DynamicBatcher(engine.recommend_batch, self.batching,
                                      on_batch=self.metrics.observe_batch)
        self.http = HTTPServer(self.handle, host, port, max_body=max_body,
                               on_refused=lambda status: self.metrics.observe_request(
                                   "refused", status, 0.0))
        self._io = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="io")
        self._images: Dict[int, Tuple[bytes, str]] = {}

    @property
    def port(self) -> int:
        return self.http.port

    async def start(self) -> int:
        return await self.http.start()

    async def close(self) -> None:
        await self.http.close()
        await self.batcher.close()
        self._io.shutdown(wait=False)

    # -- routing ----------------------------------------------------------------------
    async def handle(self, request: Request) -> Response:
        started = time.perf_counter()
        self.metrics.in_flight += 1
        route = _route_name(request.path, request.method)
        try:
            _, response = await self._route(request)
        except RequestError as error:
            response = error_response(error.status, str(error))
        finally:
            self.metrics.in_flight -= 1
        self.metrics.observe_request(route, response.status, time.perf_counter() - started)
        return response

    async def _route(self, request: Request) -> Tuple[str, Response]:
        path, method = request.path.rstrip("/") or "/", request.method
        get = method in ("GET", "HEAD")
        if path == "/recommend":
            if get:
                return "/recommend", await self._recommend_get(request)
            if method == "POST":
                return "/recommend[new]", await self._recommend_post(request)
            return "/recommend", _not_allowed("GET, POST")
        simple = {"/": self._page, "/healthz": self._health, "/metrics": self._metrics,
                  "/users": self._users, "/schema": self._schema, "/explain": self._explain}
        if path in simple:
            if not get:
                return path, _not_allowed("GET")
            return path, await simple[path](request)
        match = _ITEM.match(path)
        if match:
            kind, key = match.groups()
            route = f"/{kind}/{{id}}"
            if not get:
                return route, _not_allowed("GET")
            ident = _id(key, kind[:-1])
            if kind == "items":
                return route, json_response(self.engine.item(ident))
            if kind == "users":
                return route, json_response(self.engine.user(ident))
            return route, await self._image(ident)
        return "other", error_response(404, f"no route {path}")

    # -- handlers ---------------------------------------------------------------------
    async def _recommend_get(self, request: Request) -> Response:
        user = request.arg("user")
        if user is None:
            raise RequestError("missing query parameter 'user' (GET /recommend?user=ID&k=10)")
        user = _id(user, "user")
        self.engine.check_user(user)
        rec = RecRequest(user=user, k=self.engine.check_k(request.arg("k", "10")),
                         exclude_seen=_flag(request.arg("exclude_seen"), True, "exclude_seen"))
        return json_response(await self.batcher.submit(rec))

    async def _recommend_post(self, request: Request) -> Response:
        body = _parse_body(request)
        features = body.get("features")
        if features is None:  # a flat form: every other field is a feature
            features = {k: v for k, v in body.items()
                        if k not in ("history", "k", "exclude_seen")}
        fields = self.engine.new_user_fields(features, body.get("history") or [])
        history = self.engine.check_items(body.get("history") or [], "history")
        rec = RecRequest(fields=fields, history=history,
                         k=self.engine.check_k(body.get("k", 10)),
                         exclude_seen=_flag(body.get("exclude_seen"), True, "exclude_seen"))
        return json_response(await self.batcher.submit(rec))

    async def _page(self, request: Request) -> Response:
        return Response(200, PAGE.encode(), "text/html; charset=utf-8",
                        {"Cache-Control": "no-cache"})

    async def _health(self, request: Request) -> Response:
        rec = self.engine.recommender
        return json_response({
            "status": "ok", "items": self.engine.num_items, "users": self.engine.num_users,
            "index_items": len(rec.index), "ranker": rec.ranker is not None,
            "final_score": self.engine.final_score, "k_retrieve": self.engine.k_retrieve,
            "max_k": self.engine.max_k,
            "batching": {"max_batch_size": self.batching.max_batch_size,
                         "max_wait_ms": self.batching.max_wait_ms,
                         "workers": self.batching.workers},
        })

    async def _metrics(self, request: Request) -> Response:
        if request.arg("format") == "json" or "application/json" in request.headers.get(
                "accept", ""):
            return json_response(self.metrics.to_dict())
        return Response(200, self.metrics.prometheus().encode(),
                        "text/plain; version=0.0.4; charset=utf-8")

    async def _users(self, request: Request) -> Response:
        count = _id(request.arg("count", "50"), "count")
        return json_response({"num_users": self.engine.num_users,
                              "users": self.engine.example_users(min(count, 1000))})

    async def _schema(self, request: Request) -> Response:
        return json_response(self.engine.schema())

    async def _explain(self, request: Request) -> Response:
        user, item = request.arg("user"), request.arg("item")
        if user is None or item is None:
            raise RequestError("GET /explain?user=ID&item=ID")
        user, item = _id(user, "user"), _id(item, "item")
        self.engine.check_user(user)
        self.engine.check_item(item)
        loop = asyncio.get_running_loop()
        return json_response(await loop.run_in_executor(self._io, self.engine.explain, user, item))

    async def _image(self, item: int) -> Response:
        cached = self._images.get(item)
        if cached is None:
            path, kind = self.engine.image(item)
            data = await asyncio.get_running_loop().run_in_executor(self._io, path.read_bytes)
            cached = (data, kind)
            if len(self._images) < 4096:
                self._images[item] = cached
        return Response(200, cached[0], cached[1], {"Cache-Control": "max-age=3600"})


def _route_name(path: str, method: str = "GET") -> str:
    """The metrics label of a request: its route, ids replaced by {id}."""
    path = path.rstrip("/") or "/"
    if path == "/recommend" and method == "POST":
        return "/recommend[new]"
    if path in ("/", "/recommend", "/healthz", "/metrics", "/users", "/schema", "/explain"):
        return path
    match = _ITEM.match(path)
    return f"/{match.group(1)}/{{id}}" if match else "other"


def _not_allowed(allowed: str) -> Response:
    response = error_response(405, f"method not allowed; use {allowed}")
    response.headers["Allow"] = allowed
    return response


def _id(text: str, what: str) -> int:
    text = str(text).strip()
    if not re.fullmatch(r"-?\d{1,18}", text):
        raise RequestError(f"'{what}' must be an integer id, got {text[:40]!r}")
    return int(text)


def _flag(value: Any, default: bool, name: str) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    if str(value).lower() in TRUE:
        return True
    if str(value).lower() in FALSE:
        return False
    raise RequestError(f"'{name}' must be true or false, got {value!r}")


def _parse_body(request: Request) -> Dict[str, Any]:
    kind = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    try:
        text = request.body.decode("utf-8")
    except UnicodeDecodeError:
        raise RequestError("the body is not UTF-8") from None
    if kind == "application/json":
        try:
            body = json.loads(text or "{}")
        except json.JSONDecodeError as error:
            raise RequestError(f"malformed JSON body: {error}") from None
        if not isinstance(body, dict):
            raise RequestError("the JSON body must be an object")
        return body
    if kind == "application/x-www-form-urlencoded":
        return {k: v[-1] for k, v in urllib.parse.parse_qs(text, keep_blank_values=True).items()}
    raise RequestError(f"unsupported Content-Type {kind}; send application/json or a form", 415)


# -- running it ----------------------------------------------------------------------------
class ServiceThread:
    """The service on its own event loop in a background thread (tests, notebooks)."""

    def __init__(self, engine: Engine, batching: Optional[BatchConfig] = None, **kwargs):
        self.loop = asyncio.new_event_loop()
        self.service = Service(engine, batching, **kwargs)
        ready = threading.Event()
        self._error: Optional[BaseException] = None

        def run():
            asyncio.set_event_loop(self.loop)
            try:
                self.loop.run_until_complete(self.service.start())
            except BaseException as error:  # noqa: BLE001 - reported to the caller
                self._error = error
                ready.set()
                return
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, name="service", daemon=True)
        self.thread.start()
        ready.wait()
        if self._error is not None:
            raise self._error

    @property
    def port(self) -> int:
        return self.service.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.service.close(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()


async def serve_forever(engine: Engine, batching: BatchConfig, host: str, port: int,
                        max_body: int, announce=print) -> None:
    service = Service(engine, batching, host=host, port=port, max_body=max_body)
    bound = await service.start()
    announce(f"serving on http://{host}:{bound}/  (batching: max_batch_size "
             f"{batching.max_batch_size}, max_wait_ms {batching.max_wait_ms})")
    try:
        await asyncio.Event().wait()
    finally:
        await service.close()
