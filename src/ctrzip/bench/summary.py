"""Result records -> one summary row per cell: means, sd, paired deltas, Wilcoxon p, Pareto front.

Two record formats are read: ``ctrzip bench``'s (``method``, ``suite``, ``settings_hash``...)
and ``benchmarks/bench_budget.py``'s (``variant``, ``bytes``, ``projected_ratio``, a ``_speed``
record per model holding ``speed_vs_dense_batch10k``). The latter do not name the vocabulary
they were projected to: that script projects to Criteo's unless run with ``--vocab avazu``
(and an ``avazu`` data tag), so a data tag containing ``avazu`` means Avazu, else Criteo.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from ctrzip.bench.records import read_records
from ctrzip.errors import UserError

Key = tuple[str, str, str, str]  # data, model, suite, method


def results_file(path: str | Path) -> Path:
    """``path/results.jsonl`` for a folder, ``path`` for a file.

    Raises:
        UserError: neither exists.
    """
    path = Path(path)
    file = path / "results.jsonl" if path.is_dir() else path
    if not file.is_file():
        raise UserError(f"{file}: no result file (give a ctrzip bench --out folder or a .jsonl file)")
    return file


def normalize(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(measured, refused)`` records in ``ctrzip bench``'s field names."""
    speed: dict[tuple[Any, ...], dict[str, float]] = {}
    for r in records:
        if r.get("variant") == "_speed":
            speed[(r["data"], r["model"], r["seed"])] = r["speed_vs_dense_batch10k"]
    out, refused = [], []
    for r in records:
        if "variant" in r:
            if r["variant"].startswith("_"):
                continue
            r = dict(r, method=r["variant"], suite=r.get("suite", "budget"))
            if "projected_bytes" in r:
                r["projected_vocab"] = "avazu" if "avazu" in str(r["data"]).lower() else "criteo"
                r["dense_projected_bytes"] = r.get("projected_bytes_before")
            r.setdefault("method_seconds", r.get("seconds"))
            r.setdefault("dense_bytes", r.get("bytes_before"))
            sp = speed.get((r["data"], r["model"], r["seed"]), {})
            if r["method"] in sp:
                r["speed_vs_dense"] = sp[r["method"]]
        if "refused" in r:
            refused.append(r)
        else:
            out.append(r)
    # logloss deltas where the source did not record them (bench_budget): against its dense row
    dense = {(r["data"], r["model"], r["seed"]): r for r in out if is_dense(r)}
    for r in out:
        d = dense.get((r["data"], r["model"], r["seed"]))
        if "delta_test_logloss" not in r and d is not None and "test_logloss" in r:
            r["delta_test_logloss"] = r["test_logloss"] - d["test_logloss"]
    return out, refused


