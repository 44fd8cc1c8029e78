"""BandedTable (mixed-precision embeddings by popularity) against dense references: lossless
bands exact, lossy bands no worse than their method run alone, lookups across boundaries and
for padding/OOV, bytes (bit-packed codes), artifacts, training keeps padding at zero."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from compression.lowrank._lowrank_data import make_dataset, make_model

import ctrzip
from ctrzip.compression.lowrank.factorized import probe_batch
from ctrzip.compression.mec.kmeans import weighted_kmeans
from ctrzip.compression.sizes import size_report
from ctrzip.errors import CompressionError
from ctrzip.nn.bitpack import unpack_bits
from ctrzip.nn.embedding.banded import BandedTable
from ctrzip.nn.embedding.bands import BandSpec, PQBand, plan_nbytes
from ctrzip.nn.embedding.base import DenseTable
from ctrzip.nn.embedding.rowwise import RowwiseQuantTable, row_bytes

V, D = 120, 8


def _weight(seed: int = 0, v: int = V, d: int = D) -> torch.Tensor:
    w = torch.randn(v, d, generator=torch.Generator().manual_seed(seed))
    w[0] = 0  # a trained table's padding row
    return w


def _counts(v: int = V) -> torch.Tensor:
    return (5000 / torch.arange(1, v + 1).double() ** 1.1).floor().long()  # descending, like sorted ids


MIXED = [
    BandSpec(0, 10, "float"),
    BandSpec(10, 30, "rowwise", {"bits": 8}),
    BandSpec(30, 50, "rowwise", {"bits": 4}),
    BandSpec(50, 80, "pq", {"M": 2, "K": 5}),  # K not a power of two: 3-bit codes
    BandSpec(80, 100, "pq", {"M": 1, "K": 2}),  # 1-bit codes
    BandSpec(100, V, "shared", {"S": 3}),
]


def _persistent_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


# --- lossless and near-lossless bands ---------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_float_plan_equals_dense_bit_for_bit(dtype: torch.dtype) -> None:
    w = _weight()
    plan = [
        BandSpec(0, 1, "float"),
        BandSpec(1, 37, "float"),
        BandSpec(37, 38, "float"),
        BandSpec(38, V, "float"),
    ]
    t = BandedTable.from_dense(w, _counts(), plan)
    dense = DenseTable.from_tensor(w)
    ids = torch.randint(0, V, (4, 6, 5), generator=torch.Generator().manual_seed(1)).to(dtype)
    ids[0, 0, 0] = 0
    assert torch.equal(t(ids), dense(ids.long()))
    assert torch.equal(t.materialize(), w)
    assert t(ids).shape == (4, 6, 5, D)


def test_fp16_band_within_fp16_rounding() -> None:
    w = _weight()
    t = BandedTable.from_dense(w, None, [BandSpec(0, 60, "rowwise", {"bits": 16}), BandSpec(60, V, "float")])
    m = t.materialize()
    assert torch.equal(m[1:60], w[1:60].half().float())
    torch.testing.assert_close(m[1:60], w[1:60], rtol=2**-11, atol=0)
    assert torch.equal(m[60:], w[60:])


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_rowwise_band_equals_rowwise_table_on_its_rows(bits: int) -> None:
    w = _weight(2)
    t = BandedTable.from_dense(
        w, None, [BandSpec(0, 40, "float"), BandSpec(40, V, "rowwise", {"bits": bits})]
    )
    ref = RowwiseQuantTable.from_dense(w[40:], bits, padding_idx=None)
    assert torch.equal(t.materialize()[40:], ref(torch.arange(V - 40)))
    assert list(t.bands[1].parameters()) == []  # frozen


# --- lossy bands: bounded by their method run alone ------------------------------------------
@pytest.mark.parametrize(("start", "end", "m", "k"), [(0, 60, 2, 8), (30, 90, 4, 16), (60, V, 1, 5)])
def test_pq_band_no_worse_than_kmeans_on_its_rows(start: int, end: int, m: int, k: int) -> None:
    w, n = _weight(3), _counts()
    plan = [b for b in ([BandSpec(0, start, "float")] if start else [])]
    plan += [BandSpec(start, end, "pq", {"M": m, "K": k, "seed": 7})]
    plan += [BandSpec(end, V, "float")] if end < V else []
    t = BandedTable.from_dense(w, n, plan)
    rows = w[start:end]
    r = np.maximum(1, np.floor(np.log2(np.maximum(n[start:end].numpy(), 1))))  # MEC eq. 11, by hand
    r[np.arange(start, end) == 0] = 0  # the padding row takes no part
    r = torch.tensor(r, dtype=torch.float32)
    x = rows.reshape(-1, m, D // m).transpose(0, 1)
    direct = weighted_kmeans(x, k, r, iters=20, seed=7)
    decoded = torch.stack([direct.centroids[g, direct.assign[g]] for g in range(m)], 1).reshape(-1, D)
    direct_err = float((r.unsqueeze(1) * (decoded - rows).pow(2)).sum())
    band_err = float((r.unsqueeze(1) * (t.materialize()[start:end] - rows).pow(2)).sum())
    assert band_err <= direct_err * (1 + 1e-5) + 1e-6
    assert math.isclose(direct_err, direct.objective[-1], rel_tol=1e-4)
    assert t.materialize()[start:end].sub(rows).abs().max() > 0  # lossy indeed: K < rows
    torch.testing.assert_close(t.materialize()[:start], w[:start], rtol=0, atol=0)


def test_shared_band_is_count_weighted_bucket_mean() -> None:
    w, n = _weight(4), _counts()
    s, start = 4, 70
    t = BandedTable.from_dense(w, n, [BandSpec(0, start, "float"), BandSpec(start, V, "shared", {"S": s})])
    m = t.materialize()
    for j in range(s):
        ids = np.arange(start + j, V, s)
        cw = np.maximum(n.numpy()[ids], 1).astype(np.float64)
        expect = (w.numpy()[ids].astype(np.float64) * cw[:, None]).sum(0) / cw.sum()
        for i in ids:
            np.testing.assert_allclose(m[i].numpy(), expect, rtol=1e-5, atol=1e-6)
    assert t.bands[1].vectors.requires_grad


def test_shared_band_over_padding_ignores_the_padding_row() -> None:
    w = _weight(5)
    w[0] = 100.0  # a padding row that is not zero must not pull the mean
    t = BandedTable.from_dense(w, None, [BandSpec(0, V, "shared", {"S": 1})])
    torch.testing.assert_close(t.bands[0].vectors[0], w[1:].mean(0))
    assert t(torch.tensor([0])).abs().max() == 0


# --- lookups: boundaries, padding, OOV --------------------------------------------------------
def test_lookups_across_band_boundaries_match_each_band() -> None:
    w = _weight(6)
    t = BandedTable.from_dense(w, _counts(), MIXED)
    full = t.materialize()
    edges = sorted({i for b in MIXED for i in (b.start - 1, b.start, b.start + 1, b.end - 1) if 0 <= i < V})
    ids = torch.tensor(edges)
    got = t(ids.view(-1, 1).to(torch.int32)).squeeze(1)
    for row, i in zip(got, edges, strict=True):
        band = next(b for b in range(len(MIXED)) if MIXED[b].start <= i < MIXED[b].end)
        local = torch.tensor([i - MIXED[band].start])
        expect = torch.zeros(D) if i == 0 else t.bands[band](local)[0]
        assert torch.equal(row, expect.detach()), i
        assert torch.equal(row, full[i])
    for band, spec in zip(t.bands, MIXED, strict=True):  # each band's own rows, padding aside
        rows = band.materialize()
        assert rows.shape == (spec.end - spec.start, D)
        assert torch.equal(rows[1 if spec.start == 0 else 0 :], full[max(spec.start, 1) : spec.end])
    assert torch.equal(full[:10], w[:10])  # the float head is exact
    s = MIXED[-1].params["S"]
    for i in range(100, V):  # the shared tail: id -> (id - start) % S
        assert torch.equal(full[i], t.bands[-1].vectors[(i - 100) % s].detach())


def test_padding_and_oov() -> None:
    w = _weight(7)
    w[0] = 3.0
    tail_shared = BandedTable.from_dense(w, None, [BandSpec(0, 50, "float"), BandSpec(50, V, "shared")])
    out = tail_shared(torch.tensor([[0, V - 1], [0, 0]]))
    assert out[0, 0].abs().max() == 0 and out[1].abs().max() == 0  # padding exactly zero
    assert torch.equal(out[0, 1], tail_shared.bands[1].vectors[0].detach())  # OOV is the tail's vector
    own = BandedTable.from_dense(
        w, None, [BandSpec(0, 50, "float"), BandSpec(50, V - 1, "shared"), BandSpec(V - 1, V, "float")]
    )
    assert torch.equal(own(torch.tensor([V - 1]))[0], w[V - 1])  # OOV kept exact by its own band
    no_pad = BandedTable.from_dense(w, None, [BandSpec(0, V, "float")], padding_idx=None)
    assert torch.equal(no_pad(torch.tensor([0]))[0], w[0])


def test_out_of_range_and_empty_ids() -> None:
    t = BandedTable.from_dense(_weight(), None, MIXED)
    with pytest.raises(IndexError, match=rf"ids must lie in \[0, {V}\), got \[0, {V}\]"):
        t(torch.tensor([0, V]))
    with pytest.raises(IndexError, match=r"got \[-1, 3\]"):
        t(torch.tensor([-1, 3]))
    assert t(torch.zeros(0, 3, dtype=torch.long)).shape == (0, 3, D)


# --- bytes ---------------------------------------------------------------------------------
def test_nbytes_is_persistent_tensors_and_formula() -> None:
    t = BandedTable.from_dense(_weight(), _counts(), MIXED)
    by_hand = (
        10 * D * 4
        + 20 * row_bytes(D, 8)
        + 20 * row_bytes(D, 4)
        + math.ceil(30 * 2 * 3 / 8)
        + 5 * D * 4  # 3-bit codes (K=5), M*K*(D/M) floats
        + math.ceil(20 * 1 * 1 / 8)
        + 2 * D * 4  # 1-bit codes (K=2)
        + 3 * D * 4
    )
    assert t.nbytes() == _persistent_bytes(t) == by_hand == plan_nbytes(MIXED, V, D) == t.plan_nbytes()
    assert [r["bytes"] for r in t.band_report()] == [_persistent_bytes(b) for b in t.bands]
    pq = t.bands[3]
    assert isinstance(pq, PQBand) and pq.code_bits() == 3
    assert pq.packed_codes.numel() == math.ceil(30 * 2 * 3 / 8)
    assert torch.equal(unpack_bits(pq.packed_codes, 3, (30, 2)), pq.codes.int())
    assert int(pq.codes.max()) < 5


def test_state_dict_round_trip_unpacks_codes() -> None:
    t = BandedTable.from_dense(_weight(8), _counts(), MIXED)
    fresh = BandedTable.empty(**t.spec())
    assert "bands.3.codes" not in t.state_dict()  # only the packed bits are saved
    fresh.load_state_dict(t.state_dict())
    assert torch.equal(fresh.bands[3].codes, t.bands[3].codes)
    ids = torch.arange(V)
    assert torch.equal(fresh(ids), t(ids))


def test_save_load_deepfm_identical_and_sizes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    data = make_dataset(tmp_path / "data")
    model = make_model("deepfm")
    dense = model.embedding.tables["item"]
    plan = [
        BandSpec(0, 8, "float"),
        BandSpec(8, 20, "rowwise", {"bits": 8}),
        BandSpec(20, 40, "pq", {"M": 2, "K": 6}),
        BandSpec(40, 60, "shared", {"S": 2}),
    ]
    model.embedding.tables["item"] = BandedTable.from_dense(
        dense.materialize(), data.counts["item"], plan, name="item"
    )
    report = size_report(model)
    assert report["total"]["bytes"] == _persistent_bytes(model)  # the nested row-wise table counted once
    assert report["tables"]["embedding.tables.item"]["bytes"] == model.embedding.tables["item"].nbytes()
    assert "embedding.tables.item.bands.1.table" not in report["tables"]
    batch = probe_batch(data.schema, 64, torch.device("cpu"))
    with torch.no_grad():
        expect = model(batch)
    ctrzip.save(tmp_path / "m", model)
    loaded = ctrzip.load(tmp_path / "m")
    assert isinstance(loaded.embedding.tables["item"], BandedTable)
    assert loaded.embedding.tables["item"].plan == model.embedding.tables["item"].plan
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch), expect, rtol=0, atol=0)
    from safetensors.torch import load_file

    stored = load_file(str(tmp_path / "m" / "model.safetensors"))
    item = sum(
        v.numel() * v.element_size() for k, v in stored.items() if k.startswith("embedding.tables.item.")
    )
    assert item == model.embedding.tables["item"].nbytes()


# --- training --------------------------------------------------------------------------------
def test_padding_stays_zero_under_training_and_frozen_parts_stay() -> None:
    t = BandedTable.from_dense(_weight(9), _counts(), MIXED)
    frozen = {k: v.clone() for k, v in t.state_dict().items() if not v.is_floating_point()}
    codes = t.bands[3].codes.clone()
    trainable = {n: p.detach().clone() for n, p in t.named_parameters()}
    assert set(trainable) == {"bands.0.weight", "bands.3.codebooks", "bands.4.codebooks", "bands.5.vectors"}
    opt = torch.optim.SGD(t.parameters(), lr=50.0)
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        ids = torch.randint(0, V, (64, 3), generator=g)
        ids[:, 0] = 0
        loss = (t(ids) - 5.0).pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert t(torch.tensor([0])).abs().max() == 0 and t.materialize()[0].abs().max() == 0
    for k, v in t.state_dict().items():
        if k in frozen:
            assert torch.equal(v, frozen[k]), k
    assert torch.equal(t.bands[3].codes, codes)
    for n, p in t.named_parameters():
        assert not torch.equal(p.detach(), trainable[n]), n  # every trainable part learned


def test_padding_stays_zero_in_a_trained_model(tmp_path) -> None:  # type: ignore[no-untyped-def]
    data = make_dataset(tmp_path / "data")
    model = make_model("deepfm").train()
    for name in ("item", "tags"):  # a categorical and a sequence field
        old = model.embedding.tables[name]
        v = old.num_embeddings
        plan = [BandSpec(0, v // 2, "pq", {"M": 2, "K": 4}), BandSpec(v // 2, v, "shared", {"S": 2})]
        model.embedding.tables[name] = BandedTable.from_dense(old.materialize(), data.counts[name], plan)
    opt = torch.optim.Adam(model.parameters(), lr=1.0)
    split = data["train"]
    for s in range(0, 256, 64):
        batch = ctrzip.Batch(
            torch.as_tensor(np.array(split.sparse[s : s + 64])).long(),
            torch.as_tensor(np.array(split.dense[s : s + 64])),
            torch.as_tensor(np.array(split.label[s : s + 64])),
        )
        loss = F.binary_cross_entropy_with_logits(model(batch), batch.label)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for name in ("item", "tags"):
        assert model.embedding.tables[name](torch.zeros(3, 2, dtype=torch.int32)).abs().max() == 0


# --- plan errors ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("plan", "message"),
    [
        ([], r"field 'C1': the band plan is empty; give bands covering ids \[0, 120\)"),
        (
            [BandSpec(0, 50, "float"), BandSpec(60, V, "float")],
            r"band 1 \[60, 120\) starts a gap.*expected start 50",
        ),
        (
            [BandSpec(0, 50, "float"), BandSpec(40, V, "float")],
            r"band 1 \[40, 120\) overlaps the previous band",
        ),
        ([BandSpec(0, 50, "float")], r"field 'C1': bands end at id 50, but the table has 120 ids"),
        ([BandSpec(0, 0, "float"), BandSpec(0, V, "float")], r"band 0 \[0, 0\) is empty"),
        (
            [BandSpec(0, V, "hash")],
            r"band 0 \[0, 120\): unknown representation 'hash' \(one of \['float', 'pq'",
        ),
        (
            [BandSpec(0, V, "pq", {"m": 2})],
            r"band 0 \[0, 120\) pq: unknown parameter\(s\) \['m'\] \(allowed: M, K",
        ),
        (
            [BandSpec(0, V, "pq", {"M": 3})],
            r"pq: M \(sub-spaces\) must be a positive divisor of embedding_dim=8, got 3",
        ),
        (
            [BandSpec(0, V, "pq", {"K": 1})],
            r"K \(codewords\) must be an integer in \[2, 65536\], got 1.*'shared'",
        ),
        ([BandSpec(0, V, "pq", {"weighting": "sqrt"})], r"weighting must be one of"),
        (
            [BandSpec(0, 5, "float"), BandSpec(5, V, "shared", {"S": 200})],
            r"band 1 \[5, 120\) shared: S .* \[1, 115\]",
        ),
        (
            [BandSpec(0, V, "rowwise", {"bits": 3})],
            r"band 0 \[0, 120\) rowwise: bits must be one of \(16, 8, 4, 2\)",
        ),
        (
            [BandSpec(0, V, "float", {"bits": 8})],
            r"float: unknown parameter\(s\) \['bits'\] \(allowed: none\)",
        ),
        (
            [BandSpec(0, V, "pq", {"K": True})],
            r"K \(codewords\) must be an integer in \[2, 65536\], got True",
        ),
        ([BandSpec(0, V, "pq", {"seed": 1.5})], r"pq: seed must be an integer, got 1.5"),
        ([BandSpec(0, V, "rowwise", {"optimized_qparams": 1})], r"optimized_qparams must be true or false"),
        ([BandSpec(0, 60.5, "float")], r"band 0 \[0, 60.5\): start and end must be integer ids"),
        ([BandSpec(0, V, "float", [1])], r"band 0 \[0, 120\): params must be a mapping, got \[1\]"),
        (
            [{"start": 0, "representation": "float"}],
            r"needs keys start, end, representation .* missing \['end'\]",
        ),
        ([{"start": 0, "end": V, "representation": "float", "bits": 8}], r"unknown \['bits'\]"),
    ],
)
def test_bad_plans_refused(plan: list[Any], message: str) -> None:
    with pytest.raises(CompressionError, match=message):
        BandedTable.from_dense(_weight(), None, plan, name="C1")


def test_bad_counts_refused() -> None:
    plan = [BandSpec(0, V, "float")]
    with pytest.raises(
        CompressionError, match=r"field 'C2': counts must have shape \[120\] \(one per id\), got \(7,\)"
    ):
        BandedTable.from_dense(_weight(), torch.ones(7), plan, name="C2")
    with pytest.raises(CompressionError, match="counts must be >= 0"):
        BandedTable.from_dense(_weight(), -torch.ones(V), plan)


def test_plan_dicts_and_spec_round_trip() -> None:
    t = BandedTable.from_dense(_weight(), None, [b.to_dict() for b in MIXED])  # type: ignore[misc]
    again = BandedTable.empty(**t.spec())
    assert again.plan == t.plan
    assert again.plan[3].params == {"M": 2, "K": 5, "iters": 20, "seed": 0, "weighting": "log2"}


def test_gradients_match_a_dense_reference() -> None:
    """Float head, shared tail: gradients reach exactly the rows/vectors a dense model would."""
    w, g = _weight(10), torch.Generator().manual_seed(1)
    t = BandedTable.from_dense(w, None, [BandSpec(0, 40, "float"), BandSpec(40, V, "shared", {"S": 2})])
    ref_head = w[:40].clone().requires_grad_(True)
    ref_tail = t.bands[1].vectors.detach().clone().requires_grad_(True)
    ids = torch.randint(0, V, (50, 4), generator=g)
    ids[0] = 0
    target = torch.randn(50, 4, D, generator=g)
    (t(ids) - target).pow(2).sum().backward()
    head = F.embedding(ids.clamp(max=39), ref_head)  # reference: pick per id by hand
    tail = F.embedding(((ids - 40) % 2).clamp(min=0), ref_tail)
    ref = torch.where((ids < 40).unsqueeze(-1), head, tail) * (ids != 0).unsqueeze(-1)
    (ref - target).pow(2).sum().backward()
    torch.testing.assert_close(t.bands[0].weight.grad, ref_head.grad)
    torch.testing.assert_close(t.bands[1].vectors.grad, ref_tail.grad)
    assert t.bands[0].weight.grad[0].abs().max() == 0  # padding gets no gradient
