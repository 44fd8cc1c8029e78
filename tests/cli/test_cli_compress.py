"""``ctrzip compress`` reaches every method and MEC variant by name and prints a summary:
per-target decisions, validation AUC before / plug-in / final, bytes by component and the ratio."""

from __future__ import annotations

import dataclasses
import io
import json
import re
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

import ctrzip
import ctrzip.cli._common as common
import ctrzip.cli.compress as cli_compress
from ctrzip.cli.compress import (
    format_ratio,
    method_config,
    method_names,
    target_decisions,
    validation_metrics,
)
from ctrzip.cli.main import app
from ctrzip.compression import METHODS
from ctrzip.compression.mec.method import VARIANTS, MECConfig, PQConfig
from ctrzip.compression.mec.stage1 import CodeLearningConfig
from ctrzip.compression.sizes import size_report
from ctrzip.config import ConfigError
from ctrzip.data.synthetic import generate
from ctrzip.export import artifact_sizes, load

runner = CliRunner()


def test_every_registered_method_and_variant_has_a_name() -> None:
    names = method_names()
    assert set(names) == set(METHODS.keys()) | set(VARIANTS)
    assert len(names) == len(set(names))


@pytest.mark.parametrize("name", sorted(set(METHODS.keys()) | set(VARIANTS)))
def test_method_config_by_name(name: str) -> None:
    required = {"budget": {"mb": 5.0}}.get(name, {})  # a budget has no default goal
    cfg = method_config(name, dict(required))
    if name in METHODS:
        assert type(cfg) is METHODS.get(name).config_class
        assert cfg == METHODS.get(name).config_class(**required)
    else:  # a MEC variant: the preset's code-learning fields, everything else MEC's defaults
        assert type(cfg) is MECConfig
        expected = dataclasses.replace(CodeLearningConfig(), **VARIANTS[name])
        assert cfg.code_learning == expected
        assert dataclasses.replace(cfg, code_learning=CodeLearningConfig()) == MECConfig()


def test_variant_overrides_change_only_the_named_keys() -> None:
    cfg = method_config("rq", {"num_subspaces": 2, "code_learning": {"steps": 7}})
    assert (cfg.num_subspaces, cfg.code_learning.quantizer, cfg.code_learning.steps) == (2, "rq", 7)
    assert cfg.code_learning.alpha == CodeLearningConfig().alpha
    cfg = method_config("kmeans", {"code_learning": {"kmeans_iters": 3}})
    assert (cfg.code_learning.encoder, cfg.code_learning.weighting, cfg.code_learning.steps) == (
        "identity",
        "none",
        0,
    )


def test_pq_preset_survives_one_code_learning_knob() -> None:
    # issue 9 kind 4 example B: changing steps must not turn basic PQ into full MEC
    cfg = method_config("pq", {"code_learning": {"steps": 100}})
    assert isinstance(cfg, PQConfig)
    assert cfg.code_learning == dataclasses.replace(PQConfig().code_learning, steps=100)
    assert (cfg.code_learning.weighting, cfg.code_learning.alpha, cfg.code_learning.beta) == (
        "none",
        0.0,
        0.0,
    )


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as err:
        method_config("weighted-kmeans", {})
    msg = str(err.value)
    assert "did you mean 'weighted_kmeans'" in msg
    for name in method_names():
        assert name in msg


def test_help_lists_every_name() -> None:
    out = runner.invoke(app, ["compress", "--help"], env={"COLUMNS": "200"}).output
    words = set(re.findall(r"[a-z0-9_]+", out))
    assert set(method_names()) <= words


def test_target_decisions_prefers_the_report_contract() -> None:
    targets = [
        {
            "target": "mlp.layers.0",
            "kind": "linear",
            "action": "kept",
            "reason": "not smaller",
            "bytes_before": 10,
            "bytes_after": 10,
        }
    ]
    assert target_decisions({"targets": targets, "fields": {}, "skipped": {}}) == targets
    legacy = {"fields": {"C1": {"vocab": 9, "M": 2, "K": 4}}, "skipped": {"C2": "vocab 5 < min_vocab 9"}}
    rows = target_decisions(legacy)
    assert [(r["target"], r["action"]) for r in rows] == [
        ("embedding.tables.C1", "compressed"),
        ("embedding.tables.C2", "kept"),
    ]
    assert rows[1]["reason"] == "vocab 5 < min_vocab 9"
    assert target_decisions({"params_before": 3}) is None


