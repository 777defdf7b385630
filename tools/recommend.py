"""Top-N items for users: retrieve with the two-tower and its index, rank with dlrm_mm.

    python tools/recommend.py --retriever save/kbrec_synthetic/two_tower \\
        --ranker save/kbrec_synthetic/dlrm_mm --user 42

``--help`` lists the options; the code is in ``mmf_rec/retrieval/recommend.py``.
"""

import sys

from mmf_rec.retrieval.recommend import main

if __name__ == "__main__":
    sys.exit(main())
