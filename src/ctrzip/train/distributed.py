"""Data-parallel training under ``torchrun`` (issue 14): ``DistributedTrainer``, the per-rank
``ShardedLoader`` and exact ``evaluate_sharded``.

Batch semantics: ``train.batch_size`` is the **global** batch, the rows of one optimizer step
summed over all ranks. The sequence of global batches is the one a single process draws
(``BatchLoader`` over the whole split with the same seed, shuffle and block size) and does
not depend on the number of ranks; rank ``r`` of ``W`` trains on the contiguous slice
``shard_bounds(len(batch), r, W)`` of each global batch and reads only those rows from the
memory map. So every row is read once per epoch across ranks, and each rank's loss is
``W * sum(BCE over its rows) / len(global batch)``: DistributedDataParallel's gradient
average is then exactly the gradient of the mean BCE over the global batch, the same step a
single process takes (up to float summation order). The loop state (epoch, step) is counted
in global steps, so a checkpoint resumes on any number of ranks.

Each rank keeps the order as row ids: 4 bytes per training row (8 from 2**31 rows).

What still differs from one process: dropout masks are drawn per rank, and BatchNorm
normalizes each rank's slice (as in any DDP run without SyncBatchNorm); a BatchNorm model
needs at least 2 rows per rank in every step (checked before training).

Rank 0 alone prints, draws progress and writes ``train.out_dir`` (atomically, see
``checkpoint.atomic_save``); it reads a saved run and broadcasts it (model, optimizer and loop
state), so the other ranks need no access to that folder. Validation metrics are computed on
the predictions and labels gathered from every rank (exact AUC of the whole split), on every
rank, so all ranks take the same early-stopping and lr-decay decisions.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from ctrzip import distributed as dist
from ctrzip.config import ConfigError
from ctrzip.data.batch import Batch
from ctrzip.data.dataset import SplitArrays
from ctrzip.data.loader import BatchLoader, resolve_device
from ctrzip.errors import TrainingError
from ctrzip.train.checks import check_device, has_batch_norm
from ctrzip.train.evaluation import evaluate
from ctrzip.train.train_config import History, TrainConfig
from ctrzip.train.trainer import Trainer, _LoopState

__all__ = [
    "DistributedTrainer",
    "ShardedLoader",
    "evaluate_sharded",
    "evaluate_split",
    "setup",
    "trainer_for",
]

_RANK_SEED_STRIDE = 1_000_003  # dropout seeds of ranks > 0: far from rank 0's (train.seed)


def setup(cfg: TrainConfig) -> TrainConfig:
    """Join the ``torchrun`` process group when ``WORLD_SIZE > 1`` (else return ``cfg``).

    CUDA (``train.device`` ``auto`` on a GPU machine, or ``cuda``) gives each rank
    ``cuda:LOCAL_RANK`` and NCCL; CPU gives gloo. Collectives time out after
    ``train.dist_timeout_s``.

    Returns:
        ``cfg`` with ``device`` set to this rank's device.

    Raises:
        ConfigError: ``train.device`` names one GPU (``cuda:N``) while several ranks run, or
            ``LOCAL_RANK`` exceeds this node's GPUs.
        TrainingError: ``train.device`` is unavailable.
    """
    if dist.env_world_size() == 1:
        return cfg
    dev = check_device(cfg.device, "train.device")
    if dev.type == "cuda":
        if cfg.device not in ("auto", "cuda"):
            raise ConfigError(
                f"train.device={cfg.device!r} names one GPU but torchrun started "
                f"{dist.env_world_size()} processes; use auto or cuda (rank r uses cuda:LOCAL_RANK)"
            )
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise ConfigError(
                f"LOCAL_RANK={local} but this node has {torch.cuda.device_count()} GPU(s); "
                "lower torchrun --nproc-per-node"
            )
        dev = torch.device("cuda", local)
    dist.init_from_env(dev, timeout_s=cfg.dist_timeout_s)
    return replace(cfg, device=str(dev))


def trainer_for(cfg: TrainConfig) -> Trainer:
    """``DistributedTrainer`` inside a process group of more than one rank, else ``Trainer``."""
    return DistributedTrainer(cfg) if dist.is_distributed() else Trainer(cfg)


def _row_ids(n: int) -> SplitArrays:
    """A stand-in split whose ``sparse[i, 0]`` is ``i``: a ``BatchLoader`` over it yields the
    global batch order as row ids without reading the data. Memory: 4 bytes per row (8 from
    2**31 rows); the zero labels are never written, so the OS backs them with no pages."""
    dtype = np.int32 if n < 2**31 else np.int64
    return SplitArrays(
        np.arange(n, dtype=dtype)[:, None], np.zeros((n, 0), np.float32), np.zeros(n, np.float32)
    )


class ShardedLoader:
    """This rank's slice of every global training batch.

    Args:
        split: the whole training split (memory-mapped); only this rank's rows are read.
        batch_size: rows per global batch (all ranks together).
        shuffle, seed, block_batches, drop_last: as ``BatchLoader`` (the global order is
            ``BatchLoader``'s, with ``merge_single_last=True``).
        device: where batches go.
        rank, world: this rank and the number of ranks (default: the process group's).

    After each yielded batch, ``step_rows`` is ``(rows of the global batch, rows of this
    rank's slice)``. A rank whose slice is empty (a last global batch smaller than the
    number of ranks) gets the batch's first row as a stand-in with ``step_rows[1] == 0``, so
    it still takes part in the gradient all-reduce; its loss weight is zero.
    """

    merge_single_last = True

    def __init__(
        self,
        split: SplitArrays,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int,
        device: str | torch.device = "cpu",
        block_batches: int = 32,
        drop_last: bool = False,
        rank: int | None = None,
        world: int | None = None,
    ) -> None:
        self.split = split
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.device = resolve_device(device)
        self.drop_last = drop_last
        self.rank = dist.rank() if rank is None else rank
        self.world = dist.world_size() if world is None else world
        self._order = BatchLoader(
            _row_ids(len(split)), batch_size, shuffle=shuffle, seed=seed, device="cpu",
            block_batches=block_batches, drop_last=drop_last, merge_single_last=True,
        )  # fmt: skip
        self.step_rows = (0, 0)

    def __len__(self) -> int:
        return len(self._order)

    @property
    def num_rows(self) -> int:
        return len(self.split)

    def set_epoch(self, epoch: int) -> None:
        self._order.set_epoch(epoch)

    def global_batch_sizes(self) -> list[int]:
        """Rows of each global batch of an epoch (the same every epoch)."""
        n, bs, steps = len(self.split), self.batch_size, len(self)
        if self.drop_last or not steps:
            return [bs] * steps
        return [bs] * (steps - 1) + [n - bs * (steps - 1)]  # a short or a merged last batch

    def __iter__(self):
        pin = self.device.type == "cuda"
        for ids_batch in self._order:
            ids = ids_batch.sparse[:, 0].numpy()
            a, b = dist.shard_bounds(len(ids), self.rank, self.world)
            mine = ids[a:b] if b > a else ids[:1]
            batch = Batch(
                torch.from_numpy(np.asarray(self.split.sparse[mine])),
                torch.from_numpy(np.asarray(self.split.dense[mine])),
                torch.from_numpy(np.asarray(self.split.label[mine])),
            )
            self.step_rows = (len(ids), b - a)
            if self.device.type != "cpu":
                batch = (batch.pin_memory() if pin else batch).to(self.device, non_blocking=pin)
            yield batch


def _as_split(data: Any, what: str) -> SplitArrays:
    if isinstance(data, SplitArrays):
        return data
    if isinstance(data, BatchLoader):
        return data.split
    raise TrainingError(
        f"distributed training needs the {what} split as SplitArrays or a BatchLoader over one, "
        f"got {type(data).__name__}"
    )


def evaluate_sharded(
    model: nn.Module, split: SplitArrays, *, batch_size: int, device: str | torch.device, name: str
) -> dict[str, float]:
    """``evaluate`` over all ranks: each rank scores whole batches of ``split``, the logits and
    labels are gathered in row order and AUC/logloss computed on the whole split on every rank,
    equal to one process's result (``ctrzip.compression.sharded.sharded_evaluate``, the one
    implementation both training and compression use).

    Returns:
        ``{"auc", "logloss", "n"}`` (``n``: rows of the whole split).

    Raises:
        TrainingError: the split is empty or has one class (names ``name``).
    """
    from ctrzip.compression.sharded import sharded_evaluate

    return sharded_evaluate(model, split, batch_size=batch_size, device=device, name=name)


def evaluate_split(
    model: nn.Module, split: SplitArrays, *, batch_size: int, device: str | torch.device, name: str
) -> dict[str, float]:
    """``evaluate_sharded`` in a process group, else ``evaluate``."""
    if dist.is_distributed():
        return evaluate_sharded(model, split, batch_size=batch_size, device=device, name=name)
    return evaluate(model, split, batch_size=batch_size, device=device, name=name)


class DistributedTrainer(Trainer):
    """``Trainer`` for one rank of a ``torchrun`` job (see the module docstring).

    Use it inside an initialized process group (``setup``); in one process it trains like
    ``Trainer`` on the same batches.
    """

    def fit(self, model: nn.Module, train: Any, valid: Any = None, *, trainable: Any = None) -> History:
        """As ``Trainer.fit``; ``train`` and ``valid`` are splits (or ``BatchLoader``s over them).

        Raises:
            ConfigError: ``train.batch_size`` is smaller than the number of ranks.
            TrainingError: as ``Trainer.fit``; also a BatchNorm model with fewer than 2 rows
                per rank in some step, data that is not a split, or a rank that died or
                stalled past ``train.dist_timeout_s`` (on the ranks that remain).
        """
        cfg = self.config
        world = dist.world_size()
        if cfg.batch_size < world:
            raise ConfigError(
                f"train.batch_size={cfg.batch_size} is the global batch (all ranks together); "
                f"with {world} ranks it must be >= {world}"
            )
        split = _as_split(train, "training")
        opts: dict[str, Any] = {}
        if isinstance(train, BatchLoader):
            for key in ("batch_size", "shuffle"):
                if getattr(train, key) != getattr(cfg, key):
                    raise TrainingError(
                        f"the training BatchLoader has {key}={getattr(train, key)!r} but train.{key} is "
                        f"{getattr(cfg, key)!r}; make them equal or pass the split itself"
                    )
            opts = {
                "seed": train.seed,
                "drop_last": train.drop_last,
                "block_batches": max(
                    1, getattr(train, "block_rows", 32 * train.batch_size) // train.batch_size
                ),
            }
        loader = ShardedLoader(
            split, cfg.batch_size, shuffle=cfg.shuffle, seed=opts.pop("seed", cfg.seed),
            device=check_device(cfg.device, "train.device"), **opts,
        )  # fmt: skip
        if valid is not None:
            valid = _as_split(valid, "validation")
        if has_batch_norm(model) and len(split) > 0:
            smallest = min(loader.global_batch_sizes()) // world
            if smallest < 2:
                raise TrainingError(
                    f"the model has BatchNorm, which needs at least 2 rows per rank in every step; with "
                    f"train.batch_size={cfg.batch_size} over {len(split)} rows some step gives a rank "
                    f"{smallest} row(s) on {world} ranks: raise train.batch_size or use fewer ranks"
                )
        self._main = dist.is_main()
        self._synced = False
        self._main_out = Path(cfg.out_dir) if cfg.out_dir else None  # rank 0's, for messages
        if not self._main:  # rank 0 alone writes train.out_dir and prints
            self.config = replace(cfg, out_dir=None, progress=False)
        try:
            return super().fit(model, loader, valid, trainable=trainable)
        finally:
            self.config = cfg
            self._ddp = None

    # ------------------------------------------------------------ collectives
    def _fit(self, model: nn.Module, train: Any, valid: Any, device: torch.device) -> History:
        try:
            return super()._fit(model, train, valid, device)
        except Exception as err:
            if self._main and not self._synced:  # e.g. a saved run that differs: the others wait
                # in _loop's first broadcast; tell them (ranks already gone fail it at once),
                with contextlib.suppress(Exception):  # never masking the original error
                    dist.broadcast_object(("error", f"rank 0 stopped before training: {err}"))
            raise

    def _loop(
        self, model: nn.Module, loader: Any, valid: Any, st: _LoopState, out: Path | None, bar: Any
    ) -> None:
        hint = ", then rerun the same command to resume from train.out_dir/last.pt"
        with dist.collective_failures(
            "train.dist_timeout_s", self.config.dist_timeout_s, TrainingError, hint
        ):
            self._sync_start(model, st)
            super()._loop(model, loader, valid, st, out, bar)

    def _sync_start(self, model: nn.Module, st: _LoopState) -> None:
        """Give every rank rank 0's starting point (fresh or resumed), then wrap in DDP."""
        if self._main:
            payload = asdict(st)
            payload["loss_sum"] = float(st.loss_sum)
            box = dist.broadcast_object(("ok", payload, self._best_step, self._last_saved))
        else:
            box = dist.broadcast_object(None)
        if box[0] == "error":
            raise TrainingError(box[1])
        self._synced = True
        if not self._main:
            _, payload, self._best_step, self._last_saved = box
            hist = History(**payload.pop("history"))
            for key, value in payload.items():
                setattr(st, key, value)
            st.history = hist
            torch.manual_seed(self.config.seed + _RANK_SEED_STRIDE * dist.rank() + st.global_step)
        if not dist.is_distributed():  # one process: the plain model, the same batches
            self._ddp = model
            return
        device = self._params[0].device
        self._ddp = DistributedDataParallel(  # broadcasts rank 0's parameters and buffers
            model, device_ids=[device.index] if device.type == "cuda" else None, gradient_as_bucket_view=True
        )
        self._sync_optimizer()

    def _sync_optimizer(self) -> None:
        """Rank 0's optimizer state (a resumed run's Adam moments and lr) on every rank."""
        sd = self.optimizer.state_dict() if self._main else None
        layout = None
        if sd is not None:
            layout = {
                "param_groups": sd["param_groups"],
                "state": {
                    pid: {k: (tuple(v.shape), str(v.dtype), str(v.device)) for k, v in s.items()}
                    for pid, s in sd["state"].items()
                },
            }
        layout = dist.broadcast_object(layout)
        if not layout["state"]:  # fresh run: nothing beyond the (identical) param groups
            return
        if not self._main:
            own = self._params[0].device  # rank 0's "cuda:0" is this rank's cuda:LOCAL_RANK
            state = {
                pid: {
                    k: torch.zeros(
                        shape,
                        dtype=getattr(torch, dt.split(".")[-1]),
                        device=own if torch.device(dev).type == own.type else dev,
                    )
                    for k, (shape, dt, dev) in s.items()
                }
                for pid, s in layout["state"].items()
            }
            sd = {"param_groups": layout["param_groups"], "state": state}
        tensors = [t for pid in sorted(sd["state"]) for _, t in sorted(sd["state"][pid].items())]
        dist.broadcast_tensors_(tensors)
        if not self._main:
            self.optimizer.load_state_dict(sd)

    # ------------------------------------------------------------ step
    def _step(self, model: nn.Module, batch: Any) -> Tensor:
        """One DDP step on this rank's slice; returns the global batch's loss (same on all ranks)."""
        total, mine = self._loader.step_rows
        with self._autocast():
            logits = self._ddp(batch)
        bce = nn.functional.binary_cross_entropy_with_logits(
            logits.float(), batch.label.float(), reduction="sum"
        )
        part = bce / total if mine else bce * 0.0  # an empty slice's stand-in row weighs nothing
        reg = self._regularization(model)
        loss = part * dist.world_size() + reg  # DDP averages over ranks: this sums the slices
        self._backward_and_update(loss)
        shown = dist.all_reduce_sum_(part.detach().clone())
        return shown + (reg.detach() if isinstance(reg, Tensor) else reg)

    def _count_step(self, st: _LoopState, loss: Tensor, rows: int, steps_per_epoch: int) -> bool:
        return super()._count_step(st, loss, self._loader.step_rows[0], steps_per_epoch)

    # ------------------------------------------------------------ eval + state
    def _evaluate(
        self, model: nn.Module, valid: Any, batch_size: int, device: torch.device
    ) -> dict[str, float]:
        split = _as_split(valid, "validation")
        return evaluate_sharded(model, split, batch_size=batch_size, device=device, name="validation split")

    def _evaluate_and_save(
        self, model: nn.Module, valid: Any, st: _LoopState, out: Path | None, bar: Any
    ) -> None:
        super()._evaluate_and_save(model, valid, st, out, bar)
        if not self._main and self._main_out is not None:  # rank 0 has just saved last.pt
            self._last_saved = st.global_step

    def _diverged_message(self, model: nn.Module, out: Path | None, err: Any) -> str:
        """Every rank names rank 0's checkpoint folder (all ranks diverge at the same step)."""
        return super()._diverged_message(model, self._main_out, err)

    def _save_best(self, model: nn.Module, out: Path | None, rec: dict[str, Any]) -> None:
        if self._main:
            super()._save_best(model, out, rec)
        else:  # rank 0 keeps the best weights and broadcasts them in _restore_best
            self._best_step = rec["step"]

    def _restore_best(self, model: nn.Module, out: Path | None) -> None:
        if self._main:
            super()._restore_best(model, out)
        with dist.collective_failures("train.dist_timeout_s", self.config.dist_timeout_s, TrainingError):
            dist.broadcast_tensors_(list(model.state_dict().values()))


def print_main(message: str) -> None:
    """Print ``message`` to stderr on rank 0 only."""
    if dist.is_main():
        print(message, file=sys.stderr, flush=True)