def test_validation_metrics_prefers_the_report_contract() -> None:
    a, b, c = {"auc": 0.7}, {"auc": 0.6}, {"auc": 0.65}
    assert validation_metrics({"metrics": {"before": a, "direct": b, "final": c}, "base": {}}) == {
        "before": a,
        "direct": b,
        "final": c,
    }
    assert validation_metrics({"base": a, "plugin": b, "final": c}) == {"before": a, "direct": b, "final": c}
    assert validation_metrics({}) == {}


def test_format_ratio_two_decimals() -> None:
    assert format_ratio(1_331, 1_280) == "1.04x"
    assert format_ratio(168_072, 97_512) == "1.72x"
    assert format_ratio(5, 0) == "inf"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cmp")
    raw = root / "raw.txt"
    generate("criteo-like", raw, rows=3000, seed=5, progress=False)
    enc = root / "enc"
    res = runner.invoke(
        app, ["data", "encode", "--schema", "criteo", "--input", str(raw), "--out", str(enc), "--no-progress"]
    )
    assert res.exit_code == 0, res.output
    cfg = root / "run.yaml"
    cfg.write_text(
        json.dumps(
            {
                "dataset": str(enc),
                "model": {"name": "deepfm", "params": {"embedding_dim": 8, "mlp": [16, 16]}},
                "train": {"epochs": 1, "batch_size": 512, "progress": False, "max_steps": 3},
            }
        )
    )
    res = runner.invoke(app, ["train", "-c", str(cfg), "--out", str(root / "model")])
    assert res.exit_code == 0, res.output
    return root / "model", enc


