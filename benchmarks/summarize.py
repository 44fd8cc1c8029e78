"""Tables (and the MEC frontier plot) from the JSONL files that bench_mec.py / bench_lowrank.py write.

Deltas are paired by seed against the same-protocol control of that seed (PROTOCOL.md 1),
reported as mean +- sd over seeds with a two-sided Wilcoxon signed-rank p-value where there are
at least 3 pairs (with 3 seeds the smallest possible p is 0.25: a sign, not proof).

    python benchmarks/summarize.py mec benchmarks/results/mec_h100_criteo_pnn.jsonl --plot out.png
    python benchmarks/summarize.py lowrank benchmarks/results/lowrank_zoo_cpu2.jsonl
    python benchmarks/summarize.py budget benchmarks/results/budget_frontier_cpu2.jsonl --plot out.png
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from ctrzip.compression.mec.method import MECConfig
from ctrzip.compression.mec.projection import FULL_SCALE_VOCAB, project_mec_bytes


def load(paths: list[Path]) -> list[dict[str, Any]]:
    return [json.loads(line) for p in paths for line in p.read_text().splitlines() if line.strip()]


def wilcoxon_p(diffs: list[float]) -> float | None:
    """Two-sided Wilcoxon signed-rank p over paired differences (None below 3 pairs or all zero)."""
    from scipy.stats import wilcoxon

    if len(diffs) < 3 or all(d == 0 for d in diffs):
        return None
    return float(wilcoxon(diffs).pvalue)


def ms(xs: list[float]) -> str:
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.fmean(xs):+.4f} +- {sd:.4f}"


def fmt_p(p: float | None) -> str:
    return "-" if p is None else f"{p:.2f}"


# ----------------------------------------------------------------------------------- MEC
def projected(rec: dict[str, Any], dense: dict[str, Any], vocab: str) -> dict[str, Any]:
    """Full-scale bytes of a cell, recomputed with the variant's layout (older records used one)."""
    layout = MECConfig.variant(rec["row"]).code_learning.layout
    return project_mec_bytes(
        FULL_SCALE_VOCAB[vocab],
        dim=rec["embedding_dim"],
        num_subspaces=rec["M"],
        codebook_size=rec["K"],
        min_vocab=rec.get("min_vocab", 1000),  # every bench run so far used 1000
        network_bytes=dense["bytes"]["network"],
        first_order=dense["bytes"]["first_order"] > 0,
        layout=layout,
    )


