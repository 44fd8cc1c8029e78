"""Whole-model compression to a memory budget or an AUC-loss cap (method ``budget``).

Steps: (1) every target gets candidate representations with exact bytes (tables: float,
row-wise fp16/int8/int4/int2, count-weighted k-means PQ at several (M, K); first-order
tables: float or fp16; the dense network: float, int8 weights, or feature-mimicking low rank
at a few output-variance shares with int8 factors, ``network.py``); (2) a cheap sensitivity:
each table option's predicted validation-AUC loss is ``k_f * error``, where ``error`` is the
count-weighted reconstruction error and ``k_f`` is calibrated by one plug-in validation pass
of the field's most aggressive option (on ``calib_rows`` validation rows); the first-order
group is measured directly, and so is every form of the network (one pass each); (3) the
exact bytes-vs-loss frontier (``allocate.frontier``) gives the plan with the least predicted
loss within ``mb``, or the smallest within ``max_auc_loss``; (4) the plan is applied and
verified by a real validation pass; in loss mode a miss rescales the predictions by
measured/predicted and re-plans (at most ``refine`` times). The stored bytes never exceed
the budget (checked on the model's tensors, which are what ``ctrzip.save`` writes).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ctrzip.compression.api import CompressionMethod, MetricsReport, TargetDecision, register_method
from ctrzip.compression.budget.allocate import (
    Option,
    Plan,
    best_within_budget,
    frontier,
    smallest_within_loss,
)
from ctrzip.compression.budget.candidates import Candidate, table_candidates
from ctrzip.compression.budget.network import network_candidates, output_pcas
from ctrzip.compression.sizes import size_report
from ctrzip.data.dataset import EncodedDataset, SplitArrays
from ctrzip.data.loader import resolve_device
from ctrzip.errors import CompressionError
from ctrzip.models.base import CTRModel
from ctrzip.nn.embedding.base import DenseTable
from ctrzip.nn.embedding.field import FieldEmbedding
from ctrzip.nn.swappable import SWAPPABLE, replace_module

MB = 2**20


@dataclass
class BudgetConfig:
    """Compress the whole model to ``mb`` MB, or to the smallest size within ``max_auc_loss``.

    Args:
        mb: byte budget in MB (2^20 bytes) for every stored tensor of the model.
        max_auc_loss: alternative goal: the smallest model whose validation AUC is at most this
            much below the uncompressed model's (e.g. 0.001).
        bits: row-wise widths offered to tables (16 = fp16).
        pq: product-quantization settings offered to tables, as ``"MxK"`` strings.
        bands: head shares of lookups for the popularity-banded table candidates (empty: none).
        dense_network: offer int8 weights for every plain ``nn.Linear``.
        lowrank_energy: output-variance shares at which the network is also offered as
            feature-mimicking low rank with int8 factors (empty: none; needs ``dense_network``).
        calib_rows: validation rows used by the calibration passes (the verify pass uses all).
        calib_share: the largest targets holding this share of the compressible bytes get a
            calibration pass each; the others use the median slope of those.
        eval_split: split used for calibration and verification.
        refine: re-plans allowed in loss mode when the measured loss misses the cap.
        batch_size: rows per evaluation forward.
        device: ``auto``, ``cpu`` or ``cuda``.
        seed: k-means seed.
        version: config schema version.

    Raises:
        CompressionError: neither or both goals set, a non-positive goal, a malformed ``pq``.
    """

    mb: float | None = None
    max_auc_loss: float | None = None
    bits: tuple[int, ...] = (16, 8, 4, 2)
    pq: tuple[str, ...] = ("4x256", "2x256", "1x256")
    bands: tuple[float, ...] = (0.8, 0.95)
    dense_network: bool = True
    lowrank_energy: tuple[float, ...] = (0.99, 0.95, 0.9, 0.8)
    calib_rows: int = 100_000
    calib_share: float = 0.95
    eval_split: str = "valid"
    refine: int = 2
    batch_size: int = 8192
    device: str = "auto"
    seed: int = 0
    version: int = 1

    def __post_init__(self) -> None:
        if (self.mb is None) == (self.max_auc_loss is None):
            raise CompressionError("budget: set exactly one of mb (a size) or max_auc_loss (an AUC loss)")
        if self.mb is not None and self.mb <= 0:
            raise CompressionError(f"budget: mb must be > 0, got {self.mb}")
        if self.max_auc_loss is not None and self.max_auc_loss < 0:
            raise CompressionError(f"budget: max_auc_loss must be >= 0, got {self.max_auc_loss}")
        if any(not 0.0 < b < 1.0 for b in self.bands):
            raise CompressionError(f"budget: bands are shares of lookups in (0, 1), got {list(self.bands)}")
        if any(not 0.0 < e < 1.0 for e in self.lowrank_energy):
            raise CompressionError(
                "budget: lowrank_energy are shares of output variance in (0, 1), "
                f"got {list(self.lowrank_energy)}"
            )
        if not 0.0 < self.calib_share <= 1.0:
            raise CompressionError(f"budget: calib_share must be in (0, 1], got {self.calib_share}")
        if self.calib_rows < 1000:
            raise CompressionError(f"budget: calib_rows must be >= 1000, got {self.calib_rows}")
        self.pq_settings()

    def pq_settings(self) -> list[tuple[int, int]]:
        out = []
        for s in self.pq:
            parts = s.lower().split("x")
            if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
                raise CompressionError(f"budget: pq entries look like '4x256' (M x K), got {s!r}")
            out.append((int(parts[0]), int(parts[1])))
        return out


@dataclass
class _Target:
    """A unit of allocation: the modules it covers and its candidates."""

    name: str
    kind: str
    candidates: list[Candidate]
    swap: Any  # callable(candidate) -> None: installs the candidate's module(s)
    measure_all: bool = False  # one plug-in pass per candidate instead of k * error


@register_method("budget", BudgetConfig)
class Budget(CompressionMethod[BudgetConfig]):
    """Choose a representation per table and for the network under a byte or AUC budget."""

    def run(self, model: CTRModel, data: EncodedDataset | None) -> dict[str, Any]:
        from ctrzip.train import evaluate

        cfg = self.config
        if data is None:
            raise CompressionError("budget needs data: training counts and a validation split")
        dev = resolve_device(cfg.device)
        model.to(dev).eval()
        valid = data[cfg.eval_split]
        calib = _head(valid, cfg.calib_rows)

        def auc(split: SplitArrays) -> float:
            return evaluate(model, split, batch_size=cfg.batch_size, device=dev)["auc"]

        before_bytes = size_report(model)["total"]["bytes"]
        targets = _targets(model, data, cfg)
        if not any(len(t.candidates) > 1 for t in targets):
            raise CompressionError("budget: no table or layer has a smaller representation")
        fixed = before_bytes - sum(t.candidates[0].nbytes for t in targets)
        smallest = fixed + sum(min(c.nbytes for c in t.candidates) for t in targets)
        if cfg.mb is not None and smallest > cfg.mb * MB:  # refuse before any evaluation
            raise CompressionError(
                f"budget of {cfg.mb} MB ({int(cfg.mb * MB):,} B) cannot be met: the smallest reachable "
                f"model is {smallest:,} B ({smallest / MB:.3f} MB)"
            )
        before = evaluate(model, valid, batch_size=cfg.batch_size, device=dev)
        losses = _calibrate(targets, auc(calib), lambda: auc(calib), cfg.calib_share)
        options = {
            t.name: [Option(c.name, c.nbytes, losses[t.name][i]) for i, c in enumerate(t.candidates)]
            for t in targets
        }
        plans = frontier(options)
        scale, history = 1.0, []
        for attempt in range(cfg.refine + 1):
            plan = self._choose(plans, fixed, scale)
            for t in targets:  # start from the original modules each attempt
                t.swap(t.candidates[0])
            chosen = {
                t.name: next(c for c in t.candidates if c.name == plan.choice[t.name].name) for t in targets
            }
            for t in targets:
                t.swap(chosen[t.name])
            direct = evaluate(model, valid, batch_size=cfg.batch_size, device=dev)
            measured = before["auc"] - direct["auc"]
            history.append(
                {"predicted_loss": plan.loss * scale, "measured_loss": measured, "bytes": plan.nbytes}
            )
            if cfg.max_auc_loss is None or measured <= cfg.max_auc_loss or attempt == cfg.refine:
                break
            scale *= max(measured / max(plan.loss * scale, 1e-9), 1.5)
        after_bytes = size_report(model)["total"]["bytes"]
        if after_bytes != fixed + plan.nbytes:
            raise RuntimeError(
                f"budget: planned {fixed + plan.nbytes:,} B but the model stores {after_bytes:,} B"
            )
        if cfg.mb is not None and after_bytes > cfg.mb * MB:
            raise RuntimeError(f"budget: {after_bytes:,} B exceeds the budget {cfg.mb * MB:,.0f} B")
        return _report(
            targets, chosen, losses, before, direct, before_bytes, after_bytes, fixed, history, plans
        )

    def _choose(self, plans: list[Plan], fixed: int, scale: float) -> Plan:
        cfg = self.config
        if cfg.mb is not None:
            return best_within_budget(plans, int(cfg.mb * MB) - fixed)
        assert cfg.max_auc_loss is not None
        return smallest_within_loss(plans, cfg.max_auc_loss / scale)


def _head(split: SplitArrays, n: int) -> SplitArrays:
    n = min(n, len(split))
    return SplitArrays(split.sparse[:n], split.dense[:n], split.label[:n])


def _targets(model: CTRModel, data: EncodedDataset, cfg: BudgetConfig) -> list[_Target]:
    out: list[_Target] = []
    pq = cfg.pq_settings()
    for name, table in model.embedding.tables.items():
        if type(table) is not DenseTable:
            continue  # already compressed by another method: left as it is
        counts = _counts(data, name, table.num_embeddings)
        cands = table_candidates(table, counts, bits=cfg.bits, pq=pq, bands=cfg.bands, seed=cfg.seed)
        fqn = f"embedding.tables.{name}"
        out.append(_Target(fqn, "table", cands, _table_swap(model, fqn)))
    first = [
        f"{fqn}.tables.{n}"
        for fqn, fe in model.named_modules()
        if isinstance(fe, FieldEmbedding) and fe is not model.embedding
        for n, t in fe.tables.items()
        if type(t) is DenseTable
    ]
    if first and 16 in cfg.bits:
        out.append(_first_order_group(model, first))
    if cfg.dense_network:
        linears = {fqn: m for fqn, m in model.named_modules() if type(m) is nn.Linear}
        if linears:
            out.append(_network_target(model, linears, data, cfg))
    return out


def _counts(data: EncodedDataset, name: str, v: int) -> torch.Tensor:
    if name not in data.counts:
        raise CompressionError(
            f"budget: {data.root}/counts.npz has no counts for field {name!r}; re-encode the dataset "
            "(ctrzip data encode) to write them"
        )
    c = torch.as_tensor(data.counts[name][:v], dtype=torch.float32)
    return torch.nn.functional.pad(c, (0, v - c.numel()))


def _table_swap(model: CTRModel, fqn: str) -> Any:
    original = model.get_submodule(fqn)

    def swap(c: Candidate) -> None:
        new = original if c.build is None else c.build().to(original.materialize().device)
        replace_module(model, fqn, new)

    return swap


def _group(name: str, kind: str, label: str, items: list[tuple[Any, list[Candidate]]]) -> _Target:
    """One allocation unit over several modules: all kept, or all in their compact form.

    ``items`` are ``(swap, [float, compact])`` per module (a module without a smaller form
    stays float in both); the group's error is the largest of its members'.
    """
    keep = Candidate("float", sum(c[0].nbytes for _, c in items), 0.0, None)
    small = Candidate(label, sum(c[-1].nbytes for _, c in items), max(c[-1].error for _, c in items), None)

    def swap(c: Candidate) -> None:
        for s, cands in items:
            s(cands[0] if c.name == "float" else cands[-1])

    return _Target(name, kind, [keep] + ([small] if small.nbytes < keep.nbytes else []), swap)


def _first_order_group(model: CTRModel, fqns: list[str]) -> _Target:
    items = []
    for fqn in fqns:
        table = model.get_submodule(fqn)
        cands = table_candidates(table, torch.ones(table.num_embeddings), bits=(16,))  # type: ignore[arg-type]
        items.append((_table_swap(model, fqn), cands))
    return _group("first_order", "table", "fp16", items)


def _network_target(
    model: CTRModel, linears: dict[str, nn.Linear], data: EncodedDataset, cfg: BudgetConfig
) -> _Target:
    pcas = {}
    if cfg.lowrank_energy:  # output statistics from training rows (the eval split if there are none)
        # 20k rows pin down a layer's output covariance; more only slows the float64 moments
        rows = _head(data["train" if "train" in data.splits else cfg.eval_split], min(cfg.calib_rows, 20_000))
        dev = next(model.parameters()).device
        # a factor of an already factorized layer is offered int8 only (no nested low rank)
        free = [
            f for f in linears if type(model.get_submodule(f.rpartition(".")[0])).__name__ not in SWAPPABLE
        ]
        pcas = output_pcas(model, free, rows, cfg.batch_size, dev)

    def install(mods: dict[str, nn.Module]) -> None:
        for fqn, mod in mods.items():
            replace_module(model, fqn, mod)

    forms = network_candidates(linears, pcas, cfg.lowrank_energy, install)
    apply = {c.name: f for c, f in forms}
    return _Target("network", "linear", [c for c, _ in forms], lambda c: apply[c.name](), measure_all=True)


def _calibrate(targets: list[_Target], base: float, score: Any, share: float) -> dict[str, list[float]]:
    """Predicted AUC loss of every candidate: ``k * error``.

    ``k`` comes from one plug-in pass of the target's most aggressive candidate, for the
    largest targets holding ``share`` of the compressible bytes; the small rest borrow the
    median ``k`` of those (a pass each would cost more than their bytes can matter).
    """
    movable = sorted((t for t in targets if len(t.candidates) > 1), key=lambda t: -t.candidates[0].nbytes)
    total = sum(t.candidates[0].nbytes for t in movable)
    losses: dict[str, list[float]] = {t.name: [0.0] for t in targets if len(t.candidates) == 1}
    slopes: list[float] = []
    seen = 0
    for t in movable:
        if t.measure_all:  # a few forms of one unit: measure each rather than extrapolate
            drops = [0.0]
            for c in t.candidates[1:]:
                t.swap(c)
                drops.append(max(base - score(), 0.0))
            t.swap(t.candidates[0])
            losses[t.name] = [d + 1e-9 * i for i, d in enumerate(drops)]
            seen += t.candidates[0].nbytes
            continue
        ref = max(range(1, len(t.candidates)), key=lambda i: t.candidates[i].error)
        err = t.candidates[ref].error
        if seen >= share * total and slopes:
            k = statistics.median(slopes)
        else:
            t.swap(t.candidates[ref])
            drop = max(base - score(), 0.0)
            t.swap(t.candidates[0])
            k = drop / err if err > 0 else 0.0
            slopes.append(k)
        seen += t.candidates[0].nbytes
        # a small floor per unit of error keeps ties broken toward the more accurate option
        losses[t.name] = [k * c.error + 1e-9 * c.error for c in t.candidates]
    return losses


def _report(
    targets: list[_Target],
    chosen: dict[str, Candidate],
    losses: dict[str, list[float]],
    before: dict[str, float],
    direct: dict[str, float],
    before_bytes: int,
    after_bytes: int,
    fixed: int,
    history: list[dict[str, float]],
    plans: list[Plan],
) -> dict[str, Any]:
    decisions: list[TargetDecision] = []
    plan_rows = []
    for t in targets:
        c = chosen[t.name]
        i = t.candidates.index(c)
        keep = t.candidates[0]
        decisions.append(
            TargetDecision(
                target=t.name,
                kind=t.kind,
                action="kept" if c.name == "float" else "compressed",
                reason="float chosen by the allocator" if c.name == "float" else c.name,
                bytes_before=keep.nbytes,
                bytes_after=c.nbytes,
            )
        )
        plan_rows.append(
            {"target": t.name, "representation": c.name, "bytes": c.nbytes, "error": c.error,
             "predicted_auc_loss": losses[t.name][i],
             "options": [{"name": o.name, "bytes": o.nbytes, "predicted_auc_loss": losses[t.name][j]}
                         for j, o in enumerate(t.candidates)]}
        )  # fmt: skip
    return {
        "plan": plan_rows,
        "targets": decisions,
        "metrics": MetricsReport(before=before, direct=direct, final=direct),
        "bytes": {"before": before_bytes, "after": after_bytes, "fixed": fixed},
        "ratio": before_bytes / max(1, after_bytes),
        "refine_history": history,
        "frontier": [{"bytes": fixed + p.nbytes, "predicted_auc_loss": p.loss} for p in plans],
    }
