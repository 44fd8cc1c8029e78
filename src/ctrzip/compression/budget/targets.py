"""Allocation units of the budget method and their candidate forms.

A ``Target`` is one table, the first-order tables as a group, or the dense network; its
candidates come from ``candidates.table_candidates`` and ``network.network_candidates``,
and its ``swap`` installs one of them in the model (``replace_module``, so links follow).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ctrzip.compression.budget.candidates import Candidate, table_candidates
from ctrzip.compression.budget.network import network_candidates, output_pcas
from ctrzip.data.dataset import EncodedDataset, SplitArrays
from ctrzip.errors import CompressionError
from ctrzip.models.base import CTRModel
from ctrzip.nn.embedding.base import DenseTable
from ctrzip.nn.embedding.field import FieldEmbedding
from ctrzip.nn.swappable import SWAPPABLE, replace_module

if TYPE_CHECKING:
    from ctrzip.compression.budget.method import BudgetConfig


@dataclass
class Target:
    """A unit of allocation: the modules it covers and its candidates."""

    name: str
    kind: str
    candidates: list[Candidate]
    swap: Any  # callable(candidate) -> None: installs the candidate's module(s)
    measure_all: bool = False  # one plug-in pass per candidate instead of k * error


def head_rows(split: SplitArrays, n: int) -> SplitArrays:
    """The first ``n`` rows of ``split`` (all of them when it is shorter)."""
    n = min(n, len(split))
    return SplitArrays(split.sparse[:n], split.dense[:n], split.label[:n])


def build_targets(model: CTRModel, data: EncodedDataset, cfg: BudgetConfig) -> list[Target]:
    """Every table still dense, the first-order tables (fp16 as a group) and the network."""
    out: list[Target] = []
    pq = cfg.pq_settings()
    for name, table in model.embedding.tables.items():
        if type(table) is not DenseTable:
            continue  # already compressed by another method: left as it is
        counts = _counts(data, name, table.num_embeddings)
        cands = table_candidates(table, counts, bits=cfg.bits, pq=pq, bands=cfg.bands, seed=cfg.seed)
        fqn = f"embedding.tables.{name}"
        out.append(Target(fqn, "table", cands, _table_swap(model, fqn)))
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


def _group(name: str, kind: str, label: str, items: list[tuple[Any, list[Candidate]]]) -> Target:
    """One allocation unit over several modules: all kept, or all in their compact form.

    ``items`` are ``(swap, [float, compact])`` per module (a module without a smaller form
    stays float in both); the group's error is the largest of its members'.
    """
    keep = Candidate("float", sum(c[0].nbytes for _, c in items), 0.0, None)
    small = Candidate(label, sum(c[-1].nbytes for _, c in items), max(c[-1].error for _, c in items), None)

    def swap(c: Candidate) -> None:
        for s, cands in items:
            s(cands[0] if c.name == "float" else cands[-1])

    return Target(name, kind, [keep] + ([small] if small.nbytes < keep.nbytes else []), swap)


def _first_order_group(model: CTRModel, fqns: list[str]) -> Target:
    items = []
    for fqn in fqns:
        table = model.get_submodule(fqn)
        cands = table_candidates(table, torch.ones(table.num_embeddings), bits=(16,))  # type: ignore[arg-type]
        items.append((_table_swap(model, fqn), cands))
    return _group("first_order", "table", "fp16", items)


def _network_target(
    model: CTRModel, linears: dict[str, nn.Linear], data: EncodedDataset, cfg: BudgetConfig
) -> Target:
    pcas = {}
    if cfg.lowrank_energy:  # output statistics from training rows (the eval split if there are none)
        # 20k rows pin down a layer's output covariance; more only slows the float64 moments
        rows = head_rows(
            data["train" if "train" in data.splits else cfg.eval_split], min(cfg.calib_rows, 20_000)
        )
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
    return Target("network", "linear", [c for c, _ in forms], lambda c: apply[c.name](), measure_all=True)
