"""Pairwise field products: the shared core of PNN (inner) and AttentionalFM (element-wise).

Pairs are the F(F-1)/2 unordered field pairs ``(i, j), i < j`` in row-major order
(``(0,1), (0,2), ..., (1,2), ...``); every function here uses that same order.
"""

from __future__ import annotations

import torch
from torch import Tensor


def num_pairs(num_fields: int) -> int:
    """Number of unordered field pairs ``F(F-1)/2``."""
    return num_fields * (num_fields - 1) // 2


def pair_indices(num_fields: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Left and right field index of every pair ``(i < j)``, row-major; each ``[P]`` long.

    Built on every call (one small kernel), never cached: a process-wide cache would keep
    the fake tensors a tracer (``torch.export``, ``torch.onnx``) creates, and every later
    forward of every model would read them. They are not buffers, so they never enter a
    ``state_dict``.
    """
    rows, cols = torch.triu_indices(num_fields, num_fields, offset=1, device=device)
    return rows, cols


def pairwise_products(emb: Tensor) -> Tensor:
    """Element-wise products ``e_i * e_j`` of every field pair.

    Args:
        emb: ``[B, F, D]`` field vectors.

    Returns:
        ``[B, P, D]`` with ``P = F(F-1)/2`` in row-major pair order.
    """
    left, right = pair_indices(emb.shape[1], emb.device)
    return emb[:, left] * emb[:, right]


def inner_products(emb: Tensor) -> Tensor:
    """Inner products ``<e_i, e_j>`` of every field pair (IPNN's product signals).

    Args:
        emb: ``[B, F, D]`` field vectors.

    Returns:
        ``[B, P]`` in row-major pair order.
    """
    gram = torch.bmm(emb, emb.transpose(1, 2))  # [B, F, F]
    left, right = pair_indices(emb.shape[1], emb.device)
    return gram[:, left, right]