def test_variant_on_the_command_line_with_summary(trained: tuple[Path, Path], tmp_path: Path) -> None:
    model, enc = trained
    out = tmp_path / "wk"
    sets = ["min_vocab=40", "codebook_size=8", "plugin_per_field=false", "protocol=none"]
    args = ["compress", "--method", "weighted_kmeans", "-m", str(model), "-d", str(enc), "-o", str(out)]
    res = runner.invoke(app, [*args, *(x for s in sets for x in ("--set", s))], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    manifest = json.loads((out / "manifest.json").read_text())
    entry = manifest["compression_log"][-1]
    assert entry["method"] == "mec"
    assert {k: entry["config"]["code_learning"][k] for k in VARIANTS["weighted_kmeans"]} == VARIANTS[
        "weighted_kmeans"
    ]
    report = entry["report"]
    text = res.output
    # per-target decisions: every compressed field and every kept one with its reason
    compressed = sorted(report["fields"])
    assert compressed and f"targets: {len(compressed)} compressed, {len(report['skipped'])} kept" in text
    for name in compressed:
        assert re.search(rf"embedding\.tables\.{name}\s.*compressed", text)
    for name, reason in report["skipped"].items():
        assert re.search(rf"embedding\.tables\.{name}\s.*kept.*{re.escape(reason)}", text)
    # validation AUC before, plug-in and final, as in the report
    for label, key in (("before", "base"), ("plug-in", "plugin"), ("final", "final")):
        assert re.search(rf"{label}.*{report[key]['auc']:.4f}", text), label
    # bytes by component and the ratio, from the saved artifacts
    before, after = size_report(load(model)), size_report(load(out))
    for comp, c in before["components"].items():
        a = after["components"][comp]["bytes"]
        assert re.search(rf"{comp}\s.*{c['bytes']:,}\s.*{a:,}\s.*{c['bytes'] / a:.2f}x", text), comp
    ratio = before["total"]["bytes"] / after["total"]["bytes"]
    assert f"total size ratio vs original: {ratio:.2f}x" in text
    # the stored size every report counts, beside the folder's bytes on disk
    sizes = artifact_sizes(out)
    assert (
        sizes["tensor_bytes"]
        == after["total"]["bytes"]
        < sizes["disk_bytes"]
        == sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    )
    line = f"({sizes['tensor_bytes']:,} B of tensors, {sizes['disk_bytes']:,} B on disk)"
    assert line in " ".join(text.split())


def test_decision_table_keeps_target_names_whole_at_80_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    narrow = Console(width=80, record=True, file=io.StringIO())
    monkeypatch.setattr(common, "console", narrow)
    monkeypatch.setattr(cli_compress, "console", narrow)
    names = [f"embedding.tables.field_with_a_long_name_{i}" for i in range(3)]
    reason = "vocab 17 < min_vocab 300, a reason long enough to need wrapping in a narrow terminal"
    rows = [
        {
            "target": n,
            "kind": "table",
            "action": "kept",
            "reason": reason,
            "bytes_before": 1_156,
            "bytes_after": 1_156,
        }
        for n in names
    ]
    cli_compress.print_decisions(rows)
    text = narrow.export_text()
    assert all(n in text for n in names), text


def test_nothing_compressed_is_refused(trained: tuple[Path, Path], tmp_path: Path) -> None:
    model, enc = trained
    out = tmp_path / "none"
    args = ["compress", "--method", "mec", "-m", str(model), "-d", str(enc), "-o", str(out)]
    res = runner.invoke(app, [*args, "--set", "protocol=none", "--set", "plugin_per_field=false"])
    assert res.exit_code == 2, res.output
    errors = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "nothing would be compressed" in errors[0]
    assert "min_vocab 10000" in res.output  # the reason of each kept field is shown
    assert not out.exists()


def test_file_section_the_protocol_ignores_is_noted(trained: tuple[Path, Path], tmp_path: Path) -> None:
    model, enc = trained
    shipped = Path(__file__).resolve().parents[2] / "configs" / "compress" / "mec.yaml"
    args = ["compress", "--method", "mec", "-c", str(shipped), "-m", str(model), "-d", str(enc)]
    res = runner.invoke(
        app, [*args, "-o", str(tmp_path / "o"), "--set", "protocol=none"], env={"COLUMNS": "300"}
    )
    assert f"note: {shipped}: finetune is not used because protocol is 'none'" in res.output
    res = runner.invoke(
        app, [*args, "-o", str(tmp_path / "o"), "--set", "protocol=none", "--set", "finetune.lr=1e-3"]
    )
    errors = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert res.exit_code == 2 and errors == [
        "error: --set finetune.lr: ignored because protocol is 'none'; drop it or change that setting"
    ]


@pytest.mark.parametrize(
    ("name", "data", "key", "why"),
    [
        ("mec", {"protocol": "none"}, "finetune", "protocol is 'none'"),
        ("mec", {"protocol": "finetune"}, "retrain", "protocol is 'finetune'"),
        ("no_reg", {"fields": ["C1"]}, "min_vocab", "fields is given"),
        ("lowrank", {"mlp": False, "embedding": True}, "rank", "mlp is false"),
        ("lowrank", {}, "embedding_rank", "embedding is false"),
        ("svd", {"mlp": False, "embedding": True}, "mlp_targets", "mlp is false"),
        ("lowrank", {"finetune_epochs": 0}, "lr", "finetune_epochs is 0"),
        ("tt", {"fields": ["C1"]}, "min_vocab", "fields is given"),
        ("tt", {"finetune_epochs": 0}, "seed", "finetune_epochs is 0"),
        ("mec", {"protocol": "retrain"}, "retrain.keep_start", "they apply to finetune only"),
        ("weighted_kmeans", {}, "code_learning.beta", "code_learning.steps is 0"),
        ("mec", {"code_learning": {"steps": 0}}, "code_learning.lr", "code_learning.steps is 0"),
        ("rq", {}, "code_learning.aq_icm_iters", "code_learning.quantizer is 'rq'"),
        ("qr", {"fields": ["C1"]}, "min_vocab", "fields is given"),
        ("prune", {"finetune_epochs": 0}, "lr", "finetune_epochs is 0"),
        ("hashing", {"hash": "identity"}, "hash_seed", "hash is 'identity'"),
        ("dhe", {"init": "random"}, "distill_steps", "init is 'random'"),
        (
            "cce",
            {"init": "random", "recluster_rounds": 0},
            "kmeans_iters",
            "init is 'random' and recluster_rounds is 0",
        ),
    ],
)
def test_ignored_settings(name: str, data: dict, key: str, why: str) -> None:
    from ctrzip.cli.compress import check_ignored_settings, ignored_settings

    cfg = method_config(name, data)
    assert why in ignored_settings(cfg)[key]
    with pytest.raises(ConfigError, match=f"--set {re.escape(key)}: ignored because {re.escape(why)}"):
        check_ignored_settings(cfg, data, [f"{key}=1"], name)
    check_ignored_settings(cfg, {**data, key: 1}, [], name)  # from a file: a note, not an error


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("mec", {"retrain", "code_learning.aq_icm_iters"}),
        ("pq", {"retrain", "code_learning.aq_icm_iters"}),
        ("aq", {"retrain"}),
        ("tt", set()),
        ("hashing", set()),
        ("dhe", set()),
        ("svd", {"embedding_rank", "embedding_fields"}),
        (
            "lowrank",
            {"embedding_rank", "embedding_fields", "embedding_variance", "embedding_form", "embedding_stats"},
        ),
    ],
)
def test_unused_keys_of_the_defaults(name: str, expected: set[str]) -> None:
    from ctrzip.cli.compress import ignored_settings

    assert set(ignored_settings(method_config(name, {}))) == expected


