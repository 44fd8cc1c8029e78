"""Clustered compositional embeddings as a method (``cce``; Tsang & Ahle, NeurIPS 2023),
written from the paper (its reference code's licence forbids reuse).

Large tables become ``CCETable``s: per chunk, a table indexed by a stored cluster index plus a
table indexed by a fresh hash. Training alternates with re-clustering (the paper's algorithm):
each round runs k-means on every chunk's current vectors (``C_j``, ``a_j`` <- centroids and
assignments), restarts the hashed table at zero under a new hash, then trains again.

``init: from_table`` clusters the trained table right away (the first re-clustering, on the
trained rows: a product quantization of the table plus a zero hashed table), then fine-tunes;
``random`` starts from the two-hash sketch, as the paper trains from scratch. After that,
``recluster_rounds`` more rounds of (re-cluster, fine-tune). Every fine-tune is the guarded one
of the factorized methods, and a round whose result validates worse than the model before it is
undone (the model goes back to the previous round's state), so rounds never make it worse.

Sizing: ``codebook_size`` (k) or ``ratio`` / ``budget_bytes`` (the largest k that fits; the index
costs ``V c`` bytes at ``k <= 256``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from ctrzip.compression.api import register_method
from ctrzip.compression.baselines.common import BaselineConfig, TableBaseline
from ctrzip.compression.lowrank.factorized import evaluate_and_finetune
from ctrzip.compression.mec.kmeans import weighted_kmeans
from ctrzip.compression.sharded import sharded_evaluate
from ctrzip.config import ConfigError
from ctrzip.data.dataset import EncodedDataset
from ctrzip.data.loader import resolve_device
from ctrzip.distributed import broadcast_module_
from ctrzip.errors import CompressionError
from ctrzip.models.base import CTRModel
from ctrzip.nn.embedding.base import EmbeddingTable
from ctrzip.nn.embedding.cce import CCETable, cce_bytes


@dataclass
class CCEConfig(BaselineConfig):
    """Clustered compositional embeddings.

    Args:
        codebook_size: k rows of each chunk's two tables (the size knob).
        num_chunks: c chunks of ``D / c`` columns (must divide every selected table's D).
        recluster_rounds: extra (re-cluster, fine-tune) rounds after the first fine-tune.
        kmeans_iters: Lloyd iterations per re-clustering.
        hash_seed: draws the initial index hash and every later hash.
        (and ``BaselineConfig``: fields, min_vocab, ratio, budget_bytes, init, fine-tune settings)
        version: config schema version.

    Raises:
        ConfigError: a setting below its minimum (named) or a bad shared setting.
    """

    codebook_size: int | None = None
    num_chunks: int = 4
    recluster_rounds: int = 1
    kmeans_iters: int = 20
    hash_seed: int = 0
    version: int = 1

    method: ClassVar[str] = "cce"
    knob: ClassVar[str] = "codebook_size"

    def __post_init__(self) -> None:
        super().__post_init__()
        lows = {"codebook_size": 1, "num_chunks": 1, "recluster_rounds": 0, "kmeans_iters": 1}
        for name, low in lows.items():
            value = getattr(self, name)
            if value is not None and value < low:
                raise ConfigError(f"cce: {name} must be >= {low}, got {value}")


def cluster_rows(table: CCETable, rows: Tensor, iters: int, seed: int) -> None:
    """Set ``table``'s index and clustered table from k-means of ``rows [V, D]`` per chunk (the
    padding row left out); the hashed table restarts at zero under a new hash."""
    v, c = table.num_embeddings, table.num_chunks
    weights = torch.ones(v, device=rows.device)
    if table.padding_idx is not None:
        weights[table.padding_idx] = 0.0
    chunks = rows.detach().reshape(v, c, -1).transpose(0, 1)  # [c, V, D / c]
    res = weighted_kmeans(chunks, table.codebook_size, weights=weights, iters=iters, seed=seed)
    table.set_clusters(res.assign.T, res.centroids.to(table.clustered.dtype))
    broadcast_module_(table)  # under torchrun every rank clustered; all keep rank 0's (CUDA k-means varies)


def recluster(table: CCETable, iters: int, seed: int) -> float:
    """One re-clustering of ``table`` on its current vectors; returns the relative change
    ``||X' - X||_F / ||X||_F`` it makes to the table."""
    before = table.materialize()
    cluster_rows(table, before, iters, seed)
    return float((table.materialize() - before).norm() / before.norm().clamp_min(1e-30))


