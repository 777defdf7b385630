"""Encode items with a trained two-tower's item tower and write a FAISS index.

    python tools/build_index.py --retriever save/kbrec_synthetic/two_tower

``--help`` lists the options; the code is in ``mmf_rec/retrieval/build_index.py``.
"""

import sys

from mmf_rec.retrieval.build_index import main

if __name__ == "__main__":
    sys.exit(main())
