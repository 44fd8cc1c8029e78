"""``ctrzip report`` from small recorded result files: every plot and table in the HTML, the
statistics against an independent computation, both record formats."""

from __future__ import annotations

import base64
import json
import math
import statistics
from html.parser import HTMLParser
from pathlib import Path

import pytest
from scipy.stats import wilcoxon
from typer.testing import CliRunner

from ctrzip.bench.report import COLUMNS, PQ_COLUMNS, write_report
from ctrzip.bench.summary import load, pareto, summarize
from ctrzip.cli.main import app

DATA = Path(__file__).resolve().parent / "data"
BENCH = DATA / "bench_results_small.jsonl"  # ctrzip bench: 2 models x 3 seeds, one cell refused
FRONTIER = DATA / "budget_frontier_small.jsonl"  # benchmarks/bench_budget.py records


class Page(HTMLParser):
    """Collects <img> attributes, tables (id -> rows of cell texts) and text."""

    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[dict[str, str | None]] = []
        self.tables: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a)
        if tag in ("script", "link") or (tag == "img" and not str(a.get("src", "")).startswith("data:")):
            self.external.append(tag)
        if tag == "table":
            self._table = str(a.get("id"))
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._table is not None:
            self.tables[self._table][-1].append("".join(self._cell))
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text())
    return page


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_report_html_has_every_plot_and_table(tmp_path: Path) -> None:
    md, html_path = write_report(BENCH, tmp_path)
    raw = _records(BENCH)
    measured = [r for r in raw if "refused" not in r]
    panels = sorted({(r["data"], r["model"]) for r in measured})
    page = _parse(html_path)
    assert page.external == []  # self-contained: no script, stylesheet or image link
    alts = [img["alt"] for img in page.imgs]
    expected = [f"test AUC vs whole-model bytes: {m} on {d}" for d, m in panels]
    expected += [f"inference throughput vs dense: {m} on {d}" for d, m in panels]
    assert sorted(alts) == sorted(expected)  # no projection: the tiny fields are not Criteo's
    for img in page.imgs:
        src = str(img["src"])
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    cells = page.tables["cells"]
    assert cells[0] == list(COLUMNS)
    groups = {
        (r["data"], r["model"], "dense" if r["method"] == "dense" else r["suite"], r["method"])
        for r in measured
    }
    assert sorted(tuple(row[:4]) for row in cells[1:]) == sorted(groups)
    refused = [r for r in raw if "refused" in r]
    assert refused and len(page.tables["refused"]) == 1 + len(refused)
    assert all(row[5].startswith("mec: nothing would be compressed") for row in page.tables["refused"][1:])
    text = md.read_text()
    for p in (tmp_path / "report_files").glob("*.png"):
        assert f"(report_files/{p.name})" in text
    assert len(list((tmp_path / "report_files").glob("*.png"))) == len(expected)


def test_summary_statistics_against_scipy_and_statistics() -> None:
    raw = [r for r in _records(BENCH) if "refused" not in r]
    rows = {(r["model"], r["method"]): r for r in summarize(load(BENCH)[0])}
    for model in ("deepfm", "pnn"):
        cell = [r for r in raw if r["model"] == model and r["method"] == "int4 rows + int8 linear"]
        assert len(cell) == 3
        deltas = [r["test_auc"] - r["dense_test_auc"] for r in cell]
        row = rows[(model, "int4 rows + int8 linear")]
        assert row["seeds"] == 3
        assert row["delta_test_auc"] == pytest.approx(statistics.fmean(deltas))
        assert row["delta_test_auc_sd"] == pytest.approx(statistics.stdev(deltas))
        assert row["p"] == pytest.approx(wilcoxon(deltas).pvalue)
        assert row["bytes"] == pytest.approx(statistics.fmean(r["bytes"] for r in cell))
        assert rows[(model, "dense")]["p"] is None


def test_pareto_front_is_the_undominated_set() -> None:
    rows = summarize(load(BENCH)[0])
    for model in ("deepfm", "pnn"):
        rs = [r for r in rows if r["model"] == model]
        front = pareto(rs)
        dominated = [
            r
            for r in rs
            if any(o["bytes"] <= r["bytes"] and o["test_auc"] > r["test_auc"] for o in rs if o is not r)
        ]
        assert {id(r) for r in front} == {id(r) for r in rs} - {id(r) for r in dominated}


