"""Serve recommendations over HTTP on localhost, with a demo page at /.

    python tools/serve.py --retriever save/kbrec_two_tower \\
        --ranker save/kbrec_dlrm_mm --port 8000
    python tools/serve.py --zoo kbrec.pipeline.<name>     # a bundle from the zoo
    # then open http://127.0.0.1:8000/ or
    curl 'http://127.0.0.1:8000/recommend?user=42&k=10'

Loads the retriever, its index (default ``<retriever>/index``) and the
optional ranker once, or the three parts of a pipeline bundle from the model
zoo (``--zoo``, as ``tools/recommend.py`` takes them), and answers:
``GET /recommend?user=ID&k=10[&exclude_seen=0]``, ``POST /recommend`` (a new
user: JSON ``{"features": {...}, "history": [...], "k": 10}``),
``GET /items/ID``, ``/images/ID``, ``/users``, ``/users/ID``, ``/schema``,
``/explain?user=ID&item=ID``, ``/healthz`` and ``/metrics``. Concurrent
recommendation requests are batched dynamically: a batch runs when it holds
``--max-batch-size`` requests or its oldest has waited ``--max-wait-ms``
(``--max-batch-size 1`` turns batching off). Binds to 127.0.0.1 unless
``--host`` says otherwise, and prints ``serving on http://HOST:PORT/`` with
the port it bound (``--port 0``: a free one) once it accepts requests.
Starlette on uvicorn; one access-log line per request on stderr.

The command line behind ``python tools/serve.py``.
"""

import argparse
import logging
import sys
from pathlib import Path

from mmf_rec.retrieval.cli import add_pipeline_arguments, pipeline_paths


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_pipeline_arguments(p)
    p.add_argument("--k-retrieve", type=int, default=200, help="candidates from the index")
    p.add_argument("--max-k", type=int, default=100, help="largest k a request may ask for")
    p.add_argument("--final-score", choices=["ctr", "ctr_x_exposure"], default="ctr",
                   help="order of the ranked candidates: the ranker's click probability "
                        "(default), or it times the item's training exposure share")
    p.add_argument("--data-dir", type=Path, help="replaces the runs' env.data_dir")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (0: any free one)")
    p.add_argument("--max-batch-size", type=int, default=16,
                   help="requests per inference batch at most (1: no batching)")
    p.add_argument("--max-wait-ms", type=float, default=5.0,
                   help="how long a batch waits for more requests after its first")
    p.add_argument("--workers", type=int, default=1, help="inference threads")
    p.add_argument("--max-body", type=int, default=64 * 1024, help="largest request body, bytes")
    p.add_argument("--ranker-precision", choices=["fp32", "bf16"], default="fp32",
                   help="the fused ranking path's matmuls: fp32 (the ranker's own scores "
                        "within 1e-5), or bf16 where the CPU has native bf16 (AVX-512 BF16 "
                        "or AMX; refused otherwise)")
    limits = p.add_argument_group("limits")
    limits.add_argument("--header-timeout", type=float, default=10.0,
                        help="seconds a request's headers may take to arrive (408 after)")
    limits.add_argument("--body-timeout", type=float, default=10.0,
                        help="seconds a request's body may take to arrive (408 after)")
    limits.add_argument("--keep-alive", type=float, default=5.0,
                        help="seconds an idle keep-alive connection stays open")
    limits.add_argument("--max-connections", type=int, default=256,
                        help="open connections at most (one more is answered 503)")
    limits.add_argument("--max-in-flight", type=int, default=1024,
                        help="requests being handled at once at most (one more: 503)")
    limits.add_argument("--max-header-bytes", type=int, default=16 * 1024,
                        help="request line and headers, bytes (431 over)")
    p.add_argument("--log-level", default="info",
                   choices=["debug", "info", "warning", "error"],
                   help="'warning' drops the access log (one line per request)")
    return p


def log_to_stderr(level: str) -> None:
    """The service's and uvicorn's logs on stderr, whatever the libraries
    loaded before configured."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("mmf_rec.serving", "uvicorn"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    from mmf_rec.serving.batcher import BatchConfig
    from mmf_rec.serving.engine import Engine
    from mmf_rec.serving.server import Limits
    from mmf_rec.serving.service import serve_forever

    try:
        batching = BatchConfig(args.max_batch_size, args.max_wait_ms, args.workers)
        limits = Limits(header_timeout=args.header_timeout, keep_alive=args.keep_alive,
                        max_connections=args.max_connections,
                        max_header_bytes=args.max_header_bytes)
    except ValueError as error:
        parser().error(str(error))
    if args.k_retrieve < 1 or args.max_k < 1:
        parser().error("--k-retrieve and --max-k must be >= 1")
    if args.max_body < 1 or args.body_timeout <= 0 or args.max_in_flight < 1:
        parser().error("--max-body and --max-in-flight must be >= 1, --body-timeout > 0")
    if args.ranker_precision == "bf16":
        from mmf_rec.serving.cpu import native_bf16

        native, why = native_bf16()
        if not native:
            parser().error(f"--ranker-precision bf16 is off on this CPU: {why}")
    retriever, index, ranker = pipeline_paths(args, parser(), "serve")
    engine = Engine.from_runs(retriever, index, ranker, data_dir=args.data_dir,
                              final_score=args.final_score, k_retrieve=args.k_retrieve,
                              max_k=args.max_k, precision=args.ranker_precision)
    log_to_stderr(args.log_level)
    try:
        serve_forever(engine, batching, args.host, args.port, args.max_body, limits,
                      body_timeout=args.body_timeout, max_in_flight=args.max_in_flight,
                      announce=lambda line: print(line, flush=True))
    except KeyboardInterrupt:
        pass
    except OSError as error:  # the address is taken, or not ours to bind
        print(f"serve: error: {error}", file=sys.stderr)
        return 1
    return 0

