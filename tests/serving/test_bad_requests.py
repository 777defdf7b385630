"""What clients can get wrong, sent to the real service (Starlette on uvicorn,
the `service` fixture of tests/conftest.py and a second one with tight
limits): every bad request is a 4xx that names what was wrong, never a 500;
slow or oversized requests and too many connections are cut off; a 5xx
that does happen is logged with its traceback under the request id the
client got; one bad request in a batch fails alone."""

import json
import logging
import socket
import time
import urllib.error
import urllib.request

import pytest

from mmf_rec.serving.engine import RecRequest
from mmf_rec.serving.server import Limits
from mmf_rec.serving.service import ServiceThread

JSON = {"Content-Type": "application/json"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def send(url, path, body=None, method=None, headers=None):
    """(status, headers, parsed JSON body)."""
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, method=method,
                                     headers=headers or (JSON if data is not None else {}))
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, head, raw = response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        status, head, raw = error.code, error.headers, error.read()
    return status, head, json.loads(raw) if raw else None


# (method, path, body, headers, status, words the error must contain)
BATTERY = [
    # query parameters: types, bounds, unknown and repeated names
    ("GET", "/recommend?user=7&k=1e308", None, None, 400, "'k'"),
    ("GET", "/recommend?user=7&k=-5", None, None, 400, "k must be in [1, 20]"),
    ("GET", "/recommend?user=7&k=99999999999999999999999999", None, None, 400,
     "k must be in [1, 20]"),
    ("GET", "/recommend?user=-5", None, None, 400, "'user' must be >= 0"),
    ("GET", "/recommend?user=1e3", None, None, 400, "'user' must be an integer"),
    ("GET", "/recommend?user=99999", None, None, 404, "unknown user 99999"),
    ("GET", "/recommend?user=7&user=8", None, None, 400, "'user' given more than once"),
    ("GET", "/recommend?user=7&colour=red", None, None, 400, "unknown query parameter 'colour'"),
    ("GET", "/recommend?user=7&exclude_seen=2", None, None, 400, "'exclude_seen'"),
    ("GET", "/users?count=-5", None, None, 400, "'count' must be in [1, 1000], got -5"),
    ("GET", "/users?count=0", None, None, 400, "'count' must be in [1, 1000]"),
    ("GET", "/users?count=10000000000", None, None, 400, "'count' must be in [1, 1000]"),
    ("GET", "/users?count=5.5", None, None, 400, "'count' must be an integer"),
    ("GET", "/users/-1", None, None, 400, "'user' must be >= 0"),
    ("GET", "/items/1e3", None, None, 400, "'item' must be an integer"),
    ("GET", "/items/99999", None, None, 404, "unknown item 99999"),
    ("GET", "/images/nope", None, None, 400, "'item' must be an integer"),
    ("GET", "/explain?user=7", None, None, 400, "/explain?user=ID&item=ID"),
    ("GET", "/metrics?format=xml", None, None, 400, "'format'"),
    ("GET", "/schema?x=1", None, None, 400, "unknown query parameter 'x'"),
    # dense features: overflowing, non-finite, far outside the data, wrong types
    ("POST", "/recommend", {"features": {"age": 1e308}}, None, 400, "feature 'age' must be in"),
    ("POST", "/recommend", {"features": {"age": 3.4e38}}, None, 400, "feature 'age' must be in"),
    ("POST", "/recommend", {"features": {"age": -3.4e38}}, None, 400, "feature 'age' must be in"),
    ("POST", "/recommend", b'{"features": {"age": 1e400}}', None, 400, "overflows a float"),
    ("POST", "/recommend", b'{"features": {"age": NaN}}', None, 400, "NaN"),
    ("POST", "/recommend", b'{"features": {"age": -Infinity}}', None, 400, "-Infinity"),
    ("POST", "/recommend", {"features": {"age": "inf"}}, None, 400, "'age' must be finite"),
    ("POST", "/recommend", {"features": {"age": "old"}}, None, 400, "'age' must be a number"),
    ("POST", "/recommend", {"features": {"age": [1]}}, None, 400, "feature 'age'"),
    ("POST", "/recommend", {"features": {"age": {"x": 1}}}, None, 400, "feature 'age'"),
    # categorical features
    ("POST", "/recommend", {"features": {"region": 1e308}}, None, 400, "feature 'region'"),
    ("POST", "/recommend", {"features": {"region": -1}}, None, 400, "feature 'region'"),
    ("POST", "/recommend", {"features": {"region": 2.5}}, None, 400, "'region' must be an integer"),
    ("POST", "/recommend", {"features": {"region": True}}, None, 400, "feature 'region'"),
    ("POST", "/recommend", {"features": {"colour": 1}}, None, 400, "unknown features ['colour']"),
    ("POST", "/recommend", {"features": [1, 2]}, None, 400, "'features' must be an object"),
    # the other fields
    ("POST", "/recommend", {"colour": 1}, None, 400, "unknown field 'colour'"),
    ("POST", "/recommend", {"k": -5}, None, 400, "k must be in [1, 20], got -5"),
    ("POST", "/recommend", {"k": 10 ** 30}, None, 400, "k must be in [1, 20]"),
    ("POST", "/recommend", {"k": "ten"}, None, 400, "'k' must be an integer"),
    ("POST", "/recommend", {"k": 1.5}, None, 400, "'k' must be an integer"),
    ("POST", "/recommend", {"k": True}, None, 400, "'k' must be an integer"),
    ("POST", "/recommend", {"history": [1, "a"]}, None, 400, "'history'"),
    ("POST", "/recommend", {"history": [-1]}, None, 400, "history: item ids [-1]"),
    ("POST", "/recommend", {"history": [10 ** 30]}, None, 400, "history: item ids"),
    ("POST", "/recommend", {"history": "1,x"}, None, 400, "'history' must be an integer"),
    ("POST", "/recommend", {"history": {"a": 1}}, None, 400, "'history' must be a list"),
    ("POST", "/recommend", {"history": [1, 2, 3, 4, 5, 6]}, None, 400, "history holds at most"),
    ("POST", "/recommend", {"exclude_seen": "maybe"}, None, 400, "'exclude_seen'"),
    # the body itself
    ("POST", "/recommend", b"[" * 3000, None, 400, "nests too deeply"),
    ("POST", "/recommend", b'{"features": {"age": ' + b"[" * 2000 + b"]" * 2000 + b"}}",
     None, 400, "nests too deeply"),
    ("POST", "/recommend", b"[1, 2]", None, 400, "the JSON body must be an object"),
    ("POST", "/recommend", b"{not json", None, 400, "malformed JSON body"),
    ("POST", "/recommend", b'{"k": 1}x', None, 400, "malformed JSON body"),
    ("POST", "/recommend", b"\xff\xfe", None, 400, "not UTF-8"),
    ("POST", "/recommend", b"x" * 5000, None, 413, "over 4096 bytes"),
    ("POST", "/recommend", b"{}", {"Content-Type": "text/plain"}, 415, "text/plain"),
    ("POST", "/recommend", b"region=abc", FORM, 400, "'region' must be an integer"),
    ("POST", "/recommend", b"age=1e308", FORM, 400, "feature 'age' must be in"),
    ("POST", "/recommend", b"k=-1", FORM, 400, "k must be in"),
    ("POST", "/recommend?user=1", {}, None, 400, "unknown query parameter 'user'"),
    # routes and methods
    ("PUT", "/recommend", b"{}", None, 405, "use GET, HEAD, POST"),
    ("DELETE", "/items/3", None, None, 405, "method not allowed"),
    ("GET", "/no/such/route", None, None, 404, "no route /no/such/route"),
]


