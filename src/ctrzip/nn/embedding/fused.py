"""Fused lookups: several categorical fields' tables of one kind looked up with one gather.

A ``TableGroup`` packs ``k`` tables of one kind and one dim (``EmbeddingTable.group_class()``
and ``group_key()`` say which tables may be packed together) into one storage with per-field
row offsets, so ``FieldEmbedding`` does one lookup per group instead of one per field.

Ownership. The per-field tables stay the owners of their Parameters and buffers (so
``state_dict`` keys, checkpoints and artifacts are exactly the per-field ones, and
``model.embedding.tables[name]`` is the same object it always was): packing moves each
member's storage into a view of the group's packed tensor (``param.data = packed[a:b]``),
so a member's ``forward``/``materialize``/``nbytes``/``load_state_dict`` read and write the
packed storage and no byte is held twice. A group is derived state: ``FieldEmbedding`` keeps
it outside the module tree (no state_dict keys, not copied by ``deepcopy``/pickle) and
re-packs whenever it is no longer current (``in_sync`` false: a member was swapped, moved to
another device or dtype, given a new Parameter, a deepcopy was made...).

A re-pack keeps the Parameter *objects* of the members it keeps (only their storage moves,
so an optimizer built before holds the right tensors); a table swapped in brings new
Parameters of its own, so build the optimizer after swapping tables.

Subclass contract (``pack``/``forward``/``unpack``/``nbytes``; override ``in_sync`` when the
group aliases member storage): ``forward(ids)`` takes ``[B, k]`` local ids (column ``j``
holds ids of the ``j``-th packed table, int32 or int64) and returns ``[B, k, D]`` equal to
``stack([t(ids[:, j]) for j, t in enumerate(tables)], 1)``, with the same gradients to the
members' trainable tensors.
"""

from __future__ import annotations

import abc
from collections.abc import Hashable, Sequence

import torch
from torch import Tensor, nn

from ctrzip.nn.embedding.base import DenseTable, EmbeddingTable

__all__ = ["DenseTableGroup", "TableGroup", "can_pack", "pack_key", "square_sum"]


def pack_key(table: EmbeddingTable) -> tuple[type[TableGroup], Hashable] | None:
    """``(group class, group key)`` of a table, or None when it cannot be packed."""
    cls = table.group_class()
    return None if cls is None else (cls, table.group_key())


def can_pack(tables: Sequence[EmbeddingTable]) -> bool:
    """Whether all ``tables`` have one group class and one key (and there are >= 1)."""
    keys = {pack_key(t) for t in tables}
    return len(keys) == 1 and None not in keys


