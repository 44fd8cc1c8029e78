"""``pq`` band: product quantization, codes bit-packed at ``ceil(log2 K)`` bits.

Each id's vector is split into ``M`` sub-vectors of ``D / M``; sub-vector ``m`` is codeword
``codes[id, m]`` of codebook ``m`` (``K`` codewords; the concat layout of ``PQTable``).

Storage: ``packed_codes`` (persistent ``uint8``, exactly ``ceil(rows * M * bits / 8)``
bytes, see ``ctrzip.nn.bitpack``) and ``codebooks [M, K, D/M]`` (float32, trainable). The
codes used by lookups live unpacked in the non-persistent buffer ``codes [rows, M]``, built
at construction and again whenever a state dict is loaded, so artifacts hold only packed bits.
Fitted by popularity-weighted k-means per sub-space (``compression.mec.kmeans``), seeded.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ctrzip.nn.bitpack import MAX_BITS, bits_for, pack_bits, packed_nbytes, unpack_bits
from ctrzip.nn.embedding.bands.base import Band, fit_weights, is_int, register_band
from ctrzip.nn.embedding.pq import code_dtype

WEIGHTINGS = ("log2", "count", "none")


@register_band
class PQBand(Band):
    """Parameters: ``M`` sub-spaces (divides D), ``K`` codewords (2 .. 65536); fit-only
    ``iters`` (k-means iterations), ``seed``, ``weighting`` (``log2``: MEC's
    ``max(1, floor(log2 n))``, ``count``: n, ``none``: uniform)."""

    kind = "pq"
    defaults = {"M": 1, "K": 256, "iters": 20, "seed": 0, "weighting": "log2"}
    fit_only = frozenset({"iters", "seed", "weighting"})

    def __init__(self, rows: int, dim: int, M: int = 1, K: int = 256) -> None:  # noqa: N803
        super().__init__(rows, dim)
        self.num_subspaces = M
        self.codebook_size = K
        self.bits = bits_for(K)
        self.codebooks = nn.Parameter(torch.zeros(M, K, dim // M))
        self.register_buffer(
            "packed_codes", torch.zeros(packed_nbytes(rows * M, self.bits), dtype=torch.uint8)
        )
        self.register_buffer("codes", torch.zeros(rows, M, dtype=code_dtype(K)), persistent=False)
        self.register_buffer("_offsets", torch.arange(M) * K, persistent=False)

    @classmethod
    def check(cls, params: dict[str, Any], rows: int, dim: int) -> None:
        m, k = params["M"], params["K"]
        if not is_int(m) or m < 1 or dim % m:
            raise ValueError(f"M (sub-spaces) must be a positive divisor of embedding_dim={dim}, got {m!r}")
        if not is_int(k) or not 2 <= k <= 1 << MAX_BITS:
            raise ValueError(
                f"K (codewords) must be an integer in [2, {1 << MAX_BITS}], got {k!r} "
                "(for one vector per band use the 'shared' representation)"
            )
        if not is_int(params["iters"]) or params["iters"] < 0:
            raise ValueError(f"iters must be an integer >= 0, got {params['iters']!r}")
        if not is_int(params["seed"]):
            raise ValueError(f"seed must be an integer, got {params['seed']!r}")
        if params["weighting"] not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {params['weighting']!r}")

    @classmethod
    def bytes_for(cls, rows: int, dim: int, **params: Any) -> int:
        m, k = params["M"], params["K"]
        return packed_nbytes(rows * m, bits_for(k)) + k * dim * 4  # M * K * (D / M) floats

    @classmethod
    def fit(cls, weight: Tensor, counts: Tensor | None, valid: Tensor, **params: Any) -> PQBand:
        from ctrzip.compression.mec.kmeans import weighted_kmeans  # lazy: avoids a package cycle

        rows, dim = weight.shape
        m, k = params["M"], params["K"]
        band = cls(rows, dim, M=m, K=k).to(weight.device)
        x = weight.detach().float().reshape(rows, m, dim // m).transpose(0, 1)  # [M, rows, D/M]
        w = fit_weights(counts, valid, params["weighting"])
        if not bool(valid.any()):  # a band of padding only: nothing to fit, all codes 0
            w = torch.ones_like(w)
        res = weighted_kmeans(x, k, w, iters=params["iters"], seed=params["seed"])
        band.set_codes(res.assign.T, res.centroids)
        return band

    def set_codes(self, codes: Tensor, codebooks: Tensor | None = None) -> None:
        """Store ``codes [rows, M]`` (packed and unpacked) and optionally ``codebooks [M, K, D/M]``."""
        if tuple(codes.shape) != tuple(self.codes.shape):
            raise ValueError(f"codes must be {tuple(self.codes.shape)}, got {tuple(codes.shape)}")
        with torch.no_grad():
            self.packed_codes.copy_(pack_bits(codes.to(self.packed_codes.device), self.bits))
            if codebooks is not None:
                self.codebooks.copy_(codebooks)
        self._unpack()

    def _unpack(self) -> None:
        codes = unpack_bits(self.packed_codes, self.bits, (self.rows, self.num_subspaces))
        if codes.numel() and int(codes.max()) >= self.codebook_size:  # K not a power of two
            raise ValueError(f"pq band: stored code {int(codes.max())} >= K={self.codebook_size}")
        self.codes = codes.to(self.codes.dtype)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args)
        self._unpack()  # lookups read the unpacked codes: rebuild them from the loaded bits

    def code_bits(self) -> int:
        """Width each stored code takes: ``ceil(log2 K)``."""
        return self.bits

    def forward(self, local_ids: Tensor) -> Tensor:
        flat = self.codebooks.reshape(-1, self.codebooks.shape[-1])  # [M*K, D/M]
        idx = self.codes[local_ids].long() + self._offsets  # [n, M]
        return F.embedding(idx, flat).flatten(-2)  # [n, D]
