"""Small builders shared by the data-layer tests (configs, raw files, saved vocabularies)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

NUMERIC = [f"I{i}" for i in range(1, 14)]
CATEGORICAL = [f"C{i}" for i in range(1, 27)]


def criteo_config(fmt: str = "csv", **over: Any) -> dict[str, Any]:
    """The Criteo field layout as a config dict (csv with header by default)."""
    cfg: dict[str, Any] = {
        "name": "criteo_test",
        "format": fmt,
        "label": "label",
        "min_count": 1,
        "features": [{"name": n, "type": "numeric", "transform": "log_square_bucket"} for n in NUMERIC]
        + [{"name": c, "type": "categorical"} for c in CATEGORICAL],
        "split": {"method": "files"},
    }
    cfg.update(over)
    return cfg


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_csv(path: Path, header: list[str], rows: list[list[Any]], sep: str = ",") -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f, delimiter=sep, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
    return path


def vocab(root: Path, field: str) -> list[Any]:
    return json.loads((root / "vocab" / f"{field}.json").read_text())["values"]
