"""The recommendation service: the dynamic batcher alone, then the real
service (Starlette on uvicorn) on tiny trained runs (a two_tower, its index
and an ids-only dlrm_mm from mmf_run), hit over HTTP with urllib. Bad
requests and the server's limits: tests/serving/test_bad_requests.py."""

import asyncio
import json
import re
import threading
import time
import urllib.error
import urllib.request

import pytest

from mmf_rec.serving import loadgen
from mmf_rec.serving.batcher import BatchConfig, BatcherClosed, DynamicBatcher
from mmf_rec.serving.open_loop import percentile
from tiny_runs import environment, serve_cli


# -- the batcher ---------------------------------------------------------------------------
def run(coroutine):
    return asyncio.run(coroutine)


class Recorder:
    """A batch handler that doubles its items and records each batch and its thread."""

    def __init__(self, delay=0.0, fail=None):
        self.batches, self.threads, self.delay, self.fail = [], [], delay, fail

    def __call__(self, items):
        self.batches.append(list(items))
        self.threads.append(threading.current_thread())
        if self.delay:
            time.sleep(self.delay)
        return [ValueError(f"bad {x}") if self.fail and self.fail(x) else 2 * x for x in items]


def test_concurrent_submissions_form_one_batch_off_the_event_loop():
    handler = Recorder()

    async def main():
        batcher = DynamicBatcher(handler, max_batch_size=8, max_wait_ms=100)
        results = await asyncio.gather(*(batcher.submit(i) for i in range(5)))
        await batcher.close()
        return results

    assert run(main()) == [0, 2, 4, 6, 8]
    assert handler.batches == [[0, 1, 2, 3, 4]]
    assert handler.threads[0] is not threading.main_thread()


def test_a_full_batch_runs_without_waiting_and_the_rest_form_more_batches():
    handler = Recorder()

    async def main():
        batcher = DynamicBatcher(handler, max_batch_size=4, max_wait_ms=200)
        start = time.perf_counter()
        first = await asyncio.gather(*(batcher.submit(i) for i in range(4)))
        full = time.perf_counter() - start
        rest = await asyncio.gather(*(batcher.submit(i) for i in range(10)))
        await batcher.close()
        return first, full, rest

    first, full, rest = run(main())
    assert first == [0, 2, 4, 6] and rest == [2 * i for i in range(10)]
    assert full < 0.15  # did not sit out max_wait_ms
    assert [len(b) for b in handler.batches] == [4, 4, 4, 2]


def test_a_lone_request_waits_at_most_max_wait():
    handler = Recorder()

    async def main():
        batcher = DynamicBatcher(handler, max_batch_size=16, max_wait_ms=40)
        start = time.perf_counter()
        result = await batcher.submit(21)
        elapsed = time.perf_counter() - start
        await batcher.close()
        return result, elapsed

    result, elapsed = run(main())
    assert result == 42
    assert 0.035 <= elapsed < 1.0


def test_batch_size_one_runs_every_request_alone_in_order():
    handler = Recorder(delay=0.005)

    async def main():
        batcher = DynamicBatcher(handler, BatchConfig(max_batch_size=1, max_wait_ms=0))
        results = await asyncio.gather(*(batcher.submit(i) for i in range(6)))
        await batcher.close()
        return results

    assert run(main()) == [0, 2, 4, 6, 8, 10]
    assert handler.batches == [[i] for i in range(6)]


def test_requests_queued_behind_a_busy_worker_form_the_next_batch():
    handler = Recorder(delay=0.1)

    async def main():
        batcher = DynamicBatcher(handler, max_batch_size=16, max_wait_ms=0)
        first = asyncio.ensure_future(batcher.submit(0))
        await asyncio.sleep(0.02)  # the worker is now busy with [0]
        rest = await asyncio.gather(*(batcher.submit(i) for i in range(1, 6)))
        await first
        await batcher.close()
        return rest

    assert run(main()) == [2, 4, 6, 8, 10]
    assert handler.batches == [[0], [1, 2, 3, 4, 5]]