def load(path: str | Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Read and normalize a result file or folder (see :func:`results_file`)."""
    return normalize(read_records(results_file(path)))


def is_dense(r: dict[str, Any]) -> bool:
    """Whether a record or row is the dense reference (``role`` or the label ``dense``)."""
    return r.get("role") == "dense" or r["method"] == "dense"


def wilcoxon_p(deltas: list[float]) -> float | None:
    """Two-sided Wilcoxon signed-rank p of paired deltas (scipy); None below 3 pairs or when
    every delta is 0 (the test is undefined)."""
    from scipy.stats import wilcoxon

    if len(deltas) < 3 or all(d == 0 for d in deltas):
        return None
    return float(wilcoxon(deltas, alternative="two-sided").pvalue)


def _mean_sd(xs: list[float]) -> tuple[float | None, float | None]:
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not xs:
        return None, None
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def summarize(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (data, model, suite, method), sorted; ``dense`` first within (data, model).

    Each row: ``seeds``, means of ``bytes``, ``projected_bytes`` (None if not projected),
    ``ratio``, ``projected_ratio``; ``test_auc``/``test_auc_sd``; paired deltas
    ``delta_test_auc`` (+ ``_sd``, ``p``: Wilcoxon over seeds), ``delta_test_logloss`` (+ ``_sd``);
    ``delta_vs_control`` (+ ``_sd``, ``p_vs_control``): paired with the ``control`` cell of
    the same suite and seed where the record names one (None otherwise); medians of
    ``samples_per_s``, ``speed_vs_dense`` and ``lookup_s_per_batch``; mean
    ``method_seconds``.
    """
    groups: dict[Key, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        suite = "dense" if is_dense(r) else r.get("suite", "")
        groups[(r["data"], r["model"], suite, r["method"])].append(r)
    auc = {
        (r["data"], r["model"], r.get("suite", ""), r["method"], r["seed"]): r["test_auc"] for r in records
    }
    rows = []
    for (data, model, suite, method), rs in groups.items():
        row: dict[str, Any] = {"data": data, "model": model, "suite": suite, "method": method}
        row["role"] = "dense" if suite == "dense" else "cell"
        row["seeds"] = len(rs)
        for k in ("bytes", "projected_bytes", "ratio", "projected_ratio", "method_seconds"):
            row[k] = _mean_sd([r.get(k) for r in rs])[0]
        row["projected_vocab"] = next((r["projected_vocab"] for r in rs if "projected_vocab" in r), None)
        row["test_auc"], row["test_auc_sd"] = _mean_sd([r["test_auc"] for r in rs])
        for k in ("delta_test_auc", "delta_test_logloss", "delta_valid_auc"):
            row[k], row[f"{k}_sd"] = _mean_sd([r.get(k) for r in rs])
        deltas = [r["delta_test_auc"] for r in rs if r.get("delta_test_auc") is not None]
        row["p"] = None if suite == "dense" else wilcoxon_p(deltas)
        # paired with the same-protocol control cell where the suite names one
        row["control"] = next((r["control"] for r in rs if r.get("control")), None)
        vs = [
            r["test_auc"] - auc[(data, model, suite, row["control"], r["seed"])]
            for r in rs
            if (data, model, suite, row["control"], r["seed"]) in auc
        ]
        row["delta_vs_control"], row["delta_vs_control_sd"] = _mean_sd(vs)
        row["p_vs_control"] = wilcoxon_p(vs)
        for k in ("samples_per_s", "dense_samples_per_s", "speed_vs_dense", "lookup_s_per_batch"):
            xs = [r[k] for r in rs if r.get(k) is not None]
            row[k] = statistics.median(xs) if xs else None
        rows.append(row)
    rows.sort(key=lambda r: (r["data"], r["model"], not is_dense(r), r["suite"], r["bytes"] or 0))
    return rows


def pareto(rows: list[dict[str, Any]], x: str = "bytes") -> list[dict[str, Any]]:
    """The rows no other row beats on both ``x`` (smaller) and mean test AUC (higher), by ``x``."""
    pts = sorted((r for r in rows if r.get(x) is not None), key=lambda r: (r[x], -r["test_auc"]))
    front, best = [], -math.inf
    for r in pts:
        if r["test_auc"] > best:
            front.append(r)
            best = r["test_auc"]
    return front


PQ_BANDS = ("head", "torso", "tail", "all")


def pq_band_summary(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (data, model, suite, method) whose records carry ``pq_bands``
    (``bench.pq_bands``; older records without it are left out), sorted.

    Each row: ``data``, ``model``, ``suite``, ``method``, ``seeds`` (records with the
    field), ``head_frac``, ``tail_frac`` and ``bands``: band (``head``, ``torso``, ``tail``,
    ``all``) -> mean over seeds of ``ids``, ``rel_error`` (+ ``rel_error_sd``), ``usage``,
    ``perplexity``, ``collision_rate`` (None where a band lacks the value: ``all`` has no
    usage).
    """
    groups: dict[Key, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        if r.get("pq_bands"):
            groups[(r["data"], r["model"], r.get("suite", ""), r["method"])].append(r)
    rows = []
    for (data, model, suite, method), rs in sorted(groups.items()):
        bands: dict[str, dict[str, Any]] = {}
        for band in PQ_BANDS:
            got = [r["pq_bands"]["bands"][band] for r in rs if band in r["pq_bands"]["bands"]]
            if not got:
                continue
            b: dict[str, Any] = {}
            for k in ("ids", "rel_error", "usage", "perplexity", "collision_rate"):
                b[k], sd = _mean_sd([g.get(k) for g in got])
                if k == "rel_error":
                    b["rel_error_sd"] = sd
            bands[band] = b
        first = rs[0]["pq_bands"]
        rows.append(
            {
                "data": data, "model": model, "suite": suite, "method": method, "seeds": len(rs),
                "head_frac": first["head_frac"], "tail_frac": first["tail_frac"], "bands": bands,
            }
        )  # fmt: skip
    return rows
