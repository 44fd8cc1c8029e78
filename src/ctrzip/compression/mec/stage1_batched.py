"""MEC stage 1 for many fields in one loop (issue 13, item 5).

``fit_codes`` trains one field at a time: on a GPU each step is ~50 tiny kernels per field,
so 26 Criteo fields cost 26 launch-bound loops. ``fit_codes_batched`` trains every PQ field of
one width together: encoders, decoders and codebooks stacked ``[F, ...]``, one forward and
backward per step for all fields, per-field losses summed (a field's parameters only reach its
own loss, so its gradient is the per-field one), and an Adam that updates the stack with the
exact per-element arithmetic of ``torch.optim.Adam``.

What stays exactly per field, so each field computes what ``fit_codes`` computes for it:
- its own ``torch.Generator`` seeded with ``seed``, drawn in the same order and shapes
  (rows, negatives, dead-code picks; each draw written into a padded ``[F, B, ...]`` buffer);
- its own budget ``(steps, batch)``: fields are sorted by steps and the loop runs in segments
  over the fields still training; a field with a smaller batch is padded to the largest and
  its padded rows are masked out of every loss term (weight 0). On CPU, where a step is
  compute-bound, fields whose batch is well under the largest run in their own loop instead
  (``_buckets``); on CUDA one loop per width;
- k-means start, dead-code replacement over the whole table, plug-in selection, folding.
Equal up to float summation order (a batched matmul sums in another order than ``addmm``, and
the distances are computed as one matmul ``[t, 1] @ [2c, -|c|^2]``, which drops the per-row
constant ``|t|^2``: same argmin, same softmax); ``tests/compression/mec/test_stage1_batched.py``
checks every logged loss, the codes and the codebooks against ``fit_codes``.

Rows are stored concatenated (no padding to the largest vocabulary, which would multiply the
memory of a 10M-row field by the number of fields); a field's rows are drawn with the
inverse-CDF rule of ``sample_by_weight`` on one float64 cumulative sum of all fields, exact
because popularity weights are whole numbers. No host synchronisation inside a step: only at
log points (every ``log_every`` steps), dead-code checks (once per pass over a field's table)
and plug-in selection.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ctrzip.compression.mec.kmeans import nearest
from ctrzip.compression.mec.losses import popularity_weights
from ctrzip.compression.mec.stage1 import (
    CodeLearningConfig,
    CodeLearningResult,
    _assign_all,
    _Coder,
    _fold,
    _initial_books,
    _replace_dead,
    fit_codes,
)
from ctrzip.config import ConfigError
from ctrzip.progress import ProgressBars

_BETAS, _EPS = (0.9, 0.999), 1e-8  # torch.optim.Adam defaults, as fit_codes uses them
_CPU_PAD_RATIO = 0.75  # on CPU, pad a field's batch by at most 1/0.75 (see _buckets)
_USAGE_CHUNK = 65536  # rows encoded at a time by the dead-code check
_BAR_EVERY = 16  # steps between progress-bar updates (one update per field per step costs ~10 us each)


@dataclass
class _Field:
    """One field's prepared inputs and state."""

    x: Tensor  # [N, D] scaled rows
    w: Tensor  # [N] popularity weights
    scale: float
    coder: _Coder
    gen: torch.Generator
    steps: int
    batch: int
    prep_seconds: float = 0.0


