"""On-disk layout of an encoded dataset, and memory-mapped access to it.

Layout of a dataset folder::

    feature_map.json          FeatureSchema (fields, vocab sizes, offsets) + metadata
    counts.npz                per-field training-split id counts (int64 [vocab_size])
    {split}_sparse.npy        int32 [N, S]
    {split}_dense.npy         float32 [N, Dn]
    {split}_label.npy         float32 [N]

``.npy`` files carry their own shape and dtype and are opened with ``mmap_mode="r"`` and
``allow_pickle=False``, so opening a dataset never unpickles anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ctrzip.data.schema import FeatureSchema

SPLITS = ("train", "valid", "test")


@dataclass
class SplitArrays:
    """The three arrays of one split (memory-mapped when opened from disk)."""

    sparse: np.ndarray  # [N, S] int32
    dense: np.ndarray  # [N, Dn] float32
    label: np.ndarray  # [N] float32

    def __post_init__(self) -> None:
        n = len(self.label)
        if self.sparse.shape[0] != n or self.dense.shape[0] != n:
            raise ValueError(
                f"split arrays disagree on rows: sparse {self.sparse.shape}, "
                f"dense {self.dense.shape}, label {self.label.shape}"
            )

    def __len__(self) -> int:
        return int(self.label.shape[0])


@dataclass
class EncodedDataset:
    """An encoded dataset: schema, training counts and the splits present on disk."""

    root: Path
    schema: FeatureSchema
    counts: dict[str, np.ndarray]
    splits: dict[str, SplitArrays]

    def __getitem__(self, split: str) -> SplitArrays:
        try:
            return self.splits[split]
        except KeyError:
            raise KeyError(f"{self.root}: no split {split!r} (have: {', '.join(self.splits)})") from None

    @classmethod
    def open(cls, root: str | Path) -> EncodedDataset:
        root = Path(root)
        fmap = root / "feature_map.json"
        if not fmap.exists():
            raise FileNotFoundError(f"{root}: not an encoded dataset (no feature_map.json)")
        schema = FeatureSchema.load(fmap)
        counts = load_counts(root / "counts.npz") if (root / "counts.npz").exists() else {}
        splits = {}
        for name in SPLITS:
            if (root / f"{name}_label.npy").exists():
                splits[name] = SplitArrays(
                    sparse=np.load(root / f"{name}_sparse.npy", mmap_mode="r", allow_pickle=False),
                    dense=np.load(root / f"{name}_dense.npy", mmap_mode="r", allow_pickle=False),
                    label=np.load(root / f"{name}_label.npy", mmap_mode="r", allow_pickle=False),
                )
        return cls(root=root, schema=schema, counts=counts, splits=splits)


def save_counts(path: str | Path, counts: dict[str, np.ndarray]) -> None:
    np.savez(path, **{k: np.asarray(v, dtype=np.int64) for k, v in counts.items()})


def load_counts(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def save_split(root: str | Path, name: str, arrays: SplitArrays) -> None:
    """Write one in-memory split (small data, tests); the encoder streams instead."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / f"{name}_sparse.npy", np.ascontiguousarray(arrays.sparse, dtype=np.int32))
    np.save(root / f"{name}_dense.npy", np.ascontiguousarray(arrays.dense, dtype=np.float32))
    np.save(root / f"{name}_label.npy", np.ascontiguousarray(arrays.label, dtype=np.float32))
