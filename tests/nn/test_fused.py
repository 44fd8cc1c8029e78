"""Fused lookups (issue 13 item 1): packed ``DenseTable`` groups behind ``FieldEmbedding`` give
the outputs and gradients of per-field lookups, keep per-field state, and re-pack after swaps."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import ctrzip.compression  # noqa: F401  (registers every table type)
from ctrzip.data.batch import Batch
from ctrzip.data.schema import FeatureSchema, FieldSpec
from ctrzip.models import MODELS, build_model
from ctrzip.nn.embedding import fused as fused_mod
from ctrzip.nn.embedding.base import DenseTable
from ctrzip.nn.embedding.field import FieldEmbedding
from ctrzip.nn.embedding.fused import DenseTableGroup, TableGroup
from ctrzip.nn.embedding.fused_plan import restore_fuse, set_fuse
from ctrzip.nn.embedding.pq import PQTable
from ctrzip.nn.swappable import replace_module
from tests.conftest import random_batch


def _schema() -> FeatureSchema:
    """Interleaved kinds, so the fused output needs the permutation back to schema order."""
    return FeatureSchema(
        fields=(
            FieldSpec("d1", "dense", source="numeric"),
            FieldSpec("user", "categorical", vocab_size=50),
            FieldSpec("tags", "sequence", vocab_size=20, max_len=4),
            FieldSpec("item", "categorical", vocab_size=120),
            FieldSpec("d2", "dense", source="numeric"),
            FieldSpec("cat", "categorical", vocab_size=7),
            FieldSpec("city", "categorical", vocab_size=30),
        )
    )


def _pq(v: int, d: int) -> PQTable:
    g = torch.Generator().manual_seed(1)
    codes = torch.randint(0, 16, (v, 2), generator=g)
    books = torch.randn(2, 16, d // 2, generator=g)
    return PQTable.from_codebooks(codes, books, "concat", dense_rows=torch.randn(1, d, generator=g))


def _pair(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(per-field, fused) copies with equal weights."""
    plain = copy.deepcopy(model)
    set_fuse(plain, False)
    fused = copy.deepcopy(model)
    set_fuse(fused, True)
    return plain, fused


def _grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.to_dense() for n, p in model.named_parameters() if p.grad is not None}


def _plans(model: nn.Module) -> list:
    return [m._plan.plan for m in model.modules() if isinstance(m, FieldEmbedding)]