@dataclass
class _Stack:
    """Parameters of several fields stacked on a leading field axis, with Adam moments."""

    params: list[Tensor]  # enc_w [F, D, D], enc_b [F, D], dec_w, dec_b, books [F, M, K, W]; or books only
    exp_avg: list[Tensor]
    exp_avg_sq: list[Tensor]
    linear: bool

    @classmethod
    def of(cls, coders: Sequence[_Coder], linear: bool) -> _Stack:
        def stack(get: Callable[[_Coder], Tensor]) -> Tensor:
            return torch.stack([get(c).detach() for c in coders])

        if linear:
            params = [
                stack(lambda c: c.enc.weight),
                stack(lambda c: c.enc.bias),
                stack(lambda c: c.dec.weight),
                stack(lambda c: c.dec.bias),
                stack(lambda c: c.books),
            ]
        else:
            params = [stack(lambda c: c.books)]
        return cls(
            params, [torch.zeros_like(p) for p in params], [torch.zeros_like(p) for p in params], linear
        )

    def select(self, idx: Tensor | None) -> _Stack:
        """The stack of the fields ``idx`` (a copy; None = this stack itself)."""
        if idx is None:
            return self
        return _Stack(
            [p.index_select(0, idx) for p in self.params],
            [s.index_select(0, idx) for s in self.exp_avg],
            [s.index_select(0, idx) for s in self.exp_avg_sq],
            self.linear,
        )

    def put(self, idx: Tensor | None, part: _Stack) -> None:
        """Write ``part`` (from ``select(idx)``) back."""
        if idx is None:
            return
        for mine, theirs in zip(
            self.params + self.exp_avg + self.exp_avg_sq,
            part.params + part.exp_avg + part.exp_avg_sq,
            strict=True,
        ):
            mine.index_copy_(0, idx, theirs)

    @property
    def books(self) -> Tensor:
        return self.params[-1]

    def coder_view(self, j: int) -> _Coder:
        """A ``_Coder`` whose parameters share storage with field ``j`` of the stack (in-place
        edits, e.g. dead-code replacement, land in the stack)."""
        books = self.books.detach()[j]
        coder = _Coder.__new__(_Coder)
        nn.Module.__init__(coder)
        coder.enc = nn.Identity()
        coder.dec = nn.Identity()
        if self.linear:
            p = [t.detach()[j] for t in self.params[:4]]
            coder.enc = _linear_view(p[0], p[1])
            coder.dec = _linear_view(p[2], p[3])
        coder.books = nn.Parameter(books, requires_grad=False)
        return coder


def _linear_view(weight: Tensor, bias: Tensor) -> nn.Linear:
    lin = nn.Linear.__new__(nn.Linear)
    nn.Module.__init__(lin)
    lin.in_features, lin.out_features = weight.shape[1], weight.shape[0]
    lin.weight = nn.Parameter(weight.detach(), requires_grad=False)
    lin.bias = nn.Parameter(bias.detach(), requires_grad=False)
    return lin


def _adam_(params: list[Tensor], grads: Sequence[Tensor], st: _Stack, step: int, lr: float) -> None:
    """``torch.optim.Adam`` (defaults, no weight decay) on stacked tensors, op for op the
    single-tensor implementation, so each field's update is the per-field optimizer's."""
    beta1, beta2 = _BETAS
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    step_size = lr / bias_correction1
    bias_correction2_sqrt = bias_correction2**0.5
    with torch.no_grad():
        for p, g, m1, m2 in zip(params, grads, st.exp_avg, st.exp_avg_sq, strict=True):
            m1.lerp_(g, 1 - beta1)
            m2.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            denom = (m2.sqrt() / bias_correction2_sqrt).add_(_EPS)
            p.addcdiv_(m1, denom, value=-step_size)


