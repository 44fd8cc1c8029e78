"""Where a loader keeps a split: streamed from the memory map, or resident on the device.

``stream``: batches are gathered from the memory-mapped arrays (in a background thread,
into pinned memory on CUDA) and copied to the device one by one. ``resident``: the whole
split is copied to the device once (GPU memory on CUDA, process memory on CPU) and each
batch is one ``index_select`` per array there, with no host work per batch. ``auto``:
resident on CUDA when the split takes at most ``AUTO_FRACTION`` of the free device memory,
else stream; on CPU always stream (the page cache already keeps a memory-mapped split in
RAM, and a second copy would only cost memory).

Both placements serve the same rows in the same order for the same seed and epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ctrzip.config import ConfigError

PLACEMENTS = ("auto", "resident", "stream")
AUTO_FRACTION = 0.5  # auto leaves half the free memory to the model, optimizer and activations
RESIDENT_FRACTION = 0.9  # an explicit request may use more, not all (allocator slack)
_COPY_ROWS_BYTES = 64 * 2**20  # host -> device copy in pieces of about this size


def split_bytes(split: object) -> int:
    """Bytes of a split's arrays plus one epoch's int64 order ``[N]`` held next to them."""
    arrays = (split.sparse, split.dense, split.label)  # type: ignore[attr-defined]
    return sum(int(np.asarray(a).nbytes) for a in arrays) + 8 * len(split)  # type: ignore[arg-type]


def free_bytes(device: torch.device) -> int | None:
    """Free memory on ``device`` in bytes (CUDA: ``mem_get_info``; CPU: ``MemAvailable``), or
    None where it cannot be read."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as fh:
                for line in fh:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None


def resolve_placement(
    placement: str, split: object, device: torch.device, setting: str = "data_placement"
) -> str:
    """``"resident"`` or ``"stream"`` for ``placement`` on ``device``.

    Args:
        placement: ``auto``, ``resident`` or ``stream``.
        split: a ``SplitArrays`` (or view with ``sparse``/``dense``/``label`` arrays).
        device: where batches go.
        setting: the setting's name in error messages (``train.data_placement`` in training).

    Raises:
        ConfigError: ``placement`` is not one of ``PLACEMENTS``, or ``resident`` was asked for
            and the split does not fit in ``RESIDENT_FRACTION`` of the free memory of ``device``.
    """
    if placement not in PLACEMENTS:
        raise ConfigError(f"{setting} must be one of {list(PLACEMENTS)}, got {placement!r}")
    if placement == "stream":
        return "stream"
    need = split_bytes(split)
    free = free_bytes(device)
    if placement == "auto":
        fits = device.type == "cuda" and free is not None and need <= AUTO_FRACTION * free
        return "resident" if fits else "stream"
    if free is not None and need > RESIDENT_FRACTION * free:
        raise ConfigError(
            f"{setting}=resident: the split needs {need / 2**30:.2f} GiB on {device} but only "
            f"{free / 2**30:.2f} GiB is free (at most {RESIDENT_FRACTION:.0%} of it is used); "
            "set it to stream or auto, or use a smaller split"
        )
    return "resident"


@dataclass
class ResidentArrays:
    """A split's arrays as tensors on one device: ``sparse [N, S]``, ``dense [N, Dn]``, ``label [N]``
    with the split's dtypes."""

    sparse: torch.Tensor
    dense: torch.Tensor
    label: torch.Tensor


def to_device(split: object, device: torch.device) -> ResidentArrays:
    """Copy a split's arrays to ``device`` once, in pieces of about 64 MiB (a memory-mapped
    split is never read into host memory whole on the way to a GPU)."""
    return ResidentArrays(*(_copy(getattr(split, k), device) for k in ("sparse", "dense", "label")))


def _copy(array: np.ndarray, device: torch.device) -> torch.Tensor:
    if device.type == "cpu":
        # a private writable copy: memory maps are read-only and the caller's array stays theirs
        return torch.from_numpy(np.array(array, copy=True, order="C"))
    array = np.asarray(array)
    out = torch.empty(tuple(array.shape), dtype=torch.from_numpy(array[:0].copy()).dtype, device=device)
    row_bytes = max(1, array[:1].nbytes)
    step = max(1, _COPY_ROWS_BYTES // row_bytes)
    for a in range(0, len(array), step):
        out[a : a + step].copy_(torch.from_numpy(np.array(array[a : a + step], copy=True, order="C")))
    return out
