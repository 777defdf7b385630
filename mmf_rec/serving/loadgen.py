"""Open-loop load on the recommendation service: Poisson arrivals at a rate.

    python tools/loadgen.py --url http://127.0.0.1:8000 --rate 100 --requests 2000
    python tools/loadgen.py --url http://127.0.0.1:8000 --sweep 25,50,100,200 --target-p99-ms 50
    # start the service itself, once per batching setting, and sweep each:
    python tools/loadgen.py --retriever save/kbrec_two_tower --ranker save/kbrec_dlrm_mm \\
        --batching 1:0 16:5 --sweep 25,50,100,200,400 --out results/serving_sweep.json
    python tools/loadgen.py --zoo kbrec.pipeline.<name> --batching 16:5 --rate 50   # a bundle
    # the README's numbers: docs/results/serving.json and docs/images/serving_load.png
    python tools/loadgen.py --retriever ... --ranker ... --sweep ... --publish

Each request is ``GET /recommend?user=U&k=K`` for a user drawn uniformly from
the service's known users (``/users``), on a fresh connection, sent at its
scheduled arrival time whatever the state of earlier requests (open loop).
Latency is measured from the scheduled arrival, so a generator or server
that falls behind shows up in the latency instead of lowering the offered
rate. A run stops after ``--requests`` arrivals or ``--duration`` seconds,
whichever comes first, then waits up to ``--timeout`` for the last answers.

Reported: p50 / p95 / p99 latency of the successful requests, errors, the
achieved QPS (answers per second over the run), and, from the service's
``/metrics``, the mean batch size. ``--sweep`` runs the rates in order and
reports, per batching setting, the latency-bounded throughput (the highest
achieved QPS of a rate whose p99 is under ``--target-p99-ms`` with no errors
and at least 95% of the offered rate achieved) and the saturation QPS (the
most answers per second any rate got). The results JSON names the command,
the commit, the date, the CPU model and flags and the load average before
and after; ``--plot`` (and ``--publish``) draws p50 and p99 against the
offered rate, one line per setting.

The command line behind ``python tools/loadgen.py``; the generator itself is
``open_loop``.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

from mmf_rec.serving.open_loop import batch_stats, event_loop_run, get_json, run_load

REPO = Path(__file__).resolve().parents[2]
PUBLISHED = REPO / "docs" / "results" / "serving.json"
PUBLISHED_PLOT = REPO / "docs" / "images" / "serving_load.png"


def measure(url: str, rate: float, args, users: List[int]) -> Dict:
    """One run at ``rate``, with the service's mean batch size over it."""
    before = batch_stats(url)
    result = event_loop_run(run_load(url, rate, args.requests, args.duration, users, k=args.k,
                                     seed=args.seed, timeout=args.timeout))
    after = batch_stats(url)
    if before and after and after["batches"] > before["batches"]:
        result["mean_batch_size"] = ((after["batched_items"] - before["batched_items"])
                                     / (after["batches"] - before["batches"]))
    return result


def within_target(result: Dict, target_ms: float) -> bool:
    """A rate the service sustains: no errors, p99 within the target, and at
    least 95% of the offered rate answered."""
    return (result["errors"] == 0 and result["p99_ms"] is not None
            and result["p99_ms"] <= target_ms
            and result["achieved_qps"] >= 0.95 * result["offered_qps"])


def fmt_row(r: Dict) -> str:
    def f(x, d=1):
        return "-" if x is None else f"{x:.{d}f}"
    return (f"{r['offered_qps']:>8.0f} {r['achieved_qps']:>9.1f} {f(r['p50_ms']):>8} "
            f"{f(r['p95_ms']):>8} {f(r['p99_ms']):>8} {r['errors']:>6} "
            f"{f(r.get('mean_batch_size'), 2):>6}")


HEADER = (f"{'offered':>8} {'achieved':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
          f"{'errors':>6} {'batch':>6}")


