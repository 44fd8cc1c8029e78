"""MEC stage 1: learn codes for one field's trained table (spec/MEC.md, "Stage 1").

Pipeline per field: scale by the r-weighted RMS -> Linear encoder (or identity) ->
r-weighted k-means init -> Adam for a budget that scales with the field's rows (``epochs``
passes over the table, at least ``min_steps`` steps) on
``L_vq + 0.25 L_commit + L_dec + alpha L_reg + beta L_con`` with a straight-through
estimator and dead-code replacement (a codeword no row of the table uses) -> codes,
codebooks folded with the decoder.

Rows are sampled with probability proportional to r_j, so every loss term is r-weighted
without repeating rows in memory (the reference code's ``np.repeat``).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ctrzip.compression.mec.kmeans import sample_by_weight, weighted_kmeans
from ctrzip.compression.mec.losses import (
    Quantizer,
    Weighting,
    decode_codes,
    info_nce,
    popularity_weights,
    pwr_loss,
    quantize,
    semi_synthetic_negatives,
)
from ctrzip.config import ConfigError, track_set_fields
from ctrzip.nn.embedding.pq import Layout
from ctrzip.progress import ProgressBars

_CHUNK = 8192
_EPOCHS, _MIN_STEPS = 5.0, 50
_MIN_BATCH = 256  # smallest step a small table gets (fewer rows than this: the whole table)


@track_set_fields
@dataclass
class CodeLearningConfig:
    """Stage-1 knobs (defaults from spec/MEC.md).

    Args:
        quantizer: ``pq`` (product), ``rq`` (residual) or ``aq`` (additive).
        encoder: ``linear`` (Linear(d, d) encoder + Linear decoder, both initialized to the
            identity so training starts from the weighted k-means solution) or ``identity``.
        weighting: popularity weights ``log2`` (eq. 11), raw ``count`` (frequency PQ) or ``none``.
        alpha: weight of the PWR term.
        beta: weight of the contrastive term.
        commitment: weight of the commitment term.
        tau: InfoNCE temperature.
        tau_assign: soft-assignment temperature of the PWR term (in scaled units).
        num_negatives: semi-synthetic negatives per row.
        rho: replacement probability of a code position (None = 1/M).
        epochs: passes over the field's table (one pass = as many sampled rows as the table
            has), so the cost scales with its rows. Measured: a step of 4,096 rows costs
            0.25-0.8 s on one CPU core (M=4, K=16-256).
        min_steps: at least this many optimizer steps, so a small table still trains; a
            small table gets smaller steps (down to 256 rows) so that ``min_steps`` steps make
            about ``epochs`` passes rather than ``min_steps`` passes.
        steps: a fixed number of optimizer steps instead of ``epochs``/``min_steps``
            (0 = k-means only; setting it together with a non-default ``epochs`` or
            ``min_steps`` is refused).
        batch_size: most rows per step (sampled with replacement, probability ~ weight);
            see ``budget`` for small tables.
        lr: Adam learning rate.
        kmeans_iters: Lloyd iterations of the initialization.
        aq_icm_iters: AQ code refinement sweeps.
        dead_code_steps: every this many steps (0 = once per pass over the table), move each
            codeword that no row of the table is assigned to onto a random encoder output.
        select_every: every this many steps (and at the k-means start) score the decoded
            table with the caller's plug-in AUC and keep the best state; 0 = stop on the budget.
    """

    quantizer: Quantizer = "pq"
    encoder: Literal["linear", "identity"] = "linear"
    weighting: Weighting = "log2"
    alpha: float = 1e-3
    beta: float = 1e-2
    commitment: float = 0.25
    tau: float = 0.2
    tau_assign: float = 1.0
    num_negatives: int = 16
    rho: float | None = None
    epochs: float = _EPOCHS
    min_steps: int = _MIN_STEPS
    steps: int | None = None
    batch_size: int = 4096
    lr: float = 1e-3
    kmeans_iters: int = 20
    aq_icm_iters: int = 2
    dead_code_steps: int = 0
    select_every: int = 0

    def __post_init__(self) -> None:
        if self.quantizer not in ("pq", "rq", "aq"):
            raise ConfigError(f"quantizer must be pq, rq or aq, got {self.quantizer!r}")
        if self.encoder not in ("linear", "identity"):
            raise ConfigError(f"encoder must be linear or identity, got {self.encoder!r}")
        if self.weighting not in ("log2", "count", "none"):
            raise ConfigError(f"weighting must be log2, count or none, got {self.weighting!r}")
        for name in ("alpha", "beta", "commitment"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0")
        if self.tau <= 0 or self.tau_assign <= 0:
            raise ConfigError("temperatures must be > 0")
        if self.rho is not None and not 0 < self.rho <= 1:
            raise ConfigError("rho must be in (0, 1]")
        if self.batch_size < 1 or self.num_negatives < 1 or self.kmeans_iters < 0:
            raise ConfigError("batch_size >= 1, num_negatives >= 1, kmeans_iters >= 0 required")
        if self.steps is not None and self.steps < 0:
            raise ConfigError(f"steps must be >= 0 or null, got {self.steps}")
        if not math.isfinite(self.epochs) or self.epochs < 0 or self.min_steps < 0:
            raise ConfigError("epochs and min_steps must be >= 0")
        if self.steps is not None and (self.epochs != _EPOCHS or self.min_steps != _MIN_STEPS):
            raise ConfigError(
                f"set either steps (a fixed budget, now {self.steps}) or epochs/min_steps "
                "(a budget that scales with the table), not both"
            )
        if self.lr <= 0:
            raise ConfigError("lr must be > 0")
        if self.dead_code_steps < 0 or self.select_every < 0:
            raise ConfigError("dead_code_steps and select_every must be >= 0")

    def budget(self, rows: int) -> tuple[int, int]:
        """``(steps, batch)`` for a table of ``rows`` rows.

        With ``steps`` set: that many steps of ``min(batch_size, rows)`` rows. Otherwise the
        batch is ``min(batch_size, rows, max(256, ceil(epochs * rows / min_steps)))`` and the
        steps ``max(min_steps, ceil(epochs * rows / batch))`` (0 when ``epochs`` is 0), so the
        cost is about ``epochs`` passes over the table whatever its size (e.g. 4,000 rows:
        50 steps x 400 rows; 10M rows: 12,208 steps x 4,096 rows).
        """
        full = max(1, min(self.batch_size, rows))
        if self.steps is not None:
            return self.steps, full
        if self.epochs == 0:
            return 0, full
        batch = max(1, min(full, max(_MIN_BATCH, math.ceil(self.epochs * rows / max(1, self.min_steps)))))
        return max(self.min_steps, math.ceil(self.epochs * rows / batch)), batch

    @property
    def layout(self) -> Layout:
        """The PQTable layout these codes need (a learned decoder mixes sub-spaces)."""
        return "concat" if self.quantizer == "pq" and self.encoder == "identity" else "additive"


@dataclass
class CodeLearningResult:
    """Stage-1 output for the quantized rows of one field.

    Attributes:
        codes: ``[N, M]`` int64 codes of the quantized rows.
        codebooks: ``[M, K, W]`` in the table's scale, ready for ``PQTable`` (decoder folded in
            for the additive layout).
        bias: ``[D]`` additive offset (folded decoder bias), None for concat.
        layout: ``concat`` or ``additive``.
        decoded: ``[N, D]`` what the codes decode to, in the table's scale.
        scale: the r-weighted RMS the table was divided by.
        history: loss terms every ``log_every`` steps (``revived``: dead codewords replaced so far).
        seconds: wall time.
        steps: optimizer steps run (``CodeLearningConfig.budget``).
        batch_size: rows per step.
        encoder_change: ``||W_enc - I||_F`` after training (0 for the identity encoder; the
            reference code's encoder never moved because it had no gradient path).
    """

    codes: Tensor
    codebooks: Tensor
    bias: Tensor | None
    layout: Layout
    decoded: Tensor
    scale: float
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    encoder_change: float = 0.0
    steps: int = 0
    batch_size: int = 0

    def summary(self) -> dict[str, Any]:
        losses = [h for h in self.history if "recon" in h]
        first, last = (losses[0], losses[-1]) if losses else ({}, {})
        selected = [h for h in self.history if "selected_step" in h]
        return {
            "scale": self.scale,
            "seconds": round(self.seconds, 3),
            "first": first,
            "last": last,
            "steps": self.steps,
            "batch_size": self.batch_size,
            "selected": selected[-1] if selected else None,
            "encoder_change": self.encoder_change,
        }


class _Coder(nn.Module):
    """Encoder, codebooks and decoder of one field (discarded after folding)."""

    def __init__(self, dim: int, books: Tensor, linear: bool) -> None:
        super().__init__()
        self.enc = nn.Linear(dim, dim) if linear else nn.Identity()
        self.dec = nn.Linear(dim, dim) if linear else nn.Identity()
        for lin in (self.enc, self.dec):
            if isinstance(lin, nn.Linear):
                with torch.no_grad():
                    lin.weight.copy_(torch.eye(dim))
                    lin.bias.zero_()
        self.books = nn.Parameter(books.clone())


def _initial_books(s: Tensor, w: Tensor, m: int, k: int, kind: Quantizer, iters: int, seed: int) -> Tensor:
    """r-weighted k-means on the encoder outputs: per chunk (PQ) or per residual stage (RQ/AQ)."""
    n, d = s.shape
    if kind == "pq":
        x = s.reshape(n, m, d // m).transpose(0, 1)  # [M, N, d_s]
        return weighted_kmeans(x, k, w, iters=iters, seed=seed).centroids
    books, res = [], s
    for i in range(m):
        km = weighted_kmeans(res, k, w, iters=iters, seed=seed + i)
        books.append(km.centroids[0])
        res = res - km.centroids[0][km.assign[0]]
    return torch.stack(books)


def _assign_all(coder: _Coder, x: Tensor, kind: Quantizer, icm: int) -> tuple[Tensor, Tensor]:
    """Codes and decoded vectors of every row (chunked, no grad)."""
    codes, dec = [], []
    with torch.no_grad():
        for s in range(0, len(x), _CHUNK):
            qz = quantize(coder.enc(x[s : s + _CHUNK]), coder.books, kind, icm)
            codes.append(qz.codes)
            dec.append(coder.dec(qz.q))
    return torch.cat(codes), torch.cat(dec)


def _fold(coder: _Coder, kind: Quantizer, m: int, scale: float) -> tuple[Tensor, Tensor | None]:
    """Codebooks in table scale; with a linear decoder, ``T_m = C_m W_m^T`` and its bias."""
    books = coder.books.detach()
    if isinstance(coder.dec, nn.Identity):  # concat (PQ) or plain sum (RQ/AQ): no offset
        return books * scale, None if kind == "pq" else torch.zeros(books.shape[-1], device=books.device)
    w, b = coder.dec.weight.detach(), coder.dec.bias.detach()  # [D, D], [D]
    if kind == "pq":
        d_s = books.shape[-1]
        tables = torch.stack([books[i] @ w[:, i * d_s : (i + 1) * d_s].T for i in range(m)])
    else:
        tables = books @ w.T
    return tables * scale, b * scale


def fit_codes(
    table: Tensor,
    counts: Tensor,
    num_subspaces: int,
    codebook_size: int,
    config: CodeLearningConfig,
    seed: int = 0,
    log_every: int = 100,
    on_log: Callable[[dict[str, float]], None] | None = None,
    score: Callable[[Tensor], float] | None = None,
    bars: ProgressBars | None = None,
    label: str = "stage 1",
) -> CodeLearningResult:
    """Learn codes for the rows of ``table`` (only real ids: the caller drops padding/OOV).

    Args:
        table: ``[N, D]`` trained embedding rows.
        counts: ``[N]`` training-split counts of those ids.
        num_subspaces: M.
        codebook_size: K.
        config: stage-1 knobs.
        seed: seeds k-means, sampling and negatives.
        log_every: history interval (steps).
        on_log: optional callback for each history entry.
        score: plug-in AUC of decoded rows ``[N, D]`` (table scale); required by
            ``config.select_every`` (keep the best state).
        bars: progress bars to add this field's bar to (steps, rows/s, ETA); None = none.
        label: the bar's description.

    Raises:
        ValueError: M does not divide the width, or ``select_every`` without ``score``.
    """
    t0 = time.perf_counter()
    cfg, m, k = config, num_subspaces, codebook_size
    x = table.detach().float()
    n, d = x.shape
    dev = x.device
    if cfg.quantizer == "pq" and d % m:
        raise ConfigError(f"num_subspaces={m} must divide the embedding width {d} (quantizer pq)")
    steps, batch = cfg.budget(n)
    if cfg.select_every > 0 and steps > 0 and score is None:
        raise ConfigError("code_learning.select_every needs a score function (the plug-in AUC)")
    torch.manual_seed(seed)
    gen = torch.Generator(device=dev).manual_seed(seed)
    w = popularity_weights(counts.cpu(), cfg.weighting).to(dev)
    scale = float(torch.sqrt((w[:, None] * x.pow(2)).sum() / (w.sum() * d)).clamp_min(1e-12))
    x = x / scale
    # encoder starts at the identity, so k-means runs on x itself
    books = _initial_books(x, w, m, k, cfg.quantizer, cfg.kmeans_iters, seed)
    coder = _Coder(d, books, cfg.encoder == "linear").to(dev)
    history: list[dict[str, float]] = []
    if steps > 0:
        scorer = None
        if score is not None and cfg.select_every > 0:

            def scorer(c: _Coder) -> float:
                return score(_assign_all(c, x, cfg.quantizer, cfg.aq_icm_iters)[1] * scale)

        with_bar = bars if bars is not None else ProgressBars(False)
        task = with_bar.add(label, steps, unit="rows", per_step=batch)

        def tick(entry: dict[str, float] | None) -> None:
            with_bar.advance(task, status="" if entry is None else f"loss {entry['loss']:.4f}")

        history = _train(coder, x, w, m, k, cfg, gen, log_every, on_log, scorer, steps, batch, tick)
    codes, dec = _assign_all(coder, x, cfg.quantizer, cfg.aq_icm_iters)
    if not history:
        history = [{"step": 0, "recon": float(F.mse_loss(dec, x))}]
    tables, bias = _fold(coder, cfg.quantizer, m, scale)
    enc_change = 0.0
    if isinstance(coder.enc, nn.Linear):
        enc_change = float(torch.linalg.norm(coder.enc.weight.detach() - torch.eye(d, device=dev)))
    return CodeLearningResult(
        codes=codes,
        codebooks=tables,
        bias=bias,
        layout=cfg.layout,
        decoded=dec * scale,
        scale=scale,
        history=history,
        seconds=time.perf_counter() - t0,
        encoder_change=enc_change,
        steps=steps,
        batch_size=batch,
    )


def _train(
    coder: _Coder,
    x: Tensor,
    w: Tensor,
    m: int,
    k: int,
    cfg: CodeLearningConfig,
    gen: torch.Generator,
    log_every: int,
    on_log: Callable[[dict[str, float]], None] | None,
    scorer: Callable[[_Coder], float] | None,
    steps: int,
    batch: int,
    tick: Callable[[dict[str, float] | None], None] | None = None,
) -> list[dict[str, float]]:
    """The Adam loop over ``steps`` steps of ``batch`` rows; returns the loss history.

    With ``scorer``, the state with the best plug-in score (the k-means start included) is
    restored at the end, and each selection point is logged as ``plugin_auc``. ``tick`` is
    called after every step (with the history entry when one was logged).
    """
    n = len(x)
    rho = cfg.rho if cfg.rho is not None else 1.0 / m
    opt = torch.optim.Adam(coder.parameters(), lr=cfg.lr)
    dead_window = cfg.dead_code_steps or max(1, math.ceil(n / batch))
    history: list[dict[str, float]] = []
    revived = 0
    best = (scorer(coder), copy.deepcopy(coder.state_dict()), 0) if scorer is not None else None
    for step in range(1, steps + 1):
        rows = sample_by_weight(w, batch, gen)
        xb = x[rows]
        s = coder.enc(xb)  # [B, D]
        qz = quantize(s, coder.books, cfg.quantizer, cfg.aq_icm_iters)
        q_st = s + (qz.q - s).detach()  # straight-through: the encoder gets the decoder's gradient
        terms = {
            "vq": F.mse_loss(qz.q, s.detach()),
            "commit": F.mse_loss(s, qz.q.detach()),
            "recon": F.mse_loss(coder.dec(q_st), xb),
        }
        loss = terms["vq"] + cfg.commitment * terms["commit"] + terms["recon"]
        if cfg.alpha > 0:
            terms["reg"] = pwr_loss(qz.dist, cfg.tau_assign)
            loss = loss + cfg.alpha * terms["reg"]
        if cfg.beta > 0 and k > 1:
            neg_codes = semi_synthetic_negatives(qz.codes, cfg.num_negatives, k, rho, gen)
            negs = decode_codes(neg_codes, coder.books, cfg.quantizer)  # [B, N, D]
            terms["con"] = info_nce(s, qz.q, negs, cfg.tau)
            loss = loss + cfg.beta * terms["con"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % dead_window == 0:
            revived += _replace_dead(coder, table_usage(coder, x, k, cfg), qz.targets.detach(), gen)
        entry = None
        if step == 1 or step % log_every == 0 or step == steps:
            entry = {
                "revived": float(revived),
                "step": float(step),
                "loss": float(loss.detach()),
                **{key: float(v.detach()) for key, v in terms.items()},
            }
            history.append(entry)
            if on_log is not None:
                on_log(entry)
        if tick is not None:
            tick(entry)
        if best is not None and scorer is not None and step % cfg.select_every == 0:
            auc = scorer(coder)
            history.append({"step": float(step), "plugin_auc": auc})
            if auc > best[0]:
                best = (auc, copy.deepcopy(coder.state_dict()), step)
    if best is not None:
        coder.load_state_dict(best[1])
        history.append({"step": float(steps), "selected_step": float(best[2]), "plugin_auc": best[0]})
    return history


def table_usage(coder: _Coder, x: Tensor, k: int, cfg: CodeLearningConfig) -> Tensor:
    """``[M, K]`` number of the table's rows ``x [N, D]`` assigned to each codeword now."""
    codes, _ = _assign_all(coder, x, cfg.quantizer, cfg.aq_icm_iters)  # [N, M]
    m = codes.shape[1]
    offsets = torch.arange(m, device=codes.device) * k
    flat = torch.bincount((codes + offsets).flatten(), minlength=m * k)
    return flat.reshape(m, k).float()


def _replace_dead(coder: _Coder, usage: Tensor, targets: Tensor, gen: torch.Generator) -> int:
    """Move codewords with zero ``usage [M, K]`` (no row of the whole table assigned to them,
    spec/MEC.md stage 1.3) onto random encoder outputs ``targets [B, M, W]`` of their
    sub-space; returns how many were moved."""
    dead = usage == 0  # [M, K]
    if not bool(dead.any()):
        return 0
    with torch.no_grad():
        for i in range(usage.shape[0]):
            slots = dead[i].nonzero().flatten()
            if len(slots) == 0:
                continue
            pick = torch.randint(0, len(targets), (len(slots),), device=targets.device, generator=gen)
            coder.books[i, slots] = targets[pick, i]
    return int(dead.sum())
