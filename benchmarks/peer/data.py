"""Inputs shared by both sides of the peer benchmark: CSV splits plus a library-neutral feature list.

Why one CSV per split for both libraries: the comparison must not depend on two preprocessing
pipelines. Numeric Criteo fields are bucketed here (v > 2 -> floor(ln(v)^2), else int(v)) and
every missing value becomes the explicit token ``NA``, so both libraries see only categorical
string columns and build the same vocabulary (same ``min_count``, frequency order, ties by value).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

MISSING = "NA"
CRITEO_INT = [f"I{i}" for i in range(1, 14)]
CRITEO_CAT = [f"C{i}" for i in range(1, 27)]


@dataclass
class FeatureDef:
    """One input column: ``categorical`` (one token) or ``sequence`` (``separator``-joined tokens)."""

    name: str
    kind: str = "categorical"
    separator: str | None = None
    max_len: int | None = None


@dataclass
class PeerDataset:
    """Paths of the three CSV splits and how to read them (the same for both libraries)."""

    name: str
    train: str
    valid: str
    test: str
    features: list[FeatureDef]
    label: str = "label"
    min_count: int = 1
    rows: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> PeerDataset:
        doc = dict(doc)
        doc["features"] = [FeatureDef(**f) for f in doc["features"]]
        return cls(**doc)


def _count_rows(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(buf.count(b"\n") for buf in iter(lambda: fh.read(1 << 24), b"")) - 1  # minus header


def _bucket(col: str) -> pl.Expr:
    """Criteo-standard numeric bucket as a string token; missing -> ``NA``."""
    v = pl.col(col).cast(pl.Float64, strict=False)
    b = pl.when(v > 2).then((v.log() ** 2).floor()).otherwise(v)
    return b.cast(pl.Int64).cast(pl.String).fill_null(MISSING).alias(col)


def criteo_like_csv(
    raw_tsv: str | Path, out_dir: str | Path, seed: int = 2024, min_count: int = 10
) -> PeerDataset:
    """Convert a raw Criteo-layout TSV into ``{train,valid,test}.csv`` (random 8:1:1 split by ``seed``).

    Args:
        raw_tsv: ``label, I1..I13, C1..C26`` tab-separated, no header (as ``generate`` writes).
        out_dir: folder for the CSV files and ``dataset.json`` (reused when present).
        seed: seed of the row split.
        min_count: vocabulary threshold both libraries use.
    """
    out = Path(out_dir)
    meta = out / "dataset.json"
    if meta.exists():
        return PeerDataset.from_dict(json.loads(meta.read_text()))
    out.mkdir(parents=True, exist_ok=True)
    names = ["label", *CRITEO_INT, *CRITEO_CAT]
    df = pl.read_csv(
        raw_tsv,
        separator="\t",
        has_header=False,
        new_columns=names,
        quote_char=None,
        schema_overrides={n: pl.String for n in names},
    )
    df = df.with_columns(
        pl.col("label").cast(pl.Int8),
        *[_bucket(c) for c in CRITEO_INT],
        *[pl.col(c).fill_null(MISSING) for c in CRITEO_CAT],
    )
    u = np.random.default_rng(seed).random(len(df))
    parts = {"train": u < 0.8, "valid": (u >= 0.8) & (u < 0.9), "test": u >= 0.9}
    rows = {}
    for split, mask in parts.items():
        df.filter(pl.Series(mask)).write_csv(out / f"{split}.csv")
        rows[split] = int(mask.sum())
    ds = PeerDataset(
        name="criteo_like",
        train=str(out / "train.csv"),
        valid=str(out / "valid.csv"),
        test=str(out / "test.csv"),
        features=[FeatureDef(c) for c in CRITEO_INT + CRITEO_CAT],
        min_count=min_count,
        rows=rows,
    )
    meta.write_text(json.dumps(ds.to_dict(), indent=2))
    return ds


def ml100k_mini(root: str | Path, min_count: int = 1) -> PeerDataset:
    """The shared MovieLens fixture as given (``age`` read as a categorical token on both sides)."""
    root = Path(root)
    head = (root / "train.csv").open().readline().strip().split(",")
    seq = "genres"
    max_len = int(
        pl.read_csv(root / "train.csv", columns=[seq], schema_overrides={seq: pl.String})
        .get_column(seq)
        .str.split("^")
        .list.len()
        .max()
    )
    feats = [
        FeatureDef(c) if c != seq else FeatureDef(c, "sequence", separator="^", max_len=max_len)
        for c in head
        if c != "label"
    ]
    return PeerDataset(
        name="ml100k_mini",
        train=str(root / "train.csv"),
        valid=str(root / "valid.csv"),
        test=str(root / "test.csv"),
        features=feats,
        min_count=min_count,
        rows={s: _count_rows(root / f"{s}.csv") for s in ("train", "valid", "test")},
    )