class TableGroup(nn.Module, abc.ABC):
    """Several categorical fields' tables of one kind and one dim, looked up with one gather.

    Attributes:
        embedding_dim: D.
        sizes: rows of each packed table, in packing order.
        starts: first global row of each packed table (a list).
        offsets: ``[k]`` int64 buffer, first global row of each packed table.

    The members are held in a plain list, not as submodules: they belong to the
    ``FieldEmbedding``'s ``tables``, and a group adds no state_dict keys or parameters.
    """

    def __init__(self, tables: Sequence[EmbeddingTable]) -> None:
        super().__init__()
        tables = list(tables)
        if not tables:
            raise ValueError("a TableGroup needs at least one table")
        dims = {t.embedding_dim for t in tables}
        if len(dims) != 1:
            raise ValueError(f"tables of one group must share embedding_dim, got {sorted(dims)}")
        self._members = tables
        self.embedding_dim = tables[0].embedding_dim
        self.sizes = [int(t.num_embeddings) for t in tables]
        starts = [0]
        for n in self.sizes[:-1]:
            starts.append(starts[-1] + n)
        self.starts = starts  # host copy of ``offsets`` (no device sync to read it)
        self.register_buffer("offsets", torch.tensor(starts, dtype=torch.long), persistent=False)

    @property
    def num_tables(self) -> int:
        return len(self._members)

    @property
    def total_rows(self) -> int:
        return sum(self.sizes)

    def members(self) -> list[EmbeddingTable]:
        """The packed tables, in packing order (column ``j`` of ``forward``'s ids)."""
        return list(self._members)

    @classmethod
    @abc.abstractmethod
    def pack(cls, tables: Sequence[EmbeddingTable]) -> TableGroup:
        """One group of ``tables`` (same ``group_class()`` and ``group_key()``; ``ValueError``
        otherwise). May move the members' storage into the group's (see the module doc)."""

    @abc.abstractmethod
    def forward(self, ids: Tensor) -> Tensor:  # [B, k] local ids -> [B, k, D]
        ...

    @abc.abstractmethod
    def unpack(self) -> list[EmbeddingTable]:
        """Per-field tables equal to the packed ones, no longer sharing the group's storage
        (the group must not be used afterwards)."""

    @abc.abstractmethod
    def nbytes(self) -> int:
        """Bytes the group holds (equal to the members' ``nbytes`` sum when it aliases them)."""

    def in_sync(self) -> bool:
        """Whether the group still computes what its members compute; checked before every
        fused lookup (keep it cheap: no device sync), ``FieldEmbedding`` re-packs when False.

        The default True is right only for a group that reads its members' own tensors at
        lookup time. A group holding packed copies must make the members view them (as
        ``DenseTableGroup`` does: ``load_state_dict``, optimizers and in-place edits then
        write the packed storage) and return False once a member no longer does (e.g. after
        ``.to()``, ``deepcopy`` or a new Parameter/buffer)."""
        return True

    def global_ids(self, ids: Tensor) -> Tensor:
        """``[B, k]`` local ids -> int64 rows of the packed storage."""
        if ids.dim() != 2 or ids.shape[1] != self.num_tables:
            raise ValueError(f"expected ids of shape [B, {self.num_tables}], got {list(ids.shape)}")
        return ids.long() + self.offsets

    def extra_repr(self) -> str:
        return f"{self.num_tables} tables, {self.total_rows} rows, dim {self.embedding_dim}"

    def _check_packable(self, tables: Sequence[EmbeddingTable]) -> None:
        if not can_pack(tables):
            kinds = sorted({repr(pack_key(t)) for t in tables})
            raise ValueError(f"{type(self).__name__}: tables differ in group class/key: {kinds}")


def one_scatter(device: torch.device) -> bool:
    """Whether a dense group's backward is one scatter over all members (GPU) or one per
    member (CPU); both give the same gradients (tests switch it to check that)."""
    return device.type != "cpu"


