"""torch.distributed primitives every distributed code path shares (issue 14).

ctrzip uses PyTorch's own engine: ``torchrun`` sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/
``MASTER_ADDR``/``MASTER_PORT``; :func:`init_from_env` opens the process group (NCCL on CUDA,
gloo on CPU) with a timeout so a dead rank raises instead of hanging. Every helper here is a
no-op (or the identity) in a single process, so callers never branch on world size.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from ctrzip.config import ConfigError
from ctrzip.errors import UserError

DEFAULT_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job: ``rank`` of ``world_size`` processes, ``local_rank``
    on its node, and the collective ``backend`` (``"nccl"`` or ``"gloo"``)."""

    rank: int
    world_size: int
    local_rank: int
    backend: str


def env_world_size() -> int:
    """``WORLD_SIZE`` as torchrun sets it (1 when unset).

    Raises:
        ConfigError: ``WORLD_SIZE`` is set but not a positive integer.
    """
    raw = os.environ.get("WORLD_SIZE", "1")
    try:
        n = int(raw)
    except ValueError:
        raise ConfigError(f"environment WORLD_SIZE={raw!r} is not an integer") from None
    if n < 1:
        raise ConfigError(f"environment WORLD_SIZE={raw!r} must be >= 1")
    return n


def init_from_env(device: torch.device, timeout_s: float = DEFAULT_TIMEOUT_S) -> DistContext | None:
    """Join the process group torchrun describes, or return None for a single process.

    Args:
        device: this rank's device; CUDA -> NCCL (and ``cuda:LOCAL_RANK`` is made current),
            CPU -> gloo.
        timeout_s: seconds a collective may wait for a missing rank before it raises.

    Raises:
        ConfigError: bad ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``, or ``timeout_s <= 0``.
    """
    world = env_world_size()
    if world == 1:
        return None
    if timeout_s <= 0:
        raise ConfigError(f"distributed timeout must be > 0 seconds, got {timeout_s}")
    try:
        rank = int(os.environ["RANK"])
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    except (KeyError, ValueError):
        raise ConfigError(
            "WORLD_SIZE > 1 but RANK/LOCAL_RANK are missing or not integers; launch with torchrun"
        ) from None
    backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, backend=backend)


