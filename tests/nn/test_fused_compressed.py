"""Fused lookups of compressed tables (issue 13 item 4): PQ and row-wise groups give the per-field
outputs bit for bit (padding, OOV and other special ids included), hold the members' bytes,
re-pack after swaps, and leave state_dict and artifacts unchanged."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

import ctrzip.compression  # noqa: F401  (registers every table type)
from ctrzip.data.schema import FeatureSchema, FieldSpec
from ctrzip.export import artifact
from ctrzip.models import build_model
from ctrzip.nn.embedding.banded import BandedTable
from ctrzip.nn.embedding.bands import BandSpec
from ctrzip.nn.embedding.base import DenseTable
from ctrzip.nn.embedding.field import FieldEmbedding
from ctrzip.nn.embedding.fused_plan import set_fuse
from ctrzip.nn.embedding.fused_pq import PQTableGroup
from ctrzip.nn.embedding.fused_rowwise import RowwiseQuantGroup
from ctrzip.nn.embedding.pq import PQTable, SharedCodesPQTable
from ctrzip.nn.embedding.rowwise import RowwiseQuantTable
from ctrzip.nn.swappable import replace_module
from tests.conftest import random_batch

VOCABS = (5, 37, 300)  # several fields of different vocab sizes
D = 8


def _pq(
    v: int, layout: str, seed: int, m: int = 2, k: int = 16, dense_ids: list[int] | None = None
) -> PQTable:
    g = torch.Generator().manual_seed(seed)
    width = D // m if layout == "concat" else D
    n_dense = 1 if dense_ids is None else len(dense_ids)
    return PQTable.from_codebooks(
        torch.randint(0, k, (v, m), generator=g),
        torch.randn(m, k, width, generator=g),
        layout,  # type: ignore[arg-type]
        bias=torch.randn(D, generator=g) if layout == "additive" else None,
        dense_rows=torch.randn(n_dense, D, generator=g),
        dense_ids=dense_ids,
    )


def _ids(n: int = 200, seed: int = 0) -> torch.Tensor:
    """``[n, 3]`` ids with padding (0) and OOV (V - 1) rows in every column."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.stack([torch.randint(0, v, (n,), generator=g) for v in VOCABS], 1)
    ids[:4] = 0
    ids[4:8] = torch.tensor([v - 1 for v in VOCABS])
    ids[8, 0], ids[9, 2] = 0, VOCABS[2] - 1  # mixed rows
    return ids


def _per_field(tables: list[nn.Module], ids: torch.Tensor) -> torch.Tensor:
    return torch.stack([t(ids[:, j]) for j, t in enumerate(tables)], 1)


@pytest.mark.parametrize("layout", ["concat", "additive"])
def test_pq_group_equals_per_field_with_padding_oov_and_extra_dense_ids(layout: str) -> None:
    # the third table serves two extra ids densely (dense_ids of different lengths per member)
    tables = [_pq(5, layout, 1), _pq(37, layout, 2), _pq(300, layout, 3, dense_ids=[299, 7, 42])]
    ids = _ids()
    ids[10:12, 2] = torch.tensor([7, 42])
    with torch.no_grad():
        expect = _per_field(tables, ids)
        group = PQTableGroup.pack(tables)
        got = group(ids)
    assert torch.equal(got, expect) and got.shape == (200, 3, D)
    assert torch.equal(got[:4], torch.zeros(4, 3, D))  # padding: exact zeros
    assert torch.equal(got[4, 1], tables[1].dense_rows[0].detach())  # OOV: its dense row
    assert torch.equal(got[10, 2], tables[2].dense_rows[1].detach())
    # the members view the group's storage: no byte twice, only the zero codeword added
    zero_row = group.width * 4
    assert group.nbytes() == sum(t.nbytes() for t in tables) + zero_row
    assert group.in_sync()
    assert tables[1].codes.untyped_storage().data_ptr() == group.codes.untyped_storage().data_ptr()
    with torch.no_grad():
        tables[1].codebooks.mul_(2.0)  # an in-place edit of a member reaches the group
        assert torch.equal(group(ids), _per_field(tables, ids))
    group.unpack()
    assert not group.in_sync() or tables[0].codebooks.data_ptr() != group.codebooks.data_ptr()
    with torch.no_grad():
        assert torch.equal(_per_field(tables, ids)[:, 0], expect[:, 0])


