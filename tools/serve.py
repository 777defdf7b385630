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
``--host`` says otherwise.
"""

import argparse
import asyncio
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from mmf_rec.retrieval.cli import add_pipeline_arguments, pipeline_paths  # noqa: E402


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
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    from mmf_rec.serving.batcher import BatchConfig
    from mmf_rec.serving.engine import Engine
    from mmf_rec.serving.service import serve_forever

    try:
        batching = BatchConfig(args.max_batch_size, args.max_wait_ms, args.workers)
    except ValueError as error:
        parser().error(str(error))
    if args.k_retrieve < 1 or args.max_k < 1:
        parser().error("--k-retrieve and --max-k must be >= 1")
    retriever, index, ranker = pipeline_paths(args, parser(), "serve")
    engine = Engine.from_runs(retriever, index, ranker, data_dir=args.data_dir,
                              final_score=args.final_score, k_retrieve=args.k_retrieve,
                              max_k=args.max_k)
    try:
        asyncio.run(serve_forever(engine, batching, args.host, args.port, args.max_body,
                                  announce=lambda line: print(line, flush=True)))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
