"""Checks and the side-by-side table of the peer benchmark (parent process only)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np


def _column(table: Any, name: str) -> np.ndarray:
    col = table.column(name).combine_chunks()
    arr = col.to_numpy(zero_copy_only=False)
    if arr.dtype == object:  # list / tensor column -> [N, L]
        arr = np.stack([np.asarray(x) for x in arr])
    return np.asarray(arr).reshape(len(arr), -1)


def id_agreement(encoded_dir: str | Path, fuxictr_parquet: str | Path) -> dict[str, Any]:
    """Whether both libraries turned the training CSV into the same ids, field by field.

    Both use id 0 = padding, 1..n = kept values by descending training count (ties by value),
    n + 1 = OOV, so on the same CSV and ``min_count`` the ids should be identical; any field
    that differs is listed with its fraction of differing entries.
    """
    import pyarrow.parquet as pq

    from ctrzip.data.dataset import EncodedDataset

    ds = EncodedDataset.open(encoded_dir)
    ours = np.asarray(ds["train"].sparse)
    table = pq.read_table(str(fuxictr_parquet))
    differing = {}
    for name, sl in ds.schema.sparse_slices().items():
        theirs = _column(table, name)
        mine = ours[:, sl]
        if theirs.shape != mine.shape:
            differing[name] = f"shape {mine.shape} vs {theirs.shape}"
            continue
        frac = float(np.mean(theirs != mine))
        if frac > 0:
            differing[name] = round(frac, 6)
    return {"identical": not differing, "rows": int(len(ours)), "differing_fields": differing}


_MEANS = ("samples_per_s", "fit_samples_per_s", "step_samples_per_s", "fit_s", "peak_rss_mb")


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-seed results -> mean and std of test AUC / logloss, mean of timings (failed runs dropped)."""
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return {"error": runs[0].get("error", "no run") if runs else "no run"}
    out: dict[str, Any] = {"n_seeds": len(ok), "params": ok[0]["params"]}
    for key in ("test_auc", "test_logloss"):
        vals = np.array([r[key] for r in ok], dtype=np.float64)
        out[key], out[key + "_std"] = float(vals.mean()), float(vals.std(ddof=1)) if len(vals) > 1 else None
    for key in _MEANS:
        vals = [r[key] for r in ok if r.get(key) is not None]
        out[key] = float(np.mean(vals)) if vals else None
    return out


def _fmt(v: Any, spec: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v, spec)


def _pm(s: dict[str, Any], key: str) -> str:
    std = s.get(key + "_std")
    return f"{s[key]:.5f}" + (f" ± {std:.5f}" if std is not None else "")


def side_by_side(rows: list[dict[str, Any]]) -> str:
    """Markdown table: one line per (model, library) plus the targets per model."""
    head = (
        "| model | library | params | test AUC | test logloss | train samples/s | fit samples/s "
        "| step samples/s | fit s | peak RSS MB |"
    )
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        for side in ("ctrzip", "fuxictr"):
            s = r.get(side)
            if not s or "error" in s:
                lines.append(f"| {r['model']} | {side} | failed: {(s or {}).get('error', 'not run')[:60]} |")
                continue
            cells = [
                r["model"],
                side,
                f"{s['params']:,}",
                _pm(s, "test_auc"),
                _pm(s, "test_logloss"),
                _fmt(s["samples_per_s"], ",.0f"),
                _fmt(s["fit_samples_per_s"], ",.0f"),
                _fmt(s.get("step_samples_per_s"), ",.0f"),
                f"{s['fit_s']:.1f}",
                f"{s['peak_rss_mb']:,.0f}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets(row: dict[str, Any], auc_tol: float = 0.002, speedup: float = 1.5) -> dict[str, Any]:
    """AUC gap (ours - theirs) and throughput ratios (ours / theirs) against the issue's targets."""
    a, b = row.get("ctrzip") or {}, row.get("fuxictr") or {}
    if "test_auc" not in a or "test_auc" not in b:
        return {}
    out = {
        "auc_gap": a["test_auc"] - b["test_auc"],
        "train_speedup": a["samples_per_s"] / b["samples_per_s"],
        "fit_speedup": a["fit_samples_per_s"] / b["fit_samples_per_s"],
    }
    if a.get("step_samples_per_s") and b.get("step_samples_per_s"):
        out["step_speedup"] = a["step_samples_per_s"] / b["step_samples_per_s"]
    out["auc_within_tol"] = abs(out["auc_gap"]) <= auc_tol
    out["speedup_met"] = out["train_speedup"] >= speedup
    return out


def targets_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | AUC ours - FuxiCTR | within 0.002 | train speed-up | fit speed-up | step speed-up |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        t = r.get("targets") or {}
        if not t:
            lines.append(f"| {r['model']} | - | - | - | - | - |")
            continue
        lines.append(
            f"| {r['model']} | {t['auc_gap']:+.5f} | {'yes' if t['auc_within_tol'] else 'NO'} "
            f"| {t['train_speedup']:.2f}x{'' if t['speedup_met'] else ' (< 1.5x)'} "
            f"| {t['fit_speedup']:.2f}x | {_fmt(t.get('step_speedup'), '.2f')}x |"
        )
    return "\n".join(lines)
