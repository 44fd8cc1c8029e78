"""Tables and the frontier plot for ``bench_budget.py`` records (``summarize.py budget``).

Every compressed row is paired by seed with the dense model of that seed (plug-in protocol),
reported as mean +- sd over seeds with a two-sided Wilcoxon signed-rank p (scipy) where
there are at least 3 pairs. "Best within L" is the largest mean ratio among the variants
whose mean paired test-AUC delta is >= -L.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

RecordKey = tuple[str, str, str]  # data, model, variant


def _group(records: list[dict[str, Any]]) -> dict[RecordKey, list[dict[str, Any]]]:
    cells: dict[RecordKey, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        if not r["variant"].startswith("_"):
            cells[(r["data"], r["model"], r["variant"])].append(r)
    return cells


def rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One summary row per (data, model, variant): means over seeds and the paired test."""
    from summarize import wilcoxon_p  # the one Wilcoxon helper of the benchmarks

    speed: dict[tuple[str, str], dict[str, float]] = {}
    for r in records:
        if r["variant"] == "_speed":
            speed[(r["data"], r["model"])] = r["speed_vs_dense_batch10k"]
    out = []
    for (data, model, variant), rs in sorted(_group(records).items()):
        deltas = [r["delta_test_auc"] for r in rs]
        proj = [r["projected_ratio"] for r in rs if "projected_ratio" in r]
        out.append(
            {
                "data": data,
                "model": model,
                "variant": variant,
                "seeds": len(rs),
                "mb": statistics.fmean(r["bytes"] for r in rs) / 2**20,
                "ratio": statistics.fmean(r["ratio"] for r in rs),
                "projected_ratio": statistics.fmean(proj) if proj else None,
                "test_auc": statistics.fmean(r["test_auc"] for r in rs),
                "delta": statistics.fmean(deltas),
                "delta_sd": statistics.stdev(deltas) if len(deltas) > 1 else 0.0,
                "p": wilcoxon_p(deltas) if variant != "dense" else None,
                "search_over_epoch": statistics.fmean(r["seconds"] / r["epoch_seconds"] for r in rs),
                "speed": speed.get((data, model), {}).get(variant),
                "network": rs[0].get("network"),
            }
        )
    return out


def table(summary: list[dict[str, Any]]) -> str:
    cols = (
        "data",
        "model",
        "variant",
        "seeds",
        "MB",
        "ratio",
        "projected ratio",
        "test AUC - dense (sd)",
        "p",
    )
    cols += ("s / epoch", "speed vs dense", "network")
    lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    for r in summary:
        proj = "-" if r["projected_ratio"] is None else f"{r['projected_ratio']:.1f}x"
        p = "-" if r["p"] is None else f"{r['p']:.2f}"
        sp = "-" if r["speed"] is None else f"{r['speed']:.2f}"
        lines.append(
            f"| {r['data']} | {r['model']} | {r['variant']} | {r['seeds']} | {r['mb']:.3f} | "
            f"{r['ratio']:.2f}x | {proj} | {r['delta']:+.4f} ({r['delta_sd']:.4f}) | {p} | "
            f"{r['search_over_epoch']:.2f} | {sp} | "
            f"{r['network'] or '-'} |"
        )
    return "\n".join(lines)


def best_within(summary: list[dict[str, Any]], losses: tuple[float, ...] = (0.001, 0.002)) -> str:
    """Per (data, model): the largest mean ratio (and projected ratio) within each AUC loss."""
    by: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in summary:
        by[(r["data"], r["model"])].append(r)
    cols = ["data", "model", *(f"best within -{loss:g}: variant, ratio (projected)" for loss in losses)]
    lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    for (data, model), rs in sorted(by.items()):
        cells = []
        for loss in losses:
            ok = [r for r in rs if r["delta"] >= -loss]
            b = max(ok, key=lambda r: r["ratio"])
            proj = "" if b["projected_ratio"] is None else f" ({b['projected_ratio']:.1f}x)"
            cells.append(f"{b['variant']}, {b['ratio']:.1f}x{proj}")
        lines.append(f"| {data} | {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(summary: list[dict[str, Any]], path: Path) -> None:
    """Test AUC against whole-model MB (log axis), one panel per (data, model); the budget
    method's points joined as its frontier, the dense model as a reference line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    panels = sorted({(r["data"], r["model"]) for r in summary})
    cols = min(3, len(panels))
    nrows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(5.2 * cols, 3.9 * nrows), squeeze=False)
    for ax, (data, model) in zip(axes.flat, panels, strict=False):
        rs = [r for r in summary if (r["data"], r["model"]) == (data, model)]
        dense = next(r for r in rs if r["variant"] == "dense")
        ax.axhline(dense["test_auc"], color="black", lw=0.8, ls="--", label=f"dense {dense['mb']:.2f} MB")
        ax.axhline(dense["test_auc"] - 0.001, color="grey", lw=0.6, ls=":", label="dense - 0.001")
        budget = sorted((r for r in rs if r["variant"].startswith("budget")), key=lambda r: r["mb"])
        if budget:
            ax.plot(
                [r["mb"] for r in budget], [r["test_auc"] for r in budget], "o-", color="C3", label="budget"
            )
        for i, r in enumerate(r for r in rs if not r["variant"].startswith(("budget", "dense"))):
            ax.plot(r["mb"], r["test_auc"], "s", color=f"C{i}", label=r["variant"])
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # minor labels overlap
        ax.set_xlabel("whole-model MB (stored tensors, log)")
        ax.set_ylabel(f"test AUC (mean of {dense['seeds']} seeds)")
        ax.set_title(f"{model}, {data}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
