"""``LowRankTable``: a ``V x k`` table plus a per-field projection ``k -> D`` (feature mimicking).

Yu et al., KDD 2024, eqs. 6-12: with the field's top-k eigenvectors ``U`` (``D x k``) and
mean ``mu``, rows are stored as ``(x - mu) U`` and rebuilt as ``e = U e' + mu`` (centered,
default) or stored as ``x U`` and rebuilt with bias ``(I - U U^T) mu`` (the paper's form).
The padding id keeps its exact zero vector whatever training does to the stored row: its
augmented code ``[e'; present]`` is masked to zero (and gets no gradient), so
``e = [U | bias] @ [e'; present]`` is zero there and linear in the augmented code
elsewhere. Folding into a consumer Linear relies on that (a pooled sequence field sums
augmented codes).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ctrzip.nn.embedding.base import EmbeddingTable, tensor_bytes
from ctrzip.nn.swappable import register_swappable


@register_swappable
class LowRankTable(EmbeddingTable):
    """Low-rank field table: codes ``[V, k]``, basis ``[D, k]``, bias ``[D]``.

    Args:
        num_embeddings: V.
        embedding_dim: D (the reconstructed width the model sees).
        rank: k.
        padding_idx: id whose vector is exactly zero (None: no such id).
        form: ``centered`` or ``paper`` (recorded only; both share the same forward).
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        rank: int,
        padding_idx: int | None = 0,
        form: str = "centered",
    ) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        if form not in ("centered", "paper", "svd"):
            raise ValueError(f"form must be 'centered', 'paper' or 'svd', got {form!r}")
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.rank = rank
        self.padding_idx = padding_idx
        self.form = form
        self.weight = nn.Parameter(torch.zeros(num_embeddings, rank))  # [V, k] codes
        self.basis = nn.Parameter(torch.zeros(embedding_dim, rank))  # [D, k]
        self.bias = nn.Parameter(torch.zeros(embedding_dim))  # [D]
        self._code_sink: Any = None  # set by compress.fold.bind_folds: receives augmented codes
        self._code_key = ""

    # --- construction ---------------------------------------------------------------
    @classmethod
    def from_factors(
        cls,
        codes: Tensor,
        basis: Tensor,
        bias: Tensor | None = None,
        padding_idx: int | None = 0,
        form: str = "centered",
    ) -> LowRankTable:
        """Build from explicit ``codes [V, k]``, ``basis [D, k]`` and ``bias [D]`` (zeros if None)."""
        v, k = codes.shape
        d = basis.shape[0]
        t = cls(v, d, k, padding_idx=padding_idx, form=form).to(device=codes.device, dtype=codes.dtype)
        with torch.no_grad():
            t.weight.copy_(codes)
            if padding_idx is not None:
                t.weight[padding_idx].zero_()
            t.basis.copy_(basis)
            if bias is not None:
                t.bias.copy_(bias)
        return t

    @classmethod
    def from_pca(
        cls,
        table: Tensor,
        mean: Tensor,
        basis: Tensor,
        padding_idx: int | None = 0,
        form: str = "centered",
    ) -> LowRankTable:
        """Project a trained table ``[V, D]`` on its field's top-k directions ``basis [D, k]``.

        Args:
            table: materialized ``[V, D]`` table.
            mean: ``[D]`` frequency-weighted mean of the field's embeddings.
            basis: ``[D, k]`` orthonormal eigenvectors.
            padding_idx: id kept at an exact zero vector.
            form: ``centered`` (``(x - mu) U``, bias ``mu``) or ``paper`` (``x U``, bias
                ``(I - U U^T) mu``).
        """
        x = table.detach().to(torch.float64)
        u = basis.to(torch.float64).to(x.device)
        mu = mean.to(torch.float64).to(x.device)
        if form == "centered":
            codes, bias = (x - mu) @ u, mu
        elif form == "paper":
            codes, bias = x @ u, mu - u @ (u.T @ mu)
        else:
            raise ValueError(f"form must be 'centered' or 'paper', got {form!r}")
        dt = table.dtype
        return cls.from_factors(codes.to(dt), u.to(dt), bias.to(dt), padding_idx, form)

    @classmethod
    def from_svd(cls, table: Tensor, rank: int, padding_idx: int | None = 0) -> LowRankTable:
        """SVD baseline: ``X ~ (U_k S_k^1/2)(S_k^1/2 V_k^T)``, no mean term."""
        x = table.detach().to(torch.float64)
        u, s, vh = torch.linalg.svd(x, full_matrices=False)
        k = min(rank, int(s.shape[0]))
        root = s[:k].sqrt()
        dt = table.dtype
        return cls.from_factors(
            (u[:, :k] * root).to(dt), (vh[:k].T * root).to(dt), None, padding_idx, form="svd"
        )

    # --- EmbeddingTable -------------------------------------------------------------
    def augmented_codes(self, ids: Tensor) -> Tensor:
        """``[..., k + 1]``: the stored code and a 1/0 "present" flag; all zeros at the padding id
        (masked, so a trained or edited padding row never leaks and gets no gradient)."""
        codes = nn.functional.embedding(ids, self.weight, padding_idx=self.padding_idx)
        if self.padding_idx is None:
            return torch.cat([codes, torch.ones_like(codes[..., :1])], dim=-1)
        present = (ids != self.padding_idx).unsqueeze(-1).to(codes.dtype)
        return torch.cat([codes * present, present], dim=-1)

    def augmented_basis(self) -> Tensor:
        """``[D, k + 1]`` = ``[basis | bias]`` so that ``e = augmented_basis @ augmented_code``."""
        return torch.cat([self.basis, self.bias[:, None]], dim=1)

    def forward(self, ids: Tensor) -> Tensor:  # [...] -> [..., D]
        aug = self.augmented_codes(ids)  # [..., k + 1]
        if self._code_sink is not None:
            self._code_sink.put(self._code_key, aug)
        return nn.functional.linear(aug, self.augmented_basis())

    def materialize(self) -> Tensor:
        ids = torch.arange(self.num_embeddings, device=self.weight.device)
        with torch.no_grad():
            return nn.functional.linear(self.augmented_codes(ids), self.augmented_basis())

    def nbytes(self) -> int:
        return tensor_bytes(self.weight, self.basis, self.bias)

    def bytes_at(self, rows: int) -> int:
        """Bytes at ``rows`` ids (a code of ``rank`` values per id; basis and bias shared), for
        projecting a result to a larger vocabulary."""
        return rows * self.rank * self.weight.element_size() + tensor_bytes(self.basis, self.bias)

    def spec(self) -> dict[str, Any]:
        return {
            "num_embeddings": self.num_embeddings,
            "embedding_dim": self.embedding_dim,
            "rank": self.rank,
            "padding_idx": self.padding_idx,
            "form": self.form,
        }

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, rank={self.rank}, form={self.form}"
