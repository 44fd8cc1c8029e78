"""Commands under ``torchrun``: join the process group, let rank 0 alone print and write.

``torchrun --nproc-per-node N -m ctrzip compress ...`` starts N copies of the command; each
joins the group (``ctrzip.distributed.init_from_env``: NCCL on CUDA, gloo on CPU, a timeout
on collectives), the compression passes share their rows out (``ctrzip.compression.sharded``)
and rank 0 writes the files. Run as one process, nothing here does anything.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any, TypeVar

import torch

from ctrzip import distributed as dist
from ctrzip.cli._common import console

T = TypeVar("T")


@contextlib.contextmanager
def torchrun_group(device: str) -> Iterator[dist.DistContext | None]:
    """Join torchrun's process group for the block (None in one process); ranks other than 0
    print nothing. The group is left at the end, also on an error (the other ranks then fail
    their next collective within the timeout instead of hanging)."""
    from ctrzip.data.loader import resolve_device

    ctx = dist.init_from_env(resolve_device(device))
    quiet = console.quiet
    if ctx is not None and ctx.rank != 0:
        console.quiet = True
    try:
        yield ctx
    finally:
        console.quiet = quiet
        if ctx is not None and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def main_rank_only(cfg: T) -> T:
    """``cfg`` with ``progress`` off on ranks other than 0 (one set of progress bars), set in
    place: ``dataclasses.replace`` would rerun ``__post_init__`` and re-apply presets."""
    if not dist.is_main() and dataclasses.is_dataclass(cfg) and hasattr(cfg, "progress"):
        cfg.progress = False  # type: ignore[attr-defined]
    return cfg


def device_of(cfg: Any, default: str = "auto") -> str:
    """The ``device`` setting of a method config (``default`` when it has none)."""
    return str(getattr(cfg, "device", default))
