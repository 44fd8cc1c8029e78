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

from ctrzip.compression.budget.candidates import Candidate, codebook_candidate, table_candidates
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
    if first:
        out.append(_first_order_group(model, first, data, cfg))
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


def _group(name: str, kind: str, items: list[tuple[Any, list[Candidate]]]) -> Target:
    """One allocation unit over several modules, all in the same form (``float`` or a named
    compact one, in the order the members list them, least aggressive first); a module
    without that form takes its most aggressive earlier one (float at worst). Bytes are the
    members' sum, the error their largest; each form is measured directly (a plug-in pass)."""
    labels = ["float", *dict.fromkeys(c.name for _, cands in items for c in cands[1:])]

    def pick(cands: list[Candidate], label: str) -> Candidate:
        allowed = labels[: labels.index(label) + 1]
        return max((c for c in cands if c.name in allowed), key=lambda c: allowed.index(c.name))

    forms: list[Candidate] = []
    for label in labels:
        picks = [pick(cands, label) for _, cands in items]
        forms.append(Candidate(label, sum(c.nbytes for c in picks), max(c.error for c in picks), None))
    keep = forms[0]

    def swap(c: Candidate) -> None:
        for s, cands in items:
            s(pick(cands, c.name))

    return Target(
        name, kind, [keep, *(f for f in forms[1:] if f.nbytes < keep.nbytes)], swap, measure_all=True
    )


def _first_order_group(model: CTRModel, fqns: list[str], data: EncodedDataset, cfg: BudgetConfig) -> Target:
    """First-order (width-1) tables as one unit: float, fp16, or a 4-bit scalar codebook."""
    items = []
    for fqn in fqns:
        table = model.get_submodule(fqn)
        name = fqn.rpartition(".")[2]
        v = table.num_embeddings  # type: ignore[union-attr]
        counts = _counts(data, name, v) if name in data.counts else torch.ones(v)
        cands = table_candidates(table, counts, bits=(16,) if 16 in cfg.bits else ())  # type: ignore[arg-type]
        book = codebook_candidate(table, counts, bits=4, seed=cfg.seed)  # type: ignore[arg-type]
        items.append((_table_swap(model, fqn), cands + ([book] if book is not None else [])))
    return _group("first_order", "table", items)


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
