"""``Band``: one contiguous id range of a ``BandedTable`` and its representation.

A band stores rows for *local* ids ``0 .. rows - 1`` (global id minus the band's start).
Each representation is one subclass registered under its name (``float``, ``rowwise``,
``pq``, ``shared``), and knows its parameters (defaults, checks), its byte formula, how to
build an empty band (for artifacts) and how to fit one to trained float rows.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ctrzip.nn.embedding.base import tensor_bytes

BAND_KINDS: dict[str, type[Band]] = {}


def register_band(cls: type[Band]) -> type[Band]:
    """Class decorator: make a representation available to plans under ``cls.kind``."""
    BAND_KINDS[cls.kind] = cls
    return cls


class Band(nn.Module, abc.ABC):
    """Rows of one id range. ``forward(local_ids [n]) -> [n, D]`` float32.

    Subclasses set ``kind``, ``defaults`` (every accepted parameter with its default; a
    parameter not listed is refused) and ``fit_only`` (parameters used by ``fit`` alone,
    e.g. a k-means seed, which do not change the stored shapes).
    """

    kind: ClassVar[str]
    defaults: ClassVar[dict[str, Any]] = {}
    fit_only: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, rows: int, dim: int) -> None:
        super().__init__()
        self.rows = rows
        self.dim = dim

    @classmethod
    def check(cls, params: dict[str, Any], rows: int, dim: int) -> None:
        """Raise ``ValueError`` (message without location) if ``params`` cannot describe a band."""

    @classmethod
    @abc.abstractmethod
    def bytes_for(cls, rows: int, dim: int, **params: Any) -> int:
        """Stored bytes of a band of ``rows`` ids at width ``dim`` (no band is built)."""

    @classmethod
    @abc.abstractmethod
    def fit(cls, weight: Tensor, counts: Tensor | None, valid: Tensor, **params: Any) -> Band:
        """A band fitted to trained rows.

        Args:
            weight: ``[rows, D]`` float rows of the band's ids.
            counts: ``[rows]`` training counts (None: unknown, uniform weights).
            valid: ``[rows]`` bool, False for ids that must not shape the fit (padding).
            params: the band's parameters (already checked and completed with defaults).
        """

    @abc.abstractmethod
    def forward(self, local_ids: Tensor) -> Tensor:  # [n] int64 -> [n, D] float32
        ...

    def persistent_tensors(self) -> list[Tensor]:
        """Parameters and persistent buffers (what ``state_dict`` saves), each once."""
        out: dict[int, Tensor] = {}
        for t in self.state_dict(keep_vars=True).values():
            out.setdefault(id(t), t)
        return list(out.values())

    def nbytes(self) -> int:
        """Bytes of the persistent tensors: what the artifact stores for this band."""
        return tensor_bytes(*self.persistent_tensors())

    def materialize(self) -> Tensor:
        """All ``[rows, D]`` rows."""
        with torch.no_grad():
            return self.forward(torch.arange(self.rows, device=_device_of(self)))


def _device_of(module: nn.Module) -> torch.device:
    for t in (*module.parameters(), *module.buffers()):
        return t.device
    return torch.device("cpu")


def is_int(value: Any) -> bool:
    """An integer that is not a bool (``True`` is not a codebook size)."""
    return isinstance(value, int) and not isinstance(value, bool)


def fit_weights(counts: Tensor | None, valid: Tensor, weighting: str) -> Tensor:
    """Row weights for a weighted fit: ``log2`` (MEC eq. 11), ``count`` or ``none``; 0 where not valid."""
    from ctrzip.compression.mec.losses import popularity_weights  # lazy: avoids a package cycle

    if counts is None:
        w = torch.ones(valid.shape[0], device=valid.device)
    else:
        w = popularity_weights(counts.detach().cpu(), weighting).to(valid.device)  # type: ignore[arg-type]
    return w * valid.to(w.dtype)
