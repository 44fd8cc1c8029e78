"""PQTable: storage, parity with dense tables, round trips, and training inside every zoo model."""

from __future__ import annotations

import pytest
import torch
from conftest import make_schema, random_batch

from ctrzip.models.base import MODELS, build_model
from ctrzip.nn.embedding.base import DenseTable
from ctrzip.nn.embedding.field import FieldEmbedding
from ctrzip.nn.embedding.pq import PQFit, PQTable, code_dtype, packed_code_bytes
from ctrzip.nn.swappable import SWAPPABLE


def _random_table(v=30, d=8, m=2, k=5, layout="concat", seed=0) -> PQTable:
    g = torch.Generator().manual_seed(seed)
    width = d // m if layout == "concat" else d
    codes = torch.randint(0, k, (v, m), generator=g)
    books = torch.randn(m, k, width, generator=g)
    bias = torch.randn(d, generator=g) if layout == "additive" else None
    return PQTable.from_codebooks(codes, books, layout, bias=bias, dense_rows=torch.randn(1, d, generator=g))


@pytest.mark.parametrize(
    ("k", "dtype"),
    [
        (2, torch.uint8),
        (256, torch.uint8),
        (257, torch.int16),
        (2**15, torch.int16),
        (2**15 + 1, torch.int32),
    ],
)
def test_code_dtype_is_narrowest(k, dtype):
    assert code_dtype(k) == dtype
    t = PQTable(10, 4, 2, k)
    assert t.codes.dtype == dtype and t.codes.shape == (10, 2)
    assert t.code_nbytes() == 10 * 2 * t.codes.element_size()
    bits = (k - 1).bit_length()
    assert t.packed_code_nbytes() == packed_code_bytes(10, 2, k) == -(-10 * 2 * bits // 8)


def test_codes_range_and_shape_checked():
    books = torch.zeros(2, 4, 3)
    with pytest.raises(ValueError, match="lie in"):
        PQTable.from_codebooks(torch.tensor([[0, 4]]), books)
    with pytest.raises(ValueError, match=r"\[V, 2\]"):
        PQTable.from_codebooks(torch.zeros(5, 3, dtype=torch.long), books)
    with pytest.raises(ValueError, match="divide"):
        PQTable(10, 7, 2, 4, layout="concat")


def test_identity_codes_reproduce_dense_table_exactly():
    v, d, m = 12, 6, 3
    w = torch.randn(v, d)
    w[0] = 0  # padding row of a DenseTable
    codes = torch.arange(v).unsqueeze(1).repeat(1, m)  # K >= V, id i -> code i everywhere
    books = w.reshape(v, m, d // m).transpose(0, 1).contiguous()  # [M, K=V, d_s]
    dense = DenseTable.from_tensor(w)
    pq = PQTable.from_dense(dense, PQFit(codes, books, "concat"))
    assert torch.equal(pq.materialize(), w)
    ids = torch.randint(0, v, (5, 4))
    assert torch.equal(pq(ids), dense(ids))
    assert torch.equal(pq(ids.int()), dense(ids))


def test_concat_and_additive_lookup_match_hand_computation():
    for layout in ("concat", "additive"):
        t = _random_table(layout=layout)
        ids = torch.tensor([1, 5, 0, 29, 7])
        expect = []
        for i in ids.tolist():
            words = [t.codebooks[m, int(t.codes[i, m])] for m in range(t.num_subspaces)]
            vec = torch.cat(words) if layout == "concat" else torch.stack(words).sum(0) + t.bias
            if i == 0:
                vec = torch.zeros(t.embedding_dim)
            if i == t.num_embeddings - 1:
                vec = t.dense_rows[0]
            expect.append(vec)
        torch.testing.assert_close(t(ids), torch.stack(expect))


def test_state_dict_round_trip_via_spec_and_empty():
    for layout in ("concat", "additive"):
        t = _random_table(layout=layout, k=300)  # int16 codes
        cls = SWAPPABLE.get(type(t).__name__)
        clone = cls.empty(**t.spec())
        clone.load_state_dict(t.state_dict(), strict=True)
        ids = torch.randint(0, t.num_embeddings, (20,))
        assert torch.equal(clone(ids), t(ids))
        assert clone.codes.dtype == t.codes.dtype == torch.int16
        assert set(t.state_dict()) >= {"codes", "codebooks", "dense_rows"}


def test_codes_survive_device_and_dtype_moves():
    t = _random_table()
    codes = t.codes.clone()
    t.double()
    assert t.codes.dtype == torch.uint8 and torch.equal(t.codes, codes)
    assert t.codebooks.dtype == torch.float64
    m = t.to("meta")
    assert m.codes.device.type == "meta" and m.codes.dtype == torch.uint8


def test_nbytes_counts_codes_and_float_parts():
    t = _random_table(v=30, d=8, m=2, k=5, layout="additive")
    expect = 30 * 2 * 1 + (2 * 5 * 8 + 8 + 8) * 4
    assert t.nbytes() == expect
    assert t.packed_nbytes() == packed_code_bytes(30, 2, 5) + (2 * 5 * 8 + 8 + 8) * 4


def _pq_like(table, m: int, k: int, seed: int) -> PQTable:
    """A random PQ table with the shape of ``table`` (concat for dim >= m, else additive)."""
    v, d = table.num_embeddings, table.embedding_dim
    layout = "concat" if d % m == 0 and d >= m else "additive"
    g = torch.Generator().manual_seed(seed)
    books = torch.randn(m, k, d // m if layout == "concat" else d, generator=g) * 0.1
    return PQTable.from_codebooks(torch.randint(0, k, (v, m), generator=g), books, layout)


@pytest.mark.parametrize("key", MODELS.keys())
def test_pq_table_trains_inside_every_zoo_model(key):
    schema = make_schema()
    torch.manual_seed(0)
    model = build_model(key, schema)  # defaults: every model, its own embedding dim
    swapped = []
    for fe in [m for m in model.modules() if isinstance(m, FieldEmbedding)]:
        for i, name in enumerate(list(fe.tables)):
            fe.tables[name] = _pq_like(fe.tables[name], 2, 4, seed=i)
            swapped.append(fe.tables[name])
    assert swapped, f"{key}: no tables to swap"
    codes_before = [t.codes.clone() for t in swapped]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    batch = random_batch(schema, n=64)
    logits = model(batch)
    assert logits.shape == (64,)
    torch.nn.functional.binary_cross_entropy_with_logits(logits, batch.label).backward()
    main = [t for t in model.embedding.tables.values()]
    for t in main:  # every sub-space table of the main embedding gets gradient
        assert t.codebooks.grad is not None
        assert all(t.codebooks.grad[m].abs().sum() > 0 for m in range(t.num_subspaces)), key
    opt.step()
    assert all(torch.equal(t.codes, c) for t, c in zip(swapped, codes_before, strict=True))
    assert all("codes" not in n for n, _ in model.named_parameters())
