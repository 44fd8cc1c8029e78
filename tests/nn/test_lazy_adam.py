"""``LazyAdam``: rows in the batch follow Adam exactly, rows not in it stay as they are."""

from __future__ import annotations

import copy

import pytest
import torch

from ctrzip.data.schema import FeatureSchema, FieldSpec
from ctrzip.nn.embedding.field import FieldEmbedding
from ctrzip.nn.embedding.lazy_adam import LazyAdam
from tests.conftest import random_batch


def _sparse(ids: torch.Tensor, vals: torch.Tensor, n: int) -> torch.Tensor:
    return torch.sparse_coo_tensor(ids.reshape(1, -1), vals, (n, vals.shape[-1]), check_invariants=True)


def test_rows_in_every_batch_follow_adam_and_others_stay() -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(10, 3, generator=g)
    lazy_p, ref_p = torch.nn.Parameter(w.clone()), torch.nn.Parameter(w[:6].clone())
    dense_p, dense_ref = torch.nn.Parameter(torch.randn(4, generator=g)), None
    dense_ref = torch.nn.Parameter(dense_p.detach().clone())
    lazy = LazyAdam([lazy_p, dense_p], lr=0.05)
    ref = torch.optim.Adam([ref_p, dense_ref], lr=0.05, foreach=False)
    for _ in range(4):
        ids = torch.cat([torch.arange(6), torch.randint(0, 6, (5,), generator=g)])  # rows 0..5, repeats
        vals = torch.randn(len(ids), 3, generator=g)
        lazy_p.grad = _sparse(ids, vals, 10)
        ref_p.grad = torch.zeros(6, 3).index_add_(0, ids, vals)  # duplicates summed
        dgrad = torch.randn(4, generator=g)
        dense_p.grad, dense_ref.grad = dgrad.clone(), dgrad.clone()
        lazy.step()
        ref.step()
    torch.testing.assert_close(lazy_p.detach()[:6], ref_p.detach(), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(dense_p.detach(), dense_ref.detach(), rtol=1e-6, atol=1e-7)
    assert torch.equal(lazy_p.detach()[6:], w[6:])  # never in a batch: untouched
    assert torch.equal(lazy.state[lazy_p]["exp_avg"][6:], torch.zeros(4, 3))


def test_weight_decay_refused_for_sparse_gradients() -> None:
    p = torch.nn.Parameter(torch.zeros(5, 2))
    opt = LazyAdam([{"params": [p], "weight_decay": 0.1}])
    p.grad = _sparse(torch.tensor([1]), torch.ones(1, 2), 5)
    with pytest.raises(ValueError, match="weight_decay"):
        opt.step()


def test_trains_a_fused_field_embedding_padding_stays_zero() -> None:
    schema = FeatureSchema(
        fields=tuple(FieldSpec(f"f{i}", "categorical", vocab_size=30 + i) for i in range(3))
    )
    fe = FieldEmbedding(schema, 4, init_std=1.0, sparse_grad=True)
    before = copy.deepcopy(fe)
    opt = LazyAdam(fe.parameters(), lr=0.1)
    batch = random_batch(schema, 16, seed=1)
    batch.sparse[:4] = 0
    fe(batch).pow(2).sum().backward()
    opt.step()
    for name, t in fe.tables.items():
        seen = set(batch.sparse[:, list(fe.tables).index(name)].tolist())
        for row in range(t.num_embeddings):
            same = torch.equal(t.weight[row], before.tables[name].weight[row])
            assert same == (row not in seen or row == 0), (name, row)
        assert torch.equal(t.weight[0], torch.zeros(4))