def mec_table(records: list[dict[str, Any]], vocabs: list[str]) -> tuple[str, list[dict[str, Any]]]:
    """Per (model, row, M, K): deltas of plug-in / final valid and test AUC, ratios."""
    by_run: dict[tuple[str, int], dict[str, Any]] = {}
    for r in records:
        if r["row"] == "dense":
            by_run[(r["config_hash"], r["seed"])] = r
    groups: dict[tuple[Any, ...], list[tuple[dict, dict]]] = defaultdict(list)
    for r in records:
        if r["row"] != "dense":
            dense = by_run[(r["config_hash"], r["seed"])]
            groups[(r["model"], r["row"], r["M"], r["K"], r["protocol"])].append((r, dense))
    head = (
        "| model | row | M | K | protocol | n | d plug-in valid AUC | p | d final valid AUC "
        "| d final test AUC | ratio here "
        + "".join(f"| ratio {v} (packed) " for v in vocabs)
        + "| ids/codeword here | stage 1 s / base train s |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    rows = []
    for (model, row, m, k, proto), pairs in sorted(
        groups.items(), key=lambda kv: (kv[0][0], kv[0][2], kv[0][3])
    ):
        seen: dict[int, tuple[dict, dict]] = {}
        for r, d in pairs:  # one record per seed (the first), repeated cells from other runs dropped
            seen.setdefault(r["seed"], (r, d))
        pairs = list(seen.values())
        d_plug = [r["plugin_valid"]["auc"] - d["plugin_valid"]["auc"] for r, d in pairs]
        d_final = [r["final_valid"]["auc"] - d["final_valid"]["auc"] for r, d in pairs]
        d_test = [r["final_test"]["auc"] - d["final_test"]["auc"] for r, d in pairs]
        r0, d0 = pairs[0]
        proj = {v: projected(r0, d0, v) for v in vocabs}
        s1 = statistics.fmean(r["stage1_seconds"] for r, _ in pairs)
        tr = statistics.fmean(d["train_seconds"] for _, d in pairs if d.get("train_seconds"))
        lines.append(
            f"| {model} | {row} | {m} | {k} | {proto} | {len(pairs)} | {ms(d_plug)} "
            f"| {fmt_p(wilcoxon_p(d_plug))} | {ms(d_final)} | {ms(d_test)} | {r0['ratio']:.1f}x "
            + "".join(f"| {proj[v]['ratio']:.1f}x ({proj[v]['ratio_packed']:.1f}x) " for v in vocabs)
            + f"| {r0.get('ids_per_codeword')} | {s1:.0f} / {tr:.0f} |"
        )
        rows.append({"model": model, "row": row, "M": m, "K": k, "n": len(pairs), "d_plugin": d_plug,
                     "ratio": {v: proj[v]["ratio"] for v in vocabs}})  # fmt: skip
    return "\n".join(lines), rows


def mec_paired(records: list[dict[str, Any]], a: str, b: str) -> str:
    """Plug-in AUC of variant ``a`` minus variant ``b`` in the same run and seed."""
    cells: dict[tuple[Any, ...], dict[str, float]] = defaultdict(dict)
    for r in records:
        if r["row"] in (a, b):
            cells[(r["model"], r["M"], r["K"], r["seed"], r["config_hash"])][r["row"]] = r["plugin_valid"][
                "auc"
            ]
    by_mk: dict[tuple[Any, ...], list[float]] = defaultdict(list)
    for (model, m, k, _, _), v in cells.items():
        if a in v and b in v:
            by_mk[(model, m, k)].append(v[a] - v[b])
    return "\n".join(
        f"{a} - {b} plug-in valid AUC, {model} M={m} K={k}: {ms(d)} over {len(d)} seed pairs, "
        f"Wilcoxon p {fmt_p(wilcoxon_p(d))}"
        for (model, m, k), d in sorted(by_mk.items())
    )


def frontier_plot(rows: list[dict[str, Any]], vocab: str, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for model, variant in sorted({(r["model"], r["row"]) for r in rows}):
        pts = sorted(
            ((r["ratio"][vocab], statistics.fmean(r["d_plugin"]), r) for r in rows
             if (r["model"], r["row"]) == (model, variant)),
            key=lambda t: t[0],
        )  # fmt: skip
        ax.plot(
            [p[0] for p in pts],
            [p[1] for p in pts],
            "o-" if len(pts) > 1 else "s",
            label=f"{model} {variant}",
        )
        for x, y, r in pts:
            ax.annotate(f"M{r['M']}K{r['K']}", (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.axhline(-0.001, color="grey", ls="--", lw=0.8, label="-0.001 (target)")
    ax.axvline(50, color="grey", ls=":", lw=0.8, label="50x (target)")
    ax.set_xscale("log")
    ax.set_xlabel(f"whole-model compression ratio, projected to the {vocab} vocabulary")
    ax.set_ylabel("plug-in valid AUC - dense")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


# ------------------------------------------------------------------------------- lowrank
def lowrank_table(records: list[dict[str, Any]]) -> str:
    """Per (model, row): params and speed vs dense, AUC vs the same-protocol control."""
    by_seed: dict[tuple[str, int], dict[str, dict[str, Any]]] = defaultdict(dict)
    for r in records:
        by_seed[(r["model"], r["seed"])].setdefault(r["row"], r)
    head = ("| model | row | n | params (M) | fewer params | speed vs dense | d AUC vs control | p "
            "| d AUC vs dense (no FT) |")  # fmt: skip
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    order: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for (model, _), rows in sorted(by_seed.items()):
        for row, r in rows.items():
            order[(model, row)].append({"r": r, "seed_rows": rows})
    for (model, row), items in order.items():
        if row.startswith("dense"):
            continue
        pipeline = "MLP+EMB" in row
        ctl_name = "dense + 2xFT (control)" if pipeline else "dense + FT (control)"
        d_ctl, d_dense, fewer, speed = [], [], [], []
        for it in items:
            r, rows = it["r"], it["seed_rows"]
            dense, ctl = rows["dense"], rows.get(ctl_name)
            auc = (r["finetuned"] or r["direct"])["auc"]
            if ctl:
                d_ctl.append(auc - ctl["direct"]["auc"])
            d_dense.append(auc - dense["direct"]["auc"])
            fewer.append(dense["params_M"] / r["params_M"])
            if r.get("throughput") and dense.get("throughput"):
                speed.append(r["throughput"] / dense["throughput"])
        sp = f"{statistics.fmean(speed):.2f}x" if speed else "-"
        lines.append(
            f"| {model} | {row} | {len(items)} | {items[0]['r']['params_M']:.3f} "
            f"| {statistics.fmean(fewer):.2f}x | {sp} | {ms(d_ctl)} | {fmt_p(wilcoxon_p(d_ctl))} "
            f"| {ms(d_dense)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("kind", choices=("mec", "lowrank", "budget"))
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--vocab", default="criteo,criteo_raw", help="full-scale vocabularies for MEC ratios")
    p.add_argument("--plot", type=Path, help="MEC / budget: frontier PNG (MEC: first --vocab)")
    p.add_argument("--title", default="MEC frontier")
    args = p.parse_args(argv)
    records = load(args.files)
    if args.kind == "lowrank":
        print(lowrank_table(records))
        return
    if args.kind == "budget":
        import budget_summary

        summary = budget_summary.rows(records)
        print(budget_summary.table(summary) + "\n\n" + budget_summary.best_within(summary))
        if args.plot:
            budget_summary.plot(summary, args.plot)
            print(f"wrote {args.plot}", file=sys.stderr)
        return
    vocabs = [v for v in args.vocab.split(",") if v]
    table, rows = mec_table(records, vocabs)
    print(table)
    print(mec_paired(records, "mec", "weighted_kmeans"))
    print(mec_paired(records, "weighted_kmeans", "kmeans"))
    if args.plot:
        frontier_plot(rows, vocabs[0], args.plot, args.title)
        print(f"wrote {args.plot}", file=sys.stderr)


if __name__ == "__main__":
    main()