def test_report_reads_bench_budget_records(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["report", str(FRONTIER), "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    page = _parse(tmp_path / "report.html")
    raw = _records(FRONTIER)
    panels = sorted({(r["data"], r["model"]) for r in raw})
    alts = sorted(str(img["alt"]) for img in page.imgs)
    expected = [f"test AUC vs whole-model bytes: {m} on {d}" for d, m in panels]
    expected += [f"test AUC vs bytes projected to Criteo's vocabulary: {m} on {d}" for d, m in panels]
    assert alts == sorted(expected)  # no _speed record in this file: no throughput plot
    body = {row[3]: row for row in page.tables["cells"][1:]}
    assert set(body) == {r["variant"] for r in raw}
    for r in raw:  # the projected ratio column is the file's own figure
        assert body[r["variant"]][7] == f"{r['projected_ratio']:.1f}x (criteo)"
        assert not math.isnan(r["test_auc"])


def test_report_errors_name_the_path(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["report", str(tmp_path / "missing")])
    assert res.exit_code == 2 and "missing: no result file" in res.output.replace("\n", "")
    (tmp_path / "folder").mkdir()
    res = runner.invoke(app, ["report", str(tmp_path / "folder")])
    assert res.exit_code == 2 and "folder/results.jsonl: no result file" in res.output.replace("\n", "")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    res = runner.invoke(app, ["report", str(empty)])
    assert res.exit_code == 2 and "no measured cell to report" in res.output


def test_dense_reference_found_by_role(tmp_path: Path) -> None:
    """A dense row under another label (the demo's "DeepFM (dense)") is still the reference."""
    raw = _records(BENCH)
    for r in raw:
        if r["method"] == "dense":
            r.update(method="DeepFM (dense)", role="dense")
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in raw))
    rows = summarize(load(path)[0])
    dense = [r for r in rows if r["suite"] == "dense"]
    assert sorted(r["model"] for r in dense) == ["deepfm", "pnn"]
    assert all(r["method"] == "DeepFM (dense)" and r["p"] is None for r in dense)
    assert rows[0]["suite"] == "dense"  # listed first in its panel


def test_deltas_against_the_named_control_cell(tmp_path: Path) -> None:
    """Cells naming a control are paired with it seed by seed (mean, sd, Wilcoxon p)."""
    import numpy as np

    rng = np.random.default_rng(0)
    recs = []
    for seed in range(4):
        dense = 0.75 + rng.normal(0, 0.001)
        control = dense + rng.normal(0, 0.001)
        method = control + rng.normal(-0.0005, 0.0005)
        for label, auc, extra in (
            ("dense", dense, {}),
            ("ft (control)", control, {}),
            ("m", method, {"control": "ft (control)"}),
        ):
            recs.append(
                {"data": "d", "model": "deepfm", "suite": "s", "method": label, "seed": seed, "test_auc": auc}
                | {"bytes": 100, "delta_test_auc": auc - dense, "method_seconds": 1.0}
                | extra
            )
    rows = {r["method"]: r for r in summarize(recs)}
    m = [r["test_auc"] for r in recs if r["method"] == "m"]
    c = [r["test_auc"] for r in recs if r["method"] == "ft (control)"]
    diff = np.array(m) - np.array(c)
    assert rows["m"]["control"] == "ft (control)"
    assert rows["m"]["delta_vs_control"] == pytest.approx(diff.mean())
    assert rows["m"]["delta_vs_control_sd"] == pytest.approx(diff.std(ddof=1))
    assert rows["m"]["p_vs_control"] == pytest.approx(wilcoxon(diff).pvalue)
    assert rows["ft (control)"]["delta_vs_control"] is None
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    write_report(path, tmp_path)
    cells = _parse(tmp_path / "report.html").tables["cells"]
    col = cells[0].index("Δ test AUC vs control (mean ± sd; p)")
    by = {row[3]: row[col] for row in cells[1:]}
    assert by["m"].startswith(f"{diff.mean():+.4f} ± {diff.std(ddof=1):.4f}; p ") and by["m"].endswith(
        "vs ft (control)"
    )


PQ = DATA / "bench_pq_bands_small.jsonl"  # ctrzip bench on 20k demo rows: PQ cells with pq_bands


def test_report_pq_band_plot_and_table(tmp_path: Path) -> None:
    _, html_path = write_report(PQ, tmp_path)
    page = _parse(html_path)
    raw = [r for r in _records(PQ) if "refused" not in r]
    with_bands = [r for r in raw if "pq_bands" in r]
    assert with_bands and any("pq_bands" not in r and r["method"] != "dense" for r in raw)
    panels = sorted({(r["data"], r["model"]) for r in with_bands})
    alts = [str(img["alt"]) for img in page.imgs]
    for d, m in panels:
        assert alts.count(f"PQ reconstruction error and code usage by band: {m} on {d}") == 1
    table = page.tables["pq_bands"]
    assert table[0] == list(PQ_COLUMNS)
    body = {(row[3], row[5]): row for row in table[1:]}
    methods = {r["method"] for r in with_bands}
    assert {k[0] for k in body} == methods  # only the PQ cells (int8 rows has no codes)
    for method in methods:
        rs = [r for r in with_bands if r["method"] == method]
        for band in ("head", "torso", "tail", "all"):
            errs = [r["pq_bands"]["bands"][band]["rel_error"] for r in rs]
            row = body[(method, band)]
            assert row[4] == str(len(rs))
            assert row[7] == f"{statistics.fmean(errs):.4g} ± {statistics.stdev(errs):.2g}"
            if band != "all":
                use = statistics.fmean(r["pq_bands"]["bands"][band]["usage"] for r in rs)
                assert row[8] == f"{use:.3f}"
            else:
                assert row[8] == "-"
    assert "## PQ codes by popularity band" in (tmp_path / "report.md").read_text()


def test_report_without_pq_bands_has_no_pq_section(tmp_path: Path) -> None:
    md, html_path = write_report(BENCH, tmp_path)  # written before pq_bands existed
    page = _parse(html_path)
    assert "pq_bands" not in page.tables
    assert not any("by band" in str(img["alt"]) for img in page.imgs)
    assert "PQ codes by popularity band" not in md.read_text()