def sweep(url: str, rates: List[float], args, users: List[int], label: str = "") -> Dict:
    """The rates in turn; the latency-bounded throughput and the saturation."""
    print(f"{label}{HEADER}", flush=True)
    results = []
    for rate in rates:
        result = measure(url, rate, args, users)
        results.append(result)
        print(f"{' ' * len(label)}{fmt_row(result)}", flush=True)
        if args.stop_early and not within_target(result, args.target_p99_ms) and \
                result["p99_ms"] is not None and result["p99_ms"] > 4 * args.target_p99_ms:
            break
    good = [r for r in results if within_target(r, args.target_p99_ms)]
    best = max(good, key=lambda r: r["achieved_qps"]) if good else None
    return {"results": results, "target_p99_ms": args.target_p99_ms,
            "best": best, "best_qps": best["achieved_qps"] if best else None,
            "saturation_qps": max((r["achieved_qps"] for r in results), default=None)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_service(args, max_batch_size: int, max_wait_ms: float):
    """``tools/serve.py`` with one batching setting, in its own process (a
    fresh service per setting), on a free port; (process, URL) once healthy."""
    port = free_port()
    pipeline = ["--zoo", args.zoo] if args.zoo else ["--retriever", str(args.retriever)]
    command = [sys.executable, str(REPO / "tools" / "serve.py"), *pipeline,
               "--port", str(port), "--max-batch-size", str(max_batch_size),
               "--max-wait-ms", str(max_wait_ms),
               "--ranker-precision", args.ranker_precision, *args.serve_arg]
    for flag in ("index", "ranker", "data_dir"):
        if getattr(args, flag):
            command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    if args.k_retrieve:
        command += ["--k-retrieve", str(args.k_retrieve)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True, env=os.environ.copy())
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while time.time() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"error: the service exited with status {process.returncode}")
        try:
            get_json(url + "/healthz", timeout=2)
            return process, url
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise SystemExit("error: the service did not start within 300 s")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default="http://127.0.0.1:8000", help="the running service")
    p.add_argument("--rate", type=float, default=50.0, help="arrivals per second")
    p.add_argument("--requests", type=int, default=1000, help="arrivals per run at most")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of arrivals per run at most")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for one answer")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sweep", help="comma-separated rates to run in turn")
    p.add_argument("--target-p99-ms", type=float, default=50.0)
    p.add_argument("--stop-early", action=argparse.BooleanOptionalAction, default=True,
                   help="stop a sweep once p99 is over 4x the target")
    p.add_argument("--warmup", type=int, default=50, help="requests sent first, not measured")
    p.add_argument("--out", type=Path, help="write the results as JSON")
    p.add_argument("--plot", type=Path, help="draw p50 / p99 against the offered rate (PNG)")
    p.add_argument("--publish", action="store_true",
                   help=f"--out {PUBLISHED.relative_to(REPO)} --plot "
                        f"{PUBLISHED_PLOT.relative_to(REPO)}: the README's numbers")
    start = p.add_argument_group("start the service (instead of --url)")
    start.add_argument("--retriever", type=Path)
    start.add_argument("--zoo", help="a pipeline bundle's zoo key, instead of --retriever, "
                                     "--index and --ranker")
    start.add_argument("--index", type=Path)
    start.add_argument("--ranker", type=Path)
    start.add_argument("--data-dir", type=Path)
    start.add_argument("--k-retrieve", type=int)
    start.add_argument("--batching", nargs="+", default=["1:0", "16:5"],
                       metavar="MAX_BATCH:MAX_WAIT_MS",
                       help="service settings to compare (default: 1:0, no batching, and 16:5)")
    start.add_argument("--ranker-precision", choices=["fp32", "bf16"], default="fp32",
                       help="serve.py's --ranker-precision")
    start.add_argument("--serve-arg", action="append", default=[], metavar="ARG",
                       help="one more argument for serve.py (repeat it: "
                            "--serve-arg=--log-level --serve-arg=warning)")
    return p


