"""Export-friendly forms of the baseline tables (issue 12's hashing, QR, mixed-dim, DHE, pruning, CCE).

Every baseline table checks its ids with ``check_ids`` (``int(ids.min())``: a data-dependent
value no exporter can trace), and four compute their lookups with data-dependent operators.
Each form below holds the original table (so the graph holds exactly its stored tensors, no
more) and computes the same numbers with plain tensor operators that ONNX has (Gather, integer
Mul/Add/Div/Mod, Where, MatMul, ReduceSum):

* ``HashedTable`` -> ``PlainHashedTable``: the table's own hash ``((a i + b) mod P) mod B``
  (``HashedTable.bucket``, plain int64 ops) is computed in-graph. With ``a, b < P = 2^31 - 1``
  and ``0 <= i < V <= 2^31`` the product stays below ``2^62``, so no step overflows and ONNX
  ``Mul``/``Mod`` (non-negative operands) give the same bucket as PyTorch; no per-id bucket
  tensor is added to the graph.
* ``QRTable`` -> ``PlainQRTable`` (only ``check_ids`` stops the table itself): ``i // c`` and
  ``i mod c`` in-graph.
* ``MixedDimTable`` (``bucketize``, ``nonzero``, ``index_copy``) -> ``PlainMixedDimTable``:
  every block looks up (and projects) every id clamped into its range and ``torch.where`` keeps
  the owner's row: ``K`` lookups per id instead of one.
* ``DHETable`` (``torch.unique``) -> ``PlainDHETable``: every looked-up id is encoded and
  decoded, without de-duplication (the same products per id).
* ``PrunedTable`` -> ``PlainPrunedTable``. Element (CSR, ``repeat_interleave`` with data-dependent
  length): a fixed-width gather of ``L`` entries per looked-up row (``L`` = the longest stored
  row, known at export), masked past the row's end and spread to their columns by comparison
  with ``arange(D)``; the CSR arrays stay as they are (no densified table). Row (``searchsorted``):
  a branchless binary search over the sorted ``kept_ids`` unrolled into ``ceil(log2(R + 1))``
  gather-and-compare steps.
* ``CCETable`` -> ``PlainCCETable`` (only ``check_ids`` stops the table itself): flat gathers at
  ``chunk * k + index`` of the ``[c * k, D / c]`` tables; the hash ``g`` as in ``PlainHashedTable``
  (``DHETable``'s encoding too: the same universal hash, in int64).

Ids are clamped into ``[0, V)`` before any arithmetic: an in-range id is unchanged, and a row
holding an out-of-range id scores NaN anyway (``ProbabilityModel``), so the hash never sees a
value that could overflow and no gather reads out of bounds.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ctrzip.nn.embedding.base import EmbeddingTable
from ctrzip.nn.embedding.cce import CCETable
from ctrzip.nn.embedding.cce import _hash as cce_hash
from ctrzip.nn.embedding.dhe import DHETable
from ctrzip.nn.embedding.hashed import HashedTable
from ctrzip.nn.embedding.mixed_dim import MixedDimTable
from ctrzip.nn.embedding.pruned import PrunedTable
from ctrzip.nn.embedding.qr import QRTable


class _PlainBaseline(EmbeddingTable):
    """Shared part: holds the original ``table``; ``forward`` clamps ids, calls ``_rows`` and
    zeroes the padding id's row; ``nbytes`` is the original's."""

    def __init__(self, table: EmbeddingTable) -> None:
        super().__init__()
        self.table = table
        self.num_embeddings, self.embedding_dim = table.num_embeddings, table.embedding_dim
        self.padding_idx: int | None = table.padding_idx  # type: ignore[assignment]

    def _rows(self, flat: Tensor) -> Tensor:  # [N] int64 in [0, V) -> [N, D]
        raise NotImplementedError

    def forward(self, ids: Tensor) -> Tensor:  # [...] -> [..., D] float32
        flat = ids.reshape(-1).long().clamp(0, self.num_embeddings - 1)
        out = self._rows(flat)
        if self.padding_idx is not None:
            out = torch.where((flat == self.padding_idx).unsqueeze(-1), torch.zeros_like(out), out)
        return out.reshape(*ids.shape, self.embedding_dim)

    def materialize(self) -> Tensor:
        with torch.no_grad():
            return self(torch.arange(self.num_embeddings))

    def nbytes(self) -> int:
        return self.table.nbytes()  # type: ignore[operator]


class PlainHashedTable(_PlainBaseline):
    """``HashedTable`` with the hash in-graph (int64 arithmetic) and a ``Gather`` of ``weight [B, D]``."""

    table: HashedTable

    def _rows(self, flat: Tensor) -> Tensor:
        t = self.table
        return torch.index_select(t.weight, 0, t.bucket(flat))  # int64 Mul/Add/Mod


class PlainQRTable(_PlainBaseline):
    """``QRTable``: ``quotient[i // c]`` combined with ``remainder[i mod c]`` by plain gathers."""

    table: QRTable

    def _rows(self, flat: Tensor) -> Tensor:
        t = self.table
        q = torch.index_select(t.quotient, 0, flat // t.collisions)
        r = torch.index_select(t.remainder, 0, flat % t.collisions)
        return q * r if t.combine == "mult" else q + r


class PlainMixedDimTable(_PlainBaseline):
    """``MixedDimTable`` with a static dispatch: block ``k`` looks up every id clamped into
    ``[s_k, s_{k+1})``, projects it, and ``torch.where`` keeps the owner's row."""

    table: MixedDimTable

    def _rows(self, flat: Tensor) -> Tensor:
        t = self.table
        out: Tensor | None = None
        for k, (a, b) in enumerate(zip(t.edges, t.edges[1:], strict=False)):
            rows = torch.index_select(t.blocks[k], 0, (flat - a).clamp(0, b - a - 1))  # [N, d_k]
            if str(k) in t.projections:
                rows = rows @ t.projections[str(k)]  # [N, D]
            inside = ((flat >= a) & (flat < b)).unsqueeze(-1)
            out = rows if out is None else torch.where(inside, rows, out)
        assert out is not None  # edges tile [0, V): at least one block
        return out


class PlainDHETable(_PlainBaseline):
    """``DHETable`` decoding the encoding of every looked-up id (no ``torch.unique``)."""

    table: DHETable

    def _rows(self, flat: Tensor) -> Tensor:
        return self.table._decode(self.table.encode(flat))  # the hash in int64 Mul/Add/Mod


class PlainPrunedTable(_PlainBaseline):
    """``PrunedTable`` by fixed-size gathers over its stored sparse arrays (module docstring)."""

    table: PrunedTable

    def __init__(self, table: PrunedTable) -> None:
        super().__init__(table)
        if table.granularity == "element":
            self.width = int((table.row_ptr[1:] - table.row_ptr[:-1]).max()) if table.kept else 0
        else:  # binary search steps: powers of two whose sum (2^s - 1) reaches R
            self.steps = [1 << j for j in reversed(range(max(1, table.kept).bit_length()))]

    def _rows(self, flat: Tensor) -> Tensor:
        t, n, d = self.table, flat.shape[0], self.embedding_dim
        if t.granularity == "element":
            if self.width == 0:
                return torch.zeros(n, d, dtype=t.values.dtype, device=flat.device)
            start = torch.index_select(t.row_ptr, 0, flat).long()  # [N]
            length = torch.index_select(t.row_ptr, 0, flat + 1).long() - start
            step = torch.arange(self.width, dtype=torch.long, device=flat.device)  # [L]
            pos = (start.unsqueeze(1) + step).clamp_max(t.kept - 1)  # [N, L]
            inside = step < length.unsqueeze(1)  # [N, L]
            col = torch.index_select(t.col_idx, 0, pos.reshape(-1)).long().reshape(n, self.width)
            val = torch.index_select(t.values, 0, pos.reshape(-1)).reshape(n, self.width)
            val = torch.where(inside, val, torch.zeros_like(val))
            # a row's stored columns are distinct: each output entry sums one value and zeros
            hit = col.unsqueeze(-1) == torch.arange(d, dtype=torch.long, device=flat.device)  # [N, L, D]
            return torch.where(hit, val.unsqueeze(-1), torch.zeros_like(val).unsqueeze(-1)).sum(1)
        if t.kept == 0:
            return torch.zeros(n, d, dtype=t.rows.dtype, device=flat.device)
        kept = t.kept_ids.long()
        lo = torch.zeros_like(flat)  # number of kept ids < id (searchsorted, left)
        for s in self.steps:
            cand = lo + s
            below = torch.index_select(kept, 0, (cand - 1).clamp_max(t.kept - 1)) < flat
            lo = torch.where((cand <= t.kept) & below, cand, lo)
        pos = lo.clamp_max(t.kept - 1)
        hit = torch.index_select(kept, 0, pos) == flat
        return torch.index_select(t.rows, 0, pos) * hit.unsqueeze(1).to(t.rows.dtype)


class PlainCCETable(_PlainBaseline):
    """``CCETable`` by flat gathers: chunk ``j`` reads rows ``j k + assign[i, j]`` and
    ``j k + g_j(i)`` of the ``[c k, D / c]`` tables."""

    table: CCETable

    def _rows(self, flat: Tensor) -> Tensor:
        t, n = self.table, flat.shape[0]
        c, k = t.num_chunks, t.codebook_size
        base = torch.arange(c, dtype=torch.long, device=flat.device) * k  # [c]
        a = torch.index_select(t.assign, 0, flat).long() + base  # [N, c]
        g = cce_hash(flat, t._g, k) + base  # [N, c]
        clustered = torch.index_select(t.clustered.reshape(c * k, -1), 0, a.reshape(-1))
        hashed = torch.index_select(t.hashed.reshape(c * k, -1), 0, g.reshape(-1))
        return (clustered + hashed).reshape(n, self.embedding_dim)


BASELINE_FORMS: dict[str, type[nn.Module]] = {
    "HashedTable": PlainHashedTable,
    "QRTable": PlainQRTable,
    "MixedDimTable": PlainMixedDimTable,
    "DHETable": PlainDHETable,
    "PrunedTable": PlainPrunedTable,
    "CCETable": PlainCCETable,
}

__all__ = [
    "BASELINE_FORMS",
    "PlainCCETable",
    "PlainDHETable",
    "PlainHashedTable",
    "PlainMixedDimTable",
    "PlainPrunedTable",
    "PlainQRTable",
]