def batched_losses(
    params: Sequence[Tensor],
    xb: Tensor,
    mask: Tensor,
    rows: Tensor,
    cfg: CodeLearningConfig,
    negatives: Callable[[Tensor], Tensor] | None,
) -> tuple[Tensor, dict[str, Tensor], Tensor]:
    """Stage-1 loss of each field on its padded batch (PQ).

    Args:
        params: stacked ``[enc_w [F, D, D], enc_b [F, D], dec_w, dec_b, books [F, M, K, W]]``
            (linear encoder) or ``[books]`` (identity encoder).
        xb: ``[F, B, D]`` the sampled rows (scaled).
        mask: ``[F, B]`` float, 1 for a field's real rows, 0 for padding.
        rows: ``[F]`` float, real rows per field (the mask's row sums).
        cfg: stage-1 knobs (commitment, alpha, beta, tau, tau_assign).
        negatives: maps codes ``[F, B, M]`` to negative codes ``[F, B, N, M]`` (None: no
            contrastive term).

    Returns:
        ``(loss [F], terms {name: [F]}, targets [F, B, M, W])``; padded rows reach no term, and
        field f's parameters reach only ``loss[f]``.
    """
    books = params[-1]
    f, m, k, w = books.shape
    _, b, d = xb.shape
    if len(params) == 5:
        enc_w, enc_b, dec_w, dec_b = params[:4]
        s = torch.baddbmm(enc_b.unsqueeze(1), xb, enc_w.transpose(1, 2))
    else:
        s = xb
    target = s.reshape(f, b, m, w)
    # -||t - c||^2 / tau_a up to a per-row constant (-||t||^2 / tau_a, which moves neither the
    # argmin nor the softmax nor its gradient) in ONE matmul per sub-space: [t, 1] @ [2c, -||c||^2]
    # / tau_a. The [F*M, B, K] block is the step's largest tensor; written once, read by argmax,
    # softmax and one reduction (the unfused form took ~25 passes over it forward and backward).
    t_aug = torch.cat([target, target.new_ones(f, b, m, 1)], -1).permute(0, 2, 1, 3).reshape(f * m, b, w + 1)
    c_aug = torch.cat([2 * books, -books.pow(2).sum(-1, keepdim=True)], -1).reshape(f * m, k, w + 1)
    c_aug = c_aug.transpose(1, 2) / cfg.tau_assign
    if cfg.alpha > 0:
        logits_a = torch.bmm(t_aug, c_aug)  # [F*M, B, K]
        codes = logits_a.detach().argmax(-1)
    else:
        with torch.no_grad():
            codes = torch.bmm(t_aug, c_aug).argmax(-1)
    codes = codes.reshape(f, m, b).transpose(1, 2)  # [F, B, M]
    offsets = (torch.arange(f * m, device=xb.device) * k).reshape(f, 1, m)
    flat_books = books.reshape(f * m * k, w)
    # index_select, not F.embedding: its CPU backward is a sort-based kernel 5-10x slower here
    q = flat_books.index_select(0, (codes + offsets).reshape(-1)).reshape(f, b, d)
    q_st = s + (q - s).detach()
    dec = torch.baddbmm(dec_b.unsqueeze(1), q_st, dec_w.transpose(1, 2)) if len(params) == 5 else q_st
    per_elem = rows * d

    def mse(a: Tensor, c: Tensor) -> Tensor:
        return ((a - c).pow(2).sum(-1) * mask).sum(1) / per_elem

    terms = {"vq": mse(q, s.detach()), "commit": mse(s, q.detach()), "recon": mse(dec, xb)}
    loss = terms["vq"] + cfg.commitment * terms["commit"] + terms["recon"]
    if cfg.alpha > 0:
        a = torch.softmax(logits_a, dim=-1)  # [F*M, B, K]
        row_w = mask.repeat_interleave(m, 0).unsqueeze(1)  # [F*M, 1, B]
        p = torch.bmm(row_w, a).reshape(f, m, k) / rows[:, None, None]  # [F, M, K]
        entropy = -(p * torch.log(p + 1e-10)).sum(-1)
        terms["reg"] = (math.log(k) - entropy).mean(-1)
        loss = loss + cfg.alpha * terms["reg"]
    if negatives is not None:
        neg = negatives(codes)  # [F, B, N, M]
        n_neg = neg.shape[2]
        negs = flat_books.index_select(0, (neg + offsets.unsqueeze(2)).reshape(-1)).reshape(f, b, n_neg, d)
        anchor = F.normalize(s, dim=-1, eps=1e-8)
        cands = F.normalize(torch.cat([q.unsqueeze(2), negs], 2), dim=-1, eps=1e-8)
        logits = torch.einsum("fbd,fbnd->fbn", anchor, cands) / cfg.tau
        ce = torch.logsumexp(logits, -1) - logits[..., 0]
        terms["con"] = (ce * mask).sum(1) / rows
        loss = loss + cfg.beta * terms["con"]
    return loss, terms, target


