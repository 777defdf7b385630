"""Evaluate retrieval, retrieve-then-rank and popularity on held-out clicks; write a JSON report.

    python tools/evaluate_retrieval.py --retriever save/kbrec_synthetic/two_tower \\
        --ranker save/kbrec_synthetic/dlrm_mm --out results/retrieval_eval.json

``--help`` lists the options; the code is in ``mmf_rec/retrieval/evaluation_report.py``.
"""

import sys

from mmf_rec.retrieval.evaluation_report import main

if __name__ == "__main__":
    sys.exit(main())
