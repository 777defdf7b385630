"""Serve recommendations over HTTP on localhost, with a demo page at /.

    python tools/serve.py --retriever save/kbrec_two_tower \\
        --ranker save/kbrec_dlrm_mm --port 8000

``--help`` lists the options; the code is in ``mmf_rec/serving/cli.py``.
"""

import sys

from mmf_rec.serving.cli import main

if __name__ == "__main__":
    sys.exit(main())