def fit_codes_batched(
    tables: Sequence[Tensor],
    counts: Sequence[Tensor],
    num_subspaces: int,
    codebook_size: int,
    config: CodeLearningConfig,
    seed: int = 0,
    log_every: int = 100,
    on_log: Callable[[int, dict[str, float]], None] | None = None,
    scores: Sequence[Callable[[Tensor], float] | None] | None = None,
    bars: ProgressBars | None = None,
    labels: Sequence[str] | None = None,
) -> list[CodeLearningResult]:
    """``fit_codes`` for several fields, the PQ fields of one width trained in one loop.

    Each field gets what ``fit_codes(tables[i], counts[i], ..., seed=seed)`` gives it (same
    budget, random draws, k-means start, dead-code replacement and selection), up to float
    summation order. RQ/AQ quantizers run ``fit_codes`` field by field.

    Args:
        tables: per field ``[N_i, D_i]`` trained rows (real ids only), all on one device.
        counts: per field ``[N_i]`` training counts.
        num_subspaces: M.
        codebook_size: K.
        config: stage-1 knobs.
        seed: seeds each field's k-means, sampling and negatives (the same seed per field, as
            a loop of ``fit_codes`` calls with one seed does).
        log_every: history interval (steps).
        on_log: optional ``(field index, history entry)`` callback.
        scores: per field the plug-in AUC of its decoded rows (or None); needed by
            ``config.select_every``.
        bars: progress bars to add one bar per field to (steps, rows/s, ETA); None = none.
        labels: per field its bar's description (None = ``stage 1 [i]``).

    Returns:
        One ``CodeLearningResult`` per field, in order. ``seconds`` is the field's own work
        (k-means, final assignment) plus its share of the shared loop by rows processed.

    Raises:
        ConfigError: M does not divide a width (PQ), ``select_every`` without a score, or
            ``tables`` and ``counts`` (or ``scores``) differ in length.
    """
    cfg, m, k = config, num_subspaces, codebook_size
    scores = list(scores) if scores is not None else [None] * len(tables)
    labels = list(labels) if labels is not None else [f"stage 1 [{i}]" for i in range(len(tables))]
    if not len(tables) == len(counts) == len(scores) == len(labels):
        raise ConfigError(
            f"fit_codes_batched: {len(tables)} tables, {len(counts)} counts, {len(scores)} scores, "
            f"{len(labels)} labels; give one of each per field"
        )
    if cfg.quantizer != "pq":  # RQ/AQ assignment is sequential per stage: per field
        return [
            fit_codes(t, c, m, k, cfg, seed, log_every, _bind(on_log, i), scores[i], bars, labels[i])
            for i, (t, c) in enumerate(zip(tables, counts, strict=True))
        ]
    torch.manual_seed(seed)  # as fit_codes leaves the global generator
    fields = [
        _prepare(t, c, m, k, cfg, seed, scores[i], i)
        for i, (t, c) in enumerate(zip(tables, counts, strict=True))
    ]
    histories: list[list[dict[str, float]]] = [[] for _ in fields]
    shares = [0.0] * len(fields)
    by_width: dict[int, list[int]] = {}
    for i, fl in enumerate(fields):
        if fl.steps > 0:
            by_width.setdefault(fl.x.shape[1], []).append(i)
    for group in (b for width in by_width.values() for b in _buckets(width, fields)):
        t0 = time.perf_counter()
        _train_group(group, fields, histories, m, k, cfg, log_every, on_log, scores, bars, labels)
        spent = time.perf_counter() - t0
        total_rows = sum(fields[i].steps * fields[i].batch for i in group)
        for i in group:
            shares[i] = spent * fields[i].steps * fields[i].batch / total_rows
    return [_finish(fl, histories[i], shares[i], m, cfg) for i, fl in enumerate(fields)]


def _buckets(group: list[int], fields: list[_Field]) -> list[list[int]]:
    """The fields of one width split into loops. On CUDA one loop (a step is launch-bound:
    padding a small field's batch to the largest costs nothing). On CPU a step is compute-bound,
    so fields whose batch is under ``_CPU_PAD_RATIO`` of their loop's largest start their own
    loop instead of being padded (fields are independent: the order of loops changes nothing)."""
    if fields[group[0]].x.device.type == "cuda":
        return [group]
    out: list[list[int]] = []
    for i in sorted(group, key=lambda i: -fields[i].batch):
        if out and fields[i].batch >= _CPU_PAD_RATIO * fields[out[-1][0]].batch:
            out[-1].append(i)
        else:
            out.append([i])
    return [sorted(b) for b in out]


def _bind(
    on_log: Callable[[int, dict[str, float]], None] | None, i: int
) -> Callable[[dict[str, float]], None] | None:
    if on_log is None:
        return None
    return lambda entry: on_log(i, entry)


