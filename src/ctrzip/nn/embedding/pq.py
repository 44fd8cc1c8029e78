"""``PQTable``: an embedding table stored as integer codes plus small trainable tables.

Why: at Criteo scale a field's ``V x D`` float table dominates the model; storing ``M``
small integer codes per id and ``M`` tables of ``K`` rows costs ~``M`` bytes per id
(MEC, DASFAA 2025; product quantization, Jegou et al. 2011).

Layouts (``codebooks`` is one ``[M, K, W]`` parameter; slice ``m`` is sub-space m's table):
  * ``concat`` (W = D / M): ``e(id) = concat_m codebooks[m, codes[id, m]]`` (the paper's eq. 8).
  * ``additive`` (W = D): ``e(id) = sum_m codebooks[m, codes[id, m]] + bias``. This is what a
    linear decoder folds into (``Dec(q) = sum_m W_m q_m + b``), and also the layout of
    residual/additive quantization and of dim-1 first-order tables on the same codes.

Special rows: ``padding_idx`` (default 0) always maps to zeros, as in ``DenseTable``; ids in
``dense_ids`` (by default the OOV id ``V - 1``) read a small dense ``dense_rows`` parameter
instead of their codes, so padding and OOV never take part in quantization.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ctrzip.nn.embedding.base import EmbeddingTable, tensor_bytes
from ctrzip.nn.swappable import register_swappable

if TYPE_CHECKING:
    from ctrzip.nn.embedding.fused import TableGroup

Layout = Literal["concat", "additive"]


@dataclass
class PQFit:
    """What code learning produces for one table (the input of ``PQTable.from_dense``).

    Attributes:
        codes: ``[V, M]`` integer codes for every row (special rows' codes are ignored).
        codebooks: ``[M, K, D/M]`` (concat) or ``[M, K, D]`` (additive), in the table's scale.
        layout: ``concat`` or ``additive``.
        bias: ``[D]`` additive offset (a folded decoder's bias), else None.
    """

    codes: Tensor
    codebooks: Tensor
    layout: Layout = "concat"
    bias: Tensor | None = None


def code_dtype(codebook_size: int) -> torch.dtype:
    """Narrowest dtype that stores codes ``0..K-1`` (torch has no uint16 indexing, so int16/int32)."""
    if codebook_size <= 256:
        return torch.uint8
    if codebook_size <= 2**15:
        return torch.int16
    return torch.int32


def pq_float_bytes(dim: int, num_subspaces: int, codebook_size: int, layout: Layout) -> int:
    """fp32 bytes of a ``PQTable``'s float parts: codebooks, one dense (OOV) row, the additive bias."""
    width = dim // num_subspaces if layout == "concat" else dim
    bias = dim if layout == "additive" else 0
    return (num_subspaces * codebook_size * width + dim + bias) * 4


def pq_table_bytes(num_rows: int, dim: int, num_subspaces: int, codebook_size: int, layout: Layout) -> int:
    """Bytes of a ``PQTable`` as stored (codes in ``code_dtype``), without building it."""
    codes = num_rows * num_subspaces * code_dtype(codebook_size).itemsize
    return codes + pq_float_bytes(dim, num_subspaces, codebook_size, layout)


def packed_code_bytes(num_rows: int, num_subspaces: int, codebook_size: int) -> int:
    """Bytes of ``num_rows x M`` codes bit-packed at ``ceil(log2 K)`` bits each."""
    bits = max(1, math.ceil(math.log2(codebook_size)))
    return math.ceil(num_rows * num_subspaces * bits / 8)


@register_swappable
class PQTable(EmbeddingTable):
    """Codes ``[V, M]`` (frozen buffer) -> vectors through per-sub-space trainable tables.

    Args:
        num_embeddings: V (rows incl. padding and OOV).
        embedding_dim: D.
        num_subspaces: M (must divide D for ``concat``).
        codebook_size: K.
        layout: ``concat`` or ``additive`` (see module docstring).
        padding_idx: id that always maps to zeros (None = none).
        dense_ids: ids served by their own dense row instead of codes (default: the OOV id).
    """

    _owns_codes = True  # SharedCodesPQTable reads another table's codes instead

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        num_subspaces: int,
        codebook_size: int,
        layout: Layout = "concat",
        padding_idx: int | None = 0,
        dense_ids: tuple[int, ...] | list[int] | None = None,
    ) -> None:
        super().__init__()
        if layout not in ("concat", "additive"):
            raise ValueError(f"layout must be 'concat' or 'additive', got {layout!r}")
        if num_subspaces < 1 or codebook_size < 1 or num_embeddings < 1 or embedding_dim < 1:
            raise ValueError("num_embeddings, embedding_dim, num_subspaces, codebook_size must be >= 1")
        if layout == "concat" and embedding_dim % num_subspaces:
            raise ValueError(f"concat layout: M={num_subspaces} must divide D={embedding_dim}")
        dense_ids = [num_embeddings - 1] if dense_ids is None else [int(i) for i in dense_ids]
        if any(not 0 <= i < num_embeddings for i in dense_ids) or len(set(dense_ids)) != len(dense_ids):
            raise ValueError(f"dense_ids must be distinct ids in [0, {num_embeddings}), got {dense_ids}")
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.num_subspaces = num_subspaces
        self.codebook_size = codebook_size
        self.layout: Layout = layout
        self.padding_idx = padding_idx
        self.dense_ids = tuple(dense_ids)
        width = embedding_dim // num_subspaces if layout == "concat" else embedding_dim
        self.codebooks = nn.Parameter(torch.zeros(num_subspaces, codebook_size, width))  # [M, K, W]
        self.bias = nn.Parameter(torch.zeros(embedding_dim)) if layout == "additive" else None
        self.dense_rows = nn.Parameter(torch.zeros(len(self.dense_ids), embedding_dim))
        if self._owns_codes:
            self.register_buffer(
                "codes", torch.zeros(num_embeddings, num_subspaces, dtype=code_dtype(codebook_size))
            )
        self.register_buffer("_offsets", torch.arange(num_subspaces) * codebook_size, persistent=False)
        self.register_buffer("_dense_ids", torch.tensor(self.dense_ids, dtype=torch.long), persistent=False)

    # --- constructors ------------------------------------------------------------------
    @classmethod
    def from_codebooks(
        cls,
        codes: Tensor,
        codebooks: Tensor,
        layout: Layout = "concat",
        bias: Tensor | None = None,
        dense_rows: Tensor | None = None,
        padding_idx: int | None = 0,
        dense_ids: tuple[int, ...] | list[int] | None = None,
    ) -> PQTable:
        """Build from learned codes ``[V, M]`` and codebooks ``[M, K, W]``.

        Args:
            codes: integer codes for every row (rows in ``dense_ids``/padding are ignored).
            codebooks: ``[M, K, D/M]`` (concat) or ``[M, K, D]`` (additive).
            layout: ``concat`` or ``additive``.
            bias: ``[D]`` (additive only; default zeros).
            dense_rows: ``[len(dense_ids), D]`` float rows for the special ids (default zeros).
            padding_idx: id mapped to zeros.
            dense_ids: ids served densely (default: last id, the OOV).
        """
        m, k, w = codebooks.shape
        v = codes.shape[0]
        if codes.dim() != 2 or codes.shape[1] != m:
            raise ValueError(f"codes must be [V, {m}], got {tuple(codes.shape)}")
        if v and (int(codes.min()) < 0 or int(codes.max()) >= k):
            raise ValueError(f"codes must lie in [0, {k})")
        dim = w * m if layout == "concat" else w
        table = cls(v, dim, m, k, layout=layout, padding_idx=padding_idx, dense_ids=dense_ids)
        with torch.no_grad():
            table.codes.copy_(codes.to(table.codes.dtype))
        table._set_floats(codebooks, bias, dense_rows)
        return table

    def _set_floats(self, codebooks: Tensor, bias: Tensor | None, dense_rows: Tensor | None) -> None:
        """Copy learned float parts in (bias and dense rows keep zeros when None)."""
        with torch.no_grad():
            self.codebooks.copy_(codebooks)
            if bias is not None:
                if self.bias is None:
                    raise ValueError("bias is only used by the additive layout")
                self.bias.copy_(bias)
            if dense_rows is not None:
                self.dense_rows.copy_(dense_rows)

    @classmethod
    def from_dense(cls, table: EmbeddingTable, fit: PQFit) -> PQTable:
        """Replace a trained dense table by its quantized form (TorchRec's ``from_float``).

        Rows ``fit.codes`` covers are served by codes; the table's OOV row (its last id) is
        copied into ``dense_rows`` and its padding id (if any) stays zero.

        Args:
            table: the trained table (``DenseTable`` or anything with ``materialize``).
            fit: codes ``[V, M]`` for every row and codebooks (see ``PQFit``).
        """
        weight = table.materialize()
        v = weight.shape[0]
        if fit.codes.shape[0] != v:
            raise ValueError(f"fit has codes for {fit.codes.shape[0]} rows, table has {v}")
        padding_idx = getattr(table, "padding_idx", 0)
        return cls.from_codebooks(
            fit.codes,
            fit.codebooks,
            fit.layout,
            bias=fit.bias,
            dense_rows=weight[v - 1 :].detach(),
            padding_idx=padding_idx,
            dense_ids=[v - 1],
        )

    # --- EmbeddingTable ------------------------------------------------------------------
    def forward(self, ids: Tensor) -> Tensor:  # [...] -> [..., D]
        ids = ids.long()
        flat = self.codebooks.reshape(-1, self.codebooks.shape[-1])  # [M*K, W]
        idx = self.codes[ids].long() + self._offsets  # [..., M]
        parts = F.embedding(idx, flat)  # [..., M, W]
        out = parts.flatten(-2) if self.layout == "concat" else parts.sum(-2) + self.bias
        if self.dense_ids:
            hit = ids.unsqueeze(-1) == self._dense_ids  # [..., S]
            special = hit.to(out.dtype) @ self.dense_rows  # [..., D]
            out = torch.where(hit.any(-1, keepdim=True), special, out)
        if self.padding_idx is not None:
            out = out * (ids != self.padding_idx).unsqueeze(-1).to(out.dtype)
        return out

    def materialize(self) -> Tensor:
        with torch.no_grad():
            return self.forward(torch.arange(self.num_embeddings, device=self.codes.device))

    def group_class(self) -> type[TableGroup] | None:
        """``PQTableGroup`` (one code gather + one codebook gather for several fields); None
        for subclasses other than ``SharedCodesPQTable`` (they may compute something else)."""
        if type(self) not in (PQTable, SharedCodesPQTable):
            return None
        from ctrzip.nn.embedding.fused_pq import PQTableGroup

        return PQTableGroup

    def group_key(self) -> Hashable:
        from ctrzip.nn.embedding.fused_pq import pq_group_key

        return pq_group_key(self)

    def code_nbytes(self) -> int:
        """Bytes of the codes as stored (``V * M * itemsize``)."""
        return tensor_bytes(self.codes)

    def packed_code_nbytes(self) -> int:
        """Bytes of the codes bit-packed at ``ceil(log2 K)`` bits."""
        return packed_code_bytes(self.num_embeddings, self.num_subspaces, self.codebook_size)

    def float_nbytes(self) -> int:
        """Bytes of the float parts: codebooks, bias, dense special rows."""
        params = [self.codebooks, self.dense_rows] + ([self.bias] if self.bias is not None else [])
        return tensor_bytes(*params)

    def nbytes(self) -> int:
        return self.code_nbytes() + self.float_nbytes()

    def packed_nbytes(self) -> int:
        """Size with bit-packed codes."""
        return self.packed_code_nbytes() + self.float_nbytes()

    # --- swappable -----------------------------------------------------------------------
    def spec(self) -> dict[str, Any]:
        return {
            "num_embeddings": self.num_embeddings,
            "embedding_dim": self.embedding_dim,
            "num_subspaces": self.num_subspaces,
            "codebook_size": self.codebook_size,
            "layout": self.layout,
            "padding_idx": self.padding_idx,
            "dense_ids": list(self.dense_ids),
        }

    def extra_repr(self) -> str:
        return (
            f"{self.num_embeddings}, {self.embedding_dim}, M={self.num_subspaces}, "
            f"K={self.codebook_size}, layout={self.layout}"
        )


@register_swappable
class SharedCodesPQTable(PQTable):
    """A PQ table that stores no codes: it reads those of another ``PQTable`` of the model.

    Why: the first-order (LR) weights of a quantized field are an additive dim-1 table on the
    same codes as the field's embedding. A second copy of the codes would cost as much as the
    codes themselves (M bytes per id) and halve the compression ratio of models with a
    first-order term (DeepFM, FM, Wide&Deep...). The link is plain Python state, like
    ``FoldedLinear``'s: ``code_source`` (the source table's path in the model) is saved in
    the spec, and ``bind_shared_codes(model)`` reconnects it after building or loading. A
    deep copy of the whole model links the copies; a table copied alone keeps a private copy
    of its source until it is bound again.

    Args:
        code_source: fully qualified name of the source ``PQTable`` (e.g.
            ``embedding.tables.C3``); the rest as ``PQTable`` (M and K must match the source).
    """

    _owns_codes = False

    def __init__(self, *args: Any, code_source: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.code_source = code_source
        object.__setattr__(self, "_source", None)  # not a submodule: no double registration

    @property
    def codes(self) -> Tensor:  # type: ignore[override]
        if self._source is None:
            raise RuntimeError(
                f"SharedCodesPQTable is not bound to {self.code_source!r}; "
                "call ctrzip.nn.embedding.pq.bind_shared_codes(model)"
            )
        return self._source.codes

    def bind(self, source: PQTable) -> None:
        """Read ``source``'s codes from now on (checked for shape and codebook size)."""
        if not isinstance(source, PQTable) or isinstance(source, SharedCodesPQTable):
            raise TypeError(f"{self.code_source!r} is not a PQTable that owns its codes")
        if (source.num_embeddings, source.num_subspaces, source.codebook_size) != (
            self.num_embeddings,
            self.num_subspaces,
            self.codebook_size,
        ):
            raise ValueError(f"{self.code_source!r} has other V, M or K than this table")
        object.__setattr__(self, "_source", source)

    @classmethod
    def on(
        cls,
        source: PQTable,
        code_source: str,
        codebooks: Tensor,
        layout: Layout = "additive",
        bias: Tensor | None = None,
        dense_rows: Tensor | None = None,
    ) -> SharedCodesPQTable:
        """A table on ``source``'s codes with its own codebooks ``[M, K, W]``."""
        m, k, w = codebooks.shape
        dim = w * m if layout == "concat" else w
        table = cls(
            source.num_embeddings,
            dim,
            m,
            k,
            layout=layout,
            padding_idx=source.padding_idx,
            dense_ids=list(source.dense_ids),
            code_source=code_source,
        ).to(codebooks.device)
        table.bind(source)
        table._set_floats(codebooks, bias, dense_rows)
        return table

    # --- LinkedModule (ctrzip.nn.swappable) -------------------------------------------------
    def linked_sources(self) -> list[str]:
        return [self.code_source]

    def relink(self, root: nn.Module) -> None:
        """Bind to the table at ``code_source`` in ``root``.

        Raises:
            ValueError: no module at ``code_source``.
            TypeError / ValueError: it is not an owning ``PQTable`` of the same V, M, K.
        """
        try:
            source = root.get_submodule(self.code_source)
        except AttributeError as err:
            raise ValueError(f"code source {self.code_source!r} is not in the model") from err
        self.bind(source)  # type: ignore[arg-type]

    def unlinked(self, source: str) -> PQTable:
        """The same table with its own copy of the codes (the source is being replaced).

        Why: the codes now have no other owner, so storing them here costs nothing extra;
        predictions stay identical.
        """
        if self._source is None:
            raise RuntimeError(f"SharedCodesPQTable is not bound to {self.code_source!r}")
        spec = {k: v for k, v in self.spec().items() if k != "code_source"}
        own = PQTable(**spec).to(device=self.codebooks.device, dtype=self.codebooks.dtype)
        with torch.no_grad():
            own.codes.copy_(self.codes)
        own._set_floats(self.codebooks, self.bias, self.dense_rows)
        own.train(self.training)
        return own

    def code_nbytes(self) -> int:
        return 0  # counted once, in the source table

    def packed_code_nbytes(self) -> int:
        return 0

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), "code_source": self.code_source}

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, codes from {self.code_source}"


def bind_shared_codes(model: nn.Module) -> int:
    """Connect every ``SharedCodesPQTable`` in ``model`` to its source table; returns how many."""
    n = 0
    for table in model.modules():
        if isinstance(table, SharedCodesPQTable):
            table.relink(model)
            n += 1
    return n