def test_every_bad_request_gets_a_4xx_naming_what_was_wrong(service):
    failures = []
    for method, path, body, headers, expected, words in BATTERY:
        status, head, answer = send(service.url, path, body, method, headers)
        ok = (status == expected and isinstance(answer, dict) and answer["status"] == status
              and words in answer["error"] and answer["request_id"] == head["X-Request-ID"])
        if not ok:
            failures.append((method, path if len(path) < 80 else path[:80],
                             str(body)[:60], expected, status, answer))
    assert not failures, "\n".join(map(str, failures))
    # none of them was a 5xx, and the service still answers
    requests = service.service.metrics.to_dict()["requests"]
    assert not [r for r in requests if r["status"] >= 500]
    assert send(service.url, "/recommend?user=7&k=3")[0] == 200


def test_good_edge_values_are_accepted(service):
    engine = service.service.engine
    low, high = engine.dense_bounds[engine.dense_names.index("age")]
    for body in ({"features": {"age": high, "region": 0}, "k": 20},
                 {"features": {"age": low}, "history": "3, 9", "k": "2"},
                 {"features": {"age": None, "region": ""}, "history": [], "exclude_seen": 0}):
        status, _, answer = send(service.url, "/recommend", body, "POST")
        assert status == 200, answer
        assert all(isinstance(i["new"], bool) for i in answer["items"])
    status, _, answer = send(service.url, "/users?count=1000")
    assert status == 200 and 1 <= len(answer["users"]) <= 1000


# -- the server's own limits, on raw sockets ----------------------------------------------------
@pytest.fixture(scope="module")
def tight(service):
    """A second service on the same engine with short deadlines and few connections."""
    thread = ServiceThread(service.service.engine, limits=Limits(
        header_timeout=1.0, max_connections=3, max_header_bytes=2048), body_timeout=1.0)
    yield thread
    thread.close()