def _prepare(
    table: Tensor,
    counts: Tensor,
    m: int,
    k: int,
    cfg: CodeLearningConfig,
    seed: int,
    score: Callable[[Tensor], float] | None,
    index: int,
) -> _Field:
    """What ``fit_codes`` does before its loop: scale, weights, budget, k-means start."""
    t0 = time.perf_counter()
    x = table.detach().float()
    n, d = x.shape
    dev = x.device
    if d % m:
        raise ConfigError(
            f"num_subspaces={m} must divide the embedding width {d} (quantizer pq, field {index})"
        )
    if n == 0:
        raise ConfigError(f"field {index} has no rows to quantize")
    steps, batch = cfg.budget(n)
    if cfg.select_every > 0 and steps > 0 and score is None:
        raise ConfigError(
            f"code_learning.select_every needs a score function (the plug-in AUC) for field {index}"
        )
    gen = torch.Generator(device=dev).manual_seed(seed)
    w = popularity_weights(counts.cpu(), cfg.weighting).to(dev)
    scale = float(torch.sqrt((w[:, None] * x.pow(2)).sum() / (w.sum() * d)).clamp_min(1e-12))
    x = x / scale
    books = _initial_books(x, w, m, k, cfg.quantizer, cfg.kmeans_iters, seed)
    coder = _Coder(d, books, cfg.encoder == "linear").to(dev)
    return _Field(x, w, scale, coder, gen, steps, batch, time.perf_counter() - t0)


def _finish(
    fl: _Field, history: list[dict[str, float]], shared: float, m: int, cfg: CodeLearningConfig
) -> CodeLearningResult:
    """What ``fit_codes`` does after its loop: assign every row, fold, report."""
    t0 = time.perf_counter()
    coder, x, d = fl.coder, fl.x, fl.x.shape[1]
    codes, dec = _assign_all(coder, x, cfg.quantizer, cfg.aq_icm_iters)
    if not history:
        history = [{"step": 0, "recon": float(F.mse_loss(dec, x))}]
    tables, bias = _fold(coder, cfg.quantizer, m, fl.scale)
    enc_change = 0.0
    if isinstance(coder.enc, nn.Linear):
        enc_change = float(torch.linalg.norm(coder.enc.weight.detach() - torch.eye(d, device=x.device)))
    return CodeLearningResult(
        codes=codes,
        codebooks=tables,
        bias=bias,
        layout=cfg.layout,
        decoded=dec * fl.scale,
        scale=fl.scale,
        history=history,
        seconds=fl.prep_seconds + shared + time.perf_counter() - t0,
        encoder_change=enc_change,
        steps=fl.steps,
        batch_size=fl.batch,
    )


