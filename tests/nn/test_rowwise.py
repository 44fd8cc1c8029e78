"""RowwiseQuantTable: PyTorch's CPU operators against plain unpacking, an independent
reference quantizer, honest bytes, padding, and every width including odd ones."""

from __future__ import annotations

import pytest
import torch

from ctrzip.errors import CompressionError
from ctrzip.nn.embedding.rowwise import RowwiseQuantTable, dequantize_rows, row_bytes


def _reference(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Min/max row-wise quantization written out directly (FBGEMM's rounding)."""
    lo = w.min(dim=1, keepdim=True).values
    hi = w.max(dim=1, keepdim=True).values
    levels = 2**bits - 1
    if bits < 8:  # scale and bias are stored in fp16
        lo = lo.half().float()
        scale = ((hi - lo) / levels).half().float()
    else:
        scale = (hi - lo) / levels
    q = torch.where(scale > 0, ((w - lo) / scale.clamp_min(1e-30)).round().clamp(0, levels), 0)
    return q * scale + lo


@pytest.mark.parametrize("dim", [1, 3, 7, 16])
@pytest.mark.parametrize("bits", [8, 4, 2])
def test_lookup_matches_unpacking_and_reference(dim: int, bits: int) -> None:
    g = torch.Generator().manual_seed(dim * 10 + bits)
    w = torch.randn(40, dim, generator=g)
    w[0] = 0
    t = RowwiseQuantTable.from_dense(w, bits, optimized_qparams=False)
    ids = torch.randint(0, 40, (5, 3), generator=g)
    out = t(ids)
    assert out.shape == (5, 3, dim)
    unpacked = dequantize_rows(t.packed[ids.flatten()], bits, dim).reshape(5, 3, dim)
    unpacked[ids == 0] = 0
    torch.testing.assert_close(out, unpacked, rtol=0, atol=1e-6)
    ref = _reference(w, bits)
    ref[0] = 0
    # one quantization step of slack: rounding ties may land on either neighbour
    step = ((w.max(1).values - w.min(1).values) / (2**bits - 1)).unsqueeze(1)
    assert ((t.materialize() - ref).abs() <= step * 0.51 + 1e-3).all()


@pytest.mark.parametrize("bits", [16, 8, 4, 2])
def test_bytes_are_the_stored_buffer(bits: int) -> None:
    t = RowwiseQuantTable.from_dense(torch.randn(25, 13), bits)
    expect = {16: 26, 8: 13 + 8, 4: 7 + 4, 2: 4 + 4}[bits]
    assert row_bytes(13, bits) == expect
    assert t.nbytes() == 25 * expect == sum(b.numel() * b.element_size() for b in t.buffers())


@pytest.mark.parametrize("bits", [16, 8, 4, 2])
def test_padding_is_exactly_zero_and_no_parameters(bits: int) -> None:
    w = torch.randn(10, 8) + 3.0  # the padding row is not zero in the input
    t = RowwiseQuantTable.from_dense(w, bits)
    assert t(torch.tensor([[0, 0]])).abs().max() == 0
    assert t.materialize()[0].abs().max() == 0
    assert list(t.parameters()) == []


def test_error_falls_with_bits() -> None:
    w = torch.randn(200, 16, generator=torch.Generator().manual_seed(1))
    errs = [
        (RowwiseQuantTable.from_dense(w, b).materialize()[1:] - w[1:]).pow(2).mean() for b in (16, 8, 4, 2)
    ]
    assert errs[0] < errs[1] < errs[2] < errs[3]


def test_optimized_qparams_lowers_error() -> None:
    w = torch.randn(300, 16, generator=torch.Generator().manual_seed(2))
    plain = RowwiseQuantTable.from_dense(w, 4, optimized_qparams=False).materialize()[1:]
    tuned = RowwiseQuantTable.from_dense(w, 4, optimized_qparams=True).materialize()[1:]
    assert (tuned - w[1:]).pow(2).sum() < (plain - w[1:]).pow(2).sum()


def test_bad_bits_refused() -> None:
    with pytest.raises(CompressionError, match="bits must be one of"):
        RowwiseQuantTable(4, 4, bits=3)
