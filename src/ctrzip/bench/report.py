"""``ctrzip report``: ``report.md`` and a self-contained ``report.html`` from bench results.

Per (data, model): test AUC against whole-model stored bytes (log axis; the Pareto front
marked; the dense model as a reference line), the same against bytes projected to the real
vocabulary (Criteo's or Avazu's, where the records have it), and CPU inference throughput
relative to the dense model measured in the same run. Then a table of every cell: mean +- sd
over seeds, paired deltas against the dense model of the same seed, a two-sided Wilcoxon p
(>= 3 seeds). For PQ methods whose records carry ``pq_bands``, a plot and a table of the
relative reconstruction error and code usage by popularity band. The HTML embeds the plots
as base64 PNG (no network access); the Markdown links the same PNGs, written to
``report_files/``.
"""

from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctrzip.bench.summary import is_dense, load, pareto, pq_band_summary, summarize

VOCAB_NAMES = {"criteo": "Criteo", "criteo_raw": "Criteo (raw)", "avazu": "Avazu"}


@dataclass
class Plot:
    """One figure: its file stem, alt text (also its caption) and PNG bytes."""

    stem: str
    alt: str
    png: bytes


def _fmt(v: Any, spec: str = ".4f", none: str = "-") -> str:
    return none if v is None else format(v, spec)


def _pm(mean: Any, sd: Any, spec: str = "+.4f") -> str:
    return "-" if mean is None else f"{mean:{spec}} ± {sd:.4f}"


def _mb(b: Any) -> str:
    return "-" if b is None else f"{b / 2**20:.3f}"


