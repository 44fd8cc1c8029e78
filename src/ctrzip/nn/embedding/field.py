"""``FieldEmbedding``: the one module every model holds as ``self.embedding``."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ctrzip.data.batch import Batch
from ctrzip.data.schema import FeatureSchema
from ctrzip.nn.embedding.base import DenseTable, EmbeddingTable, tensor_bytes
from ctrzip.nn.embedding.fused_plan import PlanSlot, global_hooks, tracing


class DenseFieldEmbed(nn.Module):
    """Embeds a dense numeric field as ``value * w`` (MEC paper eq. 2, FuxiCTR's Linear(1, D))."""

    def __init__(self, dim: int, init_std: float = 1e-4) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(dim) * init_std)

    def forward(self, x: Tensor) -> Tensor:  # [B] -> [B, D]
        return x.unsqueeze(-1) * self.weight


class FieldEmbedding(nn.Module):
    """Maps a ``Batch`` to per-field vectors ``[B, F, D]`` in schema order.

    Sparse fields look up their ``EmbeddingTable`` (sequences are mean-pooled over
    non-padding ids); dense fields are scaled vectors. Tables live in ``self.tables``
    (a ModuleDict keyed by field name) so a compression method swaps one with
    ``replace_module(model, "embedding.tables.<name>", PQTable.from_dense(...))`` (which
    hands over links other modules hold to the old table) and the model never changes.

    Fused lookups (``fuse=True``, the default): categorical fields whose tables can be packed
    (``EmbeddingTable.group_class()``/``group_key()``; today ``DenseTable`` s of one dim,
    dtype, device and padding id) are looked up with one gather per ``TableGroup``, with
    outputs and gradients equal to per-field lookups
    (``ctrzip.nn.embedding.fused``). The per-field tables keep owning their Parameters
    (state_dict keys unchanged); the packing is re-done on the next forward after a table is
    swapped, moved or copied; a table with forward hooks is looked up on its own (its
    ``forward`` runs). A swapped-in table brings new Parameters: build optimizers
    after swaps. ``fuse=False`` (or setting ``self.fuse``) looks every field up on its own.
    ``sparse_grad=True`` makes packed dense tables return sparse COO gradients (for
    ``torch.optim.SparseAdam``; needs ``fuse``).

    Args:
        schema: the data contract.
        dim: D.
        tables: optional prebuilt tables per sparse field (default: ``DenseTable``).
        init_std: init std of default tables.
        fuse: pack tables for fused lookups (see above).
        sparse_grad: sparse gradients from packed dense tables.
    """

    def __init__(
        self,
        schema: FeatureSchema,
        dim: int,
        tables: dict[str, EmbeddingTable] | None = None,
        init_std: float = 1e-4,
        fuse: bool = True,
        sparse_grad: bool = False,
    ) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError("embedding dim must be >= 1")
        self.schema = schema
        self.dim = dim
        tables = dict(tables or {})
        self.tables = nn.ModuleDict()
        for f in schema.sparse_fields:
            t = tables.pop(f.name, None) or DenseTable(f.vocab_size, dim, init_std=init_std)
            self.tables[f.name] = t
        if tables:
            raise ValueError(f"tables given for unknown fields: {sorted(tables)}")
        self.dense_embeds = nn.ModuleDict(
            {f.name: DenseFieldEmbed(dim, init_std) for f in schema.dense_fields}
        )
        self._slices = schema.sparse_slices()
        self._dense_idx = schema.dense_index()
        self._order = [(f.name, f.kind) for f in schema.fields]
        self._kinds = dict(self._order)
        self.fuse = fuse
        self.sparse_grad = sparse_grad
        self._plan = PlanSlot()  # derived packing, not module state (see fused.py)

    @classmethod
    def dense(cls, schema: FeatureSchema, dim: int, init_std: float = 1e-4) -> FieldEmbedding:
        return cls(schema, dim, init_std=init_std)

    @property
    def num_fields(self) -> int:
        return len(self._order)

    @property
    def output_dim(self) -> int:
        """Width of the flattened output ``F * D``."""
        return self.num_fields * self.dim

    def field_output(self, name: str, batch: Batch) -> Tensor:
        """One field's vectors ``[B, D]``."""
        kind = self._kinds[name]
        if kind == "dense":
            return self.dense_embeds[name](batch.dense[:, self._dense_idx[name]])
        ids = batch.sparse[:, self._slices[name]]
        table = self.tables[name]
        if kind == "categorical":
            return table(ids[:, 0])
        vecs = table(ids)  # [B, L, D]
        mask = (ids != 0).unsqueeze(-1).to(vecs.dtype)
        return (vecs * mask).sum(1) / mask.sum(1).clamp_min(1.0)

    def forward(self, batch: Batch, flatten: bool = False) -> Tensor:
        # a tracer sees the per-field graph (no re-packing); global module hooks see every table
        if self.fuse and not tracing() and not global_hooks():
            out = self._plan.get(self).forward(self, batch)  # [B, F, D]
        else:
            if self.sparse_grad:
                raise ValueError("FieldEmbedding.sparse_grad needs fuse=True (packed dense tables)")
            out = torch.stack([self.field_output(name, batch) for name, _ in self._order], dim=1)
        return out.flatten(1) if flatten else out

    def map_tables(self, fn: Callable[[str, EmbeddingTable], EmbeddingTable]) -> None:
        """Replace each table by ``fn(name, table)`` (for building a model: links other modules
        hold to these tables are not handed over; on a compressed model use
        ``ctrzip.nn.swappable.replace_module``)."""
        for name in list(self.tables):
            self.tables[name] = fn(name, self.tables[name])  # type: ignore[arg-type]

    def nbytes(self) -> int:
        """Bytes of all tables (via their ``nbytes``) and dense-field vectors."""
        n = sum(t.nbytes() for t in self.tables.values())  # type: ignore[operator]
        return n + sum(tensor_bytes(p) for p in self.dense_embeds.parameters())
