"""Bit-packing of integer codes: ``n`` codes of ``bits`` bits in exactly ``ceil(n * bits / 8)`` bytes.

Why: a PQ code of ``K`` codewords needs ``ceil(log2 K)`` bits, but tensors store whole bytes
(a 5-bit code would take 8). Artifacts store codes packed, so the bytes on disk are the
width a table reports; tables unpack them once, on construction or load.

Layout (the same on CPU and CUDA): the codes, flattened in row-major order, form one
little-endian bit stream. Code ``i`` occupies stream bits ``[i * bits, (i + 1) * bits)``,
lowest bit first; stream bit ``t`` is bit ``t % 8`` (counting from the least significant) of
byte ``t // 8``. Unused high bits of the last byte are zero. This is
``numpy.packbits(..., bitorder="little")`` of each code's bits written low bit first.

Everything is plain vectorized tensor ops, in chunks of whole bytes to bound memory.
"""

from __future__ import annotations

import torch
from torch import Tensor

MAX_BITS = 16
_CHUNK = 1 << 18  # codes per step: a multiple of 8, so every chunk starts on a byte boundary


def _check_bits(bits: int) -> None:
    if not isinstance(bits, int) or not 1 <= bits <= MAX_BITS:
        raise ValueError(f"bits must be an integer in [1, {MAX_BITS}], got {bits!r}")


def packed_nbytes(n: int, bits: int) -> int:
    """Bytes that ``n`` codes of ``bits`` bits take packed: ``ceil(n * bits / 8)``."""
    _check_bits(bits)
    if n < 0:
        raise ValueError(f"number of codes must be >= 0, got {n}")
    return -(-n * bits // 8)


def bits_for(num_values: int) -> int:
    """Narrowest width that stores codes ``0 .. num_values - 1``: ``ceil(log2 num_values)``, at least 1."""
    if num_values < 1:
        raise ValueError(f"number of distinct values must be >= 1, got {num_values}")
    return max(1, (num_values - 1).bit_length())


def pack_bits(codes: Tensor, bits: int) -> Tensor:
    """Pack integer codes into a ``uint8 [ceil(n * bits / 8)]`` buffer (see the module layout).

    Args:
        codes: integer tensor of any shape (``n = codes.numel()``), values in ``[0, 2**bits)``.
        bits: code width, 1 to 16.

    Returns:
        ``uint8`` tensor on ``codes``' device.

    Raises:
        ValueError: ``bits`` out of range, non-integer codes, or a code outside ``[0, 2**bits)``.
    """
    _check_bits(bits)
    if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
        raise ValueError(f"codes must be an integer tensor, got {codes.dtype}")
    flat = codes.reshape(-1)
    n = flat.numel()
    if n:
        lo, hi = int(flat.min()), int(flat.max())
        if lo < 0 or hi >= 1 << bits:
            raise ValueError(
                f"codes must lie in [0, {1 << bits}) for {bits} bits, got values in [{lo}, {hi}]"
            )
    dev = flat.device
    out = torch.empty(packed_nbytes(n, bits), dtype=torch.uint8, device=dev)
    shifts = torch.arange(bits, device=dev, dtype=torch.int32)
    byte_shifts = torch.arange(8, device=dev, dtype=torch.int32)
    for s in range(0, n, _CHUNK):
        c = flat[s : s + _CHUNK].to(torch.int32)
        stream = ((c.unsqueeze(1) >> shifts) & 1).to(torch.uint8).reshape(-1)  # low bit first
        tail = (-stream.numel()) % 8
        if tail:  # only the last chunk can end inside a byte
            stream = torch.cat([stream, stream.new_zeros(tail)])
        packed = (stream.view(-1, 8).to(torch.int32) << byte_shifts).sum(1).to(torch.uint8)
        first = s * bits // 8
        out[first : first + packed.numel()] = packed
    return out


def unpack_bits(packed: Tensor, bits: int, shape: tuple[int, ...] | torch.Size | int) -> Tensor:
    """Inverse of ``pack_bits``: the codes as ``int32`` of the given shape.

    Args:
        packed: ``uint8 [ceil(n * bits / 8)]`` from ``pack_bits``.
        bits: code width, 1 to 16.
        shape: shape of the codes (``n`` = its number of elements).

    Returns:
        ``int32`` tensor of ``shape`` on ``packed``'s device.

    Raises:
        ValueError: wrong dtype, or ``packed`` does not hold exactly ``ceil(n * bits / 8)`` bytes.
    """
    _check_bits(bits)
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    n = 1
    for s in shape:
        n *= s
    if packed.dtype != torch.uint8 or packed.dim() != 1:
        raise ValueError(f"packed codes must be a 1-D uint8 tensor, got {packed.dtype} {tuple(packed.shape)}")
    if packed.numel() != packed_nbytes(n, bits):
        raise ValueError(
            f"{n} codes of {bits} bits take {packed_nbytes(n, bits)} bytes, the buffer has {packed.numel()}"
        )
    dev = packed.device
    # a code starts at bit (pos % 8) of byte pos // 8 and spans at most 3 bytes (7 + 16 <= 24 bits)
    words = torch.cat([packed, packed.new_zeros(2)]).to(torch.int32)
    mask = (1 << bits) - 1
    out = torch.empty(n, dtype=torch.int32, device=dev)
    for s in range(0, n, _CHUNK):
        pos = torch.arange(s, min(n, s + _CHUNK), device=dev, dtype=torch.int64) * bits
        byte = pos >> 3
        word = words[byte] | (words[byte + 1] << 8) | (words[byte + 2] << 16)
        out[s : s + pos.numel()] = (word >> (pos & 7).to(torch.int32)) & mask
    return out.view(shape)


__all__ = ["MAX_BITS", "bits_for", "pack_bits", "packed_nbytes", "unpack_bits"]