@pytest.mark.parametrize("name", sorted(MODELS.keys()))
def test_every_zoo_model_fused_equals_per_field(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # half the models take the GPU backward (one scatter for the whole group) on CPU
    monkeypatch.setattr(fused_mod, "one_scatter", lambda device: sorted(MODELS.keys()).index(name) % 2 == 0)
    schema = _schema()
    batch = random_batch(schema, 64, seed=1)
    plain, fused = _pair(build_model(name, schema, seed=0))
    outs = []
    for m in (plain, fused):
        m.train()
        torch.manual_seed(5)  # same dropout masks: the embedding path draws no random numbers
        out = m(batch)
        out.backward(torch.linspace(-1, 1, out.numel()).reshape(out.shape))
        outs.append(out.detach())
    assert torch.equal(outs[0], outs[1])
    gp, gf = _grads(plain), _grads(fused)
    assert gp.keys() == gf.keys() and gp
    for k in gp:
        assert torch.equal(gp[k], gf[k]), k
    # fused really packed: one group of the four categorical DenseTables per FieldEmbedding
    plans = _plans(fused)
    assert plans and all(p is not None and len(p.groups) == 1 for p in plans)
    assert all(p.groups[0].num_tables == 4 for p in plans)
    assert all(p is None for p in _plans(plain))


@pytest.mark.parametrize("one", [False, True])
def test_group_backward_both_scatter_forms_equal_per_table(
    one: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fused_mod, "one_scatter", lambda device: one)
    g = torch.Generator().manual_seed(3)
    tables = [DenseTable.from_tensor(torch.randn(n, 5, generator=g)) for n in (11, 6, 20)]
    refs = copy.deepcopy(tables)
    ids = torch.stack([torch.randint(0, n, (40,), generator=g) for n in (11, 6, 20)], 1)
    upstream = torch.randn(40, 3, 5, generator=g)
    DenseTableGroup.pack(tables)(ids).backward(upstream)
    torch.stack([t(ids[:, j]) for j, t in enumerate(refs)], 1).backward(upstream)
    for t, r in zip(tables, refs, strict=True):
        assert torch.equal(t.weight.grad, r.weight.grad)
        assert torch.equal(t.weight.grad[0], torch.zeros(5))


def test_group_pack_forward_unpack() -> None:
    g = torch.Generator().manual_seed(0)
    tables = [DenseTable.from_tensor(torch.randn(n, 6, generator=g)) for n in (9, 4, 13)]
    expect_w = [t.weight.detach().clone() for t in tables]
    group = DenseTableGroup.pack(tables)
    assert isinstance(group, TableGroup) and group.offsets.tolist() == [0, 9, 13]
    assert group.nbytes() == sum(t.nbytes() for t in tables) + 6 * 4 == 27 * 6 * 4  # + the zero row
    ids = torch.stack([torch.randint(0, n, (17,), generator=g) for n in (9, 4, 13)], 1)
    ids[0] = 0  # padding in every column
    expect = torch.stack([t(ids[:, j]) for j, t in enumerate(tables)], 1)
    assert torch.equal(group(ids), expect) and group(ids).shape == (17, 3, 6)
    assert torch.equal(group(ids)[0], torch.zeros(3, 6))
    out = group.unpack()
    assert out == tables
    for t, w in zip(out, expect_w, strict=True):
        assert torch.equal(t.weight, w)
        assert t.weight.untyped_storage().data_ptr() != group.packed.untyped_storage().data_ptr()
    with pytest.raises(ValueError, match="DenseTable only"):
        DenseTableGroup.pack([tables[0], _pq(4, 6)])
    with pytest.raises(ValueError, match="differ"):
        DenseTableGroup.pack([tables[0], DenseTable(5, 6, padding_idx=None)])
    with pytest.raises(ValueError, match=r"shape \[B, 3\]"):
        DenseTableGroup.pack([DenseTable(3, 2) for _ in range(3)])(torch.zeros(4, 2, dtype=torch.long))


def test_swap_into_fused_collection_repacks_and_equals_per_field() -> None:
    schema = _schema()
    batch = random_batch(schema, 64, seed=2)
    base = build_model("deepfm", schema, seed=0)
    plain, fused = _pair(base)
    fused(batch)  # packs
    fe = fused.embedding
    assert sorted(fe._plan.plan.groups[0]._members, key=id) == sorted(
        (fe.tables[n] for n in ("user", "item", "cat", "city")), key=id
    )
    w_item = fe.tables["item"].weight.detach().clone()
    pq = {m: _pq(120, fe.dim) for m in (plain, fused)}
    for m in (plain, fused):
        old = replace_module(m, "embedding.tables.item", pq[m])
    assert fused.embedding.tables["item"] is pq[fused]
    out_p, out_f = plain(batch), fused(batch)
    assert torch.equal(out_p, out_f)
    groups = fe._plan.plan.groups
    assert len(groups) == 1 and "item" not in [n for n in fe.tables if fe.tables[n] in groups[0]._members]
    assert groups[0].num_tables == 3
    # the swapped-out table got storage of its own back (the old packed tensor is not kept alive)
    assert torch.equal(old.weight, w_item)
    assert old.weight.untyped_storage().data_ptr() != groups[0].packed.untyped_storage().data_ptr()
    # a plain ModuleDict assignment (as MEC stage 2 does) is noticed too
    new = DenseTable.from_tensor(torch.randn(30, fe.dim))
    for m in (plain, fused):
        m.embedding.tables["city"] = copy.deepcopy(new)
    assert torch.equal(plain(batch), fused(batch))
    assert groups is not fe._plan.plan.groups  # re-packed
    # a re-pack keeps the Parameter objects of the tables it keeps
    user_param = fe.tables["user"].weight
    fused(batch)
    assert fe.tables["user"].weight is user_param
    assert fe.tables["user"].weight.untyped_storage().data_ptr() == (
        fe._plan.plan.groups[0].packed.untyped_storage().data_ptr()
    )


def test_state_dict_round_trip_fused_and_per_field() -> None:
    schema = _schema()
    batch = random_batch(schema, 32, seed=3)
    plain, fused = _pair(build_model("dcnv2", schema, seed=0))
    fused(batch)
    assert list(fused.state_dict()) == list(plain.state_dict())
    assert "embedding.tables.user.weight" in fused.state_dict()
    other = build_model("dcnv2", schema, seed=7)
    set_fuse(other, True)
    other(batch)  # packed before the load: loading must write into the packed storage
    other.load_state_dict(fused.state_dict())
    plain2 = build_model("dcnv2", schema, seed=9)
    set_fuse(plain2, False)
    plain2.load_state_dict(other.state_dict())
    with torch.no_grad():
        ref = plain(batch)
        assert torch.equal(other(batch), ref)
        assert torch.equal(plain2(batch), ref)
    # the packed storage is what the per-field tables hold after the load
    packed = other.embedding._plan.plan.groups[0].packed
    assert torch.equal(packed[:50], plain.embedding.tables["user"].weight)


def test_padding_exact_zero_and_no_gradient_after_training_steps() -> None:
    schema = _schema()
    fe = FieldEmbedding(schema, 4, init_std=1.0)
    opt = torch.optim.Adam(fe.parameters(), lr=0.1)
    for step in range(3):
        batch = random_batch(schema, 64, seed=step)
        batch.sparse[:5] = 0  # padding ids in every sparse column
        out = fe(batch)
        assert torch.equal(out[:5, [1, 2, 3, 5, 6]], torch.zeros(5, 5, 4))
        opt.zero_grad()
        out.pow(2).sum().backward()
        for n in ("user", "item", "cat", "city"):
            assert torch.equal(fe.tables[n].weight.grad[0], torch.zeros(4)), n
        opt.step()
    for n in ("user", "item", "cat", "city"):
        assert torch.equal(fe.tables[n].weight[0], torch.zeros(4))
    # an edited stored padding row still looks up as zero (as in DenseTable)
    with torch.no_grad():
        fe.tables["user"].weight[0] = 3.0
    batch = random_batch(schema, 8, seed=9)
    batch.sparse[:, 0] = 0
    assert torch.equal(fe(batch)[:, 1], torch.zeros(8, 4))


def test_fuse_off_is_honoured_and_set_fuse_restores() -> None:
    schema = _schema()
    batch = random_batch(schema, 16)
    fe = FieldEmbedding(schema, 4, fuse=False)
    fe(batch)
    assert fe._plan.plan is None
    fe.fuse = True
    fe(batch)
    assert fe._plan.plan is not None
    model = build_model("deepfm", schema, seed=0)
    prev = set_fuse(model, False)
    assert all(p is None for p in _plans(model))
    model(batch)
    assert all(p is None for p in _plans(model))
    assert all(
        not isinstance(t.weight.untyped_storage(), type(None)) for t in model.embedding.tables.values()
    )
    restore_fuse(prev)
    model(batch)
    assert all(p is not None for p in _plans(model))
    with pytest.raises(ValueError, match="sparse_grad needs fuse=True"):
        FieldEmbedding(schema, 4, fuse=False, sparse_grad=True)(batch)


def test_deepcopy_and_dtype_move_repack_without_sharing() -> None:
    schema = _schema()
    batch = random_batch(schema, 16)
    fe = FieldEmbedding(schema, 4, init_std=1.0)
    ref = fe(batch).detach()
    twin = copy.deepcopy(fe)
    with torch.no_grad():
        twin.tables["user"].weight.add_(1.0)
    assert torch.equal(fe(batch), ref)  # the copy shares nothing with the original
    assert not torch.equal(twin(batch), ref)
    plain = copy.deepcopy(fe).double()
    plain.fuse = False
    doubled = fe.double()
    assert torch.equal(doubled(batch), plain(batch))
    assert doubled._plan.plan.groups[0].packed.dtype == torch.float64


def test_sparse_grad_equals_dense_grad() -> None:
    schema = _schema()
    batch = random_batch(schema, 64, seed=4)
    dense = FieldEmbedding(schema, 4, init_std=1.0)
    sparse = copy.deepcopy(dense)
    sparse.sparse_grad = True
    for fe in (dense, sparse):
        fe(batch).pow(2).sum().backward()
    for n in ("user", "item", "cat", "city"):
        g = sparse.tables[n].weight.grad
        assert g.is_sparse
        assert torch.equal(g.to_dense(), dense.tables[n].weight.grad), n
    assert not sparse.tables["tags"].weight.grad.is_sparse  # sequences stay per-field, dense


def test_eval_in_inference_mode_then_train() -> None:
    """Packing first under inference_mode must leave normal (trainable) tensors."""
    schema = _schema()
    batch = random_batch(schema, 16)
    fe = FieldEmbedding(schema, 4)
    with torch.inference_mode():
        fe(batch)
    fe(batch).sum().backward()
    assert fe.tables["user"].weight.grad is not None


def test_batch_on_int64_ids() -> None:
    schema = _schema()
    b = random_batch(schema, 16)
    b64 = Batch(b.sparse.long(), b.dense, b.label)
    fe = FieldEmbedding(schema, 4)
    assert torch.equal(fe(b), fe(b64))


def test_artifact_saved_from_a_fused_model_loads_into_per_field_and_back(tmp_path) -> None:  # noqa: ANN001
    from ctrzip.export import load, save

    schema = _schema()
    batch = random_batch(schema, 32, seed=6)
    model = build_model("pnn", schema, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    model(batch).sum().backward()  # packed (fuse is the default) and trained one step
    opt.step()
    assert all(p is not None for p in _plans(model))
    save(tmp_path / "a", model)
    back = load(tmp_path / "a")
    set_fuse(back, False)
    model.eval()
    back.eval()
    with torch.no_grad():
        assert torch.equal(back(batch), model(batch))
        set_fuse(back, True)
        assert torch.equal(back(batch), model(batch))
    assert back.state_dict().keys() == model.state_dict().keys()


def test_a_table_shared_by_two_fields_is_not_packed() -> None:
    schema = _schema()
    shared = DenseTable(120, 4)
    fe = FieldEmbedding(schema, 4, tables={"item": shared, "city": DenseTable(30, 4)})
    fe.tables["user"] = shared  # same object for two fields (50 rows expected: ids stay < 50)
    batch = random_batch(schema, 16)
    plain = copy.deepcopy(fe)
    plain.fuse = False
    out = fe(batch)
    plan = fe._plan.plan
    members = [id(t) for g in plan.groups for t in g.members()]
    assert id(shared) not in members and len(members) == 2  # cat and city
    assert torch.equal(out, plain(batch))
    assert fe._plan.plan is plan and fe(batch) is not None and fe._plan.plan is plan  # no re-pack churn


def test_square_sum_of_packed_tables_matches_per_parameter() -> None:
    from ctrzip.nn.embedding.fused import square_sum

    schema = _schema()
    fe = FieldEmbedding(schema, 4, init_std=1.0)
    fe(random_batch(schema, 8))  # packs user/item/cat/city
    ref = copy.deepcopy(fe)
    ref.fuse = False
    params = [p for p in fe.parameters()][::-1]  # any order; includes unpacked ones
    refs = [p for p in ref.parameters()][::-1]
    out, expect = square_sum(params), sum(p.float().pow(2).sum() for p in refs)
    torch.testing.assert_close(out, expect, rtol=1e-6, atol=0)
    (3.0 * out).backward()
    (3.0 * expect).backward()
    for (n, p), q in zip(fe.named_parameters(), ref.parameters(), strict=True):
        assert torch.equal(p.grad, q.grad), n
    assert square_sum([]) == 0.0
    # a subset that leaves a gap in the packed rows is still summed right
    sub = [fe.tables["user"].weight, fe.tables["cat"].weight]
    torch.testing.assert_close(square_sum(sub), sum(p.pow(2).sum() for p in sub), rtol=1e-6, atol=0)


def test_a_hooked_table_is_looked_up_alone_so_its_hooks_fire() -> None:
    """Calibration observers hook ``embedding.tables.<name>``: its forward must run."""
    schema = _schema()
    batch = random_batch(schema, 16)
    fe = FieldEmbedding(schema, 4, init_std=1.0)
    plain = copy.deepcopy(fe)
    plain.fuse = False
    fe(batch)
    seen = []
    handle = fe.tables["item"].register_forward_hook(lambda m, args, out: seen.append(out.shape))
    assert torch.equal(fe(batch), plain(batch))
    assert seen == [torch.Size([16, 4])]
    members = {id(t) for g in fe._plan.plan.groups for t in g.members()}
    assert id(fe.tables["item"]) not in members and len(members) == 3
    handle.remove()
    fe(batch)
    assert id(fe.tables["item"]) in {id(t) for g in fe._plan.plan.groups for t in g.members()}
    assert len(seen) == 1


def test_global_module_hooks_see_every_table() -> None:
    schema = _schema()
    batch = random_batch(schema, 16)
    fe = FieldEmbedding(schema, 4)
    called = []
    handle = nn.modules.module.register_module_forward_hook(
        lambda m, args, out: called.append(m) if isinstance(m, DenseTable) else None
    )
    try:
        fe(batch)
    finally:
        handle.remove()
    assert len(called) == 5  # user, tags, item, cat, city
