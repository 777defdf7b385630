"""The command line of the benchmark suites, ``python tools/benchmark.py``."""

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import List, Mapping, Optional, Sequence

from mmf_rec.benchmark.runner import run_suite, write_results
from mmf_rec.benchmark.suites import REPO, BenchmarkError, Suite, default_suites
from mmf_rec.benchmark.table import format_table

logger = logging.getLogger(__name__)


def parser() -> argparse.ArgumentParser:
    from mmf_rec import benchmark

    p = argparse.ArgumentParser(prog="python tools/benchmark.py",
                                description=benchmark.__doc__.split("\n\n")[0])
    p.add_argument("--suite", help="the suite to run")
    p.add_argument("--seeds", type=int, default=3, help="seeds 1..N (default 3)")
    p.add_argument("--out", type=Path, help="output directory (default results/<suite>)")
    p.add_argument("--models", help="comma-separated subset of the suite's models")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="an mmf_run override added to every project model's run "
                        "(repeatable), e.g. model_config.dlrm_mm.id_dropout=0.5")
    p.add_argument("--table", type=Path, metavar="RESULTS_JSON",
                   help="print the table of an existing results file and exit")
    return p


def _select_models(suite: Suite, text: Optional[str]) -> List[str]:
    known = suite.known_models()
    if not text:
        return [m for m in suite.models if m in known]
    chosen = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in known]
    if unknown or not chosen:
        raise BenchmarkError(f"unknown model(s) {unknown or [text]} for suite '{suite.name}'; "
                             f"known: {', '.join(known)}")
    return list(dict.fromkeys(chosen))


def main(argv: Optional[Sequence[str]] = None,
         suites: Optional[Mapping[str, Suite]] = None) -> int:
    """The CLI; ``suites`` replaces the built-in suites (tests register tiny ones)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    p = parser()
    args = p.parse_args(args_list)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        if args.table is not None:
            try:
                results = json.loads(Path(args.table).read_text())
            except (OSError, ValueError) as error:
                raise BenchmarkError(f"{args.table}: not a readable results file ({error})")
            sys.stdout.write(format_table(results))
            return 0
        suites = dict(suites if suites is not None else default_suites())
        if args.suite is None:
            raise BenchmarkError(f"give --suite NAME (known suites: {', '.join(suites)}) "
                                 "or --table RESULTS_JSON")
        if args.suite not in suites:
            raise BenchmarkError(f"unknown suite {args.suite!r}; known suites: "
                                 f"{', '.join(suites)}")
        suite = suites[args.suite]
        bad = [o for o in args.override if "=" not in o or o.startswith("=")]
        if bad:
            raise BenchmarkError(f"--override takes KEY=VALUE, got {bad}")
        if args.override:
            extra = {"*": (*suite.overrides.get("*", ()), *args.override)}
            suite = dataclasses.replace(suite, overrides={**suite.overrides, **extra})
        models = _select_models(suite, args.models)
        if args.seeds < 1:
            raise BenchmarkError(f"--seeds must be >= 1, got {args.seeds}")
        out = args.out if args.out is not None else REPO / "results" / suite.name
        command = [sys.argv[0] if argv is None else "tools/benchmark.py", *args_list]
        results = run_suite(suite, Path(out), list(range(1, args.seeds + 1)), models, command)
    except BenchmarkError as error:
        p.exit(2, f"{p.prog}: error: {error}\n")
    path, _ = write_results(results, Path(out))
    sys.stdout.write(format_table(results))
    failed = [name for name, entry in results["models"].items() if entry["status"] == "failed"]
    if failed:
        logger.error("failed: %s (see the logs in the table); results in %s",
                     ", ".join(failed), path)
        return 1
    logger.info("results in %s", path)
    return 0
