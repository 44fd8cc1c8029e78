"""MEC stage 2: put codes into a model (PQ tables, first-order tables on the same codes),
and run the ``finetune`` or ``retrain`` protocol (bytes: ``ctrzip.compression.sizes``).

Tables are swapped with ``ctrzip.nn.swappable.replace_modules`` (a field's PQ table and the
first-order table on its codes together); models are never copied or subclassed.
First-order (LR) tables are found by walking for ``FieldEmbedding`` modules other than
``model.embedding`` (e.g. ``model.first_order.embedding``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ctrzip.compression.finetune import FinetuneResult, guarded_finetune
from ctrzip.config import ConfigError, track_set_fields
from ctrzip.data.dataset import EncodedDataset
from ctrzip.models.base import CTRModel, build_model
from ctrzip.nn.embedding.base import EmbeddingTable
from ctrzip.nn.embedding.field import FieldEmbedding
from ctrzip.nn.embedding.pq import PQTable, SharedCodesPQTable


@track_set_fields
@dataclass
class StageTwoConfig:
    """Training after the swap (``compression.finetune.guarded_finetune`` over ``Trainer.fit``).

    Inside ``MECConfig`` the ``finetune`` and ``retrain`` stages start from their presets
    (``FINETUNE_PRESET``, ``RETRAIN_PRESET``); the fields a user sets change only those fields.

    Args:
        epochs: passes over the training split.
        lr: Adam learning rate (finetune: the base model's last lr, e.g. 1e-4).
        batch_size: rows per step.
        early_stop_patience: evaluations without validation-AUC gain before stopping.
        max_steps: optional cap on optimizer steps (small benchmarks, tests).
        freeze_codebooks: keep the PQ tables' float parts (codebooks, bias, dense rows) fixed
            and train the rest (codes are always frozen). Measured on a small
            synthetic run, training the additive tables of MEC's codes at lr 1e-4 cost more
            AUC than the plug-in loss, while freezing them kept it.
        eval_every_steps: validate (and keep the best state) every this many steps as well as
            at the end of each epoch; None = once per epoch.
        keep_start: validate the plugged-in model first and keep it (bit-identical) unless
            a trained state beats it on validation; for ``retrain``, the retrained model
            replaces the plugged-in one only when it validates better. Measured at 4M
            synthetic rows (PNN, d=40), one more epoch at lr 1e-4 cost the dense model 0.0065
            valid AUC: CTR models overfit on a second pass, so an unguarded fine-tune can undo
            a good plug-in.
    """

    epochs: int = 1
    lr: float = 1e-4
    batch_size: int = 4096
    early_stop_patience: int = 1
    max_steps: int | None = None
    freeze_codebooks: bool = False
    eval_every_steps: int | None = None
    keep_start: bool = True

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.lr <= 0 or self.batch_size < 1 or self.early_stop_patience < 1:
            raise ConfigError("epochs, batch_size, early_stop_patience must be >= 1 and lr > 0")
        for name in ("max_steps", "eval_every_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be >= 1 or null")


# MECConfig's two stages: the ``finetune`` (low lr, ~1 epoch) and ``retrain`` (from scratch) presets.
FINETUNE_PRESET: dict[str, Any] = {"epochs": 1, "lr": 1e-4}
RETRAIN_PRESET: dict[str, Any] = {"epochs": 2, "lr": 1e-3, "early_stop_patience": 2}


def first_order_embeddings(model: nn.Module) -> dict[str, FieldEmbedding]:
    """Every ``FieldEmbedding`` except ``model.embedding`` whose dim is 1 (LR terms), by fqn."""
    main = getattr(model, "embedding", None)
    return {
        fqn: m
        for fqn, m in model.named_modules()
        if isinstance(m, FieldEmbedding) and m is not main and m.dim == 1
    }


def fit_additive(
    codes: Tensor, target: Tensor, weights: Tensor, codebook_size: int, sweeps: int = 10
) -> tuple[Tensor, Tensor]:
    """Weighted least squares ``target_j ~ bias + sum_m T_m[codes_jm]`` by exact block updates.

    Each sweep sets every ``T_m`` to the weighted mean residual of its code's rows given the
    others (Gauss-Seidel on the normal equations; it never increases the objective).

    Args:
        codes: ``[N, M]`` int codes.
        target: ``[N, D]`` values to reproduce (D = 1 for first-order weights).
        weights: ``[N]`` non-negative row weights.
        codebook_size: K.
        sweeps: passes over the M blocks.

    Returns:
        ``(tables [M, K, D], bias [D])``.
    """
    n, m = codes.shape
    d = target.shape[1]
    codes = codes.long()
    w = weights.to(target.dtype).unsqueeze(1)  # [N, 1]
    mass = torch.zeros(m, codebook_size, 1, dtype=target.dtype, device=target.device)
    for i in range(m):
        mass[i].index_add_(0, codes[:, i], w)
    tables = torch.zeros(m, codebook_size, d, dtype=target.dtype, device=target.device)
    bias = (w * target).sum(0) / w.sum().clamp_min(1e-12)
    pred = torch.zeros_like(target)
    for _ in range(sweeps):
        for i in range(m):
            pred -= tables[i][codes[:, i]]
            res = target - bias - pred
            sums = torch.zeros(codebook_size, d, dtype=target.dtype, device=target.device)
            sums.index_add_(0, codes[:, i], w * res)
            tables[i] = torch.where(mass[i] > 0, sums / mass[i].clamp_min(1e-12), 0.0)
            pred += tables[i][codes[:, i]]
        bias = (w * (target - pred)).sum(0) / w.sum().clamp_min(1e-12)
    return tables, bias


def first_order_table(
    dense: EmbeddingTable, main: PQTable, weights: Tensor, code_source: str, sweeps: int = 10
) -> SharedCodesPQTable:
    """A dim-1 additive PQ table that reads ``main``'s codes (stored once, at ``code_source``)
    and reproduces ``dense``'s weights.

    Rows served densely by ``main`` (OOV) keep their dense weight; padding stays zero.
    """
    w_full = dense.materialize()  # [V, 1]
    rows = _coded_rows(main)
    tables, bias = fit_additive(main.codes[rows], w_full[rows].float(), weights, main.codebook_size, sweeps)
    return SharedCodesPQTable.on(
        main, code_source, tables, "additive", bias=bias, dense_rows=w_full[list(main.dense_ids)]
    )


def _coded_rows(table: PQTable) -> Tensor:
    """Ids whose vectors come from codes (not padding, not dense ids)."""
    keep = torch.ones(table.num_embeddings, dtype=torch.bool, device=table.codes.device)
    keep[list(table.dense_ids)] = False
    if table.padding_idx is not None:
        keep[table.padding_idx] = False
    return keep.nonzero().flatten()


def trainer_config(cfg: StageTwoConfig, seed: int, device: str, progress: bool = False) -> Any:
    """The ``TrainConfig`` of a stage-2 run (no checkpoint folder)."""
    from ctrzip.train import TrainConfig

    return TrainConfig(
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        early_stop_patience=cfg.early_stop_patience,
        eval_every_steps=cfg.eval_every_steps,
        max_steps=cfg.max_steps,
        seed=seed,
        device=device,
        out_dir=None,
        resume=False,
        progress=progress,
    )


def _codebook_filter(model: nn.Module, cfg: StageTwoConfig) -> Any:
    """``trainable(fqn, p)``: False for PQ tables' float parts when ``freeze_codebooks``."""
    if not cfg.freeze_codebooks:
        return None
    pq_params = {
        f"{fqn}.{name}" if fqn else name
        for fqn, mod in model.named_modules()
        if isinstance(mod, PQTable)
        for name, _ in mod.named_parameters()
    }
    return lambda fqn, p: fqn not in pq_params


def finetune(
    model: CTRModel,
    data: EncodedDataset,
    cfg: StageTwoConfig,
    seed: int,
    device: str,
    progress: bool = False,
) -> FinetuneResult:
    """Fine-tune the plugged-in model with the shared guarded routine; codes are buffers, so
    they stay frozen by construction (and with ``freeze_codebooks`` the PQ tables' float parts
    too). With ``keep_start`` the plugged-in model is kept unless training beats it."""
    return guarded_finetune(
        model,
        data,
        trainer_config(cfg, seed, device, progress),
        keep_start=cfg.keep_start,
        trainable=_codebook_filter(model, cfg),
    )


def retrain(
    model: CTRModel,
    data: EncodedDataset,
    cfg: StageTwoConfig,
    seed: int,
    device: str,
    progress: bool = False,
) -> FinetuneResult:
    """Train a fresh model of the same spec from scratch on the coded tables (paper eq. 10).

    Every embedding table (PQ tables from their codebooks, dense tables of unquantized fields
    from the trained model) is carried over; the rest of the network starts fresh. The
    result is loaded back into ``model`` (which already has the same module structure) when
    it validates better than the plugged-in model, or always with ``keep_start=False``.
    """
    torch.manual_seed(seed)
    fresh = build_model(model.registry_key, model.schema, model.config)
    memo: dict[int, Any] = {}  # one memo: a first-order table's copy reads the copied code table
    for fqn, fe in list(fresh.named_modules()):
        if isinstance(fe, FieldEmbedding):
            trained = model.get_submodule(fqn)
            for name in list(fe.tables):
                fe.tables[name] = copy.deepcopy(trained.tables[name], memo)  # type: ignore[index]
    return guarded_finetune(
        model,
        data,
        trainer_config(cfg, seed, device, progress),
        keep_start=cfg.keep_start,
        trainable=_codebook_filter(fresh, cfg),
        fresh=fresh,
    )
