"""Export-friendly forms of the modules whose forward an exporter cannot trace.

Exporters (``torch.export``, ``torch.onnx``) need a static graph of standard operators. Three
swappable modules compute their lookups otherwise, so ``plain_copy`` gives a deep copy of the
model where each is replaced by a module computing the same numbers with plain tensor ops.
The choice is explicit (only ``plain_copy`` makes it); trained and saved models are untouched.

* ``RowwiseQuantTable`` (CPU: PyTorch's quantized ``embedding_bag_*_rowwise_offsets``
  operators, which no exporter knows) -> ``PlainRowwiseTable``: the fused rows are split at
  export time into their codes and their per-row scale and bias (a byte-level reinterpretation
  that ONNX cannot express), so the graph holds the same bytes. int8 codes are one per byte;
  **int4 / int2 codes stay packed in the graph and are unpacked in-graph** by integer division
  and remainder. fp16 rows are gathered and cast.
* ``BandedTable`` (data-dependent band dispatch: ``bucketize``, ``bincount().tolist()``,
  ``nonzero``, ``index_copy_``) -> ``PlainBandedTable``: every band looks up every id (clamped
  into its range) and ``torch.where`` keeps the band that owns it; the bands themselves are
  the original modules (a row-wise band's table becomes a ``PlainRowwiseTable``). **Bit-packed
  PQ band codes are unpacked at load** (``PQBand`` keeps them unpacked in a buffer), so the
  exported constants hold the unpacked codes, one ``uint8``/``int16`` per code.
* ``TTTable`` (``torch.unique`` with a data-dependent output size) -> ``PlainTTTable``: the
  rows of all looked-up ids are rebuilt without de-duplication (the same products per id).

The baseline tables (hashing, QR, mixed-dim, DHE, pruning, CCE) have their forms in
``ctrzip.export.plain_baselines`` (listed in ``PLAIN_FORMS`` too).

Every other swappable type exports as it is (``EXPORTS_AS_IS``); ``plain_copy`` refuses a
registered type that is in neither list, so a new module type must be reviewed here first.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ctrzip.errors import UserError
from ctrzip.export.plain_baselines import BASELINE_FORMS
from ctrzip.nn.embedding.banded import BandedTable
from ctrzip.nn.embedding.base import EmbeddingTable
from ctrzip.nn.embedding.rowwise import RowwiseQuantTable, padded_dim
from ctrzip.nn.embedding.tt import TTTable
from ctrzip.nn.swappable import SWAPPABLE, put_module, relink_all

# Swappable types whose forward is plain tensor ops already (PQ code lookup, low-rank codes,
# folded consumers reading their codes within the same forward, int8 weight dequantization).
EXPORTS_AS_IS = frozenset(
    {
        "DenseTable",
        "PQTable",
        "SharedCodesPQTable",
        "LowRankTable",
        "LowRankLinear",
        "FoldedLinear",
        "Int8Linear",
    }
)


class ExportError(UserError):
    """An export cannot be written, or its parity check against PyTorch failed."""


class PlainRowwiseTable(EmbeddingTable):
    """``RowwiseQuantTable`` with plain tensor ops (see the module docstring).

    Buffers: ``fp16_rows [V, D]`` (bits 16), else ``codes [V, D]`` uint8 (bits 8) or
    ``[V, D' * bits / 8]`` packed uint8 (bits 4, 2), and ``scale_bias [V, 2]`` (float32 for
    int8, float16 for int4/int2, as stored). Lookup: ``q * scale + bias``. The padding id's
    row is stored as zeros (codes, scale and bias), so it reads exactly zero without a mask.
    """

    def __init__(self, table: RowwiseQuantTable) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim = table.num_embeddings, table.embedding_dim
        self.bits, self.padding_idx = table.bits, table.padding_idx
        d = table.embedding_dim
        if self.bits == 16:
            rows = table.fp16_rows.detach().clone()
            if self.padding_idx is not None:
                rows[self.padding_idx] = 0
            self.register_buffer("fp16_rows", rows)
            return
        packed = table.packed.detach()
        if self.bits == 8:
            codes, sb = packed[:, :d], packed[:, d : d + 8].contiguous().view(torch.float32)
        else:
            nbytes = padded_dim(d, self.bits) * self.bits // 8
            codes, sb = packed[:, :nbytes], packed[:, nbytes : nbytes + 4].contiguous().view(torch.float16)
            per_byte = 8 // self.bits
            self.register_buffer("_divisors", 2 ** (self.bits * torch.arange(per_byte, dtype=torch.int32)))
        codes, sb = codes.clone().contiguous(), sb.clone()
        if self.padding_idx is not None:  # q * 0 + 0 = 0 exactly
            codes[self.padding_idx] = 0
            sb[self.padding_idx] = 0
        self.register_buffer("codes", codes)
        self.register_buffer("scale_bias", sb)

    def forward(self, ids: Tensor) -> Tensor:  # [...] -> [..., D]
        flat = ids.reshape(-1).long()
        d = self.embedding_dim
        if self.bits == 16:
            out = torch.index_select(self.fp16_rows, 0, flat).float()
        else:
            raw = torch.index_select(self.codes, 0, flat)  # [n, bytes]
            if self.bits < 8:  # element j of a byte sits in bits j*b .. j*b + b - 1
                raw = (raw.to(torch.int32).unsqueeze(-1) // self._divisors) % (1 << self.bits)
                raw = raw.flatten(-2)[:, :d]
            sb = torch.index_select(self.scale_bias, 0, flat).float()  # [n, 2]
            out = raw.float() * sb[:, :1] + sb[:, 1:2]
        return out.reshape(*ids.shape, d)

    def materialize(self) -> Tensor:
        with torch.no_grad():
            return self(torch.arange(self.num_embeddings))

    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for n, b in self.named_buffers() if not n.startswith("_"))


class PlainBandedTable(EmbeddingTable):
    """``BandedTable`` with a static dispatch: each band looks up every id clamped into its
    range and ``torch.where`` keeps the owner's vector; padding id -> 0. Holds the original
    bands (``bands``) and their id ranges."""

    def __init__(self, table: BandedTable) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim = table.num_embeddings, table.embedding_dim
        self.padding_idx = table.padding_idx
        self.bands = table.bands
        self.ranges = [(b.start, b.end) for b in table.plan]

    def forward(self, ids: Tensor) -> Tensor:  # [...] -> [..., D]
        flat = ids.reshape(-1).long()
        out: Tensor | None = None
        for band, (start, end) in zip(self.bands, self.ranges, strict=True):
            vec = band((flat - start).clamp(0, end - start - 1))
            inside = ((flat >= start) & (flat < end)).unsqueeze(-1)
            out = vec if out is None else torch.where(inside, vec, out)
        assert out is not None  # a plan has at least one band
        if self.padding_idx is not None:
            out = torch.where((flat == self.padding_idx).unsqueeze(-1), torch.zeros_like(out), out)
        return out.reshape(*ids.shape, self.embedding_dim)

    def materialize(self) -> Tensor:
        with torch.no_grad():
            return self(torch.arange(self.num_embeddings))

    def nbytes(self) -> int:
        return sum(band.nbytes() for band in self.bands)  # type: ignore[misc]


class PlainTTTable(EmbeddingTable):
    """``TTTable`` rebuilding the row of every looked-up id (no ``torch.unique``); padding id -> 0."""

    def __init__(self, table: TTTable) -> None:
        super().__init__()
        self.tt = table
        self.num_embeddings, self.embedding_dim = table.num_embeddings, table.embedding_dim
        self.padding_idx = table.padding_idx

    def forward(self, ids: Tensor) -> Tensor:  # [...] -> [..., D]
        flat = ids.reshape(-1).long()
        out = self.tt._rows(flat)
        if self.padding_idx is not None:
            out = out * (flat != self.padding_idx).unsqueeze(-1).to(out.dtype)
        return out.reshape(*ids.shape, self.embedding_dim)

    def materialize(self) -> Tensor:
        with torch.no_grad():
            return self(torch.arange(self.num_embeddings))

    def nbytes(self) -> int:
        return self.tt.nbytes()


# swappable type name -> its export-friendly form
PLAIN_FORMS: dict[str, Callable[[nn.Module], nn.Module]] = {
    "RowwiseQuantTable": PlainRowwiseTable,  # type: ignore[dict-item]
    "BandedTable": PlainBandedTable,  # type: ignore[dict-item]
    "TTTable": PlainTTTable,  # type: ignore[dict-item]
    **BASELINE_FORMS,
}


def plain_copy(model: nn.Module) -> tuple[nn.Module, dict[str, str]]:
    """A deep copy of ``model`` (on CPU, eval mode) whose modules all export (see the module docstring).

    Returns:
        The copy, and ``{fqn: "Type -> PlainType"}`` for every module replaced.

    Raises:
        ExportError: the model holds a registered swappable type that this module has not
            classified (neither in ``EXPORTS_AS_IS`` nor in ``PLAIN_FORMS``), naming it.
    """
    out = copy.deepcopy(model).to("cpu").eval()
    relink_all(out)  # a deep copy starts with empty code sinks
    modules = [(fqn, type(m).__name__, m) for fqn, m in out.named_modules() if type(m).__name__ in SWAPPABLE]
    for fqn, name, _ in modules:
        if name not in PLAIN_FORMS and name not in EXPORTS_AS_IS:
            raise ExportError(
                f"module {fqn} ({name}): no export path is declared for this type; add it to "
                "ctrzip.export.plain.EXPORTS_AS_IS or PLAIN_FORMS"
            )
    swapped: dict[str, str] = {}
    # children before parents (reversed pre-order), so a banded table's row-wise bands are
    # replaced inside the band objects the plain banded table then takes over
    for fqn, name, mod in reversed(modules):
        if name in PLAIN_FORMS:
            new = PLAIN_FORMS[name](mod)
            put_module(out, fqn, new)
            swapped[fqn] = f"{name} -> {type(new).__name__}"
    relink_all(out)
    return out, dict(reversed(list(swapped.items())))


__all__ = [
    "EXPORTS_AS_IS",
    "PLAIN_FORMS",
    "ExportError",
    "PlainBandedTable",
    "PlainRowwiseTable",
    "PlainTTTable",
    "plain_copy",
]
