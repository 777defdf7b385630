"""Warm against cold quality per model, from benchmark results files.

    python tools/plot_results.py docs/results/*.json --out docs/images/warm_cold.png

See :mod:`mmf_rec.benchmark.plot`.
"""

from mmf_rec.benchmark.plot import main

if __name__ == "__main__":
    raise SystemExit(main())
