"""Speed and memory benchmarks: ``python tools/bench.py <name> [options]``
(``--help`` lists them). The code is in ``mmf_rec/bench/``."""

import sys

from mmf_rec.bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
