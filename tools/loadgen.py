"""Open-loop load on the recommendation service: Poisson arrivals at a rate.

    python tools/loadgen.py --url http://127.0.0.1:8000 --rate 100 --requests 2000

``--help`` lists the options; the code is in ``mmf_rec/serving/loadgen.py``.
"""

import sys

from mmf_rec.serving.loadgen import main

if __name__ == "__main__":
    sys.exit(main())