def _train_group(
    group: list[int],
    fields: list[_Field],
    histories: list[list[dict[str, float]]],
    m: int,
    k: int,
    cfg: CodeLearningConfig,
    log_every: int,
    on_log: Callable[[int, dict[str, float]], None] | None,
    scores: list[Callable[[Tensor], float] | None],
    bars: ProgressBars | None,
    labels: list[str],
) -> None:
    """The Adam loop of ``fit_codes._train`` for the fields ``group`` (one width) at once; each
    field's trained state is written back into its ``coder``."""
    fs = [fields[i] for i in group]
    dev = fs[0].x.device
    linear = cfg.encoder == "linear"
    master = _Stack.of([f.coder for f in fs], linear)
    # all fields' rows concatenated; one float64 cumulative weight for the inverse-CDF draws
    sizes = [len(f.x) for f in fs]
    offsets = torch.tensor([0, *sizes[:-1]], device=dev).cumsum(0)  # [G] int64
    x_all = torch.cat([f.x for f in fs])
    for f, o, n in zip(fs, offsets.tolist(), sizes, strict=True):  # views: no second copy
        f.x = x_all[o : o + n]
    w_all = torch.cat([f.w for f in fs]).double()
    if not bool(torch.equal(w_all, w_all.floor())):  # popularity_weights are whole numbers
        raise AssertionError("batched sampling needs whole-number popularity weights")
    cdf = torch.cumsum(w_all, 0)
    totals = torch.stack(
        [cdf[o + n - 1] - (cdf[o - 1] if o > 0 else 0) for o, n in zip(offsets.tolist(), sizes, strict=True)]
    )
    bases = torch.stack([cdf[o - 1] if o > 0 else cdf.new_zeros(()) for o in offsets.tolist()])
    last = offsets + torch.tensor(sizes, device=dev) - 1
    rho = cfg.rho if cfg.rho is not None else 1.0 / m
    windows = [cfg.dead_code_steps or max(1, math.ceil(len(f.x) / f.batch)) for f in fs]
    revived = [0] * len(fs)
    best: dict[int, tuple[float, dict[str, Tensor], int]] = {}
    for j, i in enumerate(group):
        if scores[i] is not None and cfg.select_every > 0:
            best[j] = (_score(scores[i], fs[j].coder, fs[j], cfg), copy.deepcopy(fs[j].coder.state_dict()), 0)
    with_bar = bars if bars is not None else ProgressBars(False)
    tasks = [
        with_bar.add(labels[i], f.steps, unit="rows", per_step=f.batch)
        for i, f in zip(group, fs, strict=True)
    ]
    pending = [0] * len(fs)  # steps not yet shown: bars move every _BAR_EVERY steps, not every step
    done = 0
    for end in sorted({f.steps for f in fs}):
        act = [j for j, f in enumerate(fs) if f.steps >= end]
        idx = None if len(act) == len(fs) else torch.tensor(act, device=dev)
        work = master.select(idx)
        params = [p.detach().clone().requires_grad_(True) for p in work.params]
        work.params = params
        batches = [fs[j].batch for j in act]
        b = max(batches)
        mask = torch.zeros(len(act), b, device=dev)
        for r, bj in enumerate(batches):
            mask[r, :bj] = 1.0
        rows_f = torch.tensor(batches, device=dev, dtype=torch.float32)
        sel = idx if idx is not None else torch.arange(len(fs), device=dev)
        tot, base, top = totals[sel], bases[sel], last[sel]
        u = torch.zeros(len(act), b, dtype=torch.float64, device=dev)
        neg_buffers = None
        if cfg.beta > 0 and k > 1:
            shape = (len(act), b, cfg.num_negatives, m)
            neg_buffers = (
                torch.zeros(shape, device=dev),
                torch.zeros(shape[:3], dtype=torch.long, device=dev),
                torch.ones(shape, dtype=torch.long, device=dev),
            )
        gens = [fs[j].gen for j in act]
        for step in range(done + 1, end + 1):
            for r, (g, bj) in enumerate(zip(gens, batches, strict=True)):  # as sample_by_weight draws
                torch.rand(bj, generator=g, dtype=torch.float64, device=dev, out=u[r, :bj])
            v = torch.floor(u * tot[:, None]) + base[:, None]  # whole-number cdf: same index as u * total
            picked = torch.searchsorted(cdf, v, right=True)
            picked = torch.minimum(picked, top[:, None])
            xb = x_all[picked]
            negatives = None
            if neg_buffers is not None:
                negatives = _negative_fn(neg_buffers, gens, batches, k, rho)
            loss, terms, targets = batched_losses(params, xb, mask, rows_f, cfg, negatives)
            grads = torch.autograd.grad(loss.sum(), params)
            _adam_(params, grads, work, step, cfg.lr)
            for r, j in enumerate(act):
                if step % windows[j] == 0:
                    coder = work.coder_view(r)
                    usage = _pq_usage(coder, fs[j].x, m, k)
                    revived[j] += _replace_dead(coder, usage, targets[r, : batches[r]].detach(), gens[r])
            due = [r for r, j in enumerate(act) if step == 1 or step % log_every == 0 or step == fs[j].steps]
            if due:
                _log(due, act, step, loss, terms, revived, histories, group, on_log)
            for r, j in enumerate(act):
                pending[j] += 1
                if step % _BAR_EVERY == 0 or step == fs[j].steps or r in due:
                    entry = histories[group[j]][-1] if r in due else None
                    loss_text = None if entry is None else f"loss {entry['loss']:.4f}"
                    with_bar.advance(tasks[j], pending[j], status=loss_text)
                    pending[j] = 0
            if cfg.select_every > 0 and step % cfg.select_every == 0:
                for r, j in enumerate(act):
                    if j in best:
                        auc = _score(scores[group[j]], work.coder_view(r), fs[j], cfg)
                        histories[group[j]].append({"step": float(step), "plugin_auc": auc})
                        if auc > best[j][0]:
                            best[j] = (auc, _detached_state(work.coder_view(r)), step)
        work.params = [p.detach() for p in params]
        if idx is None:
            master = work
        else:
            master.put(idx, work)
        done = end
    for j, f in enumerate(fs):
        f.coder.load_state_dict(master.coder_view(j).state_dict())
        if j in best:
            f.coder.load_state_dict(best[j][1])
            histories[group[j]].append(
                {"step": float(f.steps), "selected_step": float(best[j][2]), "plugin_auc": best[j][0]}
            )


