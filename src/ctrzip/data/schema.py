"""The encoded-data contract read by models and compression methods.

``FeatureSchema`` is produced by the encoder, saved as ``feature_map.json`` next to the
encoded arrays and inside every artifact. No dataset constant (26 fields, vocab sizes)
appears anywhere else in the code.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

FieldKind = Literal["categorical", "sequence", "dense"]
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class FieldSpec:
    """One model input field.

    Args:
        name: column name; a valid identifier (it becomes a module key).
        kind: ``categorical`` (one id per row), ``sequence`` (``max_len`` ids per row,
            0-padded, mean-pooled) or ``dense`` (one float per row, embedded by a Linear).
        vocab_size: number of ids including 0 = padding/missing and the last = OOV; 0 for dense.
        max_len: ids per row (1 unless ``sequence``).
        source: the raw column type it came from (``categorical``, ``numeric``, ``sequence``).
    """

    name: str
    kind: FieldKind
    vocab_size: int = 0
    max_len: int = 1
    source: str = "categorical"

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"field name {self.name!r} must be an identifier (letters, digits, _)")
        if self.kind not in ("categorical", "sequence", "dense"):
            raise ValueError(f"field {self.name}: unknown kind {self.kind!r}")
        if self.kind == "dense":
            if self.vocab_size != 0 or self.max_len != 1:
                raise ValueError(f"dense field {self.name} has no vocabulary")
        else:
            if self.vocab_size < 2:
                raise ValueError(f"field {self.name}: vocab_size must be >= 2 (pad + OOV)")
            if self.max_len < 1 or (self.kind == "categorical" and self.max_len != 1):
                raise ValueError(f"field {self.name}: bad max_len {self.max_len}")

    @property
    def is_sparse(self) -> bool:
        return self.kind != "dense"

    @property
    def oov_id(self) -> int:
        return self.vocab_size - 1


@dataclass(frozen=True)
class FeatureSchema:
    """All fields of an encoded dataset, in model order.

    Sparse (categorical and sequence) fields are stored side by side in one int32 matrix
    ``sparse [N, S]`` (S = sum of ``max_len``); dense fields in ``dense [N, Dn]``.
    """

    fields: tuple[FieldSpec, ...]
    label: str = "label"
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        names = [f.name for f in self.fields]
        if not names:
            raise ValueError("a schema needs at least one field")
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"duplicate field names: {sorted(dup)}")

    # --- views -------------------------------------------------------------------------
    @property
    def num_fields(self) -> int:
        return len(self.fields)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]

    @property
    def sparse_fields(self) -> list[FieldSpec]:
        return [f for f in self.fields if f.is_sparse]

    @property
    def dense_fields(self) -> list[FieldSpec]:
        return [f for f in self.fields if not f.is_sparse]

    @property
    def sparse_width(self) -> int:
        return sum(f.max_len for f in self.sparse_fields)

    def sparse_slices(self) -> dict[str, slice]:
        """Column slice of each sparse field inside ``Batch.sparse``."""
        out, col = {}, 0
        for f in self.sparse_fields:
            out[f.name] = slice(col, col + f.max_len)
            col += f.max_len
        return out

    def dense_index(self) -> dict[str, int]:
        return {f.name: i for i, f in enumerate(self.dense_fields)}

    def __getitem__(self, name: str) -> FieldSpec:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"no field {name!r} in schema (fields: {', '.join(self.names)})")

    @property
    def total_vocab(self) -> int:
        return sum(f.vocab_size for f in self.sparse_fields)

    # --- serialization -----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        offsets, off = {}, 0
        for f in self.sparse_fields:
            offsets[f.name] = off
            off += f.vocab_size
        return {
            "label": self.label,
            "fields": [asdict(f) for f in self.fields],
            "offsets": offsets,
            "total_vocab": off,
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSchema:
        try:
            fields = tuple(FieldSpec(**f) for f in data["fields"])
            return cls(fields=fields, label=data.get("label", "label"), meta=dict(data.get("meta", {})))
        except (KeyError, TypeError) as err:
            raise ValueError(f"invalid feature map: {err}") from None

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> FeatureSchema:
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (ValueError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: {err}") from None