def connect(server):
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return sock


def read_all(sock, limit=10.0):
    sock.settimeout(limit)
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, socket.timeout):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def test_headers_sent_one_line_at_a_time_hit_the_header_deadline(tight):
    sock = connect(tight)
    started = time.monotonic()
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    answer = b""
    for i in range(20):  # one header line every 0.3 s, for up to 6 s
        try:
            sock.sendall(f"X-Slow-{i}: 1\r\n".encode())
        except (BrokenPipeError, ConnectionResetError):
            break
        sock.settimeout(0.3)
        try:
            answer += sock.recv(65536)
        except socket.timeout:
            continue
        if answer:
            answer += read_all(sock, 2)
            break
    elapsed = time.monotonic() - started
    sock.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"x-request-id: " in answer and b"not complete within 1 s" in answer
    assert elapsed < 4.0


def test_a_silent_connection_is_closed_after_the_header_deadline(tight):
    sock = connect(tight)
    started = time.monotonic()
    assert read_all(sock, 10) == b""  # closed by the server, nothing said
    assert time.monotonic() - started < 5.0
    sock.close()


@pytest.mark.parametrize("complete", [True, False])
def test_oversized_headers_get_431(tight, complete):
    sock = connect(tight)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * 5000
                 + (b"\r\n\r\n" if complete else b""))
    answer = read_all(sock)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]


def test_one_connection_over_the_limit_gets_503_and_the_rest_keep_working(tight):
    held = [connect(tight) for _ in range(3)]
    time.sleep(0.2)
    extra = connect(tight)
    answer = read_all(extra, 5)
    extra.close()
    assert answer.startswith(b"HTTP/1.1 503"), answer[:200]
    assert b"over the limit of 3 open connections" in answer
    held[0].sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert read_all(held[0]).startswith(b"HTTP/1.1 200")
    for sock in held:
        sock.close()
    time.sleep(0.2)
    assert send(tight.url, "/healthz")[0] == 200
    refused = tight.service.metrics.to_dict()["refused_connections"]
    assert refused["connection_limit"] >= 1


def test_a_body_that_does_not_arrive_gets_408(tight):
    sock = connect(tight)
    sock.sendall(b"POST /recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 100\r\n\r\n{\"k\": 3")
    answer = read_all(sock, 5)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:300]
    assert b"did not arrive within 1 s" in answer


# -- a real 5xx, and a failing request inside a batch -----------------------------------------
@pytest.fixture(scope="module")
def second_engine(serving_runs):
    from mmf_rec.serving.engine import Engine

    return Engine.from_runs(serving_runs / "two_tower", serving_runs / "two_tower" / "index",
                            serving_runs / "dlrm_mm", k_retrieve=50, max_k=20)


def test_a_5xx_is_logged_with_its_traceback_under_the_id_the_client_got(second_engine, caplog):
    second_engine.fused, fused = None, second_engine.fused  # ranking now fails: a server fault
    thread = ServiceThread(second_engine)
    try:
        with caplog.at_level(logging.INFO, logger="mmf_rec.serving"):
            status, head, answer = send(thread.url, "/recommend?user=7&k=3")
            assert send(thread.url, "/healthz")[0] == 200  # and it keeps serving
    finally:
        thread.close()
        second_engine.fused = fused
    assert status == 500
    rid = head["X-Request-ID"]
    assert answer["request_id"] == rid and rid in answer["error"]
    failed = [r for r in caplog.records if r.levelno == logging.ERROR and rid in r.getMessage()]
    assert len(failed) == 1 and failed[0].exc_info is not None
    assert failed[0].exc_info[0] is AttributeError  # the traceback of the real fault
    access = [r.getMessage() for r in caplog.records if r.name == "mmf_rec.serving.access"]
    assert any(f"id={rid}" in line and '"GET /recommend?user=7&k=3" 500' in line
               for line in access)


def test_one_bad_request_in_a_batch_fails_alone(second_engine, caplog):
    engine = second_engine
    good = [RecRequest(user=7, k=3), RecRequest(user=8, k=3)]
    history = engine.users.history_feature
    fields = engine.new_user_fields({"age": 0.5}, [3])
    fields[f"sparse_{history}"][0, 0] = engine.num_items + 1000  # no such row in any table
    bad = RecRequest(fields=fields, k=3)
    with caplog.at_level(logging.WARNING, logger="mmf_rec.serving"):
        results = engine.recommend_batch([good[0], bad, good[1]])
    assert "a batch of 3 requests failed" in caplog.text  # the batch broke, then each ran alone
    assert isinstance(results[1], Exception)
    alone = [engine.recommend_batch([r])[0] for r in good]
    assert [results[0], results[2]] == alone
