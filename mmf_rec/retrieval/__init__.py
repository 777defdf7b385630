"""Candidate generation before ranking: a FAISS item index with its
metadata, users' current states, trained runs loaded back, and the
retrieve-then-rank ``Recommender``.

Importing this package loads neither torch models nor FAISS; each module
imports what it needs.
"""

from mmf_rec.retrieval.index import (  # noqa: F401
    IndexFileError,
    IndexMismatchError,
    ItemIndex,
    RetrievalIndexError,
)
