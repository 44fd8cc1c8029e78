"""Encoded datasets from the shared raw fixtures, and tiny models trained on them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from ctrzip.data.config import load_dataset_config
from ctrzip.data.dataset import EncodedDataset
from ctrzip.data.encode import encode_dataset
from ctrzip.models.base import CTRModel, build_model

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def shared() -> Path:
    """The shared raw fixtures (tests skip where the folder is absent, as ``shared_data`` does)."""
    if not SHARED_DATA.exists():
        pytest.skip(f"shared data folder not found at {SHARED_DATA}")
    return SHARED_DATA


ML100K_FEATURES: list[dict[str, Any]] = [
    {"name": "user_id", "type": "categorical"},
    {"name": "item_id", "type": "categorical"},
    {"name": "gender", "type": "categorical"},
    {"name": "occupation", "type": "categorical"},
    {"name": "zip_prefix", "type": "categorical"},
    {"name": "release_year", "type": "categorical"},
    {"name": "genres", "type": "sequence", "separator": "^", "max_len": 4},
    {"name": "age", "type": "numeric"},  # dense, zscore
    {"name": "age_bucket", "type": "numeric", "source": "age", "transform": "log_square_bucket"},
]


def criteo_files(shared: Path, out: Path, min_count: int = 2) -> EncodedDataset:
    """Criteo sample encoded with the built-in schema, one split per file (train/valid/test csv)."""
    cfg = load_dataset_config("criteo").to_dict()
    cfg.update(format="csv", min_count=min_count, split={"method": "files"})
    src = shared / "criteo_sample"
    files = {s: src / f"{s}.csv" for s in ("train", "valid", "test")}
    encode_dataset(cfg, files, out, progress=False)
    return EncodedDataset.open(out)


def ml100k_files(shared: Path, out: Path) -> EncodedDataset:
    """ml100k slice: string ids, a sequence, a dense and a bucketed numeric field (OOV-heavy)."""
    cfg = {"name": "ml", "format": "csv", "features": ML100K_FEATURES, "split": {"method": "files"}}
    src = shared / "ml100k_mini"
    files = {s: src / f"{s}.csv" for s in ("train", "valid", "test")}
    encode_dataset(cfg, files, out, progress=False)
    return EncodedDataset.open(out)


def tiny_model(data: EncodedDataset, name: str = "deepfm", seed: int = 0) -> CTRModel:
    """An untrained model with non-trivial weights (its predictions vary per id)."""
    model = build_model(
        name, data.schema, {"embedding_dim": 4, "embedding_init_std": 0.05, "mlp": [8]}, seed=seed
    )
    with torch.no_grad():
        model.load_state_dict(model.state_dict())
    return model.eval()


def write_compose_raw(path: Path, n: int, seed: int, *, unseen: bool = False) -> Path:
    """Raw CSV whose encoded schema is ``tests/compression/test_compose``'s: ``big`` (298 values ->
    vocab 300), ``tags`` (``^``-joined, 118 tokens -> 120, max_len 3), ``small`` (6 -> 8) and a
    dense ``x``; every value appears in a training file (``n >= 298``). ``unseen`` adds values
    outside those vocabularies and empty (missing) cells."""
    import csv

    import numpy as np

    rng = np.random.default_rng(seed)

    def zipf(k: int, size: int) -> np.ndarray:
        p = 1.0 / np.arange(1, k + 1) ** 0.9
        return rng.choice(k, size=size, p=p / p.sum())

    big = np.concatenate([np.arange(298), zipf(298, max(n - 298, 0))])[:n]
    tags_first = np.concatenate([np.arange(118), zipf(118, max(n - 118, 0))])[:n]
    small = np.concatenate([np.arange(6), zipf(6, max(n - 6, 0))])[:n]
    x = rng.normal(3.0, 2.0, n).round(3)
    logit = np.sin(big * 0.3) + 0.5 * (x - 3.0) / 2.0
    label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["label", "big", "tags", "small", "x", "uid"])
        for i in range(n):
            tags = [f"t{tags_first[i]}"] + [f"t{t}" for t in zipf(118, int(rng.integers(0, 3)))]
            row = [label[i], f"b{big[i]}", "^".join(tags), f"s{small[i]}", x[i], f"u{seed}-{i}"]
            if unseen and i % 5 == 1:
                row[1:4] = ["b-new", "t-new^t1", "s-new"]
            if unseen and i % 7 == 2:
                row[1:5] = ["", "", "", ""]
            w.writerow(row)
    return path


COMPOSE_CONFIG: dict[str, Any] = {
    "name": "compose",
    "format": "csv",
    "features": [
        {"name": "big", "type": "categorical"},
        {"name": "tags", "type": "sequence", "separator": "^", "max_len": 3},
        {"name": "small", "type": "categorical"},
        {"name": "x", "type": "numeric"},
    ],
    "split": {"method": "files"},
}