def run_against(url: str, args) -> Dict:
    users = [u["user"] for u in get_json(url.rstrip("/") + "/users?count=1000")["users"]]
    if not users:
        raise SystemExit("error: the service lists no known users")
    if args.warmup:
        event_loop_run(run_load(url, 50.0, args.warmup, 30.0, users, k=args.k,
                                seed=args.seed + 1, timeout=args.timeout))
    if args.sweep:
        rates = [float(x) for x in args.sweep.split(",") if x]
        return sweep(url, rates, args, users)
    result = measure(url, args.rate, args, users)
    print(HEADER)
    print(fmt_row(result))
    return result


def provenance(argv: Optional[List[str]]) -> Dict:
    """What a results file needs to be trusted: the command, the commit (and
    whether the tree had changes), the date, the host's CPU."""
    from mmf_rec.serving import cpu

    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    command = ["python", "tools/loadgen.py", *(sys.argv[1:] if argv is None else argv)]
    return {"command": " ".join(command), "commit": git("rev-parse", "HEAD"),
            "uncommitted_changes": bool(git("status", "--porcelain", "--untracked-files=no")),
            "date": time.strftime("%Y-%m-%d %H:%M %Z"), "host": cpu.describe(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}


def plot(report: Dict, path: Path, target_ms: float) -> None:
    """p50 (dashed) and p99 (solid) latency against the offered rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    settings = report.get("settings") or {"service": report.get("result")}
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for name, data in settings.items():
        rows = [r for r in data.get("results", []) if r["p99_ms"] is not None]
        if not rows:
            continue
        label = describe_setting(name)
        line, = ax.plot([r["offered_qps"] for r in rows], [r["p99_ms"] for r in rows],
                        marker="o", label=f"{label}: p99")
        ax.plot([r["offered_qps"] for r in rows], [r["p50_ms"] for r in rows], marker=".",
                linestyle="--", color=line.get_color(), label=f"{label}: p50")
    ax.axhline(target_ms, color="grey", linewidth=0.8)
    ax.text(ax.get_xlim()[0], target_ms * 1.05, f" p99 target {target_ms:g} ms", color="grey",
            fontsize=8)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel("offered load (requests/s, Poisson)")
    ax.set_ylabel("latency from scheduled arrival (ms)")
    host = report.get("host", {})
    ax.set_title(f"retrieve {report.get('k_retrieve') or ''} + rank + top {report['k']}; "
                 f"{host.get('cpus', '?')} CPUs, {report.get('date', '')}", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def describe_setting(setting: str) -> str:
    size, _, wait = setting.partition(":")
    if size == "1":
        return "no batching"
    return f"batches of {size}, {wait or 0} ms" if size.isdigit() else setting


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.zoo and (args.retriever or args.index or args.ranker):
        parser().error("--zoo brings its own retriever, index and ranker: "
                       "leave out --retriever, --index and --ranker")
    if args.publish:
        args.out, args.plot = args.out or PUBLISHED, args.plot or PUBLISHED_PLOT
    started = time.time()
    report = {**provenance(argv), "load_average_before": os.getloadavg(),
              "requests": args.requests, "duration": args.duration, "k": args.k,
              "k_retrieve": args.k_retrieve, "warmup": args.warmup}
    if args.retriever is None and args.zoo is None:
        report["url"] = args.url
        report["result"] = run_against(args.url, args)
    else:
        report["settings"] = {}
        for setting in args.batching:
            size, _, wait = setting.partition(":")
            process, url = start_service(args, int(size), float(wait or 0))
            try:
                print(f"== max_batch_size {size}, max_wait_ms {wait or 0}", flush=True)
                report["settings"][setting] = run_against(url, args)
            finally:
                process.terminate()
                process.wait(30)
        if args.sweep:
            print(f"latency-bounded throughput (p99 <= {args.target_p99_ms:g} ms) and "
                  "saturation, in QPS:")
            for s, r in report["settings"].items():
                best = f"{r['best_qps']:.0f}" if r["best_qps"] else "none"
                print(f"  {describe_setting(s):>22}: {best} at the target, "
                      f"{r['saturation_qps']:.0f} at saturation")
    report["load_average_after"] = os.getloadavg()
    report["wall_seconds"] = time.time() - started
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.out}")
    if args.plot:
        plot(report, args.plot, args.target_p99_ms)
        print(f"wrote {args.plot}")
    return 0