def test_pq_group_refuses_other_kinds_and_keys() -> None:
    with pytest.raises(ValueError, match="PQTable/SharedCodesPQTable only"):
        PQTableGroup.pack([_pq(5, "concat", 1), DenseTable(5, D)])
    with pytest.raises(ValueError, match="differ"):
        PQTableGroup.pack([_pq(5, "concat", 1), _pq(5, "additive", 1)])
    with pytest.raises(ValueError, match=r"shape \[B, 2\]"):
        PQTableGroup.pack([_pq(5, "concat", 1), _pq(9, "concat", 2)])(torch.zeros(3, 3, dtype=torch.long))


@pytest.mark.parametrize("bits", [16, 8, 4, 2])
@pytest.mark.parametrize("cpu_ops", [True, False])
def test_rowwise_group_equals_per_field(bits: int, cpu_ops: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    import ctrzip.nn.embedding.fused_rowwise as fr
    import ctrzip.nn.embedding.rowwise as rw

    if not cpu_ops:  # the plain-op path CUDA (and builds without FBGEMM) take
        monkeypatch.setattr(fr, "_has_cpu_ops", lambda: False)
        monkeypatch.setattr(rw, "_has_cpu_ops", lambda: False)
    g = torch.Generator().manual_seed(bits)
    tables = [RowwiseQuantTable.from_dense(torch.randn(v, 7, generator=g), bits) for v in VOCABS]
    ids = _ids(seed=bits)
    with torch.no_grad():
        expect = _per_field(tables, ids)
        group = RowwiseQuantGroup.pack(tables)
        got = group(ids)
    assert torch.equal(got, expect) and got.shape == (200, 3, 7)
    assert torch.equal(got[:4], torch.zeros(4, 3, 7))
    # independent: the stored bytes dequantized by the table's plain-op routine
    want = tables[2].materialize()[ids[:, 2]]
    torch.testing.assert_close(got[:, 2], want, rtol=0, atol=1e-6)
    row = group.packed.shape[1] * group.packed.element_size()
    assert group.nbytes() == sum(t.nbytes() for t in tables) + row  # + the zero row
    assert group.in_sync()
    with pytest.raises(ValueError, match="RowwiseQuantTable only"):
        RowwiseQuantGroup.pack([tables[0], _pq(5, "concat", 1)])


def _schema() -> FeatureSchema:
    return FeatureSchema(
        fields=(
            FieldSpec("d1", "dense", source="numeric"),
            FieldSpec("a", "categorical", vocab_size=VOCABS[0]),
            FieldSpec("b", "categorical", vocab_size=VOCABS[1]),
            FieldSpec("tags", "sequence", vocab_size=20, max_len=3),
            FieldSpec("c", "categorical", vocab_size=VOCABS[2]),
            FieldSpec("e", "categorical", vocab_size=11),
        )
    )


def _mec_like(model: nn.Module) -> nn.Module:
    """PQ tables on a, b, c (e stays dense: interleaved kinds) and first-order tables sharing
    their codes, as MEC builds them."""
    for j, name in enumerate("abc"):
        v = model.embedding.tables[name].num_embeddings
        src = _pq(v, "concat", 10 + j)
        replace_module(model, f"embedding.tables.{name}", src)
        g = torch.Generator().manual_seed(20 + j)
        first = SharedCodesPQTable.on(
            src,
            f"embedding.tables.{name}",
            torch.randn(2, 16, 1, generator=g),
            bias=torch.randn(1, generator=g),
        )
        replace_module(model, f"first_order.embedding.tables.{name}", first)
    return model


def _batch(n: int = 64, seed: int = 0):  # type: ignore[no-untyped-def]
    batch = random_batch(_schema(), n, seed=seed)
    batch.sparse[:3, :2] = 0  # padding
    batch.sparse[3, 0], batch.sparse[3, 1], batch.sparse[3, 5] = VOCABS[0] - 1, VOCABS[1] - 1, VOCABS[2] - 1
    return batch


def test_mec_like_model_fused_equals_per_field_shared_codes_included() -> None:
    model = _mec_like(build_model("deepfm", _schema(), {"embedding_dim": D}, seed=0)).eval()
    plain, fused = copy.deepcopy(model), copy.deepcopy(model)
    from ctrzip.nn.embedding.pq import bind_shared_codes

    assert bind_shared_codes(plain) == 3 and bind_shared_codes(fused) == 3
    set_fuse(plain, False)
    set_fuse(fused, True)
    batch = _batch()
    with torch.inference_mode():
        assert torch.equal(fused(batch), plain(batch))
    kinds = {
        type(g).__name__: g
        for fe in (fused.embedding, fused.first_order.embedding)
        for g in fe._plan.plan.groups
    }
    assert set(kinds) == {"PQTableGroup"}
    shared = fused.first_order.embedding._plan.plan.groups[0]
    assert not shared.owns_codes and shared.num_tables == 3  # codes stay with their sources
    assert sum(t.code_nbytes() for t in shared.members()) == 0
    # training: gradients reach the members' codebooks exactly as per field
    for m in (plain, fused):
        m.train()
        m(batch).sum().backward()
    for (n, p), (n2, q) in zip(plain.named_parameters(), fused.named_parameters(), strict=True):
        assert n == n2 and (p.grad is None) == (q.grad is None), n
        if p.grad is not None:
            assert torch.equal(p.grad, q.grad), n


def test_swap_repacks_pq_and_rowwise_groups() -> None:
    schema = _schema()
    fe = FieldEmbedding(schema, D)
    for j, name in enumerate("abc"):
        fe.tables[name] = _pq(fe.tables[name].num_embeddings, "concat", j)
    plain = copy.deepcopy(fe)
    plain.fuse = False
    batch = _batch(seed=4)
    with torch.no_grad():
        assert torch.equal(fe(batch), plain(batch))
        group = fe._plan.plan.groups[0]
        assert isinstance(group, PQTableGroup) and group.num_tables == 3
        # swap one PQ table for a row-wise one, then two row-wise tables form their own group
        for t in (fe, plain):
            t.tables["b"] = RowwiseQuantTable.from_dense(
                torch.randn(VOCABS[1], D, generator=torch.Generator().manual_seed(5)), 8
            )
        assert torch.equal(fe(batch), plain(batch))
        assert not group.in_sync() or group not in fe._plan.plan.groups
        for t in (fe, plain):
            t.tables["e"] = RowwiseQuantTable.from_dense(
                torch.randn(11, D, generator=torch.Generator().manual_seed(6)), 8
            )
        assert torch.equal(fe(batch), plain(batch))
        kinds = sorted(type(g).__name__ for g in fe._plan.plan.groups)
        assert kinds == ["PQTableGroup", "RowwiseQuantGroup"]
        # the swapped-out PQ table got its own storage back and still computes what it did
        pq_b = plain.tables["a"]
        assert fe.tables["a"].codes.untyped_storage().data_ptr() != pq_b.codes.untyped_storage().data_ptr()


def test_banded_tables_stay_per_field_beside_fused_groups() -> None:
    fe = FieldEmbedding(_schema(), D)
    g = torch.Generator().manual_seed(7)
    plan = (BandSpec(0, 10, "float"), BandSpec(10, 20, "rowwise", {"bits": 4}),
            BandSpec(20, 300, "pq", {"M": 2, "K": 4}))  # fmt: skip
    fe.tables["c"] = BandedTable.from_dense(torch.randn(300, D, generator=g), None, plan)
    fe.tables["a"], fe.tables["b"] = _pq(5, "concat", 1), _pq(37, "concat", 2)
    plain = copy.deepcopy(fe)
    plain.fuse = False
    batch = _batch(seed=8)
    with torch.no_grad():
        assert torch.equal(fe(batch), plain(batch))
    assert fe.tables["c"].group_class() is None
    assert [type(g).__name__ for g in fe._plan.plan.groups] == ["PQTableGroup"]


def test_compressed_state_dict_and_artifact_round_trip(tmp_path: Path) -> None:
    model = _mec_like(build_model("deepfm", _schema(), {"embedding_dim": D}, seed=0)).eval()
    replace_module(
        model,
        "embedding.tables.e",
        RowwiseQuantTable.from_dense(torch.randn(11, D, generator=torch.Generator().manual_seed(3)), 4),
    )
    from ctrzip.nn.embedding.pq import bind_shared_codes

    bind_shared_codes(model)
    plain = copy.deepcopy(model)
    set_fuse(plain, False)
    batch = _batch(seed=5)
    with torch.inference_mode():
        ref = plain(batch)
        assert torch.equal(model(batch), ref)  # packs
    assert list(model.state_dict()) == list(plain.state_dict())
    for (k, a), (_, b) in zip(model.state_dict().items(), plain.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    artifact.save(tmp_path / "m", model)
    loaded = artifact.load(tmp_path / "m")
    assert artifact.artifact_sizes(tmp_path / "m")["tensor_bytes"] == sum(
        t.numel() * t.element_size() for t in plain.state_dict().values()
    )
    with torch.inference_mode():
        assert torch.equal(loaded.eval()(batch), ref)
        set_fuse(loaded, False)
        assert torch.equal(loaded(batch), ref)
