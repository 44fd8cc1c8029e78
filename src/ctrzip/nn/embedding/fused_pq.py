"""Fused lookups of product-quantized tables: one code gather and one codebook gather per group.

A ``PQTableGroup`` packs ``k`` ``PQTable`` s (or ``k`` ``SharedCodesPQTable`` s) of one dim,
``M``, ``K``, layout, padding id, dtype and device (``ctrzip.nn.embedding.fused`` explains
groups). Storage, aliased by the members (each member's Parameters/buffers become views of
the packed tensors, so the group holds no extra byte and ``nbytes`` equals the members' sum):

  * ``codes``: ``[sum N_f, M]`` (``code_dtype(K)``), member ``f``'s rows at ``starts[f]``
    (only when the members own their codes; shared-code members read their sources' codes);
  * ``codebooks``: ``[k, M, K, W]`` (member ``f``'s ``[M, K, W]`` is ``codebooks[f]``);
  * ``dense_rows``: ``[sum S_f, D]``, the members' special (OOV) rows back to back;
  * ``bias``: ``[k, D]`` (additive layout only);
  * one zero row of ``W`` floats (the only bytes the group adds: ``nbytes`` is the members'
    sum plus ``W * itemsize``), which padding ids read.

``forward`` on ``[B, k]`` local ids: one gather of ``[B, k, M]`` codes, shifted by
``(f * M + m) * K`` into rows of one flat float storage, then one gather of ``[B, k, M, W]``.
Concat layout: the indices of special (dense/OOV) ids are remapped to the ``M`` chunks of
their dense row and those of padding ids to the zero row before that gather, so the whole
lookup is two gathers and a reshape. Additive layout: sum over ``M`` + bias, special rows put
back at their (few) positions, padding zeroed. Outputs are bit-identical to
``stack([t(ids[:, f]) ...], 1)`` on CPU (the same values copied, the same summation order;
the tests check it); on CUDA the additive sum may differ in the last bits.

Training: while autograd records and a member's codebooks/rows require grad, ``forward``
runs the members' own lookups (exact gradients to their Parameters); the fused path serves
inference and frozen tables.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch
from torch import Tensor

from ctrzip.nn.embedding.base import EmbeddingTable
from ctrzip.nn.embedding.fused import TableGroup
from ctrzip.nn.embedding.pq import PQTable, SharedCodesPQTable

__all__ = ["PQTableGroup", "pq_group_key"]


def pq_group_key(table: PQTable) -> Hashable:
    """What PQ tables must share to be packed together (cheap: read at every lookup)."""
    cb = table.codebooks
    return (
        "pq",
        table._owns_codes,
        table.embedding_dim,
        table.num_subspaces,
        table.codebook_size,
        table.layout,
        table.padding_idx,
        cb.dtype,
        cb.device,
    )


def _params(t: PQTable) -> list[Tensor]:
    return [t.codebooks, t.dense_rows] + ([t.bias] if t.bias is not None else [])


class PQTableGroup(TableGroup):
    """``PQTable`` s (or ``SharedCodesPQTable`` s) packed for one code and one codebook gather.

    Raises:
        ValueError: tables of other kinds, or differing in ``pq_group_key``.
    """

    def __init__(self, tables: Sequence[PQTable]) -> None:
        super().__init__(tables)
        self._check_packable(tables)
        t0 = tables[0]
        k, m, kk = len(tables), t0.num_subspaces, t0.codebook_size
        cb0 = t0.codebooks
        dev, dt = cb0.device, cb0.dtype
        self.layout = t0.layout
        self.num_subspaces, self.codebook_size = m, kk
        self.padding_idx = t0.padding_idx
        self.owns_codes = bool(t0._owns_codes)
        self.width = cb0.shape[-1]
        d = self.embedding_dim
        self.dense_counts = [len(t.dense_ids) for t in tables]
        self.dense_starts = [sum(self.dense_counts[:f]) for f in range(k)]
        n_dense = sum(self.dense_counts)
        # One float storage, in rows of W: [k*M*K codewords | n_dense*M chunks of the special
        # rows | one zero row], so a concat lookup of codewords, special rows (OOV) and
        # padding (the zero row) is a single gather of remapped row indices.
        n_cb = k * m * kk * self.width
        self.flat = torch.zeros(n_cb + n_dense * d + self.width, dtype=dt, device=dev)
        self.codebooks = self.flat[:n_cb].view(k, m, kk, self.width)  # member f's is [f]
        self.dense_rows = self.flat[n_cb : n_cb + n_dense * d].view(n_dense, d)
        self.bias = torch.empty(k, d, dtype=dt, device=dev) if self.layout == "additive" else None
        self.codes = None
        if self.owns_codes:
            self.codes = torch.empty(self.total_rows, m, dtype=t0.codes.dtype, device=t0.codes.device)
        with torch.no_grad():
            for f, t in enumerate(tables):
                self.codebooks[f].copy_(t.codebooks)
                s, c = self.dense_starts[f], self.dense_counts[f]
                self.dense_rows[s : s + c].copy_(t.dense_rows)
                if self.bias is not None:
                    self.bias[f].copy_(t.bias)  # type: ignore[arg-type]
                if self.codes is not None:
                    self.codes[self.starts[f] : self.starts[f] + self.sizes[f]].copy_(t.codes)
        for f, t in enumerate(tables):  # same Parameter/buffer objects, storage now packed
            t.codebooks.data = self.codebooks[f]
            s, c = self.dense_starts[f], self.dense_counts[f]
            t.dense_rows.data = self.dense_rows[s : s + c]
            if self.bias is not None:
                t.bias.data = self.bias[f]  # type: ignore[union-attr]
            if self.codes is not None:
                t.codes.data = self.codes[self.starts[f] : self.starts[f] + self.sizes[f]]
        self.offsets = self.offsets.to(self.codes.device if self.codes is not None else dev)
        # codeword row of (field f, sub-space m, code c) in the flat codebooks: (f*M + m)*K + c
        shift = (torch.arange(k * m, device=dev) * kk).reshape(k, m)
        self.register_buffer("shift", shift, persistent=False)
        # dense (special) ids: [Smax, k] local ids (-1 = none), and their rows in dense_rows
        smax = max(self.dense_counts)
        local = torch.full((max(smax, 1), k), -1, dtype=torch.long)
        rows = torch.zeros(max(smax, 1), k, dtype=torch.long)
        for f, t in enumerate(tables):
            for s, i in enumerate(t.dense_ids):
                local[s, f] = i
                rows[s, f] = self.dense_starts[f] + s
        self.register_buffer("special_ids", local.to(dev), persistent=False)
        self.register_buffer("special_rows", rows.to(dev), persistent=False)
        # concat: W-row of chunk m of special row r is n_cb/W + r*M + m; padding -> zero row
        chunks = n_cb // self.width + rows.unsqueeze(-1) * m + torch.arange(m)  # [Smax, k, M]
        self.register_buffer("special_chunks", chunks.to(dev), persistent=False)
        self.zero_row = self.flat.numel() // self.width - 1
        self._n_special = smax  # special-id slots per member (0: none)

    @classmethod
    def pack(cls, tables: Sequence[EmbeddingTable]) -> PQTableGroup:
        bad = [type(t).__name__ for t in tables if type(t) not in (PQTable, SharedCodesPQTable)]
        if bad:
            raise ValueError(f"PQTableGroup packs PQTable/SharedCodesPQTable only, got {bad}")
        return cls(tables)  # type: ignore[arg-type]

    # --- lookup ----------------------------------------------------------------------------
    def _gather_codes(self, ids: Tensor) -> Tensor:
        """``[B, k]`` local ids -> ``[B, k, M]`` codes."""
        b, k = ids.shape
        if self.codes is not None:
            gids = self.global_ids(ids).reshape(-1)
            return self.codes.index_select(0, gids).reshape(b, k, self.num_subspaces)
        # shared codes: the sources own them (possibly packed by another group); one small
        # gather of M bytes per field, then the fused codebook gather
        return torch.stack(
            [t.codes.index_select(0, ids[:, f].long()) for f, t in enumerate(self._members)], 1
        )

    def forward(self, ids: Tensor) -> Tensor:  # [B, k] local ids -> [B, k, D]
        if ids.dim() != 2 or ids.shape[1] != self.num_tables:
            raise ValueError(f"expected ids of shape [B, {self.num_tables}], got {list(ids.shape)}")
        if torch.is_grad_enabled() and any(p.requires_grad for t in self._members for p in _params(t)):
            return torch.stack([t(ids[:, f]) for f, t in enumerate(self._members)], 1)
        b, k = ids.shape
        m, d = self.num_subspaces, self.embedding_dim
        idx = self._gather_codes(ids).long() + self.shift  # [B, k, M], a fresh tensor
        flat = self.flat.view(-1, self.width)  # [k*M*K + S*M + 1, W]
        # Special and padding positions are few: fixed in place by position (index_copy_/
        # index_fill_ on the nonzero positions), which costs ~0.1 ms where a broadcast
        # masked_fill/where over [B, k, M] or [B, k, D] costs tens of ms on one core.
        specials = [self._positions(ids, self.special_ids[s]) for s in range(self._n_special)]
        pad = None if self.padding_idx is None else self._positions(ids, self.padding_idx)
        if self.layout == "concat":  # special ids and padding remapped: one exact gather
            rows = idx.view(b * k, m)
            for s, pos in enumerate(specials):
                rows.index_copy_(0, pos, self.special_chunks[s].index_select(0, pos % k))
            if pad is not None:
                rows.index_fill_(0, pad, self.zero_row)
            return torch.nn.functional.embedding(idx, flat).reshape(b, k, d)
        # additive: one bag of M codewords per (row, field), summed in code order as
        # ``embedding(...).sum(-2)`` does, without the [B, k, M, W] intermediate
        out = torch.nn.functional.embedding_bag(idx.view(b * k, m), flat, mode="sum").view(b, k, d)
        out = out + self.bias
        vecs = out.view(b * k, d)
        for s, pos in enumerate(specials):
            vecs.index_copy_(
                0, pos, self.dense_rows.index_select(0, self.special_rows[s].index_select(0, pos % k))
            )
        if pad is not None:
            vecs.index_fill_(0, pad, 0.0)
        return out

    @staticmethod
    def _positions(ids: Tensor, value: Tensor | int) -> Tensor:
        """Flat positions (``b * k + f``) where ``ids`` equals ``value`` (``[k]`` or a scalar)."""
        return (ids == value).reshape(-1).nonzero().squeeze(1)

    # --- TableGroup ------------------------------------------------------------------------
    def unpack(self) -> list[EmbeddingTable]:
        for t in self._members:
            for p in _params(t):
                p.data = p.data.clone()
            if self.codes is not None:
                t.codes.data = t.codes.data.clone()
        return list(self._members)

    def nbytes(self) -> int:
        """The members' ``nbytes`` sum plus the one zero row of W floats padding reads."""
        parts = [self.flat] + [x for x in (self.bias, self.codes) if x is not None]
        return sum(x.numel() * x.element_size() for x in parts)

    def in_sync(self) -> bool:
        def views(x: Tensor, packed: Tensor, start: int, shape: tuple[int, ...]) -> bool:
            row = packed.stride(0) * packed.element_size()
            return (
                x.device == packed.device
                and x.dtype == packed.dtype
                and tuple(x.shape) == shape
                and x.is_contiguous()
                and x.data_ptr() == packed.data_ptr() + start * row
            )

        m, kk, w, d = self.num_subspaces, self.codebook_size, self.width, self.embedding_dim
        for f, t in enumerate(self._members):
            s, c = self.dense_starts[f], self.dense_counts[f]
            if not (
                views(t.codebooks, self.codebooks, f, (m, kk, w))
                and views(t.dense_rows, self.dense_rows, s, (c, d))
                and (self.bias is None or views(t.bias, self.bias, f, (d,)))  # type: ignore[arg-type]
                and (self.codes is None or views(t.codes, self.codes, self.starts[f], (self.sizes[f], m)))
            ):
                return False
        return True
