"""Bit-packing: round trip at every width 1-16, the byte formula, numpy's layout, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ctrzip.nn import bitpack
from ctrzip.nn.bitpack import bits_for, pack_bits, packed_nbytes, unpack_bits


def _numpy_reference(codes: np.ndarray, bits: int) -> np.ndarray:
    """Each code's bits low bit first, concatenated, packed little-endian by numpy."""
    stream = ((codes.reshape(-1, 1) >> np.arange(bits)) & 1).astype(np.uint8).reshape(-1)
    return np.packbits(stream, bitorder="little")


@pytest.mark.parametrize("bits", range(1, 17))
@pytest.mark.parametrize("n", [1, 7, 13, 64, 1001])
def test_round_trip_every_width(bits: int, n: int) -> None:
    g = torch.Generator().manual_seed(bits * 1000 + n)
    codes = torch.randint(0, 1 << bits, (n,), generator=g)
    codes[0] = (1 << bits) - 1  # the largest value must survive
    codes[-1] = 0 if n > 1 else codes[-1]
    packed = pack_bits(codes, bits)
    assert packed.dtype == torch.uint8
    assert packed.numel() == packed_nbytes(n, bits) == -(-n * bits // 8)
    assert np.array_equal(packed.numpy(), _numpy_reference(codes.numpy(), bits))
    back = unpack_bits(packed, bits, n)
    assert back.dtype == torch.int32
    assert torch.equal(back.long(), codes)


@pytest.mark.parametrize("bits", [1, 3, 5, 8, 11, 16])
def test_all_ones_and_shapes(bits: int) -> None:
    codes = torch.full((3, 5, 7), (1 << bits) - 1, dtype=torch.int32)  # 105 codes, odd length
    packed = pack_bits(codes, bits)
    assert packed.numel() == -(-105 * bits // 8)
    assert torch.equal(unpack_bits(packed, bits, codes.shape), codes)
    spare = 8 * packed.numel() - 105 * bits  # unused high bits of the last byte are zero
    if spare:
        assert int(packed[-1]) >> (8 - spare) == 0


def test_chunk_boundaries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bitpack, "_CHUNK", 16)  # force many chunks, codes straddling them
    codes = torch.randint(0, 1 << 7, (101,), generator=torch.Generator().manual_seed(3))
    packed = pack_bits(codes, 7)
    assert np.array_equal(packed.numpy(), _numpy_reference(codes.numpy(), 7))
    assert torch.equal(unpack_bits(packed, 7, 101).long(), codes)


def test_empty() -> None:
    packed = pack_bits(torch.zeros(0, dtype=torch.long), 5)
    assert packed.numel() == 0
    assert unpack_bits(packed, 5, (0, 3)).shape == (0, 3)


@pytest.mark.parametrize(
    ("k", "bits"), [(1, 1), (2, 1), (3, 2), (16, 4), (17, 5), (256, 8), (257, 9), (65536, 16)]
)
def test_bits_for(k: int, bits: int) -> None:
    assert bits_for(k) == bits


def test_bad_input_refused() -> None:
    with pytest.raises(ValueError, match=r"bits must be an integer in \[1, 16\], got 17"):
        pack_bits(torch.zeros(3, dtype=torch.long), 17)
    with pytest.raises(ValueError, match=r"bits must be an integer in \[1, 16\], got 0"):
        packed_nbytes(3, 0)
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 8\) for 3 bits, got values in \[0, 8\]"):
        pack_bits(torch.tensor([0, 8]), 3)
    with pytest.raises(ValueError, match="got values in \\[-1, 2\\]"):
        pack_bits(torch.tensor([-1, 2]), 3)
    with pytest.raises(ValueError, match="integer tensor"):
        pack_bits(torch.tensor([0.0, 1.0]), 3)
    with pytest.raises(ValueError, match="10 codes of 3 bits take 4 bytes, the buffer has 5"):
        unpack_bits(torch.zeros(5, dtype=torch.uint8), 3, 10)
