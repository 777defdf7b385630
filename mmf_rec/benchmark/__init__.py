"""Benchmark suites: every model and baseline on one dataset, several seeds,
one evaluator, one results file.

    python tools/benchmark.py --suite ml100k-time [--seeds 3] [--out DIR] [--models a,b]
    python tools/benchmark.py --table DIR/results.json
    python tools/plot_results.py DIR/results.json --out warm_cold.png   (plot)

A suite names how its prepared data is made, which models run and the
training overrides they run with. Baselines (``mmf_rec.evaluation.baselines``)
are tuned on the val period and fitted per seed in this process; project
models are trained by ``mmf_run`` in a subprocess (logged to
``DIR/runs/<model>/seed<seed>/run.log``), then loaded back and scored against
the whole catalogue (``mmf_rec.evaluation.models``). Every number goes
through ``mmf_rec.evaluation.catalogue.evaluate_scores`` (see
docs/data.md, "Evaluation protocols"); AUC and log loss come from the run's
metrics.json; suites on leave-last-out data add the NCF 1+99 sampled metrics
as a secondary, labelled column.

``DIR/results.json`` records what is needed to trust or redo a number: the
command, commit (and whether the tree was dirty), date, CPU, data protocol,
overrides, per-seed values and their mean and population standard deviation.
The markdown table goes to stdout and ``DIR/results.md``. A failed model is
reported as failed (with its log) and the runner exits non-zero at the end.

Modules: ``suites`` (the suites), ``runner`` (running one), ``table``
(statistics and the markdown table), ``record`` (git, machine, paths as
recorded) and ``cli``.
"""

from mmf_rec.benchmark.cli import main
from mmf_rec.benchmark.record import git_state
from mmf_rec.benchmark.runner import KS
from mmf_rec.benchmark.suites import REPO, BenchmarkError, Suite, default_suites, without_images
from mmf_rec.benchmark.table import format_table, summarize

__all__ = ["main", "git_state", "KS", "REPO", "BenchmarkError", "Suite", "default_suites",
           "without_images", "format_table", "summarize"]
