"""The service's metrics for ``/metrics``, kept by ``prometheus_client``:
Prometheus' text format, or the same numbers as JSON (``?format=json``, read
by tools/loadgen.py).

Each service has its own registry, so two services in one process (tests)
never share counts.
"""

from typing import Dict

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram,
                               disable_created_metrics, generate_latest)

# no *_created series (a creation timestamp per label set): noise for this service
disable_created_metrics()

CONTENT_TYPE = CONTENT_TYPE_LATEST
# seconds
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("mmf_rec_requests", "HTTP requests by route and status.",
                                ["route", "status"], registry=self.registry)
        self.latency = Histogram(
            "mmf_rec_request_seconds",
            "Request latency, from the request's headers read to its response sent.",
            ["route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram("mmf_rec_batch_size", "Requests per inference batch.",
                                    buckets=BATCH_SIZE_BUCKETS, registry=self.registry)
        self.batch_wait = Histogram(
            "mmf_rec_batch_wait_seconds",
            "How long a batch's oldest request waited before the batch ran.",
            buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_run = Histogram("mmf_rec_batch_run_seconds", "Inference time per batch.",
                                   buckets=LATENCY_BUCKETS, registry=self.registry)
        self.in_flight = Gauge("mmf_rec_in_flight", "Requests being handled now.",
                               registry=self.registry)
        self.refused = Counter("mmf_rec_refused_connections",
                               "Connections closed by the server: over the connection limit "
                               "or past the header deadline.", ["reason"],
                               registry=self.registry)

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(int(status))).inc()
        self.latency.labels(route).observe(seconds)

    def observe_batch(self, size: int, waited: float, ran: float) -> None:
        self.batch_size.observe(size)
        self.batch_wait.observe(waited)
        self.batch_run.observe(ran)

    def refused_connection(self, why: str) -> None:
        self.refused.labels(why).inc()

    def prometheus(self) -> bytes:
        return generate_latest(self.registry)

    # -- reading the numbers back ---------------------------------------------------------
    def count(self, route: str, status: int) -> int:
        """Requests answered on ``route`` with ``status`` so far."""
        return int(self._value("mmf_rec_requests_total", {"route": route,
                                                          "status": str(status)}))

    def _value(self, name: str, labels: Dict[str, str]) -> float:
        for family in self.registry.collect():
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return sample.value
        return 0.0

    def to_dict(self) -> Dict:
        """Every metric as JSON: counters by label, histograms as cumulative
        buckets with their sum and count."""
        out: Dict = {"requests": [], "latency_seconds": {}}
        histograms: Dict[str, Dict] = {}
        for family in self.registry.collect():
            for sample in family.samples:
                labels = dict(sample.labels)
                if sample.name == "mmf_rec_requests_total":
                    out["requests"].append({"route": labels["route"],
                                            "status": int(labels["status"]),
                                            "count": int(sample.value)})
                elif sample.name == "mmf_rec_in_flight":
                    out["in_flight"] = int(sample.value)
                elif sample.name == "mmf_rec_refused_connections_total":
                    out.setdefault("refused_connections", {})[labels["reason"]] = int(sample.value)
                elif family.type == "histogram":
                    le = labels.pop("le", None)
                    key = (family.name, tuple(sorted(labels.items())))
                    h = histograms.setdefault(key, {"buckets": {}, "sum": 0.0, "count": 0})
                    if sample.name.endswith("_bucket"):
                        h["buckets"][le] = int(sample.value)
                    elif sample.name.endswith("_sum"):
                        h["sum"] = sample.value
                    elif sample.name.endswith("_count"):
                        h["count"] = int(sample.value)
        for (name, labels), h in sorted(histograms.items()):
            if name == "mmf_rec_request_seconds":
                out["latency_seconds"][dict(labels)["route"]] = h
            else:
                out[name.replace("mmf_rec_", "")] = h
        out["requests"].sort(key=lambda r: (r["route"], r["status"]))
        return out
