"""Benchmark suites: baselines and project models on one dataset, several seeds.

    python tools/benchmark.py --suite ml100k-time [--seeds 3] [--out DIR] [--models a,b]
    python tools/benchmark.py --table results/ml100k-time/results.json

Suites: synthetic, ml100k-loo, ml100k-time, hm-sample. The logic lives in
``mmf_rec/benchmark/``.
"""

import sys

from mmf_rec.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
