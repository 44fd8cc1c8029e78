"""``ctrzip compress --method NAME --model DIR --data DIR --out DIR``.

``NAME`` is any registered method (``mec``, ``pq``, ``lowrank``, ``svd``, ``tt``, the table
baselines ``hashing``, ``qr``, ``mixed_dim``, ``dhe``, ``prune``, ``cce``, ...) or a MEC
variant of ``ctrzip.compression.mec.method.VARIANTS`` (``weighted_kmeans``, ``rq``, ``aq``, ...).
After compressing, the console shows what was done to each target, the validation AUC before,
right after the swap (plug-in/direct) and after the fine-tune, bytes by component and the ratio.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import shutil
from pathlib import Path
from typing import Any, Optional

import typer

from ctrzip import distributed as dist
from ctrzip.cli._common import checked_schema, checked_split, console, print_table, read_config, saved_line
from ctrzip.cli._distributed import device_of, main_rank_only, torchrun_group
from ctrzip.compression import METHODS
from ctrzip.compression.mec.method import VARIANTS, MECConfig
from ctrzip.config import ConfigError, from_dict
from ctrzip.errors import CompressionError


def method_names() -> list[str]:
    """Every name ``--method`` accepts: registered methods, then MEC variants not registered."""
    return [*METHODS.keys(), *(v for v in VARIANTS if v not in METHODS)]


def method_config(name: str, data: dict[str, Any], source: str | None = None) -> Any:
    """The config of method or MEC variant ``name`` with the keys of ``data`` set on its preset.

    Raises:
        ConfigError: unknown name (the message lists the valid ones) or a bad key/value.
    """
    if name in METHODS:
        return from_dict(METHODS.get(name).config_class, data, source=source or name)
    if name in VARIANTS:
        return from_dict(MECConfig, data, source=source or name, base=MECConfig.variant(name))
    close = difflib.get_close_matches(name, method_names(), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"--method {name}: unknown method{hint} (valid: {', '.join(method_names())})")


def register(app: typer.Typer) -> None:
    app.command("compress")(compress_cmd)


def compress_cmd(
    method: Optional[str] = typer.Option(  # noqa: UP045
        None, "--method", help=f"method or MEC variant: {', '.join(method_names())}"
    ),
    model: Path = typer.Option(..., "--model", "-m", help="trained model artifact folder"),
    data: Path = typer.Option(..., "--data", "-d", help="encoded dataset folder"),
    out: Path = typer.Option(..., "--out", "-o", help="folder for the compressed artifact"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="method config YAML"),  # noqa: UP045
    set_: Optional[list[str]] = typer.Option(None, "--set", help="override, e.g. num_subspaces=4"),  # noqa: UP045
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing artifact at --out"),
    budget_mb: Optional[float] = typer.Option(  # noqa: UP045
        None, "--budget-mb", help="whole-model size goal in MB (2^20 B): method budget with mb=..."
    ),
    max_auc_loss: Optional[float] = typer.Option(  # noqa: UP045
        None, "--max-auc-loss", help="smallest model within this validation-AUC loss: method budget"
    ),
) -> None:
    """Compress a trained model with a method, evaluate it and save the compressed artifact.

    --out must not exist yet (or be empty); an existing artifact there (the --model itself
    included) is replaced only with --overwrite. --budget-mb B (or --max-auc-loss L) is
    --method budget --set mb=B (max_auc_loss=L). Under ``torchrun --nproc-per-node N`` the
    calibration and validation passes are shared out over the ranks (results equal to one
    process's) and rank 0 alone prints and writes the artifact.
    """
    from ctrzip.export import check_destination

    if not overwrite and out.resolve() == model.resolve():
        raise ConfigError(
            f"--out {out} is the --model artifact; pass --overwrite to replace the trained model "
            "with the compressed one, or choose another --out"
        )
    check_destination(out, overwrite)  # before any work: never replace an artifact unasked
    set_ = list(set_ or [])
    goals = {"mb": budget_mb, "max_auc_loss": max_auc_loss}
    if any(v is not None for v in goals.values()):
        if method not in (None, "budget"):
            raise ConfigError(f"--budget-mb/--max-auc-loss select method budget; drop --method {method}")
        method = "budget"
        set_ += [f"{k}={v}" for k, v in goals.items() if v is not None]
    if method is None:
        raise ConfigError("give --method NAME, or a goal: --budget-mb MB or --max-auc-loss L")
    raw = read_config(config, set_)
    cfg = method_config(method, raw, source=str(config) if config else method)
    check_ignored_settings(cfg, raw, list(set_ or []), str(config) if config else method)
    with torchrun_group(device_of(cfg)):
        dist.barrier()  # every rank has checked --out before rank 0 can write it
        _compress(main_rank_only(cfg), method, model, data, out, overwrite)


def _compress(cfg: Any, method: str, model: Path, data: Path, out: Path, overwrite: bool) -> None:
    """Load, compress, report and (rank 0) save: the body of ``compress_cmd``."""
    from ctrzip.compression import compress
    from ctrzip.compression.sharded import sharded_evaluate as evaluate
    from ctrzip.compression.sizes import size_report
    from ctrzip.data.dataset import EncodedDataset
    from ctrzip.export import load
    from ctrzip.export.encoder_files import of_dataset

    net = load(model)
    ds = EncodedDataset.open(data)
    checked_schema(net, ds, model, data)
    for name in ("train", "valid", "test"):
        if name in ds.splits:
            checked_split(ds, name, data)
    before = size_report(net)
    metrics_before = evaluate(net, ds["test"]) if "test" in ds.splits else {}
    compress(net, cfg, ds)
    report = net.compression_log[-1]["report"]
    after = size_report(net)
    decisions = target_decisions(report)
    print_decisions(decisions)
    print_validation(report)
    metrics_after = evaluate(net, ds["test"]) if "test" in ds.splits else {}
    rows = [{"model": "original", **metrics_before}, {"model": f"+ {method}", **metrics_after}]
    print_table("test metrics", rows)
    print_bytes(before, after)
    if decisions is not None and not any(d["action"] == "compressed" for d in decisions):
        raise CompressionError(
            f"--method {method}: nothing was compressed (every target kept, reasons above); "
            f"no artifact written to {out}"
        )
    # the --model was read into memory: replacing it is safe; the encoder comes from --data
    if dist.is_main():
        save_whole(out, net, overwrite=overwrite, encoder=of_dataset(ds))
    dist.barrier()  # no rank reports success before the artifact is there
    console.print(saved_line("compressed artifact", out))


def save_whole(out: Path, net: Any, *, overwrite: bool, encoder: Any) -> Path:
    """``ctrzip.export.save`` so that a crash never leaves a half-written artifact at ``out``.

    A new (or empty) ``out`` is written as a hidden sibling folder and renamed into place in
    one step; replacing an existing artifact (``--overwrite``) keeps ``save``'s file-by-file
    atomic replacement, so other files in that folder are left as they are.

    Raises:
        ArtifactError: as ``save``, naming ``out`` (and its files), never the temporary folder.
    """
    from ctrzip.export import ArtifactError, save

    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        return save(out, net, overwrite=overwrite, encoder=encoder)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        save(tmp, net, encoder=encoder)
        os.replace(tmp, out)  # an empty folder at out is replaced too
    except ArtifactError as err:  # name the folder the user asked for, not the temporary one
        raise ArtifactError(str(err).replace(str(tmp), str(out))) from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def ignored_settings(cfg: Any) -> dict[str, str]:
    """Keys of ``cfg`` (dotted for nested ones) that its other settings make unused, with why.

    MEC: ``finetune``/``retrain`` outside that ``protocol`` (and ``retrain``'s finetune-only
    keys), ``min_vocab`` beside ``fields``, the training knobs of ``code_learning`` when
    ``code_learning.steps`` is 0 (k-means only), ``aq_icm_iters`` without AQ. Low-rank/SVD: the
    MLP keys when ``mlp`` is false, the embedding keys when ``embedding`` is false. Every
    fine-tuning method: the fine-tune keys when ``finetune_epochs`` is 0. TT and the table
    baselines: ``min_vocab`` beside ``fields``; ``hashing``: ``hash_seed`` with the identity hash;
    ``dhe``: the ``distill_*`` keys with ``init: random``; ``cce``: ``kmeans_iters`` when nothing
    is clustered.
    """
    from ctrzip.compression.baselines import CCEConfig, DHEConfig, HashingConfig
    from ctrzip.compression.baselines.common import BaselineConfig
    from ctrzip.compression.lowrank.factorized import StepOptions
    from ctrzip.compression.lowrank.feature_mimicking import FactorizedConfig
    from ctrzip.compression.lowrank.tt import TTConfig

    out: dict[str, str] = {}
    if isinstance(cfg, MECConfig):
        out |= {s: f"protocol is {cfg.protocol!r}" for s in ("finetune", "retrain") if cfg.protocol != s}
        if cfg.protocol == "retrain":
            out |= dict.fromkeys(
                ("retrain.freeze_codebooks", "retrain.keep_start"), "they apply to finetune only"
            )
        cl = cfg.code_learning
        if getattr(cl, "steps", None) == 0:
            keys = ("alpha", "beta", "commitment", "tau", "tau_assign", "num_negatives", "rho")
            keys += ("batch_size", "lr", "dead_code_steps", "select_every")
            out |= {f"code_learning.{k}": "code_learning.steps is 0 (k-means only)" for k in keys}
        if cl.quantizer != "aq":
            out["code_learning.aq_icm_iters"] = f"code_learning.quantizer is {cl.quantizer!r}"
    if isinstance(cfg, (MECConfig, TTConfig, BaselineConfig)) and cfg.fields is not None:
        out["min_vocab"] = "fields is given (the listed fields are used)"
    if isinstance(cfg, HashingConfig) and cfg.hash == "identity":
        out["hash_seed"] = "hash is 'identity' (hash_seed draws the universal hash)"
    if isinstance(cfg, CCEConfig) and cfg.init == "random" and cfg.recluster_rounds == 0:
        out["kmeans_iters"] = "init is 'random' and recluster_rounds is 0 (nothing is clustered)"
    if isinstance(cfg, DHEConfig) and cfg.init == "random":
        out |= dict.fromkeys(
            ("distill_steps", "distill_lr", "distill_batch_size"), "init is 'random' (no distillation)"
        )
    if isinstance(cfg, FactorizedConfig):
        if not cfg.mlp:
            keys = ("rank", "variance", "mlp_targets", "relu_between", "bias_form")
            out |= dict.fromkeys(keys, "mlp is false")
        if not cfg.embedding:
            keys = ("embedding_rank", "embedding_variance", "embedding_fields", "embedding_form")
            out |= dict.fromkeys((*keys, "embedding_stats"), "embedding is false")
    if isinstance(cfg, StepOptions) and cfg.finetune_epochs == 0:
        keys = ("lr", "finetune_batch_size", "embedding_l2", "weight_l2", "seed")
        out |= dict.fromkeys(keys, "finetune_epochs is 0")
    if isinstance(cfg, BaselineConfig) and (cfg.init == "random" or isinstance(cfg, CCEConfig)):
        out.pop("seed", None)  # it also seeds the random start or the k-means
    return {k: v for k, v in out.items() if _has_field(cfg, k)}


def _has_field(cfg: Any, dotted: str) -> bool:
    """Whether ``cfg`` has the (nested) dataclass field ``a.b``."""
    for part in dotted.split("."):
        if not dataclasses.is_dataclass(cfg) or part not in {f.name for f in dataclasses.fields(cfg)}:
            return False
        cfg = getattr(cfg, part)
    return True


def _given(raw: dict[str, Any], dotted: str) -> bool:
    """Whether the (nested) key ``a.b`` is present in the config mapping ``raw``."""
    node: Any = raw
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def check_ignored_settings(cfg: Any, raw: dict[str, Any], sets: list[str], source: str) -> None:
    """Refuse a ``--set`` that the chosen config would ignore (``ignored_settings``); print a
    note for one that comes from the config file (a shipped YAML carries a ``finetune``
    section: ``--set protocol=none`` on it notes rather than refuses).

    Raises:
        ConfigError: an ignored key given with ``--set``.
    """
    typed = [s.split("=", 1)[0].strip() for s in sets]
    for key, why in ignored_settings(cfg).items():
        hit = next((t for t in typed if t == key or t.startswith(key + ".")), None)
        if hit is not None:
            raise ConfigError(f"--set {hit}: ignored because {why}; drop it or change that setting")
        if _given(raw, key):
            console.print(f"note: {source}: {key} is not used because {why}")


def target_decisions(report: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Per-target decisions of a method's report: ``report["targets"]`` (the report contract,
    ``TargetDecision``), else MEC's ``fields``/``skipped``; None when the report has neither."""
    if "targets" in report:
        return list(report["targets"])
    if "fields" in report and "skipped" in report:
        rows = [
            {
                "target": f"embedding.tables.{name}",
                "kind": "table",
                "action": "compressed",
                "reason": f"V={f.get('vocab')}, M={f.get('M')}, K={f.get('K')}",
            }
            for name, f in report["fields"].items()
        ]
        rows += [
            {"target": f"embedding.tables.{name}", "kind": "table", "action": "kept", "reason": reason}
            for name, reason in report["skipped"].items()
        ]
        return rows
    return None


def print_decisions(decisions: list[dict[str, Any]] | None) -> None:
    """One row per target: compressed or kept, why, and its bytes when the report gives them."""
    if decisions is None:
        console.print("targets: this method's report does not list per-target decisions")
        return
    n = sum(d["action"] == "compressed" for d in decisions)
    console.print(f"targets: {n} compressed, {len(decisions) - n} kept")
    rows = []
    for d in decisions:
        row = {
            "target": d["target"],
            "kind": d.get("kind", ""),
            "action": d["action"],
            "reason": d.get("reason", ""),
        }
        if "bytes_before" in d:
            row |= {"bytes before": f"{d['bytes_before']:,}", "bytes after": f"{d['bytes_after']:,}"}
        rows.append(row)
    print_table("per-target decisions", rows)


def validation_metrics(report: dict[str, Any]) -> dict[str, dict[str, float] | None]:
    """``{"before", "direct", "final"}`` validation metrics: ``report["metrics"]`` (the report
    contract, ``MetricsReport``), else MEC's ``base``/``plugin``/``final``; missing ones omitted."""
    if "metrics" in report:
        return {k: v for k, v in report["metrics"].items() if k in ("before", "direct", "final")}
    legacy = {"before": "base", "direct": "plugin", "final": "final"}
    return {k: report[old] for k, old in legacy.items() if old in report}


def print_validation(report: dict[str, Any]) -> None:
    metrics = validation_metrics(report)
    labels = {"before": "before", "direct": "plug-in (direct)", "final": "final (after fine-tune)"}
    rows = [
        {"stage": labels[k], "valid AUC": m.get("auc"), "valid logloss": m.get("logloss")}
        for k, m in metrics.items()
        if m
    ]
    if rows:
        print_table("validation", rows)
    else:
        console.print("validation: this method reported no validation metrics")


def format_ratio(before: int, after: int) -> str:
    """``before / after`` with two decimals, e.g. ``1.04x``."""
    return f"{before / after:.2f}x" if after else "inf"


def print_bytes(before: dict[str, Any], after: dict[str, Any]) -> None:
    """Bytes by component before and after, and each ratio (``size_report`` outputs)."""
    rows = [
        {
            "component": name,
            "bytes before": f"{c['bytes']:,}",
            "bytes after": f"{after['components'][name]['bytes']:,}",
            "ratio": format_ratio(c["bytes"], after["components"][name]["bytes"]),
        }
        for name, c in before["components"].items()
    ]
    b, a = before["total"]["bytes"], after["total"]["bytes"]
    rows.append(
        {"component": "total", "bytes before": f"{b:,}", "bytes after": f"{a:,}", "ratio": format_ratio(b, a)}
    )
    print_table("bytes", rows)
    console.print(f"total size ratio vs original: {format_ratio(b, a)}")