def _panels(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return sorted({(r["data"], r["model"]) for r in rows})


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _label(r: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """The method's label, prefixed by its suite where the panel holds several suites."""
    suites = {x["suite"] for x in rows if not is_dense(x)}
    return r["method"] if is_dense(r) or len(suites) < 2 else f"{r['suite']}: {r['method']}"


def frontier_plot(rows: list[dict[str, Any]], x: str, xlabel: str, title: str) -> bytes:
    """Test AUC (mean, sd as error bar) against ``x`` (log axis): every cell a marker, the
    Pareto front joined and circled, the dense model as a dashed reference line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # plotted in MB (2^20 bytes)
    pts = [{**r, x: r[x] / 2**20} for r in rows if r.get(x) is not None]
    dense = next((r for r in pts if is_dense(r)), None)
    others = [r for r in pts if not is_dense(r)]
    fig, ax = plt.subplots(figsize=(9.5, 5.0))
    cmap = plt.get_cmap("tab20")
    markers = "osD^v<>Ph*Xd"
    for i, r in enumerate(others):
        ax.errorbar(
            r[x], r["test_auc"], yerr=r["test_auc_sd"] or 0.0, fmt=markers[i % len(markers)],
            color=cmap(i % 20), ms=7, capsize=2, label=_label(r, pts),
        )  # fmt: skip
    if dense is not None:
        ax.axhline(dense["test_auc"], color="black", lw=1.0, ls="--", label="dense (reference)")
        ax.plot(dense[x], dense["test_auc"], "k*", ms=13, label=f"{dense['method']} {dense[x]:.3f} MB")
    front = pareto(pts, x)
    if front:
        ax.plot(
            [r[x] for r in front], [r["test_auc"] for r in front], ls=":", color="red", lw=1.2,
            marker="o", ms=15, mfc="none", mec="red", label="Pareto front",
        )  # fmt: skip
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter, LogLocator, ScalarFormatter

    # enough significant digits that ticks over a narrow range stay distinct
    lo, hi = min(r[x] for r in pts), max(r[x] for r in pts)
    digits = 3
    if hi > lo:
        digits = max(3, math.ceil(math.log10(hi / (hi - lo))) + 2)
    mb = FuncFormatter(lambda v, _: f"{v:.{digits}g}")
    ax.xaxis.set_major_locator(LogLocator(base=10))
    ax.xaxis.set_minor_locator(LogLocator(base=10, subs=(2.0, 5.0)))
    ax.xaxis.set_major_formatter(mb)
    ax.xaxis.set_minor_formatter(mb)
    yfmt = ScalarFormatter(useOffset=False)
    yfmt.set_scientific(False)
    ax.yaxis.set_major_formatter(yfmt)
    ax.set_xlabel(xlabel)
    n = max((r["seeds"] for r in pts), default=1)
    ax.set_ylabel(f"test AUC (mean of {n} seed{'s' if n > 1 else ''}; bars: sd)")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    return _png(fig)


def throughput_plot(rows: list[dict[str, Any]], title: str) -> bytes:
    """Horizontal bars: median CPU samples/s relative to the dense model timed in the same run
    (1 = as fast as dense), absolute samples/s written beside where recorded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rs = [r for r in rows if r.get("speed_vs_dense") is not None]
    fig, ax = plt.subplots(figsize=(9.5, 0.8 + 0.32 * max(len(rs), 1)))
    ys = list(range(len(rs)))
    ax.barh(ys, [r["speed_vs_dense"] for r in rs], color=["black" if is_dense(r) else "C0" for r in rs])
    for y, r in zip(ys, rs, strict=True):
        note = f" {r['speed_vs_dense']:.2f}x"
        if r.get("samples_per_s") is not None and not is_dense(r):
            note += f" ({r['samples_per_s']:,.0f} vs dense {r['dense_samples_per_s']:,.0f} samples/s)"
        elif r.get("samples_per_s") is not None:
            note += f" ({r['samples_per_s']:,.0f} samples/s)"
        ax.text(r["speed_vs_dense"], y, note, va="center", fontsize=8)
    ax.set_yticks(ys, [_label(r, rs) for r in rs], fontsize=8)
    ax.invert_yaxis()
    ax.axvline(1.0, color="black", lw=0.8, ls="--")
    ax.set_xlim(0, max([r["speed_vs_dense"] for r in rs] + [1.0]) * 1.45)
    ax.set_xlabel("CPU inference samples/s relative to dense (same run; batch of up to 10k rows)")
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="x")
    return _png(fig)


def plots(rows: list[dict[str, Any]]) -> list[Plot]:
    """Every figure of the report, in order (see the module docstring)."""
    out = []
    for data, model in _panels(rows):
        rs = [r for r in rows if (r["data"], r["model"]) == (data, model)]
        stem = f"{data}-{model}".replace("/", "_").replace(" ", "_")
        title = f"{model} on {data}"
        out.append(
            Plot(
                f"{stem}-bytes",
                f"test AUC vs whole-model bytes: {title}",
                frontier_plot(
                    rs,
                    "bytes",
                    "whole-model stored size (MB = 2^20 bytes, log scale)",
                    f"{title}: measured size",
                ),
            )
        )
        vocab = next((r["projected_vocab"] for r in rs if r.get("projected_bytes") is not None), None)
        if vocab is not None:
            name = VOCAB_NAMES.get(vocab, vocab)
            out.append(
                Plot(
                    f"{stem}-projected",
                    f"test AUC vs bytes projected to {name}'s vocabulary: {title}",
                    frontier_plot(
                        rs,
                        "projected_bytes",
                        f"whole-model size at {name}'s real vocabulary (projected; MB = 2^20 B, log scale)",
                        f"{title}: size projected to {name}'s vocabulary",
                    ),
                )
            )
        if any(r.get("speed_vs_dense") is not None for r in rs):
            out.append(
                Plot(
                    f"{stem}-throughput",
                    f"inference throughput vs dense: {title}",
                    throughput_plot(rs, f"{title}: CPU inference throughput"),
                )
            )
    return out


BAND_COLORS = {"head": "#d62728", "torso": "#ff7f0e", "tail": "#1f77b4"}


def pq_band_plot(rows: list[dict[str, Any]], title: str) -> bytes:
    """Two panels of grouped horizontal bars, one group per PQ method and one bar per
    popularity band: the count-weighted relative reconstruction error against the dense
    table (sd over seeds as error bar) and the fraction of codewords used."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bands = ("head", "torso", "tail")
    h = 0.8 / len(bands)
    fig, (ax_e, ax_u) = plt.subplots(
        1, 2, figsize=(11.0, 1.8 + 0.55 * max(len(rows), 1)), sharey=True, gridspec_kw={"wspace": 0.12}
    )
    ys = list(range(len(rows)))
    for j, band in enumerate(bands):
        off = [y - 0.4 + h * (j + 0.5) for y in ys]
        got = [r["bands"].get(band, {}) for r in rows]
        err = [g.get("rel_error") or math.nan for g in got]
        sd = [g.get("rel_error_sd") or 0.0 for g in got]
        use = [g.get("usage") if g.get("usage") is not None else math.nan for g in got]
        ax_e.barh(off, err, height=h, xerr=sd, color=BAND_COLORS[band], label=band, capsize=2)
        ax_u.barh(off, use, height=h, color=BAND_COLORS[band], label=band)
    ax_e.set_yticks(ys, [_label(r, rows) for r in rows], fontsize=8)
    ax_e.invert_yaxis()
    ax_e.set_xlim(left=0)
    ax_e.set_xlabel("relative reconstruction error\nΣ n‖e − ê‖² / Σ n‖e‖² (count-weighted, unitless)")
    ax_u.set_xlim(0, 1.0)
    ax_u.set_xlabel("codewords used\n(fraction of K, mean over sub-spaces)")
    for ax in (ax_e, ax_u):
        ax.grid(alpha=0.3, axis="x", which="both")
    ax_u.legend(title="popularity band", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(title)
    return _png(fig)


def pq_band_plots(rows: list[dict[str, Any]]) -> list[Plot]:
    """One ``pq_band_plot`` per (data, model) with PQ band diagnostics."""
    out = []
    for data, model in _panels(rows):
        rs = [r for r in rows if (r["data"], r["model"]) == (data, model)]
        stem = f"{data}-{model}".replace("/", "_").replace(" ", "_")
        title = f"{model} on {data}: PQ codes by popularity band"
        alt = f"PQ reconstruction error and code usage by band: {model} on {data}"
        out.append(Plot(f"{stem}-pq-bands", alt, pq_band_plot(rs, title)))
    return out


PQ_COLUMNS = (
    "data", "model", "suite", "method", "seeds", "band", "ids", "rel. reconstruction error (mean ± sd)",
    "codewords used", "perplexity", "collision rate",
)  # fmt: skip


def pq_table_rows(rows: list[dict[str, Any]]) -> list[list[str]]:
    """The PQ band table's text cells, in :data:`PQ_COLUMNS` order (one row per band)."""
    out = []
    for r in rows:
        for band, b in r["bands"].items():
            err = "-" if b["rel_error"] is None else f"{b['rel_error']:.4g} ± {b['rel_error_sd']:.2g}"
            out.append(
                [
                    r["data"], r["model"], r["suite"], r["method"], str(r["seeds"]), band,
                    _fmt(b["ids"], ",.0f"), err, _fmt(b["usage"], ".3f"), _fmt(b["perplexity"], ".1f"),
                    _fmt(b["collision_rate"], ".3f"),
                ]
            )  # fmt: skip
    return out


def _pq_intro(rows: list[dict[str, Any]]) -> str:
    head, tail = rows[0]["head_frac"], rows[0]["tail_frac"]
    return (
        f"Bands by training count over each field's quantized ids (padding and OOV excluded): head = "
        f"top {head:.0%}, tail = bottom {tail:.0%}, torso = the rest. Relative reconstruction error = "
        "Σ n‖e − ê‖² / Σ n‖e‖² over the band's ids (n: training count, e: the dense model's row, "
        "ê: the compressed model's), pooled over fields; codewords used (fraction of K, mean over "
        "sub-spaces), perplexity (exp of the code entropy) and collision rate (ids sharing their full "
        "code with another id of the same table) are means over fields weighted by the band's "
        "training count. Means over seeds."
    )


COLUMNS = (
    "data", "model", "suite", "method", "seeds", "MB", "x smaller", "projected x smaller",
    "test AUC (mean ± sd)", "Δ test AUC vs dense (mean ± sd)", "Wilcoxon p",
    "Δ test AUC vs control (mean ± sd; p)", "Δ test logloss (mean ± sd)",
    "samples/s", "speed vs dense", "lookup ms/batch", "method s",
)  # fmt: skip


def _vs_control(r: dict[str, Any]) -> str:
    if r["delta_vs_control"] is None:
        return "-"
    p = "" if r["p_vs_control"] is None else f"; p {r['p_vs_control']:.3f}"
    return f"{r['delta_vs_control']:+.4f} ± {r['delta_vs_control_sd']:.4f}{p} vs {r['control']}"


def table_rows(rows: list[dict[str, Any]]) -> list[list[str]]:
    """The cell table's text cells, in :data:`COLUMNS` order."""
    out = []
    for r in rows:
        proj = (
            "-" if r["projected_ratio"] is None else f"{r['projected_ratio']:.1f}x ({r['projected_vocab']})"
        )
        out.append(
            [
                r["data"], r["model"], r["suite"], r["method"], str(r["seeds"]), _mb(r["bytes"]),
                _fmt(r["ratio"], ".2f") + "x", proj, _pm(r["test_auc"], r["test_auc_sd"], ".4f"),
                _pm(r["delta_test_auc"], r["delta_test_auc_sd"]), _fmt(r["p"], ".3f"), _vs_control(r),
                _pm(r["delta_test_logloss"], r["delta_test_logloss_sd"]), _fmt(r["samples_per_s"], ",.0f"),
                _fmt(r["speed_vs_dense"], ".2f"),
                _fmt(None if r["lookup_s_per_batch"] is None else r["lookup_s_per_batch"] * 1e3, ".2f"),
                _fmt(r["method_seconds"], ".1f"),
            ]
        )  # fmt: skip
    return out


def _refused_rows(refused: list[dict[str, Any]]) -> list[list[str]]:
    return [
        [str(r.get(k, "")) for k in ("data", "model", "suite", "method", "seed", "refused")] for r in refused
    ]


def _md_table(head: tuple[str, ...] | list[str], body: list[list[str]]) -> str:
    esc = [[c.replace("|", "\\|") for c in row] for row in body]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    return "\n".join([*lines, *("| " + " | ".join(row) + " |" for row in esc)])


def _html_table(tid: str, head: tuple[str, ...] | list[str], body: list[list[str]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body)
    return f'<table id="{tid}"><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>'


INTRO = (
    "Each cell applies a method to a copy of the dense model trained for that seed; deltas are "
    "paired with that dense model and, for fine-tuning cells, with the dense model fine-tuned "
    "the same way (their control, spec/PROTOCOL.md 1). Sizes are the stored tensors "
    "(MB = 2^20 bytes). The projected size keeps each table's layout at the real vocabulary "
    "(the AUC is the one measured here). Throughput is relative to the dense model timed in the "
    "same run (interleaved rounds, fixed threads)."
)

CSS = (
    "body{font-family:system-ui,sans-serif;margin:2em;color:#222}"
    "table{border-collapse:collapse;font-size:13px;margin:1em 0}"
    "th,td{border:1px solid #ccc;padding:3px 6px;text-align:right}"
    "th{background:#f2f2f2}td:nth-child(-n+4),th:nth-child(-n+4){text-align:left}"
    "#refused td,#refused th{text-align:left}"
    "figure{margin:1.5em 0}img{max-width:100%}figcaption{font-size:13px;color:#555}"
)


def _figure(p: Plot) -> str:
    b64 = base64.b64encode(p.png).decode()
    alt = html.escape(p.alt, quote=True)
    img = f'<img src="data:image/png;base64,{b64}" alt="{alt}">'
    return f"<figure>{img}<figcaption>{alt}</figcaption></figure>"


def write_report(results: str | Path, out: str | Path | None = None) -> tuple[Path, Path]:
    """Write ``report.md``, ``report.html`` and ``report_files/*.png`` into ``out`` (default:
    the results folder, or the result file's folder); returns (md, html) paths.

    Raises:
        UserError: no result file, or one without a measured cell.
        DataFormatError: a line that is not JSON (file and line named).
    """
    from ctrzip.errors import UserError

    records, refused = load(results)
    if not records:
        raise UserError(f"{results}: no measured cell to report")
    results = Path(results)
    out = Path(out) if out is not None else (results if results.is_dir() else results.parent)
    files = out / "report_files"
    files.mkdir(parents=True, exist_ok=True)
    rows = summarize(records)
    figs = plots(rows)
    body = table_rows(rows)
    pq_rows = pq_band_summary(records)  # empty for records written before pq_bands existed
    pq_figs = pq_band_plots(pq_rows) if pq_rows else []
    pq_body = pq_table_rows(pq_rows)
    machines = sorted({str(r.get("machine", {}).get("cpu", "?")) for r in records})
    gits = sorted({str(r.get("git", "?")) for r in records})
    torches = sorted({str(r.get("torch", "?")) for r in records})
    prov = f"machine: {', '.join(machines)}; torch {', '.join(torches)}; git {', '.join(gits)}"

    md = ["# ctrzip benchmark report", "", INTRO, "", prov, ""]
    for p in figs:
        (files / f"{p.stem}.png").write_bytes(p.png)
        md += [f"![{p.alt}](report_files/{p.stem}.png)", ""]
    md += ["## Every cell", "", _md_table(COLUMNS, body), ""]
    if pq_rows:
        md += ["## PQ codes by popularity band", "", _pq_intro(pq_rows), ""]
        for p in pq_figs:
            (files / f"{p.stem}.png").write_bytes(p.png)
            md += [f"![{p.alt}](report_files/{p.stem}.png)", ""]
        md += [_md_table(PQ_COLUMNS, pq_body), ""]
    ref_head = ("data", "model", "suite", "method", "seed", "refused because")
    if refused:
        md += ["## Refused cells", "", _md_table(ref_head, _refused_rows(refused)), ""]
    md_path = out / "report.md"
    md_path.write_text("\n".join(md))

    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>ctrzip benchmark report</title>',
        f"<style>{CSS}</style></head><body>",
        "<h1>ctrzip benchmark report</h1>",
        f"<p>{html.escape(INTRO)}</p><p>{html.escape(prov)}</p>",
        "<h2>Plots</h2>",
    ]
    parts += [_figure(p) for p in figs]
    parts += ["<h2>Every cell</h2>", _html_table("cells", COLUMNS, body)]
    if pq_rows:
        parts += ["<h2>PQ codes by popularity band</h2>", f"<p>{html.escape(_pq_intro(pq_rows))}</p>"]
        parts += [_figure(p) for p in pq_figs]
        parts.append(_html_table("pq_bands", PQ_COLUMNS, pq_body))
    if refused:
        parts += ["<h2>Refused cells</h2>", _html_table("refused", ref_head, _refused_rows(refused))]
    parts.append("</body></html>")
    html_path = out / "report.html"
    html_path.write_text("\n".join(parts))
    return md_path, html_path