def test_budget_mb_on_the_command_line(trained: tuple[Path, Path], tmp_path: Path) -> None:
    from ctrzip.compression.sizes import size_report
    from ctrzip.export import artifact_sizes

    model, enc = trained
    total = size_report(ctrzip.load(model))["total"]["bytes"]
    budget = 0.5 * total / 2**20
    out = tmp_path / "b"
    args = ["compress", "-m", str(model), "-d", str(enc), "-o", str(out), "--budget-mb", str(budget)]
    res = runner.invoke(app, [*args, "--set", "calib_rows=1000"])
    assert res.exit_code == 0, res.output
    assert artifact_sizes(out)["tensor_bytes"] <= budget * 2**20
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["compression_log"][-1]["method"] == "budget"
    assert manifest["compression_log"][-1]["config"]["mb"] == pytest.approx(budget)
    # a goal and another method contradict each other; no goal and no method is refused too
    for extra in (["--method", "mec"], []):
        bad = [a for a in args if a not in ("--budget-mb", str(budget))] + extra
        res = runner.invoke(app, [*bad, "--overwrite"] + (["--budget-mb", "1"] if extra else []))
        assert res.exit_code == 2
        assert ("drop --method mec" if extra else "give --method NAME") in res.output


def test_metric_tables_show_the_row_count_as_a_whole_number(monkeypatch: pytest.MonkeyPatch) -> None:
    wide = Console(width=120, record=True, file=io.StringIO())
    monkeypatch.setattr(common, "console", wide)
    common.print_table("metrics", [{"split": "valid", "auc": 0.74361, "logloss": 0.5, "n": 2006.0}])
    cells = [c.strip() for c in wide.export_text().splitlines()[-2].split("│")[1:-1]]
    assert cells == ["valid", "0.7436", "0.5000", "2,006"]


def test_numbers_stay_whole_when_a_long_label_wraps_at_80_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    narrow = Console(width=80, record=True, file=io.StringIO())
    monkeypatch.setattr(common, "console", narrow)
    label = "DeepFM + lowrank(mlp 32, emb 16->4) + 2x1 ep fine-tune and a longer description"
    common.print_table("demo", [{"model": label, "test AUC": 0.75123, "logloss": 0.48, "MB": 2.4123}])
    text = narrow.export_text()
    assert all(cell in text for cell in ("0.7512", "0.4800", "2.4123"))  # never cut to "0…"
    assert "…" not in text