def test_errors_reach_only_their_callers_and_the_batcher_keeps_serving():
    handler = Recorder(fail=lambda x: x % 2 == 1)

    def broken(items):
        raise RuntimeError("model exploded")

    async def main():
        batcher = DynamicBatcher(handler, max_batch_size=8, max_wait_ms=20)
        mixed = await asyncio.gather(*(batcher.submit(i) for i in range(4)),
                                     return_exceptions=True)
        again = await batcher.submit(5 - 1)
        await batcher.close()
        failing = DynamicBatcher(broken, max_batch_size=8, max_wait_ms=5)
        both = await asyncio.gather(failing.submit(1), failing.submit(2), return_exceptions=True)
        await failing.close()
        return mixed, again, both

    mixed, again, both = run(main())
    assert mixed[0] == 0 and mixed[2] == 4
    assert isinstance(mixed[1], ValueError) and str(mixed[1]) == "bad 1"
    assert isinstance(mixed[3], ValueError)
    assert again == 8
    assert all(isinstance(e, RuntimeError) and "exploded" in str(e) for e in both)


def test_cancelled_callers_are_left_out_of_their_batch():
    handler = Recorder()

    async def main():
        batcher = DynamicBatcher(handler, max_batch_size=8, max_wait_ms=50)
        gone = asyncio.ensure_future(batcher.submit(99))
        kept = asyncio.ensure_future(batcher.submit(1))
        await asyncio.sleep(0)
        gone.cancel()
        result = await kept
        await batcher.close()
        return result

    assert run(main()) == 2
    assert handler.batches == [[1]]


def test_close_runs_what_is_queued_then_refuses():
    handler = Recorder()

    async def main():
        batcher = DynamicBatcher(handler, max_batch_size=8, max_wait_ms=10_000)
        pending = asyncio.ensure_future(batcher.submit(3))
        await asyncio.sleep(0.01)
        await batcher.close()
        with pytest.raises(BatcherClosed):
            await batcher.submit(4)
        return await pending

    assert run(main()) == 6


@pytest.mark.parametrize("kwargs", [{"max_batch_size": 0}, {"max_batch_size": 2.5},
                                    {"max_wait_ms": -1}, {"workers": 0}])
def test_bad_batch_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        BatchConfig(**kwargs)


# -- the service on tiny real runs (fixtures serving_runs, service: conftest.py) -----------
def call(service, path, body=None, method=None, headers=None):
    """(status, parsed JSON or raw bytes, content type)."""
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    request = urllib.request.Request(service.url + path, data=data, method=method,
                                     headers=headers or ({"Content-Type": "application/json"}
                                                         if data is not None else {}))
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, raw, kind = response.status, response.read(), response.headers["Content-Type"]
    except urllib.error.HTTPError as error:
        status, raw, kind = error.code, error.read(), error.headers["Content-Type"]
    return status, (json.loads(raw) if kind.startswith("application/json") else raw), kind


def test_healthz_and_a_self_contained_page(service):
    status, health, _ = call(service, "/healthz")
    assert status == 200 and health["status"] == "ok"
    assert health["items"] == 150 and health["index_items"] == 150 and health["ranker"] is True
    assert health["batching"] == {"max_batch_size": 8, "max_wait_ms": 30, "workers": 1}
    assert health["ranking"] == "fused, fp32"
    status, page, kind = call(service, "/")
    assert status == 200 and kind.startswith("text/html")
    text = page.decode()
    assert "<script>" in text and "/recommend?user=" in text
    # no CDN, no external asset: every URL the page names is the service's own
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
    assert "http://" not in text and "https://" not in text


def test_recommend_for_a_known_user_matches_the_pipeline(service):
    status, result, _ = call(service, "/recommend?user=7&k=5")
    assert status == 200
    assert result["user"] == 7 and result["new_user"] is False and result["k"] == 5
    items = result["items"]
    assert [i["rank"] for i in items] == [1, 2, 3, 4, 5]
    from mmf_rec.data.protocol import seen_in_training

    seen = seen_in_training(service.service.engine.data)
    for item in items:
        assert set(item) >= {"item_id", "description", "image_url", "retrieval_score",
                             "ranking_score", "retrieval_rank", "new", "source"}
        assert item["source"] == "retrieved"
        assert item["new"] is (not seen[item["item_id"]])
        assert item["image_url"] == f"/images/{item['item_id']}" and item["description"]
        assert 0.0 < item["ranking_score"] < 1.0 and 1 <= item["retrieval_rank"] <= 50
    scores = [i["ranking_score"] for i in items]
    assert scores == sorted(scores, reverse=True)
    # demoted: in retrieval's top 5, not in the final top 5
    final = {i["item_id"] for i in items}
    for item in result["demoted"]:
        assert item["retrieval_rank"] <= 5 and item["rank"] > 5 and item["item_id"] not in final
    promoted = sum(i["retrieval_rank"] > 5 for i in items)
    assert len(result["demoted"]) == promoted
    # the same top 5 as the pipeline's own recommend(), and never an item clicked before
    rec = service.service.engine.recommender
    (expected,) = rec.recommend([7], k_retrieve=50, k_final=5)
    assert [i["item_id"] for i in items] == [r.item_id for r in expected.items]
    assert scores == pytest.approx([r.ranking_score for r in expected.items])
    assert not final & set(rec.users.seen(7).tolist())


