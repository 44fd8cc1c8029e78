"""Zoo part A (LR, FM, AttentionalFM, NFM, WideDeep, PNN): wiring, configs, interaction maths."""

from __future__ import annotations

import itertools

import pytest
import torch
from _checks import assert_spec_round_trip
from torch import Tensor, nn

from ctrzip.config import ConfigError
from ctrzip.data.batch import Batch
from ctrzip.data.schema import FeatureSchema, FieldSpec
from ctrzip.models import CTRModel, build_model
from ctrzip.nn.attention_pooling import AttentionalPooling
from ctrzip.nn.product import inner_products, num_pairs, pairwise_products

SMALL: dict[str, dict] = {
    "lr": {"embedding_init_std": 0.1},
    "fm": {"embedding_dim": 4, "embedding_init_std": 0.1},
    "attentional_fm": {"embedding_dim": 4, "attention_dim": 3, "embedding_init_std": 0.1},
    "nfm": {"embedding_dim": 4, "mlp": [8, 8], "batch_norm": True, "embedding_init_std": 0.1},
    "wide_deep": {"embedding_dim": 4, "mlp": [8, 8], "embedding_init_std": 0.1},
    "pnn": {"embedding_dim": 4, "mlp": [8, 8], "embedding_init_std": 0.1},
}
CONSUMERS = {
    "lr": None,
    "fm": None,
    "attentional_fm": None,
    "nfm": None,
    "wide_deep": "mlp.layers.0",
    "pnn": "mlp.layers.0",
}
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _build(key: str, schema: FeatureSchema, **over: object) -> CTRModel:
    torch.manual_seed(0)
    return build_model(key, schema, {**SMALL[key], **over})


def _pairs(n: int) -> list[tuple[int, int]]:
    return list(itertools.combinations(range(n), 2))


def _capture_input(model: CTRModel, fqn: str, batch: Batch) -> Tensor:
    """Run ``model(batch)`` and return what the submodule ``fqn`` received."""
    seen: list[Tensor] = []
    handle = model.get_submodule(fqn).register_forward_pre_hook(
        lambda _m, args: seen.append(args[0].detach())
    )
    try:
        model(batch)
    finally:
        handle.remove()
    assert len(seen) == 1
    return seen[0]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("key", sorted(SMALL))
def test_forward_backward_reaches_tables(
    key: str, device: str, tiny_schema: FeatureSchema, tiny_batch: Batch
) -> None:
    model = _build(key, tiny_schema).to(device)
    batch = tiny_batch.to(device)
    logits = model(batch)
    assert logits.shape == (len(batch),)
    assert torch.isfinite(logits).all()
    nn.functional.binary_cross_entropy_with_logits(logits, batch.label).backward()
    for name, table in model.embedding.tables.items():
        grads = [p.grad for p in table.parameters()]
        assert all(g is not None for g in grads), name
        assert sum(float(g.abs().sum()) for g in grads) > 0, f"no gradient reaches table {name}"
    model.eval()
    p = model.predict(batch)
    assert p.shape == (len(batch),)
    assert ((p > 0) & (p < 1)).all()


@pytest.mark.parametrize("key", sorted(SMALL))
def test_config_round_trip_and_spec_rebuild(key: str, tiny_schema: FeatureSchema, tiny_batch: Batch) -> None:
    model = _build(key, tiny_schema).eval()
    assert_spec_round_trip(model, key, tiny_schema, tiny_batch)


@pytest.mark.parametrize("key", sorted(SMALL))
def test_unknown_config_key_raises(key: str, tiny_schema: FeatureSchema) -> None:
    with pytest.raises(ConfigError, match="attention_dimm|not a field"):
        build_model(key, tiny_schema, {**SMALL[key], "attention_dimm": 3})


@pytest.mark.parametrize(
    ("key", "params"),
    [
        ("lr", {"embedding_dim": 4}),
        ("attentional_fm", {"attention_dim": 0}),
        ("attentional_fm", {"attention_dropout": 1.0}),
        ("nfm", {"interaction_dropout": -0.1}),
        ("wide_deep", {"mlp": [8, 0]}),
        ("pnn", {"dropout": 1.5}),
        ("pnn", {"mlp": "400"}),
    ],
)
def test_bad_config_values_raise(key: str, params: dict, tiny_schema: FeatureSchema) -> None:
    with pytest.raises(ConfigError):
        build_model(key, tiny_schema, params)


@pytest.mark.parametrize("key", sorted(SMALL))
def test_embedding_consumer_declaration(key: str, tiny_schema: FeatureSchema, tiny_batch: Batch) -> None:
    model = _build(key, tiny_schema).eval()
    fqn = model.embedding_consumer()
    assert fqn == CONSUMERS[key]
    if fqn is None:
        return
    linear = model.get_submodule(fqn)
    assert isinstance(linear, nn.Linear)
    x = _capture_input(model, fqn, tiny_batch)
    fd = model.embedding.output_dim
    torch.testing.assert_close(x[:, :fd], model.embedding(tiny_batch, flatten=True))


