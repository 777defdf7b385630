"""An open-loop load generator for the recommendation service.

Requests are sent at Poisson arrival times whatever the state of earlier
ones, each on a fresh connection, and latency is counted from the scheduled
arrival: a server (or a generator) that falls behind shows up as latency,
not as a lower offered rate, which a closed loop would hide.
"""

import asyncio
import json
import random
import time
import urllib.parse
import urllib.request
from typing import Dict, List, Optional


def event_loop_run(coroutine):
    """asyncio.run on uvloop where it is installed: the generator shares the
    machine with the service, so its own overhead should be small."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def percentile(values: List[float], q: float) -> Optional[float]:
    """Nearest-rank percentile (q in [0, 100]); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil
    return ordered[int(min(rank, len(ordered))) - 1]


def get_json(url: str, timeout: float = 10.0):
    """The service's JSON answer at ``url`` (its users, metrics, health)."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


async def _get(host: str, port: int, path: str, timeout: float) -> int:
    """One GET on its own connection; the status code."""
    async def go():
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                         "Connection: close\r\n\r\n".encode())
            await writer.drain()
            data = await reader.read()
        finally:
            writer.close()
        line = data.split(b"\r\n", 1)[0].split()
        return int(line[1]) if len(line) > 1 else 0
    return await asyncio.wait_for(go(), timeout)


async def run_load(url: str, rate: float, requests: int, duration: float, users: List[int],
                   k: int = 10, seed: int = 0, timeout: float = 10.0,
                   max_outstanding: int = 512) -> Dict:
    """One run of ``GET /recommend?user=U&k=K`` at ``rate`` arrivals per second
    (users drawn from ``users``), until ``requests`` arrivals or ``duration``
    seconds; its latency percentiles, errors and achieved QPS. Past
    ``max_outstanding`` unanswered requests an arrival is counted as skipped
    rather than sent, so a stalled server is not buried."""
    parsed = urllib.parse.urlsplit(url)
    host, port = parsed.hostname, parsed.port or 80
    rng = random.Random(seed)
    latencies: List[float] = []
    statuses: Dict[str, int] = {}
    outstanding = 0
    skipped = 0

    async def one(scheduled: float, user: int):
        nonlocal outstanding
        outstanding += 1
        try:
            status = await _get(host, port, f"/recommend?user={user}&k={k}", timeout)
        except (OSError, asyncio.TimeoutError) as error:
            status = type(error).__name__
        finally:
            outstanding -= 1
        done = time.perf_counter()
        statuses[str(status)] = statuses.get(str(status), 0) + 1
        if status == 200:
            latencies.append(done - scheduled)
        return done

    start = time.perf_counter()
    next_at = start
    tasks = []
    for _ in range(requests):
        next_at += rng.expovariate(rate)
        if next_at - start > duration:
            break
        delay = next_at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if outstanding >= max_outstanding:  # the server has stalled: count, do not pile on
            skipped += 1
            statuses["skipped"] = statuses.get("skipped", 0) + 1
            continue
        tasks.append(asyncio.ensure_future(one(next_at, rng.choice(users))))
    sent_until = time.perf_counter()
    finished = await asyncio.gather(*tasks, return_exceptions=True)
    ends = [f for f in finished if isinstance(f, float)]
    elapsed = (max(ends) if ends else sent_until) - start
    ok = len(latencies)
    ms = [x * 1000 for x in latencies]
    return {
        "offered_qps": rate, "arrivals": len(tasks) + skipped, "ok": ok,
        "errors": len(tasks) + skipped - ok, "statuses": statuses,
        "send_seconds": sent_until - start, "elapsed_seconds": elapsed,
        "achieved_qps": ok / elapsed if elapsed > 0 else 0.0,
        "p50_ms": percentile(ms, 50), "p95_ms": percentile(ms, 95), "p99_ms": percentile(ms, 99),
        "mean_ms": sum(ms) / ok if ok else None,
    }


def batch_stats(url: str) -> Dict:
    """The service's batch counters ({} where it has no metrics): read before
    and after a run, they give the run's mean batch size."""
    try:
        m = get_json(url.rstrip("/") + "/metrics?format=json")
    except OSError:
        return {}
    return {"batches": m["batch_size"]["count"], "batched_items": m["batch_size"]["sum"]}
