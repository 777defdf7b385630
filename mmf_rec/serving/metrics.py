"""Request counters and histograms for ``/metrics``: Prometheus' text format,
or the same numbers as JSON. Updated on the event loop only, so no locks."""

import bisect
import collections
import time
from typing import Dict, List, Sequence, Tuple

# seconds
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Histogram:
    def __init__(self, buckets: Sequence[float]):
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> List[Tuple[str, int]]:
        out, total = [], 0
        for bound, n in zip([*map(_fmt, self.buckets), "+Inf"], self.counts):
            total += n
            out.append((bound, total))
        return out

    def to_dict(self) -> Dict:
        return {"buckets": dict(self.cumulative()), "sum": self.sum, "count": self.count}


def _fmt(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() or value < 1 else str(int(value))


class Metrics:
    def __init__(self):
        self.started = time.time()
        self.requests: Dict[Tuple[str, int], int] = collections.Counter()
        self.latency: Dict[str, Histogram] = {}
        self.batch_size = Histogram(BATCH_SIZE_BUCKETS)
        self.batch_wait = Histogram(LATENCY_BUCKETS)
        self.batch_run = Histogram(LATENCY_BUCKETS)
        self.in_flight = 0

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        self.requests[(route, int(status))] += 1
        if route not in self.latency:
            self.latency[route] = Histogram(LATENCY_BUCKETS)
        self.latency[route].observe(seconds)

    def observe_batch(self, size: int, waited: float, ran: float) -> None:
        self.batch_size.observe(size)
        self.batch_wait.observe(waited)
        self.batch_run.observe(ran)

    def to_dict(self) -> Dict:
        return {
            "uptime_seconds": time.time() - self.started,
            "in_flight": self.in_flight,
            "requests": [{"route": r, "status": s, "count": n}
                         for (r, s), n in sorted(self.requests.items())],
            "latency_seconds": {r: h.to_dict() for r, h in sorted(self.latency.items())},
            "batch_size": self.batch_size.to_dict(),
            "batch_wait_seconds": self.batch_wait.to_dict(),
            "batch_run_seconds": self.batch_run.to_dict(),
        }

    def prometheus(self) -> str:
        lines = ["# HELP mmf_rec_requests_total HTTP requests by route and status.",
                 "# TYPE mmf_rec_requests_total counter"]
        for (route, status), n in sorted(self.requests.items()):
            lines.append(f'mmf_rec_requests_total{{route="{route}",status="{status}"}} {n}')
        lines += ["# HELP mmf_rec_request_seconds Request latency, from the request line "
                  "read to the response written.",
                  "# TYPE mmf_rec_request_seconds histogram"]
        for route, histogram in sorted(self.latency.items()):
            lines += _histogram_lines("mmf_rec_request_seconds", histogram, f'route="{route}"')
        for name, histogram, text in (
                ("mmf_rec_batch_size", self.batch_size, "Items per inference batch."),
                ("mmf_rec_batch_wait_seconds", self.batch_wait,
                 "How long a batch's oldest request waited before the batch ran."),
                ("mmf_rec_batch_run_seconds", self.batch_run, "Inference time per batch.")):
            lines += [f"# HELP {name} {text}", f"# TYPE {name} histogram"]
            lines += _histogram_lines(name, histogram, "")
        lines += ["# HELP mmf_rec_in_flight Requests being handled now.",
                  "# TYPE mmf_rec_in_flight gauge", f"mmf_rec_in_flight {self.in_flight}"]
        return "\n".join(lines) + "\n"


def _histogram_lines(name: str, histogram: Histogram, labels: str) -> List[str]:
    sep = "," if labels else ""
    out = [f'{name}_bucket{{{labels}{sep}le="{bound}"}} {n}'
           for bound, n in histogram.cumulative()]
    suffix = f"{{{labels}}}" if labels else ""
    out += [f"{name}_sum{suffix} {histogram.sum}", f"{name}_count{suffix} {histogram.count}"]
    return out