def test_products_match_pair_loop() -> None:
    emb = torch.randn(5, 6, 3, dtype=torch.float64)
    pairs = _pairs(6)
    assert num_pairs(6) == len(pairs) == 15
    prod = pairwise_products(emb)
    inner = inner_products(emb)
    assert prod.shape == (5, 15, 3) and inner.shape == (5, 15)
    for p, (i, j) in enumerate(pairs):
        torch.testing.assert_close(prod[:, p], emb[:, i] * emb[:, j])
        torch.testing.assert_close(inner[:, p], (emb[:, i] * emb[:, j]).sum(-1))


def test_lr_is_sum_of_looked_up_weights(tiny_schema: FeatureSchema, tiny_batch: Batch) -> None:
    model = _build("lr", tiny_schema).eval()
    with torch.no_grad():
        model.bias.fill_(0.3)
    slices = tiny_schema.sparse_slices()
    expected = torch.full((len(tiny_batch),), 0.3)
    for f in tiny_schema.fields:
        if f.kind == "dense":
            w = model.embedding.dense_embeds[f.name].weight[0]
            expected += tiny_batch.dense[:, tiny_schema.dense_index()[f.name]] * w
            continue
        table = model.embedding.tables[f.name].materialize()[:, 0]
        ids = tiny_batch.sparse[:, slices[f.name]].long()
        for r in range(len(tiny_batch)):
            live = [int(i) for i in ids[r] if int(i) != 0] if f.kind == "sequence" else [int(ids[r, 0])]
            if live:
                expected[r] += sum(float(table[i]) for i in live) / len(live)
    torch.testing.assert_close(model(tiny_batch).detach(), expected, rtol=1e-5, atol=1e-6)


def test_fm_matches_pair_loop(tiny_schema: FeatureSchema, tiny_batch: Batch) -> None:
    model = _build("fm", tiny_schema).eval()
    emb = model.embedding(tiny_batch)
    expected = model.first_order(tiny_batch) + sum(
        (emb[:, i] * emb[:, j]).sum(-1) for i, j in _pairs(emb.shape[1])
    )
    torch.testing.assert_close(model(tiny_batch), expected)


def test_nfm_tower_reads_bi_interaction(tiny_schema: FeatureSchema, tiny_batch: Batch) -> None:
    model = _build("nfm", tiny_schema).eval()
    emb = model.embedding(tiny_batch)
    loop = sum(emb[:, i] * emb[:, j] for i, j in _pairs(emb.shape[1]))  # [B, D]
    torch.testing.assert_close(_capture_input(model, "mlp.layers.0", tiny_batch), loop.detach())
    bn = _build("nfm", tiny_schema, interaction_batch_norm=True, interaction_dropout=0.2)
    assert isinstance(bn.interaction_norm, nn.BatchNorm1d)
    assert bn(tiny_batch).shape == (len(tiny_batch),)


def test_pnn_tower_input_is_embeddings_then_inner_products(
    tiny_schema: FeatureSchema, tiny_batch: Batch
) -> None:
    model = _build("pnn", tiny_schema).eval()
    emb = model.embedding(tiny_batch)
    n_fields = emb.shape[1]
    x = _capture_input(model, "mlp.layers.0", tiny_batch)
    assert x.shape == (len(tiny_batch), model.embedding.output_dim + num_pairs(n_fields))
    loop = torch.stack([(emb[:, i] * emb[:, j]).sum(-1) for i, j in _pairs(n_fields)], dim=1)
    torch.testing.assert_close(x[:, model.embedding.output_dim :], loop.detach())


def test_attention_weights_sum_to_one_and_differ() -> None:
    torch.manual_seed(1)
    pool = AttentionalPooling(dim=4, attention_dim=5)
    x = torch.randn(7, 10, 4)
    a = pool.weights(x)
    assert a.shape == (7, 10)
    torch.testing.assert_close(a.sum(1), torch.ones(7))
    assert (a.max(1).values - a.min(1).values > 1e-4).all()  # really attends, not uniform


def test_attentional_fm_matches_naive(tiny_schema: FeatureSchema, tiny_batch: Batch) -> None:
    model = _build("attentional_fm", tiny_schema).eval()
    emb = model.embedding(tiny_batch).detach()
    lin1, lin2 = model.pooling.attention[0], model.pooling.attention[2]
    w, b, h = lin1.weight.detach(), lin1.bias.detach(), lin2.weight.detach()[0]
    p = model.projection.weight.detach()[0]
    expected = model.first_order(tiny_batch).detach().clone()
    for r in range(len(tiny_batch)):
        prods = [emb[r, i] * emb[r, j] for i, j in _pairs(emb.shape[1])]
        scores = torch.stack([h @ torch.relu(w @ v + b) for v in prods])
        weights = torch.exp(scores - scores.max())
        weights = weights / weights.sum()
        expected[r] += p @ sum(a * v for a, v in zip(weights, prods, strict=True))
    torch.testing.assert_close(model(tiny_batch).detach(), expected, rtol=1e-5, atol=1e-7)


def test_attentional_fm_needs_two_fields() -> None:
    one = FeatureSchema(fields=(FieldSpec("user", "categorical", vocab_size=5),))
    with pytest.raises(ValueError, match="2 fields"):
        build_model("attentional_fm", one, {"embedding_dim": 2})
