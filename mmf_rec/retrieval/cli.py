"""The pipeline arguments that ``tools/recommend.py`` and ``tools/serve.py``
share: a retriever run (with its index and an optional ranker), or a
pipeline bundle's zoo key. One place, so both tools accept and refuse the
same things with the same messages.
"""

import argparse
from pathlib import Path
from typing import NamedTuple, Optional


class PipelinePaths(NamedTuple):
    retriever: Path
    index: Path
    ranker: Optional[Path]


def add_pipeline_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--retriever", type=Path,
                   help="two_tower run dir (env.save_dir) or checkpoint file")
    p.add_argument("--zoo", help="a pipeline bundle's zoo key (kbrec.pipeline.<name>) "
                                 "instead of --retriever / --index / --ranker")
    p.add_argument("--index", type=Path, help="index directory; default <retriever>/index")
    p.add_argument("--ranker", type=Path, help="dlrm_mm run dir or checkpoint (optional)")


def pipeline_paths(args: argparse.Namespace, p: argparse.ArgumentParser,
                   tool: str) -> PipelinePaths:
    """The retriever, index and ranker that ``args`` name: the runs given,
    or a bundle's parts fetched from the zoo and checked (offline: a zoo
    resource is a local file). Usage errors exit through ``p`` as argparse
    does; a zoo error exits 2 with one line, ``<tool>: error: ...``."""
    if (args.zoo is None) == (args.retriever is None):
        p.error("give --retriever (a run) or --zoo (a pipeline bundle), not both")
    if args.zoo is None:
        index = args.index or (args.retriever if args.retriever.is_dir()
                               else args.retriever.parent) / "index"
        return PipelinePaths(args.retriever, index, args.ranker)
    if args.index is not None or args.ranker is not None:
        p.error("--zoo brings its own index and ranker: leave out --index and --ranker")
    import mmf  # noqa: F401  (the shims and mmf_rec's hooks, armed at start-up)
    from mmf_rec import zoo

    try:
        parts = zoo.fetch_bundle(args.zoo)
    except zoo.ZooError as e:
        p.exit(2, f"{tool}: error: {e}\n")
    return PipelinePaths(parts["retriever"], parts["index"], parts["ranker"])
