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
        name, data.schema, {"embedding_dim": 4, "embedding_init_std": 0.5, "mlp": [8]}, seed=seed
    )
    with torch.no_grad():
        model.load_state_dict(model.state_dict())
    return model.eval()