def test_a_new_user_is_recommended_from_posted_features(service):
    body = {"features": {"region": 2, "age": 0.5}, "history": [3, 9], "k": 4}
    status, result, _ = call(service, "/recommend", body)
    assert status == 200 and result["new_user"] is True and result["user"] is None
    assert len(result["items"]) == 4
    assert not {3, 9} & {i["item_id"] for i in result["items"]}  # its history is excluded
    # the same as a form post
    form = b"region=2&age=0.5&history=3,9&k=4"
    status, same, _ = call(service, "/recommend", form,
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200 and [i["item_id"] for i in same["items"]] == \
        [i["item_id"] for i in result["items"]]
    # features change the answer
    status, other, _ = call(service, "/recommend", {"features": {"region": 7}, "k": 4,
                                                    "history": [100, 101, 102]})
    assert status == 200
    assert [i["ranking_score"] for i in other["items"]] != \
        [i["ranking_score"] for i in result["items"]]


def test_items_images_and_users(service):
    status, item, _ = call(service, "/items/3")
    assert status == 200 and item["item_id"] == 3 and item["description"]
    assert set(item["attributes"]) >= {"category", "brand", "price_bucket"}
    status, image, kind = call(service, "/images/3")
    assert status == 200 and kind == "image/png" and image.startswith(b"\x89PNG")
    status, users, _ = call(service, "/users?count=5")
    assert status == 200 and len(users["users"]) == 5 and users["num_users"] == 300
    user = users["users"][0]["user"]
    status, info, _ = call(service, f"/users/{user}")
    assert status == 200 and info["user"] == user and 1 <= len(info["history"]) <= 5
    assert all(h["image_url"].startswith("/images/") for h in info["history"])
    assert set(info["features"]) >= {"age", "region", "device"}


@pytest.mark.parametrize("method,path,body,expected", [
    ("GET", "/recommend?user=99999", None, 404),          # unknown user
    ("GET", "/recommend?user=abc", None, 400),            # malformed query
    ("GET", "/recommend", None, 400),                     # no user
    ("GET", "/recommend?user=7&k=0", None, 400),          # k out of range
    ("GET", "/recommend?user=7&k=21", None, 400),
    ("GET", "/recommend?user=7&exclude_seen=maybe", None, 400),
    ("POST", "/recommend", b"x" * 10_000, 413),           # oversized body
    ("POST", "/recommend", b"{not json", 400),
    ("POST", "/recommend", {"features": {"region": 99}}, 400),
    ("POST", "/recommend", {"features": {"colour": 1}}, 400),
    ("POST", "/recommend", {"history": [1, 2, 3, 4, 5, 6]}, 400),
    ("POST", "/recommend", {"history": [1000]}, 400),
    ("DELETE", "/items/3", None, 405),
    ("GET", "/items/150", None, 404),
    ("GET", "/images/nope", None, 400),
    ("GET", "/no/such/route", None, 404),
])
def test_bad_input_gets_a_json_4xx_and_the_service_keeps_serving(service, method, path, body,
                                                                  expected):
    status, answer, kind = call(service, path, body, method=method)
    assert status == expected, answer
    assert kind.startswith("application/json") and answer["status"] == expected
    assert answer["error"]
    assert call(service, "/healthz")[0] == 200


def batch_totals(service):
    batches = service.service.metrics.to_dict()["batch_size"]
    return batches["count"], batches["sum"]


def test_concurrent_requests_are_batched(service):
    batches, items = batch_totals(service)
    users = list(range(20, 32))
    barrier = threading.Barrier(len(users))
    answers = {}

    def ask(user):
        barrier.wait()
        answers[user] = call(service, f"/recommend?user={user}&k=3")

    threads = [threading.Thread(target=ask, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(answers[u][0] == 200 and answers[u][1]["user"] == u for u in users)
    now_batches, now_items = batch_totals(service)
    new_batches = now_batches - batches
    assert now_items - items == len(users)
    # 12 requests within max_wait of each other: far fewer batches than requests
    assert new_batches <= len(users) // 2
    # each user's answer is the one it gets alone
    status, alone, _ = call(service, "/recommend?user=25&k=3")
    assert [i["item_id"] for i in alone["items"]] == [i["item_id"] for i in answers[25][1]["items"]]


def test_metrics_count_requests_latency_and_batches(service):
    before = service.service.metrics.count("/recommend", 200)
    assert call(service, "/recommend?user=8&k=2")[0] == 200
    status, text, kind = call(service, "/metrics")
    assert status == 200 and kind.startswith("text/plain")
    text = text.decode()
    match = re.search(r'mmf_rec_requests_total\{route="/recommend",status="200"\} (\d+)', text)
    # at least this request: the previous test's last one may be counted only
    # after its client already had the response
    assert match and float(match.group(1)) >= before + 1
    assert 'mmf_rec_request_seconds_bucket{le="+Inf",route="/recommend"}' in text
    assert "mmf_rec_batch_size_count" in text
    status, data, _ = call(service, "/metrics?format=json")
    assert data["batch_size"]["count"] >= 1
    assert data["latency_seconds"]["/recommend"]["count"] >= before + 1


def test_loadgen_reports_latency_percentiles_against_the_service(service, tmp_path, capsys):
    out = tmp_path / "load.json"
    assert loadgen.main(["--url", service.url, "--rate", "100", "--requests", "40",
                         "--duration", "5", "--warmup", "0", "--out", str(out)]) == 0
    result = json.loads(out.read_text())["result"]
    assert result["ok"] == result["arrivals"] == 40 and result["errors"] == 0
    assert 0 < result["p50_ms"] <= result["p95_ms"] <= result["p99_ms"]
    assert result["achieved_qps"] > 0 and result["mean_batch_size"] >= 1
    assert "p99 ms" in capsys.readouterr().out


def test_loadgen_sweep_writes_provenance_saturation_and_a_plot(service, tmp_path):
    out, png = tmp_path / "sweep.json", tmp_path / "sweep.png"
    assert loadgen.main(["--url", service.url, "--sweep", "40,80", "--requests", "20",
                         "--duration", "3", "--warmup", "0", "--out", str(out),
                         "--plot", str(png)]) == 0
    report = json.loads(out.read_text())
    assert report["command"].startswith("python tools/loadgen.py --url ")
    assert report["commit"] and report["host"]["cpu_model"] and report["host"]["cpus"] >= 1
    assert isinstance(report["host"]["flags"], list) and report["date"]
    sweep = report["result"]
    assert [r["offered_qps"] for r in sweep["results"]] == [40.0, 80.0]
    assert sweep["saturation_qps"] == max(r["achieved_qps"] for r in sweep["results"]) > 0
    assert png.read_bytes().startswith(b"\x89PNG")


def test_loadgen_percentiles_and_target():
    values = list(range(1, 101))
    assert percentile(values, 50) == 50 and percentile(values, 99) == 99
    assert percentile([], 50) is None
    good = {"errors": 0, "p99_ms": 40.0, "achieved_qps": 98.0, "offered_qps": 100.0}
    assert loadgen.within_target(good, 50)
    assert not loadgen.within_target({**good, "p99_ms": 60.0}, 50)
    assert not loadgen.within_target({**good, "achieved_qps": 50.0}, 50)


def get_json(url):
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def test_serve_cli_binds_to_localhost_and_answers(serving_runs):
    with serve_cli("--retriever", str(serving_runs / "two_tower"), "--ranker",
                   str(serving_runs / "dlrm_mm"), "--k-retrieve", "30", "--max-batch-size", "4",
                   env=environment(serving_runs)) as url:  # serve_cli checks 127.0.0.1
        result = get_json(url + "/recommend?user=3&k=10")
    assert len(result["items"]) == 10 and result["k_retrieve"] == 30


def test_serve_cli_from_a_zoo_bundle_answers_as_from_the_runs(serving_runs, service, tmp_path,
                                                             monkeypatch):
    """serve.py --zoo KEY: the bundle's parts come out of the zoo cache, and a
    user's answer is the one the service built from the runs gives."""
    from mmf_rec import zoo

    zoo_file, cache = tmp_path / "zoo.yaml", tmp_path / "zoo_cache"
    monkeypatch.setenv("MMF_REC_MODEL_ZOO", str(zoo_file))
    zoo.export_bundle("kbrec.pipeline.serving", serving_runs / "two_tower",
                      serving_runs / "two_tower" / "index", serving_runs / "dlrm_mm",
                      out_dir=tmp_path / "archives", zoo_file=zoo_file)
    env = environment(serving_runs, MMF_REC_MODEL_ZOO=zoo_file, MMF_REC_ZOO_CACHE=cache)
    # the settings of the `service` fixture
    with serve_cli("--zoo", "kbrec.pipeline.serving", "--k-retrieve", "50", "--max-k", "20",
                   env=env) as url:
        health = get_json(url + "/healthz")
        answers = [get_json(f"{url}/recommend?user={user}&k=10") for user in (7, 42)]
    assert health["ranker"] is True and health["index_items"] == 150
    # what it loaded: the checked copies in the zoo cache, not the runs
    assert (cache / "kbrec.pipeline.serving" / "index" / "index.faiss").is_file()
    assert (cache / "kbrec.two_tower.serving" / "two_tower.pth").is_file()
    assert (cache / "kbrec.dlrm_mm.serving" / "dlrm_mm.pth").is_file()
    for answer in answers:
        status, expected, _ = call(service, f"/recommend?user={answer['user']}&k=10")
        assert status == 200
        assert [i["item_id"] for i in answer["items"]] == [i["item_id"] for i in expected["items"]]
        assert [i["retrieval_rank"] for i in answer["items"]] == \
            [i["retrieval_rank"] for i in expected["items"]]
        assert [i["ranking_score"] for i in answer["items"]] == \
            pytest.approx([i["ranking_score"] for i in expected["items"]], abs=1e-6)
        assert [i["item_id"] for i in answer["demoted"]] == \
            [i["item_id"] for i in expected["demoted"]]
    # loadgen starts the same bundle itself
    for key in ("MMF_CACHE_DIR", "OMP_NUM_THREADS", "MMF_REC_MODEL_ZOO", "MMF_REC_ZOO_CACHE"):
        monkeypatch.setenv(key, env[key])
    out = tmp_path / "load.json"
    assert loadgen.main(["--zoo", "kbrec.pipeline.serving", "--batching", "4:2", "--rate", "50",
                         "--requests", "20", "--duration", "5", "--warmup", "0",
                         "--out", str(out)]) == 0
    result = json.loads(out.read_text())["settings"]["4:2"]
    assert result["ok"] == result["arrivals"] == 20 and result["errors"] == 0


@pytest.mark.parametrize("argv,message", [
    ([], "give --retriever (a run) or --zoo (a pipeline bundle), not both"),
    (["--retriever", "run", "--zoo", "kbrec.pipeline.x"],
     "give --retriever (a run) or --zoo (a pipeline bundle), not both"),
    (["--zoo", "kbrec.pipeline.x", "--ranker", "run"],
     "--zoo brings its own index and ranker: leave out --index and --ranker"),
])
def test_serve_and_recommend_refuse_the_same_pipeline_arguments(argv, message, capsys):
    from mmf_rec.retrieval import recommend
    from mmf_rec.serving import cli as serve

    for main, extra in ((serve.main, []), (recommend.main, ["--user", "1"])):
        with pytest.raises(SystemExit) as stop:
            main(argv + extra)
        assert stop.value.code == 2
        assert f": error: {message}\n" in capsys.readouterr().err  # after argparse's usage


def test_serve_with_an_unknown_zoo_key_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    from mmf_rec.serving import cli as serve

    zoo_file = tmp_path / "zoo.yaml"
    zoo_file.write_text("kbrec: {}\n")
    monkeypatch.setenv("MMF_REC_MODEL_ZOO", str(zoo_file))
    with pytest.raises(SystemExit) as stop:
        serve.main(["--zoo", "kbrec.pipeline.nope"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("serve: error: no zoo entry 'kbrec.pipeline.nope'")
