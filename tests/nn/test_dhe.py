"""DHETable (deep hash embedding): the encoding and the decoder against independent numpy
computations, bytes, gradients, distillation, bad settings. (No exact dense reference: a DHE
table is a function, not a lookup; a tiny table is reproduced only approximately.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ctrzip.errors import CompressionError
from ctrzip.nn.embedding.dhe import DHETable, dhe_bytes
from ctrzip.nn.embedding.hashed import PRIME, universal_constants
from ctrzip.nn.swappable import SWAPPABLE

V, D = 40, 6


@pytest.fixture(autouse=True)
def one_thread():  # type: ignore[no-untyped-def]
    """Tiny matmuls: thread hand-offs would dominate on a busy machine."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def test_encoding_is_k_universal_hashes_scaled_to_minus_one_one() -> None:
    table = DHETable(V, D, num_hashes=5, hidden=4, buckets=1000, seed=7)
    ids = [0, 1, 17, 39]
    enc = table.encode(torch.tensor(ids)).double().numpy()
    consts = universal_constants(7, 5)
    want = [[2 * (((a * i + b) % PRIME) % 1000) / 999 - 1 for a, b in consts] for i in ids]
    np.testing.assert_allclose(enc, want, rtol=0, atol=1e-6)
    assert enc.min() >= -1 and enc.max() <= 1


def test_decoder_is_the_mish_mlp() -> None:
    torch.manual_seed(0)
    table = DHETable(V, D, num_hashes=4, hidden=5, num_layers=2)
    ids = torch.tensor([[3, 0], [3, 9]])
    out = table(ids).detach().double().numpy()
    x = table.encode(torch.tensor([3, 9])).double().numpy()
    ws = [w.detach().double().numpy() for w in table.weights]
    bs = [b.detach().double().numpy() for b in table.biases]
    for j, (w, b) in enumerate(zip(ws, bs, strict=True)):
        x = x @ w + b
        if j < len(ws) - 1:
            x = x * np.tanh(np.log1p(np.exp(x)))  # mish
    np.testing.assert_allclose(out[0, 0], x[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[1, 1], x[1], rtol=1e-5, atol=1e-6)
    assert np.array_equal(out[0, 1], np.zeros(D)) and np.array_equal(out[0, 0], out[1, 0])


@pytest.mark.parametrize(("k", "h", "layers"), [(4, 5, 1), (32, 16, 2), (8, 3, 3)])
def test_bytes_match_the_formula_and_the_stored_tensors(k: int, h: int, layers: int) -> None:
    table = DHETable(V, D, num_hashes=k, hidden=h, num_layers=layers)
    stored = sum(t.numel() * t.element_size() for t in table.state_dict().values())
    by_hand = 4 * (k * h + h + (layers - 1) * (h * h + h) + h * D + D)
    assert table.nbytes() == stored == dhe_bytes(k, h, layers, D) == by_hand


def test_gradients_reach_every_layer_and_distillation_fits() -> None:
    torch.manual_seed(0)
    table = DHETable(V, D, num_hashes=16, hidden=32)
    table(torch.tensor([1, 2, 0])).pow(2).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in table.parameters())
    target = torch.randn(V, D, generator=torch.Generator().manual_seed(1))
    valid = torch.ones(V, 1)
    valid[0] = 0
    before = float((table.materialize() - target * valid).norm() / (target * valid).norm())
    after = table.distill(target, counts=np.arange(V), steps=150, batch_size=256, lr=1e-2)
    assert after < 0.8 * before
    assert after == pytest.approx(
        float((table.materialize() - target * valid).norm() / (target * valid).norm())
    )


def test_spec_round_trip() -> None:
    torch.manual_seed(0)
    table = DHETable(V, D, num_hashes=6, hidden=5, num_layers=2, buckets=500, seed=3)
    clone = SWAPPABLE.get("DHETable").empty(**table.spec())
    clone.load_state_dict(table.state_dict(), strict=True)
    ids = torch.randint(0, V, (3, 4))
    assert torch.equal(clone(ids), table(ids))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"num_hashes": 0}, "dhe: num_hashes must be >= 1, got 0"), ({"hidden": 0}, "dhe: hidden must be >= 1"),
     ({"num_layers": 0}, "dhe: num_layers must be >= 1"), ({"buckets": 1}, "dhe: buckets must be >= 2")],
)  # fmt: skip
def test_bad_settings_raise_naming_the_setting(kwargs: dict, message: str) -> None:
    with pytest.raises(CompressionError, match=message):
        DHETable(V, D, **kwargs)


def test_out_of_range_ids_raise() -> None:
    with pytest.raises(IndexError, match=r"dhe table: ids must lie in \[0, 40\)"):
        DHETable(V, D)(torch.tensor([40]))