class _DenseGroupLookup(torch.autograd.Function):
    """One gather over the packed table; backward = one dense scatter (or per-member sparse).

    ``gids`` already point padding lookups at the group's zero row (``zero_row``), so the
    forward needs no mask and the backward skips those positions. Gradients go to the member
    Parameters (whose storage are rows of ``packed``) as row slices of one ``[sum N, D]``
    gradient, or as sparse COO ``[N_f, D]`` gradients (padding positions with zero values)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        gids: Tensor,
        local: Tensor,
        packed: Tensor,
        zero_row: int,
        padding_idx: int,
        sparse: bool,
        sizes: list[int],
        *weights: Tensor,
    ) -> Tensor:
        ctx.save_for_backward(gids, local)
        ctx.zero_row, ctx.sparse, ctx.sizes, ctx.rows = zero_row, sparse, sizes, packed.shape[0]
        ctx.padding_idx = padding_idx
        return nn.functional.embedding(gids, packed)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor):  # type: ignore[override]
        gids, local = ctx.saved_tensors
        lead = (None,) * 7
        needs = ctx.needs_input_grad[7:]
        if not any(needs):
            return lead + (None,) * len(needs)
        if ctx.sparse:
            d = grad.shape[-1]
            if ctx.zero_row >= 0:  # padding positions send nothing
                grad = grad.masked_fill((gids == ctx.zero_row).unsqueeze(-1), 0.0)
            grads = [
                torch.sparse_coo_tensor(
                    local[:, j].reshape(1, -1).long(), grad[:, j], (n, d), check_invariants=False
                )
                if need
                else None
                for j, (n, need) in enumerate(zip(ctx.sizes, needs, strict=True))
            ]
            return lead + tuple(grads)
        if not one_scatter(grad.device):
            # per member: one [sum N, D] buffer would be freshly mapped (page-faulted) memory
            # every step and its scatter hops across the whole table; per-member buffers come
            # from the heap and stay cache-friendly (measured ~2x faster on a 1M-row table)
            pad = -1 if ctx.zero_row < 0 else ctx.padding_idx
            parts = [
                torch.ops.aten.embedding_dense_backward(grad[:, j], local[:, j].long(), n, pad, False)
                if need
                else None
                for j, (n, need) in enumerate(zip(ctx.sizes, needs, strict=True))
            ]
            return lead + tuple(parts)
        # on a GPU one scatter (one kernel) instead of one per member
        full = torch.ops.aten.embedding_dense_backward(grad, gids, ctx.rows, ctx.zero_row, False)
        parts = full[: sum(ctx.sizes)].split(ctx.sizes)
        return lead + tuple(g if need else None for g, need in zip(parts, needs, strict=True))


class DenseTableGroup(TableGroup):
    """``DenseTable`` s of one dim, dtype, device and padding id as one ``[sum N_f, D]`` tensor.

    The members' ``weight`` Parameters become row views of ``packed`` (same Parameter
    objects, same values), so the group adds no bytes but one zero row (``packed[-1]``, when
    the tables have a padding id): padding lookups are pointed at it, so they are exact
    zeros (even if a member's stored padding row was edited, as ``DenseTable`` masks it) and
    send no gradient. ``forward`` is one ``embedding`` gather; backward is, on a GPU, one
    scatter into a ``[sum N_f, D]`` gradient whose row slices are the members' gradients, on
    CPU one scatter per member (faster there; bit-identical to per-field lookups), or, with
    ``sparse_grad``, one sparse COO gradient per member
    (for a lazy/row-wise optimizer such as ``torch.optim.SparseAdam``).
    """

    def __init__(self, tables: Sequence[DenseTable], sparse_grad: bool = False) -> None:
        super().__init__(tables)
        self._check_packable(tables)
        self.padding_idx = tables[0].padding_idx
        self.sparse_grad = sparse_grad
        w0 = tables[0].weight
        extra = 0 if self.padding_idx is None else 1
        self.zero_row = self.total_rows if extra else -1
        packed = torch.zeros(self.total_rows + extra, self.embedding_dim, dtype=w0.dtype, device=w0.device)
        with torch.no_grad():
            for t, start, n in zip(tables, self.starts, self.sizes, strict=True):
                packed[start : start + n].copy_(t.weight)
        for t, start, n in zip(tables, self.starts, self.sizes, strict=True):
            t.weight.data = packed[start : start + n]  # same Parameter, storage now in `packed`
        self.packed = packed  # plain attribute: the members' Parameters own these bytes
        self.offsets = self.offsets.to(w0.device)

    @classmethod
    def pack(cls, tables: Sequence[EmbeddingTable], sparse_grad: bool = False) -> DenseTableGroup:
        bad = [type(t).__name__ for t in tables if type(t) is not DenseTable]
        if bad:
            raise ValueError(f"DenseTableGroup packs DenseTable only, got {bad}")
        return cls(tables, sparse_grad=sparse_grad)  # type: ignore[arg-type]

    def forward(self, ids: Tensor) -> Tensor:
        gids = self.global_ids(ids)
        if self.padding_idx is not None:
            gids = gids.masked_fill(ids == self.padding_idx, self.zero_row)
        weights = [t.weight for t in self._members]  # type: ignore[misc]
        if not torch.is_grad_enabled() or not any(w.requires_grad for w in weights):
            return nn.functional.embedding(gids, self.packed)
        return _DenseGroupLookup.apply(
            gids,
            ids,
            self.packed,
            self.zero_row,
            -1 if self.padding_idx is None else self.padding_idx,
            self.sparse_grad,
            self.sizes,
            *weights,
        )

    def unpack(self) -> list[EmbeddingTable]:
        for t in self._members:
            if self._views(t):
                t.weight.data = t.weight.data.clone()  # type: ignore[union-attr]
        return list(self._members)

    def nbytes(self) -> int:
        """Bytes of ``packed``: the members' ``nbytes`` sum plus the zero row."""
        return self.packed.numel() * self.packed.element_size()

    def _views(self, t: EmbeddingTable) -> bool:
        ptr = t.weight.untyped_storage().data_ptr()  # type: ignore[union-attr]
        return ptr == self.packed.untyped_storage().data_ptr()

    def in_sync(self) -> bool:
        p = self.packed
        base, row = p.data_ptr(), p.shape[1] * p.element_size()
        for t, start, n in zip(self._members, self.starts, self.sizes, strict=True):
            w = t.weight  # type: ignore[union-attr]
            if (
                w.device != p.device
                or w.dtype != p.dtype
                or w.shape != (n, p.shape[1])
                or not w.is_contiguous()
                or w.data_ptr() != base + start * row
            ):
                return False
        return True


class _RunSquareSum(torch.autograd.Function):
    """``sum(p.pow(2).sum())`` over parameters that tile one contiguous packed region: one
    reduction forward, one multiply backward (each parameter's slice of ``2 * region * g``,
    bit-identical to ``pow``'s gradient)."""

    @staticmethod
    def forward(ctx, region: Tensor, sizes: list[int], *params: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(region)
        ctx.sizes = sizes
        return region.pow(2).sum()

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        (region,) = ctx.saved_tensors
        full = g * (2 * region)
        needs = ctx.needs_input_grad[2:]
        parts = full.split(ctx.sizes)
        return (None, None) + tuple(p if need else None for p, need in zip(parts, needs, strict=True))


def square_sum(params: Sequence[Tensor]) -> Tensor | float:
    """``sum(p.float().pow(2).sum() for p in params)`` with one reduction per run of parameters
    that are adjacent row blocks of one packed tensor (packed tables; see ``DenseTableGroup``)
    instead of one per parameter. Gradients are bit-identical; the value may differ from the
    per-parameter sum in the last bits (another summation order). 0.0 for no parameters."""
    runs: dict[tuple, list[Tensor]] = {}
    single: list[Tensor] = []
    for p in params:
        if p.dim() == 2 and p.is_contiguous() and p.dtype == torch.float32:
            key = (p.device, p.untyped_storage().data_ptr(), p.shape[1])
            runs.setdefault(key, []).append(p)
        else:
            single.append(p)
    total: Tensor | float = 0.0
    for group in runs.values():
        group.sort(key=lambda t: t.storage_offset())
        run = [group[0]]
        for p in group[1:] + [None]:  # type: ignore[list-item]
            prev = run[-1]
            if p is not None and p.storage_offset() == prev.storage_offset() + prev.numel():
                run.append(p)
                continue
            if len(run) == 1:
                single.append(run[0])
            else:
                first, rows = run[0], sum(t.shape[0] for t in run)
                region = (
                    first.detach()
                    .new_empty(0)
                    .set_(first.untyped_storage(), first.storage_offset(), (rows, first.shape[1]))
                )
                total = total + _RunSquareSum.apply(region, [t.shape[0] for t in run], *run)
            run = [p]
    for p in single:
        total = total + p.float().pow(2).sum()
    return total