def is_distributed() -> bool:
    """True inside an initialized process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Rank 0 (or a single process): the one that writes files and prints."""
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_reduce_sum_(t: Tensor) -> Tensor:
    """Sum ``t`` over ranks in place (identity in one process); returns ``t``."""
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather_rows(t: Tensor) -> Tensor:
    """Concatenate every rank's ``t`` (``[n_r, ...]``, ``n_r`` may differ) along dim 0 in rank
    order; the identity in one process. Shapes beyond dim 0 and dtypes must agree."""
    if not is_distributed():
        return t
    n = torch.tensor([t.shape[0]], device=t.device, dtype=torch.int64)
    sizes = [torch.zeros_like(n) for _ in range(world_size())]
    dist.all_gather(sizes, n)
    counts = [int(s.item()) for s in sizes]
    pad = max(counts) - t.shape[0]
    padded = torch.cat([t, t.new_zeros((pad, *t.shape[1:]))]) if pad else t.contiguous()
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded)
    return torch.cat([p[:c] for p, c in zip(parts, counts, strict=True)])


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` from rank ``src`` on every rank (identity in one process). Only for our own
    plain values (plans, settings): it pickles, so never pass data read from a user file."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def shard_bounds(n: int, part: int, parts: int) -> tuple[int, int]:
    """``[start, stop)`` of contiguous part ``part`` of ``parts`` over ``n`` items; sizes differ
    by at most one and the parts cover ``0..n`` exactly once.

    Raises:
        ValueError: ``parts < 1`` or ``part`` outside ``[0, parts)``.
    """
    if parts < 1 or not 0 <= part < parts:
        raise ValueError(f"part {part} of {parts} is not a valid shard")
    base, extra = divmod(n, parts)
    start = part * base + min(part, extra)
    return start, start + base + (1 if part < extra else 0)


def broadcast_tensors_(tensors: list[Tensor], src: int = 0) -> None:
    """Overwrite every tensor in ``tensors`` (same shapes and dtypes on every rank, any device)
    with rank ``src``'s values, in place (``broadcast_`` each); nothing in one process."""
    for t in tensors:
        broadcast_(t, src)


_COLLECTIVE_SIGNS = ("gloo", "nccl", "processgroup", "connection reset", "connection closed", "timed out")


def is_collective_failure(err: BaseException) -> bool:
    """True for the errors a collective raises when another rank died, stalled past the
    timeout or closed its connection (``torch.distributed.DistError``, or the plain
    ``RuntimeError`` gloo raises with its transport message)."""
    dist_error = getattr(dist, "DistError", None)
    if dist_error is not None and isinstance(err, dist_error):
        return True
    msg = str(err).lower()
    return isinstance(err, RuntimeError) and is_distributed() and any(s in msg for s in _COLLECTIVE_SIGNS)


def shutdown() -> None:
    """Leave the process group (no-op when none is open)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class CollectiveError(UserError):
    """A collective failed because another rank died, stalled past the timeout or left."""


@contextlib.contextmanager
def collective_failures(
    setting: str, timeout_s: float, error: type[UserError] = CollectiveError, hint: str = ""
) -> Iterator[None]:
    """Turn a failed collective inside the block into one line naming this rank, the timeout
    ``setting=timeout_s`` and the backend's first line (any other error passes unchanged).

    Raises:
        ``error`` (a ``UserError``; ``CollectiveError`` by default).
    """
    try:
        yield
    except RuntimeError as err:
        if not is_collective_failure(err):
            raise
        text = str(err).strip()
        first = text.splitlines()[0] if text else type(err).__name__
        where = f"rank {os.environ.get('RANK', rank())} of {os.environ.get('WORLD_SIZE', world_size())}"
        raise error(
            f"{where}: a collective failed: another rank died or did not answer within "
            f"{setting}={timeout_s:g} s ({first}); see that rank's log{hint}"
        ) from None


# ---------------------------------------------------------------------------------------------
# Distributed compression helpers (issue 14, item 2): tensors on the collective's device,
# in-place broadcasts that pin replicated results to rank 0's, batch-aligned row shards.
# ---------------------------------------------------------------------------------------------


def collective_device() -> torch.device:
    """Where collective buffers live: the current CUDA device under NCCL, else the CPU."""
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def broadcast_(t: Tensor, src: int = 0) -> Tensor:
    """Overwrite ``t`` (any shape, dtype and device) with rank ``src``'s values, in place;
    the identity in one process. Shapes and dtypes must agree across ranks."""
    if not is_distributed():
        return t
    dev = collective_device()
    buf = t.detach().to(dev).contiguous()
    as_int = buf.dtype == torch.bool  # gloo and NCCL have no bool broadcast
    if as_int:
        buf = buf.to(torch.uint8)
    dist.broadcast(buf, src=src)
    with torch.no_grad():
        t.copy_(buf.to(t.dtype) if as_int else buf)
    return t


def broadcast_module_(module: torch.nn.Module, src: int = 0) -> torch.nn.Module:
    """Every parameter and buffer of ``module`` set to rank ``src``'s, in place (identity in
    one process): pins a module that each rank fitted itself (k-means on CUDA uses atomic
    adds, so replicas can differ in the last bits) to one copy."""
    if is_distributed():
        for t in (*module.parameters(), *module.buffers()):
            broadcast_(t.data, src)
    return module


def batch_shard(n: int, batch_size: int, max_batches: int | None = None) -> tuple[int, int]:
    """``[start, stop)`` rows of this rank's share of a pass over ``n`` rows in batches of
    ``batch_size`` (the first ``max_batches`` batches only, when given).

    Whole batches are shared out (``shard_bounds`` over the batch count), so every rank's
    batches are exactly the ones a single process would form: per-row outputs match bit for
    bit and only the cross-rank sum order differs.

    Raises:
        ValueError: ``batch_size < 1`` or ``max_batches < 1``.
    """
    if batch_size < 1 or (max_batches is not None and max_batches < 1):
        raise ValueError(f"batch_size ({batch_size}) and max_batches ({max_batches}) must be >= 1")
    batches = -(-n // batch_size)
    if max_batches is not None:
        batches = min(batches, max_batches)
    first, last = shard_bounds(batches, rank(), world_size())
    limit = min(n, batches * batch_size)
    return min(first * batch_size, limit), min(last * batch_size, limit)
