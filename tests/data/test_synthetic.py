"""Synthetic criteo-like / avazu-like generator: hashing, popularity, formats, determinism, teacher."""

from __future__ import annotations

import csv
import hashlib
import json
import re

import numpy as np
import pytest
import typer
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from ctrzip.data.synth.hashing import fmix32, splitmix64
from ctrzip.data.synth.layouts import AVAZU_COLUMNS
from ctrzip.data.synth.popularity import PowerLaw, refit
from ctrzip.data.synth.sampler import calibration_rng, draw_labels, sample_rows
from ctrzip.data.synth.writer import hex_tokens
from ctrzip.data.synthetic import TeacherConfig, build_plan, generate, get_layout, rank_auc, register_synth

FAST = TeacherConfig(calibration_rows=4000)
MASK64 = (1 << 64) - 1
HEX8 = re.compile(r"^[0-9a-f]{8}$")


def _splitmix64_ref(x: int) -> int:
    """Scalar splitmix64 (Steele, Lea & Flood 2014) with Python ints."""
    z = (x + 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def _fmix32_ref(x: int) -> int:
    x ^= x >> 16
    x = (x * 0x85EBCA6B) & 0xFFFFFFFF
    x ^= x >> 13
    x = (x * 0xC2B2AE35) & 0xFFFFFFFF
    return x ^ (x >> 16)


@pytest.fixture(scope="module")
def criteo_file(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "criteo.tsv"
    report = generate("criteo-like", out, 20_000, seed=7, chunk_rows=6_000, progress=False, teacher=FAST)
    return out, report


@pytest.fixture(scope="module")
def avazu_file(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "avazu.csv"
    report = generate("avazu-like", out, 20_000, seed=7, chunk_rows=6_000, progress=False, teacher=FAST)
    return out, report


def test_splitmix64_matches_scalar_reference():
    xs = [0, 1, 2, 12345, 0x9E3779B97F4A7C15, MASK64, 1 << 63, 987654321987654321]
    got = splitmix64(np.array(xs, dtype=np.uint64))
    assert [int(v) for v in got] == [_splitmix64_ref(x) for x in xs]


def test_fmix32_reference_and_tokens_are_distinct():
    xs = np.array([0, 1, 7, 0xFFFFFFFF, 2_030_000_000], dtype=np.uint32)
    assert [int(v) for v in fmix32(xs)] == [_fmix32_ref(int(x)) for x in xs]
    ranks = np.arange(0, 200_000)
    tokens = hex_tokens(ranks, np.uint32(0xDEADBEEF)).view("S8").ravel()
    assert len(np.unique(tokens)) == len(ranks)  # a bijection: no two ranks share a raw value
    assert tokens[5].decode() == f"{_fmix32_ref(5 ^ 0xDEADBEEF):08x}"


@pytest.mark.parametrize("n,s", [(1000, 1.1), (50, 0.5), (2_030_000_000, 1.06), (300, 1.0)])
def test_power_law_head_matches_direct_computation(n, s):
    law = PowerLaw(n, s)
    u = np.random.default_rng(0).random(400_000)
    ranks = law.sample(u)
    assert ranks.min() >= 1 and ranks.max() <= n

    def integral(a, b):  # of x^-s over [a, b], computed directly
        return np.log(b / a) if s == 1.0 else (b ** (1 - s) - a ** (1 - s)) / (1 - s)

    z = integral(1.0, n + 1.0)
    for r in (1, 2, 3):
        p = integral(r, r + 1.0) / z
        freq = np.mean(ranks == r)
        assert abs(freq - p) < 4 * np.sqrt(p * (1 - p) / len(u)) + 1e-9
        assert law.pmf(np.array([r]))[0] == pytest.approx(p, rel=1e-9)
    # Zipf-like: top-id frequency ratio follows the law's ratio
    assert np.mean(ranks == 1) / np.mean(ranks == 2) == pytest.approx(
        integral(1, 2) / integral(2, 3), rel=0.05
    )


def test_expected_counts_match_simulation():
    law = PowerLaw(1_000_000, 1.1)
    ranks = law.sample(np.random.default_rng(1).random(300_000))
    counts = np.bincount(ranks)
    assert law.expected_distinct(300_000) == pytest.approx(np.count_nonzero(counts), rel=0.02)
    assert law.expected_survivors(300_000, 10) == pytest.approx(np.sum(counts >= 10), rel=0.04)


def test_refit_hits_scaled_targets():
    law = refit(48_049.0, 2_570.0, 966_000.0, 772_800.0, 10)
    assert law.expected_distinct(966_000.0) == pytest.approx(48_049, rel=0.01)
    assert law.expected_survivors(772_800.0, 10) == pytest.approx(2_570, rel=0.01)
    with pytest.raises(ValueError, match="survivors"):
        refit(100.0, 200.0, 1e4, 1e4, 10)


def test_same_seed_same_bytes_any_worker_count(tmp_path, criteo_file):
    out, _ = criteo_file
    again = generate(
        "criteo-like", tmp_path / "a.tsv", 20_000, seed=7, chunk_rows=6_000, progress=False, teacher=FAST
    )
    two = generate(
        "criteo-like",
        tmp_path / "b.tsv",
        20_000,
        seed=7,
        workers=2,
        chunk_rows=6_000,
        progress=False,
        teacher=FAST,
    )
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    assert hashlib.sha256((tmp_path / "a.tsv").read_bytes()).hexdigest() == digest
    assert hashlib.sha256((tmp_path / "b.tsv").read_bytes()).hexdigest() == digest
    assert again.positive_rate == two.positive_rate
    other = generate(
        "criteo-like", tmp_path / "c.tsv", 20_000, seed=8, chunk_rows=6_000, progress=False, teacher=FAST
    )
    assert hashlib.sha256((tmp_path / "c.tsv").read_bytes()).hexdigest() != digest
    assert other.rows == 20_000


def test_criteo_format_missing_values_and_positive_rate(criteo_file):
    out, report = criteo_file
    with open(out, newline="") as fh:
        rows = list(csv.reader(fh, delimiter="\t"))
    assert len(rows) == report.rows == 20_000
    assert all(len(r) == 40 for r in rows)
    labels = np.array([int(r[0]) for r in rows])
    assert set(labels) <= {0, 1}
    assert labels.mean() == pytest.approx(report.positive_rate)
    assert 0.22 < labels.mean() < 0.28
    for r in rows[:2000]:
        assert all(c == "" or re.fullmatch(r"-?\d+", c) for c in r[1:14])
        assert all(c == "" or HEX8.match(c) for c in r[14:])
    missing = np.array([[c == "" for c in r[1:]] for r in rows]).mean(axis=0)  # I1..I13, C1..C26
    layout = get_layout("criteo-like")
    names = [f.name for f in layout.numeric] + [f.name for f in layout.categorical]
    for name, rate in zip(names, missing, strict=True):
        expected = layout.special_rate(name)
        assert abs(rate - expected) < 4 * np.sqrt(max(expected, 1e-3) / 20_000) + 1e-3, name
    assert missing[names.index("C22")] > 0.7 and missing[names.index("C1")] == 0
    # numeric tails: zero inflation and values far above the median
    i5 = np.array([int(r[5]) for r in rows if r[5]])
    assert i5.max() > 50 * np.median(i5)
    for column in (1, 12):  # I1, I12: zero-inflated
        values = np.array([int(r[column]) for r in rows if r[column]])
        assert np.mean(values == 0) > 0.2


def test_avazu_format_header_hours_and_positive_rate(avazu_file):
    out, report = avazu_file
    with open(out, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        rows = list(reader)
    assert tuple(header) == AVAZU_COLUMNS
    assert len(rows) == 20_000 and all(len(r) == 24 for r in rows)
    col = {name: i for i, name in enumerate(header)}
    clicks = np.array([int(r[col["click"]]) for r in rows])
    assert 0.14 < clicks.mean() < 0.20
    hours = np.array([int(r[col["hour"]]) for r in rows])
    day, hh = hours // 100 % 100, hours % 100
    assert hours.min() == 14102100 and hours.max() == 14103023
    assert set(np.unique(day)) == set(range(21, 31)) and hh.max() == 23
    assert np.all(np.diff(hours) >= 0)  # time-ordered like the real log
    assert len({r[col["id"]] for r in rows}) == len(rows)
    for name in ("site_id", "app_id", "device_id", "device_ip", "device_model"):
        assert all(HEX8.match(r[col[name]]) for r in rows[:2000]), name
    top_device = max(np.unique([r[col["device_id"]] for r in rows], return_counts=True)[1])
    assert top_device / len(rows) > 0.8  # the dominant anonymous device id


def test_teacher_oracle_auc_well_above_chance():
    plan, oracle_auc = build_plan("criteo-like", 100_000, seed=3, teacher=FAST)
    rng = calibration_rng(99)
    sample = sample_rows(plan, rng, rng.integers(0, plan.rows, 20_000))
    labels, oracle = draw_labels(plan, rng, sample)
    auc = roc_auc_score(labels, oracle)
    assert auc > 0.8 and oracle_auc > 0.8
    assert abs(auc - oracle_auc) < 0.03
    assert rank_auc(labels, oracle) == pytest.approx(auc, abs=1e-12)
    ties = np.round(oracle)  # many ties: the rank AUC must average them like sklearn
    assert rank_auc(labels, ties) == pytest.approx(roc_auc_score(labels, ties), abs=1e-12)


def test_report_and_sidecar(criteo_file):
    out, report = criteo_file
    meta = json.loads(out.with_name(out.name + ".json").read_text())
    assert meta["report"]["rows"] == 20_000 and meta["report"]["seed"] == 7
    assert meta["teacher"]["calibration_rows"] == 4000
    assert set(meta["laws"]) == {f"C{i}" for i in range(1, 27)}
    assert report.rows_per_s > 0 and report.bytes == out.stat().st_size


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="unknown synthetic kind"):
        generate("criteo", tmp_path / "x", 10, progress=False)
    with pytest.raises(ValueError, match="rows"):
        generate("criteo-like", tmp_path / "x", 0, progress=False)
    with pytest.raises(ValueError, match="positive_rate"):
        TeacherConfig(positive_rate=1.5)
    with pytest.raises(ValueError, match="popularity"):
        get_layout("criteo-like").laws(1000, "zipf")


def test_cli_synth(tmp_path):
    app = typer.Typer()
    register_synth(app)
    app.command("noop")(lambda: None)  # keep typer in multi-command mode
    out = tmp_path / "s.csv"
    result = CliRunner().invoke(
        app,
        [
            "synth",
            "avazu-like",
            "--rows",
            "3000",
            "--out",
            str(out),
            "--no-progress",
            "--positive-rate",
            "0.3",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["rows"] == 3000 and 0.25 < report["positive_rate"] < 0.35
    assert len(out.read_text().splitlines()) == 3001
    bad = CliRunner().invoke(app, ["synth", "movielens", "--out", str(out)])
    assert bad.exit_code != 0
    # an existing --out is replaced only when asked; a non-file (a folder, a device) never
    before = out.read_bytes()
    args = ["synth", "avazu-like", "--rows", "1000", "--no-progress", "--out"]
    again = CliRunner().invoke(app, [*args, str(out)], env={"COLUMNS": "300"})
    assert again.exit_code == 2 and "exists; pass --overwrite" in again.output and out.read_bytes() == before
    assert CliRunner().invoke(app, [*args, str(out), "--overwrite"]).exit_code == 0
    assert len(out.read_text().splitlines()) == 1001
    folder = CliRunner().invoke(app, [*args, str(tmp_path), "--overwrite"], env={"COLUMNS": "300"})
    assert folder.exit_code == 2 and "is not a regular file" in folder.output and tmp_path.is_dir()
