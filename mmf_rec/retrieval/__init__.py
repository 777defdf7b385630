"""Candidate generation before ranking: a FAISS item index with its
metadata (``index``; built by ``build_index``), users' current states
(``users``), the retrieve-then-rank ``Recommender`` (``pipeline``; the
``recommend`` command), and retrieval quality (``evaluate``,
``evaluation_report``).

Importing this package loads neither torch models nor FAISS; each module
imports what it needs.
"""

from mmf_rec.retrieval.index import (  # noqa: F401
    IndexFileError,
    IndexMismatchError,
    ItemIndex,
    RetrievalIndexError,
)