def _largest_k(v: int, d: int, c: int, target: int) -> int | None:
    """Largest k <= V whose ``cce_bytes`` fit ``target`` (monotone within each index type)."""
    best = None
    for lo, hi in ((1, 256), (257, 32768), (32769, v)):
        hi = min(hi, v)
        if lo > hi or cce_bytes(v, d, c, lo) > target:
            continue
        while lo < hi:  # largest k in [lo, hi] that fits
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if cce_bytes(v, d, c, mid) <= target else (lo, mid - 1)
        best = lo
    return best


@register_method("cce", CCEConfig)
class CCE(TableBaseline[CCEConfig]):
    """Swap selected tables for ``CCETable`` and alternate fine-tuning with re-clustering."""

    form = "CCETable"

    def size(self, name: str, table: EmbeddingTable, target_bytes: int | None) -> dict[str, Any] | None:
        c, d = self.config.num_chunks, table.embedding_dim
        if d % c:
            raise CompressionError(f"cce: num_chunks {c} must divide the embedding dim {d} of field {name!r}")
        if target_bytes is None:
            return {"codebook_size": self.config.codebook_size}
        k = _largest_k(table.num_embeddings, d, c, target_bytes)
        return None if k is None else {"codebook_size": k}

    def form_bytes(self, table: EmbeddingTable, params: dict[str, Any]) -> int:
        return cce_bytes(
            table.num_embeddings, table.embedding_dim, self.config.num_chunks, params["codebook_size"]
        )

    def smallest_bytes(self, table: EmbeddingTable) -> int:
        return cce_bytes(table.num_embeddings, table.embedding_dim, self.config.num_chunks, 1)

    def build(self, name: str, weight: Tensor, params: dict[str, Any], pad: int | None) -> EmbeddingTable:
        cfg = self.config
        v, d = weight.shape
        std = self.random_std(weight) / 2**0.5  # a chunk row is the sum of two random rows
        table = CCETable(v, d, cfg.num_chunks, params["codebook_size"], cfg.hash_seed, 0, pad, init_std=std)
        table = table.to(weight.device)
        if cfg.init == "from_table":  # cluster the trained rows: the first round's start
            cluster_rows(table, weight, cfg.kmeans_iters, cfg.seed)
        return table

    def run(self, model: CTRModel, data: EncodedDataset | None) -> dict[str, Any]:
        report = super().run(model, data)
        cfg = self.config
        fqns = [f"embedding.tables.{n}" for n in report["embedding"]["fields"]]
        if not fqns or cfg.recluster_rounds == 0:
            return report
        device = resolve_device(cfg.device)
        rounds = []
        best = report["metrics"]["final"]
        for r in range(cfg.recluster_rounds):
            t0 = time.perf_counter()
            saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
            gens = {f: model.get_submodule(f).generation for f in fqns}
            changes = {f: recluster(model.get_submodule(f), cfg.kmeans_iters, cfg.seed + r + 1) for f in fqns}
            rep: dict[str, Any] = {
                "relative_change": changes,
                "recluster_s": round(time.perf_counter() - t0, 3),
            }
            if cfg.finetune_epochs > 0:
                rep.update(evaluate_and_finetune(model, data, cfg, device))
            elif data is not None and cfg.eval_split is not None:
                rep["direct"] = sharded_evaluate(
                    model, data[cfg.eval_split], batch_size=cfg.batch_size, device=device
                )
            final = rep.get("finetuned", rep.get("direct"))
            undone = best is not None and final is not None and final["auc"] < best["auc"]
            if undone:  # the round made the model worse on validation: go back
                model.load_state_dict(saved)
                for f, g in gens.items():
                    model.get_submodule(f).set_generation(g)
            else:
                best = final if final is not None else best
            rep["undone"] = undone
            rounds.append(rep)
        report["rounds"] = rounds
        report["metrics"]["final"] = best  # the bytes do not change: same shapes every round
        return report
