"""``DHETable``: deep hash embedding (Kang et al., "Learning to Embed Categorical Features without
Embedding Tables for Recommendation", KDD 2021). No table: an id's vector is computed.

Encoding (the paper's dense hash encoding): ``k`` universal hashes ``h_j(i) = ((a_j i + b_j) mod P) mod m``
give a dense code ``E(i) = [h_1(i), ..., h_k(i)]``, transformed to uniform values in [-1, 1]
(``2 h / (m - 1) - 1``, the paper's "uniform" variant). Decoding (its deep embedding network): an MLP of
``num_layers`` hidden layers of width ``hidden`` with Mish activations and a linear output
layer to ``D``::

    x_i = W_L^T mish(... mish(W_1^T E(i) + b_1) ...) + b_L

Deviation from the paper: no batch normalization between layers (it would make a row depend on
the batch and adds running buffers); the paper's DHE uses k = 1024, m = 1e6 and wide layers,
here sized by a byte budget (``hidden``).

Storage: float32 ``weights`` ``[k, h], [h, h] x (L - 1), [h, D]`` and ``biases`` ``[h] x L,
[D]``: ``nbytes = 4 * (k h + (L - 1) h^2 + h D + L h + D)``. The hash constants come from
``seed`` (in the spec), not from the weights. Lookups compute each distinct id once.

Special ids: padding (``padding_idx``, default 0) maps to exactly zero; the OOV id ``V - 1`` is
an ordinary id (its own hash code).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ctrzip.errors import CompressionError
from ctrzip.nn.embedding.base import EmbeddingTable, tensor_bytes
from ctrzip.nn.embedding.hashed import PRIME, as_counts, check_ids, not_padding, universal_constants
from ctrzip.nn.swappable import register_swappable


def dhe_bytes(num_hashes: int, hidden: int, num_layers: int, embedding_dim: int, itemsize: int = 4) -> int:
    """Stored bytes: ``(k h + (L - 1) h^2 + h D + L h + D) * itemsize``."""
    k, h, n, d = num_hashes, hidden, num_layers, embedding_dim
    return (k * h + (n - 1) * h * h + h * d + n * h + d) * itemsize


@register_swappable
class DHETable(EmbeddingTable):
    """Hash encoding + MLP decoder in place of a table (see the module docstring).

    Args:
        num_embeddings: V (ids incl. padding and OOV).
        embedding_dim: D.
        num_hashes: k >= 1 hash functions (the encoding width).
        hidden: h >= 1, width of every hidden layer.
        num_layers: L >= 1 hidden layers.
        buckets: m >= 2, range of each hash before the uniform transform.
        seed: draws the hash constants.
        padding_idx: id mapped to exactly zero (None: none).

    Raises:
        CompressionError: a setting below its minimum (named in the message).

    Lookups take int32/int64 ids of any shape and return float32 ``[..., D]``; an id outside
    ``[0, V)`` raises ``IndexError``.
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        num_hashes: int = 32,
        hidden: int = 32,
        num_layers: int = 2,
        buckets: int = 1_000_000,
        seed: int = 0,
        padding_idx: int | None = 0,
    ) -> None:
        super().__init__()
        for name, value, low in (("num_hashes", num_hashes, 1), ("hidden", hidden, 1),
                                 ("num_layers", num_layers, 1), ("buckets", buckets, 2)):  # fmt: skip
            if value < low:
                raise CompressionError(f"dhe: {name} must be >= {low}, got {value}")
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.num_hashes, self.hidden, self.num_layers = num_hashes, hidden, num_layers
        self.buckets, self.seed, self.padding_idx = buckets, seed, padding_idx
        ab = torch.tensor(universal_constants(seed, num_hashes), dtype=torch.long)  # [k, 2]
        self.register_buffer("_a", ab[:, 0].clone(), persistent=False)  # rebuilt from seed: no bytes
        self.register_buffer("_b", ab[:, 1].clone(), persistent=False)
        widths = [num_hashes] + [hidden] * num_layers + [embedding_dim]
        layers = [nn.Linear(i, o) for i, o in zip(widths, widths[1:], strict=False)]  # PyTorch's default init
        # raw parameters, not nn.Linear modules: Linear-targeting methods must not reach inside
        self.weights = nn.ParameterList(nn.Parameter(lin.weight.detach().T.contiguous()) for lin in layers)
        self.biases = nn.ParameterList(nn.Parameter(lin.bias.detach().clone()) for lin in layers)

    def encode(self, ids: Tensor) -> Tensor:
        """Dense hash encoding ``[N] -> float32 [N, k]``, uniform in [-1, 1]."""
        h = ((ids.long().unsqueeze(1) * self._a + self._b) % PRIME) % self.buckets  # [N, k]
        return h.to(torch.float32) * (2.0 / (self.buckets - 1)) - 1.0

    def _decode(self, enc: Tensor) -> Tensor:  # [N, k] -> [N, D]
        x = enc
        last = len(self.weights) - 1
        for j, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = torch.addmm(b, x, w)
            if j < last:
                x = nn.functional.mish(x)
        return x

    def forward(self, ids: Tensor) -> Tensor:  # [...] -> [..., D]
        check_ids(ids, self.num_embeddings, "dhe table")
        flat = ids.reshape(-1)
        uniq, inverse = torch.unique(flat, return_inverse=True)
        out = self._decode(self.encode(uniq))[inverse]
        if self.padding_idx is not None:
            out = out.masked_fill((flat == self.padding_idx).unsqueeze(-1), 0.0)
        return out.reshape(*ids.shape, self.embedding_dim)

    def materialize(self) -> Tensor:
        with torch.no_grad():
            return self.forward(torch.arange(self.num_embeddings, device=self.weights[0].device))

    def nbytes(self) -> int:
        return tensor_bytes(*self.weights, *self.biases)

    def bytes_at(self, rows: int) -> int:
        """Bytes at ``rows`` ids: the same network (a DHE table's size does not depend on the
        vocabulary; its accuracy at a larger one is not measured by this)."""
        return self.nbytes()

    def distill(
        self,
        weight: Tensor,
        counts: Tensor | np.ndarray | None = None,
        steps: int = 200,
        batch_size: int = 4096,
        lr: float = 1e-2,
        seed: int = 0,
    ) -> float:
        """Fit the decoder to a trained table ``weight [V, D]`` (a warm start instead of training
        from scratch): Adam on the squared error of ids drawn with probability proportional to
        ``count + 1`` (padding never drawn). Returns the final relative error
        ``||X' - X||_F / ||X||_F`` over all non-padding rows."""
        v = self.num_embeddings
        target = weight.detach().to(self.weights[0].device, torch.float32)
        valid = not_padding(v, self.padding_idx, target.device)
        c = as_counts(counts, v, "dhe")
        p = (torch.ones(v, dtype=torch.float64) if c is None else c + 1.0).to(target.device) * valid
        g = torch.Generator(device=target.device).manual_seed(seed)
        opt = torch.optim.Adam(self.parameters(), lr=lr)
        with torch.enable_grad():
            for _ in range(steps):
                ids = torch.multinomial(p, batch_size, replacement=True, generator=g)
                loss = (self._decode(self.encode(ids)) - target[ids]).pow(2).sum(1).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
        with torch.no_grad():
            diff = (self.materialize() - target * valid[:, None]).norm()
            return float(diff / (target * valid[:, None]).norm().clamp_min(1e-30))

    def spec(self) -> dict[str, Any]:
        return {
            "num_embeddings": self.num_embeddings,
            "embedding_dim": self.embedding_dim,
            "num_hashes": self.num_hashes,
            "hidden": self.hidden,
            "num_layers": self.num_layers,
            "buckets": self.buckets,
            "seed": self.seed,
            "padding_idx": self.padding_idx,
        }

    def extra_repr(self) -> str:
        return (
            f"{self.num_embeddings}, {self.embedding_dim}, k={self.num_hashes}, "
            f"hidden={self.hidden}x{self.num_layers}"
        )


__all__ = ["DHETable", "dhe_bytes"]
