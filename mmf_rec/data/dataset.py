"""An MMF dataset over one split of a prepared directory.

MMF's default path builds one ``Sample`` per row and merges them in Python,
which costs more than a DLRM step on small models. torch's DataLoader calls
``__getitems__`` with a whole batch of indices when a dataset has it, so here
a batch is a handful of numpy gathers from memory-mapped columns, returned as
one dict that MMF's BatchCollator turns into a SampleList as it is.

Batch fields (B = batch size):
    dense            (B, n_dense) float32   when the schema has dense features
    sparse_<name>    (B, max_len) int64     per schema sparse feature, PAD_ID padded
    targets          (B, 1) float32         the label
    click_prob       (B,) float32           when the data knows it (synthetic)
    item_index       (B,) int64             the row's item id, for item knowledge
"""

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmf.common.sample import Sample
from mmf.datasets.base_dataset import BaseDataset

from mmf_rec.data import prepared as fmt
from mmf_rec.data.prepared_layout import CLICK_PROB_COLUMN
from mmf_rec.schema import Schema

DENSE_KEY = "dense"
TARGETS_KEY = "targets"
CLICK_PROB_KEY = "click_prob"
ITEM_INDEX_KEY = "item_index"
SPARSE_PREFIX = "sparse_"


def sparse_key(name: str) -> str:
    return SPARSE_PREFIX + name


def select_schema(schema: Schema, sparse_features: Optional[Sequence[str]]) -> Schema:
    """The schema restricted to the sparse features a config names (None: all)."""
    if sparse_features is None:
        return schema
    selected = tuple(schema.select_sparse(list(sparse_features)))
    return Schema(
        dense=schema.dense, sparse=selected, knowledge=schema.knowledge,
        label=schema.label, source=schema.source,
    )


class KBRecDataset(BaseDataset):
    """One split of a prepared directory, served a batch at a time."""

    def __init__(
        self,
        data: fmt.PreparedData,
        split: str,
        config=None,
        dataset_type: str = "train",
        dataset_name: str = "kbrec_synthetic",
        schema: Optional[Schema] = None,
        extra_eval_splits: Sequence[str] = (),
    ):
        super().__init__(dataset_name, config, dataset_type)
        self.split = split
        self.schema = schema if schema is not None else data.schema
        self.extra_eval_splits: Tuple[str, ...] = tuple(extra_eval_splits)
        for name in (split, *self.extra_eval_splits):
            data.split(name)  # unknown split: one clear error, now
        self._attach(data)

    def _attach(self, data: fmt.PreparedData) -> None:
        self.prepared = data
        self.root = data.root
        table = data.split(self.split)
        self._rows = table.rows
        self._plan = self._gather_plan(data, table)

    def _gather_plan(self, data, table) -> List[Tuple[str, np.ndarray]]:
        """(batch key, column) pairs; plain ndarray views of the memmaps."""
        plan = []
        if self.schema.dense:
            plan.append((DENSE_KEY, np.asarray(table[fmt.DENSE_COLUMN])))
        for f in self.schema.sparse:
            plan.append((sparse_key(f.name), np.asarray(table[f.name])))
        plan.append((TARGETS_KEY, np.asarray(table[self.schema.label]).reshape(-1, 1)))
        if CLICK_PROB_COLUMN in table:
            plan.append((CLICK_PROB_KEY, np.asarray(table[CLICK_PROB_COLUMN])))
        item = data.item_feature
        if item is not None and item in table:
            plan.append((ITEM_INDEX_KEY, np.asarray(table[item])[:, 0]))
        return plan

    def init_processors(self):
        """Rows are ready-made tensors; run processors only if a config names some.

        (MMF's version treats a non-struct config's missing key as present.)
        """
        if self.config is not None and "processors" in self.config and self.config.processors:
            super().init_processors()

    # -- pickling: workers started by spawn re-map the files instead of
    # receiving copies of every column.
    def __getstate__(self):
        state = self.__dict__.copy()
        for key in ("prepared", "_plan", "writer"):
            state.pop(key, None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.writer = None
        data = fmt.load_prepared(self.root, verify_checksums=False, check_id_ranges=False)
        self._attach(data)

    # -- access ----------------------------------------------------------------
    def __len__(self) -> int:
        return self._rows

    @property
    def fields(self) -> List[str]:
        return [key for key, _ in self._plan]

    @property
    def oracle_auc(self) -> Optional[float]:
        """The known click model's AUC on this split, when the data has one."""
        value = (self.prepared.manifest.get("oracle_auc") or {}).get(self.split)
        return None if value is None else float(value)

    def for_split(self, split: str) -> "KBRecDataset":
        """The same data and settings over another split (e.g. ``cold``)."""
        return KBRecDataset(
            self.prepared, split, config=self.config, dataset_type=self.dataset_type,
            dataset_name=self.dataset_name, schema=self.schema,
        )

    def __getitems__(self, indices: Sequence[int]) -> Dict[str, torch.Tensor]:
        index = np.asarray(indices, dtype=np.int64)
        if index.ndim != 1:
            raise IndexError(f"{self.dataset_name}/{self.split}: expected a 1-d list "
                             f"of row indices, got shape {index.shape}")
        if index.size and (index.min() < -self._rows or index.max() >= self._rows):
            raise IndexError(
                f"{self.dataset_name}/{self.split}: row index out of range "
                f"[0, {self._rows}): min {index.min()} max {index.max()}"
            )
        # np.take is several times faster than fancy indexing for row gathers.
        return {key: torch.from_numpy(np.take(column, index, axis=0))
                for key, column in self._plan}

    def __getitem__(self, idx: int) -> Sample:
        """One row, for MMF's default per-sample path; same fields, unbatched."""
        if not -self._rows <= idx < self._rows:
            raise IndexError(
                f"{self.dataset_name}/{self.split}: row {idx} out of range [0, {self._rows})"
            )
        sample = Sample()
        for key, column in self._plan:
            sample[key] = torch.from_numpy(np.array(column[idx]))
        return sample
