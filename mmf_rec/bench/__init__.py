"""The project's speed and memory benchmarks, behind ``python tools/bench.py <name>``.

One module per benchmark (train, trajectory, rank, data, index, embedding,
shard, compression), ``host`` for what every results file records, and
``cli`` for the command line. They run from a source checkout: the
benchmarks start ``mmf_run`` on the project's configs and write under its
``save/`` and ``results/``.
"""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