def _pq_usage(coder: _Coder, x: Tensor, m: int, k: int) -> Tensor:
    """``table_usage`` for PQ: ``[M, K]`` rows of ``x [N, D]`` assigned to each codeword, with
    the one-matmul nearest search of ``kmeans.nearest`` (the same argmin as ``quantize``'s
    distances; 3x less work than them on CPU, and this runs once per pass over the table)."""
    books = coder.books.detach()
    w = books.shape[-1]
    flat = torch.zeros(m * k, dtype=torch.long, device=x.device)
    offsets = (torch.arange(m, device=x.device) * k).unsqueeze(1)
    with torch.no_grad():
        for start in range(0, len(x), _USAGE_CHUNK):
            s = coder.enc(x[start : start + _USAGE_CHUNK])
            idx, _ = nearest(s.reshape(len(s), m, w).transpose(0, 1), books)  # [M, n]
            flat += torch.bincount((idx + offsets).flatten(), minlength=m * k)
    return flat.reshape(m, k).float()


def _detached_state(coder: _Coder) -> dict[str, Tensor]:
    return {key: v.detach().clone() for key, v in coder.state_dict().items()}


def _score(
    score: Callable[[Tensor], float] | None, coder: _Coder, fl: _Field, cfg: CodeLearningConfig
) -> float:
    assert score is not None
    return score(_assign_all(coder, fl.x, cfg.quantizer, cfg.aq_icm_iters)[1] * fl.scale)


def _negative_fn(
    buffers: tuple[Tensor, Tensor, Tensor],
    gens: list[torch.Generator],
    batches: list[int],
    k: int,
    rho: float,
) -> Callable[[Tensor], Tensor]:
    """``semi_synthetic_negatives`` for padded codes ``[F, B, M]``, each field drawing from its
    own generator in the same order and shapes (mask, forced position, shift)."""
    u, forced, shift = buffers
    m = u.shape[-1]

    def make(codes: Tensor) -> Tensor:
        for r, (g, bj) in enumerate(zip(gens, batches, strict=True)):
            n = u.shape[2]
            torch.rand((bj, n, m), generator=g, device=u.device, out=u[r, :bj])
            torch.randint(0, m, (bj, n), generator=g, device=u.device, out=forced[r, :bj])
            torch.randint(1, k, (bj, n, m), generator=g, device=u.device, out=shift[r, :bj])
        mask = u < rho
        none = ~mask.any(-1)
        # == arange instead of F.one_hot, which checks its input's range (a host sync on CUDA)
        mask |= none.unsqueeze(-1) & (forced.unsqueeze(-1) == torch.arange(m, device=u.device))
        pos = codes.unsqueeze(2).expand(u.shape)
        return torch.where(mask, (pos + shift) % k, pos)

    return make


def _log(
    due: list[int],
    act: list[int],
    step: int,
    loss: Tensor,
    terms: dict[str, Tensor],
    revived: list[int],
    histories: list[list[dict[str, float]]],
    group: list[int],
    on_log: Callable[[int, dict[str, float]], None] | None,
) -> None:
    """History entries of the fields ``due`` (positions in ``act``): one host copy for all."""
    names = list(terms)
    values = torch.stack([loss.detach(), *(terms[n].detach() for n in names)]).cpu().tolist()
    for r in due:
        j = act[r]
        entry = {
            "revived": float(revived[j]),
            "step": float(step),
            "loss": values[0][r],
            **{name: values[1 + t][r] for t, name in enumerate(names)},
        }
        histories[group[j]].append(entry)
        if on_log is not None:
            on_log(group[j], entry)
