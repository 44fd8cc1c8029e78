"""Shared driver of the factorized methods (``lowrank``, ``svd``, ``tt``).

Each step (MLP layers, then embedding tables) is: swap modules -> [fold + parity check]
-> evaluate ("direct") -> fine-tune with the shared guarded routine
(``compression.finetune.guarded_finetune``: the direct model is kept unless training beats
it on validation) -> evaluate ("finetuned"), as in the paper's pipeline (section 3.3 end,
appendix A.2). Subclasses only say how to build the replacement modules.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import torch
from torch import Tensor, nn

from ctrzip.compression.api import CompressionMethod, TargetDecision
from ctrzip.compression.finetune import guarded_finetune, split_or_error
from ctrzip.compression.lowrank.fold import fold_into_consumer
from ctrzip.compression.shrink import (
    compressed,
    decide,
    fold_delta_bytes,
    lowrank_linear_bytes,
    lowrank_table_bytes,
    module_bytes,
    not_smaller,
    require_some,
)
from ctrzip.compression.sizes import stored_bytes
from ctrzip.config import ConfigError
from ctrzip.data.batch import Batch
from ctrzip.data.dataset import EncodedDataset
from ctrzip.data.loader import resolve_device
from ctrzip.data.schema import FeatureSchema
from ctrzip.errors import CompressionError
from ctrzip.models.base import CTRModel

FOLD_TOLERANCE = 1e-5


@dataclass
class StepOptions:
    """Options shared by the factorized methods (evaluation and fine-tuning after each step).

    Args:
        finetune_epochs: epochs of ``Trainer.fit`` after each step (0 = no fine-tuning).
        lr: fine-tuning Adam lr; set it to the base model's *last* lr (e.g. 1e-4 after decay).
        finetune_batch_size: rows per fine-tuning step.
        embedding_l2: fine-tuning L2 on embedding parameters (``TrainConfig.embedding_l2``).
        weight_l2: fine-tuning L2 on other parameters.
        batch_size: rows per calibration / evaluation forward.
        eval_split: split evaluated "direct" and "fine-tuned", and that guards the fine-tune
            (None = no evaluation; then ``keep_start`` must be off to fine-tune).
        keep_start: keep the direct model (bit-identical) unless fine-tuning beats it on
            ``eval_split`` (as MEC's fine-tune does).
        device: ``auto``, ``cpu``, ``cuda``.
        seed: fine-tuning seed.
        progress: progress bars.
    """

    finetune_epochs: int = 1
    lr: float = 1e-4
    finetune_batch_size: int = 4096
    embedding_l2: float = 0.0
    weight_l2: float = 0.0
    batch_size: int = 8192
    eval_split: str | None = "valid"
    keep_start: bool = True
    device: str = "auto"
    seed: int = 2024
    progress: bool = False

    def __post_init__(self) -> None:
        if self.finetune_epochs < 0:
            raise ConfigError("finetune_epochs must be >= 0")
        if self.lr <= 0:
            raise ConfigError("lr must be > 0")
        if self.batch_size < 1 or self.finetune_batch_size < 1:
            raise ConfigError("batch sizes must be >= 1")
        if self.keep_start and self.finetune_epochs > 0 and self.eval_split is None:
            raise ConfigError(
                "keep_start compares the fine-tuned model with the direct one on eval_split: "
                "set eval_split, or keep_start: false, or finetune_epochs: 0"
            )


def check_rank(name: str, rank: int | None, variance: float | None) -> None:
    """Exactly one of a rank >= 1 or a variance fraction in (0, 1]."""
    if rank is not None and variance is not None:
        raise ConfigError(f"set either {name} rank or variance, not both")
    if rank is None and variance is None:
        raise ConfigError(f"set {name} rank or variance")
    if rank is not None and rank < 1:
        raise ConfigError(f"{name} rank must be >= 1, got {rank}")
    if variance is not None and not 0.0 < variance <= 1.0:
        raise ConfigError(f"{name} variance must be in (0, 1], got {variance}")


def count_params(model: nn.Module) -> int:
    """All parameter elements (the paper's "Param. (M)" x 1e6)."""
    return sum(p.numel() for p in model.parameters())


def probe_batch(schema: FeatureSchema, n: int, device: torch.device, seed: int = 0) -> Batch:
    """Random valid ids/values, for parity checks that need no data."""
    g = torch.Generator().manual_seed(seed)
    cols = [torch.randint(0, f.vocab_size, (n, f.max_len), generator=g) for f in schema.sparse_fields]
    sparse = torch.cat(cols, 1) if cols else torch.zeros(n, 0, dtype=torch.int64)
    dense = torch.randn(n, len(schema.dense_fields), generator=g)
    return Batch(sparse, dense, torch.zeros(n)).to(device)


@torch.no_grad()
def _logits(model: nn.Module, batch: Batch) -> Tensor:
    was = model.training
    model.eval()
    try:
        return model(batch).double()
    finally:
        model.train(was)


def fold_checked(model: CTRModel, device: torch.device, seed: int = 0) -> dict[str, Any]:
    """Fold into ``model.embedding_consumer()`` and verify logits are unchanged.

    Raises:
        RuntimeError: folded and unfolded logits differ by more than ``FOLD_TOLERANCE``
            (relative to max(1, |logit|)): the consumer's column layout is not what the model declares.
    """
    consumer = model.embedding_consumer()
    if consumer is None:
        return {"folded": False, "reason": "model declares no embedding consumer"}
    batch = probe_batch(model.schema, 256, device, seed)
    before = _logits(model, batch)
    rep = fold_into_consumer(model, consumer)
    if rep["folded"]:
        diff = float((_logits(model, batch) - before).abs().max())
        rep["max_abs_diff"] = diff
        if diff > FOLD_TOLERANCE * max(1.0, float(before.abs().max())):
            raise RuntimeError(f"folding into {consumer} changed logits by {diff:.3g}")
    return rep


def fold_width(model: CTRModel) -> int | None:
    """Output width of the Linear a fold would replace (as ``fold_into_consumer`` finds it),
    or None when the model has no foldable consumer."""
    fqn = model.embedding_consumer()
    if fqn is None:
        return None
    consumer = model.get_submodule(fqn)
    if hasattr(consumer, "down") and isinstance(consumer.down, nn.Linear):  # LowRankLinear
        consumer = consumer.down
    return consumer.out_features if isinstance(consumer, nn.Linear) else None


def linear_decision(fqn: str, linear: nn.Linear, k: int, down_bias: bool) -> TargetDecision:
    """Keep or factorize one Linear at rank ``k`` (``LowRankLinear`` bytes against the Linear's)."""
    n, m = linear.in_features, linear.out_features
    before = module_bytes(linear)
    after = lowrank_linear_bytes(n, m, k, down_bias, linear.weight.element_size())
    if k >= min(n, m):
        reason: str | None = (
            f"rank {k} >= width {min(n, m)} of this {n} -> {m} layer, so its factorized form is never "
            f"smaller ({after:,} B >= {before:,} B)"
        )
    else:
        reason = not_smaller(f"LowRankLinear rank {k}", before, after)
    return decide(fqn, "linear", before, after, reason)


def table_decision(
    name: str, table: Any, k: int, setting: str, fold_out: int | None, foldable: bool
) -> TargetDecision:
    """Keep or factorize one table at rank ``k``.

    With a fold, the target is the table plus its ``D`` input columns of the first layer
    (``fold_out x D``), which become ``k + 1`` columns: both byte figures include that slice,
    so neither can be negative and their difference is the model's real change.
    """
    v, d = table.num_embeddings, table.embedding_dim
    before = module_bytes(table)
    item = next((p.element_size() for p in table.parameters()), 4)
    after = lowrank_table_bytes(v, d, k, item)
    folded = fold_out is not None and foldable
    if folded:  # the field's slice of the first layer counts on both sides: D columns -> k + 1
        before += fold_out * d * item  # type: ignore[operator]
        after += fold_out * d * item + fold_delta_bytes(fold_out, d, k, item)  # type: ignore[arg-type, operator]
    form = "LowRankTable" + (" with its folded first-layer columns" if folded else "")
    if k >= d:
        reason: str | None = (
            f"{setting} {k} >= embedding dim {d}: {form} is never smaller ({after:,} B >= {before:,} B)"
        )
    else:
        reason = not_smaller(f"{form} rank {k}", before, after)
    return decide(f"embedding.tables.{name}", "table", before, after, reason)


C = TypeVar("C", bound=StepOptions)


class FactorizedMethod(CompressionMethod[C], Generic[C]):
    """Runs ``compress_mlp`` and/or ``compress_embeddings`` with evaluation and fine-tuning."""

    def compress_mlp(self, model: CTRModel, data: EncodedDataset | None) -> dict[str, Any]:
        raise NotImplementedError

    def compress_embeddings(self, model: CTRModel, data: EncodedDataset | None) -> dict[str, Any]:
        raise NotImplementedError

    def steps(self) -> list[str]:
        """Which of ``mlp`` / ``embedding`` this config runs, in order."""
        return [s for s in ("mlp", "embedding") if getattr(self.config, s, False)]

    def plan(self, step: str, model: CTRModel) -> list[TargetDecision] | None:
        """The step's decisions known before any work (fixed ranks), or None when the rank is
        chosen from data. Raises ``CompressionError`` for a listed target that cannot shrink."""
        return None

    def hint(self) -> str:
        """The settings to change when nothing would shrink (end of the error message)."""
        return "lower the rank settings"

    def decided(self, decision: TargetDecision) -> bool:
        """Record a decision (``self.decisions``); True when the target is to be compressed."""
        self.decisions.append(decision)
        return decision["action"] == "compressed"

    def run(self, model: CTRModel, data: EncodedDataset | None) -> dict[str, Any]:
        cfg = self.config
        plans = [self.plan(step, model) for step in self.steps()]
        if all(p is not None for p in plans):  # nothing can shrink: refuse before any work
            require_some(self.key, [d for p in plans for d in p or []], self.hint())
        check_data(self.key, cfg, data)
        device = resolve_device(cfg.device)
        model.to(device)
        self.decisions: list[TargetDecision] = []
        report: dict[str, Any] = {
            "params_before": count_params(model),
            "bytes": {"before": stored_bytes(model)},
        }
        before_metrics = _evaluate(model, data, cfg, device)
        for step in self.steps():
            t0 = time.perf_counter()
            first, before = len(self.decisions), stored_bytes(model)
            if step == "mlp":
                rep = {"layers": self.compress_mlp(model, data)}
            else:
                rep = self.compress_embeddings(model, data)
            model.to(device)
            rep["params"] = count_params(model)
            rep["bytes"] = {"before": before, "after": stored_bytes(model)}
            rep["compress_s"] = round(time.perf_counter() - t0, 3)
            if compressed(self.decisions[first:]):
                rep.update(evaluate_and_finetune(model, data, cfg, device))
            else:  # the model is unchanged: nothing to evaluate or fine-tune
                rep["skipped"] = "no target of this step would be smaller"
            report[step] = rep
        require_some(self.key, self.decisions, self.hint())  # rank chosen from data: model untouched
        report["params_after"] = count_params(model)
        report["bytes"]["after"] = stored_bytes(model)
        report["targets"] = self.decisions
        ran = [report[s] for s in self.steps() if "skipped" not in report[s]]
        last = ran[-1] if ran else {}  # the model as the last step that changed it left it
        direct = last.get("direct")
        report["metrics"] = {
            "before": before_metrics,
            "direct": direct,
            "final": last.get("finetuned", direct),
        }
        return report


def check_data(method: str, cfg: StepOptions, data: EncodedDataset | None) -> None:
    """Refuse, before any module is swapped, a fine-tune or evaluation the data cannot serve.

    Raises:
        CompressionError: no dataset while ``finetune_epochs`` or ``eval_split`` asks for one, or
            the dataset lacks the ``train`` split (fine-tuning) or ``eval_split``.
    """
    if data is None:
        needs = [f"finetune_epochs={cfg.finetune_epochs}"] if cfg.finetune_epochs > 0 else []
        needs += [f"eval_split={cfg.eval_split!r}"] if cfg.eval_split is not None else []
        if needs:
            raise CompressionError(
                f"{method}: {' and '.join(needs)} need an encoded dataset: pass one to compress(), "
                "or set finetune_epochs: 0 and eval_split: null"
            )
        return
    if cfg.finetune_epochs > 0:
        split_or_error(data, "train", f"{method} fine-tunes on it (finetune_epochs: 0 skips that)")
    if cfg.eval_split is not None:
        split_or_error(data, cfg.eval_split, f"{method} evaluates on it (eval_split)")


def _evaluate(
    model: CTRModel, data: EncodedDataset | None, cfg: StepOptions, device: torch.device
) -> dict[str, float] | None:
    from ctrzip.compression.sharded import sharded_evaluate

    if data is None or cfg.eval_split is None:
        return None
    split = split_or_error(data, cfg.eval_split, "eval_split names it")
    return sharded_evaluate(model, split, batch_size=cfg.batch_size, device=device)


def evaluate_and_finetune(
    model: CTRModel, data: EncodedDataset | None, cfg: StepOptions, device: torch.device
) -> dict[str, Any]:
    """Evaluate ("direct"), fine-tune with the shared guarded routine, evaluate again
    ("finetuned"; equal to "direct" when the direct model was kept)."""
    from ctrzip.train import TrainConfig

    check_data("fine-tune", cfg, data)
    out: dict[str, Any] = {}
    if data is None:
        return out
    if cfg.finetune_epochs == 0:
        if cfg.eval_split is not None:
            out["direct"] = _evaluate(model, data, cfg, device)
        return out
    tc = TrainConfig(
        epochs=cfg.finetune_epochs,
        batch_size=cfg.finetune_batch_size,
        lr=cfg.lr,
        embedding_l2=cfg.embedding_l2,
        weight_l2=cfg.weight_l2,
        early_stop_patience=cfg.finetune_epochs,
        seed=cfg.seed,
        device=str(device),
        out_dir=None,
        resume=False,
        progress=cfg.progress,
    )
    res = guarded_finetune(
        model, data, tc, valid_split=cfg.eval_split, keep_start=cfg.keep_start, eval_batch_size=cfg.batch_size
    )
    out["finetune"] = {
        "epochs": cfg.finetune_epochs,
        "lr": cfg.lr,
        "steps": res.history.steps if res.history is not None else 0,
        "kept_start": res.kept_start,
    }
    if res.direct is not None:
        out["direct"], out["finetuned"] = res.direct, res.final
    return out


def finetune_control(model: CTRModel, config: StepOptions, data: EncodedDataset) -> dict[str, Any]:
    """The same-protocol control: a copy of the dense model fine-tuned exactly like a step.

    PROTOCOL.md point 1: CTR models overfit on extra epochs, so compressed models are
    compared with the dense model given the same extra training.
    """
    return evaluate_and_finetune(copy.deepcopy(model), data, config, resolve_device(config.device))
