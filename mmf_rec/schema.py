"""The one declaration of a dataset's features.

Generators, readers, datasets, encoders and models all read a ``Schema``;
none of them restates a feature list. A schema travels with prepared data in
its manifest, so a model can check that it is fed the data it was built for.
"""

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

SIDES = ("user", "item", "context")
POOLINGS = ("sum", "mean")
KNOWLEDGE_KINDS = ("text", "image")
# Padding value for multi-hot sparse features shorter than their max_len.
PAD_ID = -1


class SchemaError(ValueError):
    """A schema or a config that refers to it is malformed."""


@dataclass(frozen=True)
class DenseFeature:
    name: str
    side: str = "user"


@dataclass(frozen=True)
class SparseFeature:
    """A categorical feature: one id (max_len 1) or a padded bag of ids."""

    name: str
    cardinality: int
    side: str = "user"
    pooling: str = "sum"
    max_len: int = 1

    @property
    def multi_hot(self) -> bool:
        return self.max_len > 1


@dataclass(frozen=True)
class KnowledgeField:
    """Item knowledge that only a text or image encoder can read."""

    name: str
    kind: str
    side: str = "item"


@dataclass(frozen=True)
class Schema:
    dense: Tuple[DenseFeature, ...] = ()
    sparse: Tuple[SparseFeature, ...] = ()
    knowledge: Tuple[KnowledgeField, ...] = ()
    label: str = "label"
    source: str = field(default="<in memory>", compare=False)

    def __post_init__(self):
        names = [f.name for f in (*self.dense, *self.sparse, *self.knowledge)]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise SchemaError(f"{self.source}: feature names repeat: {duplicates}")
        for f in self.dense:
            _check_choice(self.source, f.name, "side", f.side, SIDES)
        for f in self.sparse:
            _check_choice(self.source, f.name, "side", f.side, SIDES)
            _check_choice(self.source, f.name, "pooling", f.pooling, POOLINGS)
            if int(f.cardinality) < 1:
                raise SchemaError(
                    f"{self.source}: sparse feature '{f.name}': cardinality must be "
                    f">= 1, got {f.cardinality}"
                )
            if int(f.max_len) < 1:
                raise SchemaError(
                    f"{self.source}: sparse feature '{f.name}': max_len must be "
                    f">= 1, got {f.max_len}"
                )
        for f in self.knowledge:
            _check_choice(self.source, f.name, "kind", f.kind, KNOWLEDGE_KINDS)

    # -- lookups -----------------------------------------------------------
    @property
    def dense_names(self) -> List[str]:
        return [f.name for f in self.dense]

    @property
    def sparse_names(self) -> List[str]:
        return [f.name for f in self.sparse]

    def sparse_feature(self, name: str) -> SparseFeature:
        for f in self.sparse:
            if f.name == name:
                return f
        raise SchemaError(
            f"{self.source}: unknown sparse feature '{name}'; "
            f"the schema declares {self.sparse_names}"
        )

    def select_sparse(self, names: Optional[Iterable[str]]) -> List[SparseFeature]:
        """The sparse features a config names (all of them when it names none)."""
        if names is None:
            return list(self.sparse)
        return [self.sparse_feature(n) for n in names]

    # -- (de)serialisation -------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        return {
            "label": self.label,
            "dense": [asdict(f) for f in self.dense],
            "sparse": [asdict(f) for f in self.sparse],
            "knowledge": [asdict(f) for f in self.knowledge],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>") -> "Schema":
        if not isinstance(data, Mapping):
            raise SchemaError(f"{source}: a schema must be a mapping, got {type(data)}")
        unknown = set(data) - {"label", "dense", "sparse", "knowledge"}
        if unknown:
            raise SchemaError(
                f"{source}: unknown schema keys {sorted(unknown)}; expected "
                "label, dense, sparse, knowledge"
            )
        return cls(
            dense=_build(DenseFeature, data.get("dense"), source, "dense"),
            sparse=_build(SparseFeature, data.get("sparse"), source, "sparse"),
            knowledge=_build(KnowledgeField, data.get("knowledge"), source, "knowledge"),
            label=str(data.get("label", "label")),
            source=source,
        )

    def fingerprint(self) -> str:
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _check_choice(source, name, key, value, allowed):
    if value not in allowed:
        raise SchemaError(
            f"{source}: feature '{name}': {key} must be one of {list(allowed)}, "
            f"got '{value}'"
        )


def _build(kind, entries, source, section):
    if entries is None:
        return ()
    out = []
    fields = set(kind.__dataclass_fields__)
    for i, entry in enumerate(entries):
        entry = dict(entry)
        unknown = set(entry) - fields
        if unknown or "name" not in entry:
            raise SchemaError(
                f"{source}: {section}[{i}]: expected keys {sorted(fields)} "
                f"(name required), got {sorted(entry)}"
            )
        if "cardinality" in entry:
            entry["cardinality"] = int(entry["cardinality"])
        if "max_len" in entry:
            entry["max_len"] = int(entry["max_len"])
        out.append(kind(**entry))
    return tuple(out)
