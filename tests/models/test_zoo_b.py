"""Model zoo part B (DCN, DCNv2, AutoInt, AFN, SAM, FiBiNet, GDCN) and their interaction layers."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from _checks import assert_spec_round_trip
from torch import nn

from ctrzip.config import ConfigError
from ctrzip.models import build_model
from ctrzip.nn.bilinear import BilinearInteraction
from ctrzip.nn.cross import CrossNet, CrossNetV2, GatedCrossNet
from ctrzip.nn.log_transform import LogTransform
from ctrzip.nn.sam import SAM3Layer, SAMInteraction
from ctrzip.nn.self_attention import InteractingLayer
from ctrzip.nn.senet import SENet

SMALL = {"embedding_dim": 4, "embedding_init_std": 0.05}
MLP = {"mlp": [8, 6]}

# (key, params, expected embedding_consumer)
CASES = [
    ("dcn", {**MLP}, "mlp.layers.0"),
    ("dcn", {"mlp": []}, None),
    ("dcnv2", {**MLP}, "mlp.layers.0"),
    ("dcnv2", {**MLP, "structure": "stacked"}, None),
    ("dcnv2", {**MLP, "use_low_rank_mixture": True, "low_rank": 3, "num_experts": 2}, "mlp.layers.0"),
    ("gdcn", {**MLP}, "mlp.layers.0"),
    ("gdcn", {**MLP, "structure": "stacked", "num_cross_layers": 2}, None),
    ("autoint", {**MLP, "attention_dim": 3, "num_heads": 2, "attention_layers": 2}, "mlp.layers.0"),
    ("autoint", {"mlp": [], "attention_dim": 3, "use_scale": True, "layer_norm": True}, None),
    ("afn", {**MLP, "log_neurons": 6}, None),
    ("afn", {**MLP, "log_neurons": 6, "ensemble_dnn": True, "dnn": [5]}, "dnn.layers.0"),
    ("sam", {"num_layers": 2}, None),
    (
        "sam",
        {"interaction": "sam3e", "use_residual": False, "num_layers": 1},
        None,
    ),  # degree 3^L: deeper underflows
    ("sam", {"interaction": "sam2a"}, None),
    ("sam", {"interaction": "sam2e", "aggregation": "sum"}, None),
    ("sam", {"interaction": "sam1"}, "head"),
    ("fibinet", {**MLP}, None),
    ("fibinet", {**MLP, "bilinear_type": "field_each"}, None),
    ("fibinet", {**MLP, "bilinear_type": "field_all", "batch_norm": True}, None),
]
IDS = [f"{k}-{i}" for i, (k, _, _) in enumerate(CASES)]


def _build(key, params, schema):
    torch.manual_seed(0)
    return build_model(key, schema, {**SMALL, **params})


@pytest.mark.parametrize(("key", "params", "consumer"), CASES, ids=IDS)
def test_forward_backward_predict(key, params, consumer, tiny_schema, tiny_batch):
    model = _build(key, params, tiny_schema)
    logits = model(tiny_batch)
    assert logits.shape == (len(tiny_batch),)
    assert torch.isfinite(logits).all()
    nn.functional.binary_cross_entropy_with_logits(logits, tiny_batch.label).backward()
    for name, table in model.embedding.tables.items():
        assert table.weight.grad is not None and table.weight.grad.abs().sum() > 0, name
    model.eval()
    p = model.predict(tiny_batch)
    assert p.shape == (len(tiny_batch),) and ((p > 0) & (p < 1)).all()


@pytest.mark.parametrize(("key", "params", "consumer"), CASES, ids=IDS)
def test_config_and_spec_round_trip(key, params, consumer, tiny_schema, tiny_batch):
    model = _build(key, params, tiny_schema).eval()
    assert_spec_round_trip(model, key, tiny_schema, tiny_batch)


@pytest.mark.parametrize("key", ["dcn", "dcnv2", "autoint", "afn", "sam", "fibinet", "gdcn"])
def test_bad_config_raises(key, tiny_schema):
    with pytest.raises(ConfigError, match="not a field"):
        build_model(key, tiny_schema, {"embeding_dim": 4})
    with pytest.raises(ConfigError):
        build_model(key, tiny_schema, {"embedding_dim": 0})


@pytest.mark.parametrize(
    ("key", "params"),
    [
        ("dcnv2", {"structure": "diagonal"}),
        ("dcnv2", {"num_experts": 0}),
        ("gdcn", {"num_cross_layers": 0}),
        ("autoint", {"num_heads": 0}),
        ("afn", {"ensemble_dnn": True, "dnn": []}),
        ("sam", {"interaction": "sam4"}),
        ("fibinet", {"bilinear_type": "field_pair"}),
        ("fibinet", {"mlp": [0]}),
    ],
)
def test_invalid_values_raise(key, params, tiny_schema):
    with pytest.raises(ConfigError):
        build_model(key, tiny_schema, params)


@pytest.mark.parametrize(("key", "params", "consumer"), CASES, ids=IDS)
def test_embedding_consumer_reads_flat_embeddings(key, params, consumer, tiny_schema, tiny_batch):
    model = _build(key, params, tiny_schema).eval()
    assert model.embedding_consumer() == consumer
    if consumer is None:
        return
    linear = model.get_submodule(consumer)
    assert isinstance(linear, nn.Linear)
    seen = []
    handle = linear.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach()))
    with torch.no_grad():
        model(tiny_batch)
        flat = model.embedding(tiny_batch, flatten=True)
    handle.remove()
    assert len(seen) == 1
    torch.testing.assert_close(seen[0][:, : flat.shape[1]], flat)


# ---- interaction layers vs independent naive computations (float64) ----


def _x(b: int = 5, d: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _e(b: int = 3, f: int = 4, d: int = 5, seed: int = 1) -> torch.Tensor:
    return torch.randn(b, f, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_cross_net_matches_formula():
    net = CrossNet(6, num_layers=2).double()
    with torch.no_grad():
        for b in net.biases:
            b.normal_()
    x0 = _x()
    expect = []
    for row in x0:
        x = row.clone()
        for w, b in zip(net.weights, net.biases, strict=True):
            x = row * (x @ w.weight[0]) + b + x  # x0 x_l^T w + b + x_l
        expect.append(x)
    torch.testing.assert_close(net(x0), torch.stack(expect).detach())


def test_cross_net_v2_full_rank_matches_formula():
    net = CrossNetV2(6, num_layers=2).double()
    x0 = _x()
    expect = []
    for row in x0:
        x = row.clone()
        for lin in net.layers:
            x = row * (lin.weight @ x + lin.bias) + x
        expect.append(x)
    torch.testing.assert_close(net(x0), torch.stack(expect).detach())


def test_cross_net_v2_low_rank_mixture_matches_loop():
    net = CrossNetV2(6, num_layers=1, low_rank=2, num_experts=3).double()
    layer = net.layers[0]
    with torch.no_grad():
        layer.bias.normal_()
    x0 = _x()
    expect = []
    for row in x0:
        gates = torch.softmax(layer.gate.weight @ row, dim=0)
        mix = torch.zeros(6, dtype=torch.float64)
        for i in range(3):
            v, c, u = layer.v[i], layer.c[i], layer.u[i]  # [d, r], [r, r], [r, d]
            mix = mix + gates[i] * (u.T @ torch.tanh(c.T @ torch.tanh(v.T @ row)))
        expect.append(row * (mix + layer.bias) + row)
    torch.testing.assert_close(net(x0), torch.stack(expect).detach())


def test_gated_cross_matches_formula():
    net = GatedCrossNet(6, num_layers=2).double()
    c0 = _x()
    expect = []
    for row in c0:
        c = row.clone()
        for w, g in zip(net.cross, net.gates, strict=True):
            gate = 1.0 / (1.0 + torch.exp(-(g.weight @ c)))
            c = row * (w.weight @ c + w.bias) * gate + c
        expect.append(c)
    torch.testing.assert_close(net(c0), torch.stack(expect).detach())


@pytest.mark.parametrize("kind", ["field_all", "field_each", "field_interaction"])
def test_bilinear_matches_loop(kind):
    f, d = 4, 5
    layer = BilinearInteraction(f, d, kind).double()
    emb = _e(f=f, d=d)
    out = layer(emb)
    pairs = list(itertools.combinations(range(f), 2))
    assert out.shape == (3, len(pairs), d)
    for p, (i, j) in enumerate(pairs):
        w = {"field_all": 0, "field_each": i, "field_interaction": p}[kind]
        expect = (emb[:, i] @ layer.weight[w]) * emb[:, j]
        torch.testing.assert_close(out[:, p], expect.detach())


def test_bilinear_rejects_bad_input():
    with pytest.raises(ValueError):
        BilinearInteraction(1, 4)
    with pytest.raises(ValueError):
        BilinearInteraction(3, 4, "field_pair")  # type: ignore[arg-type]


def test_senet_weights_match_formula():
    f = 6
    se = SENet(f, reduction_ratio=3).double()
    emb = _e(f=f)
    a = se.weights(emb)
    assert a.shape == (3, f) and (a >= 0).all()
    w1, w2 = se.excitation[0].weight, se.excitation[2].weight
    assert w1.shape == (2, f)  # F / r bottleneck
    z = emb.mean(-1)
    expect = torch.relu(torch.relu(z @ w1.T) @ w2.T)
    torch.testing.assert_close(a, expect)
    torch.testing.assert_close(se(emb), emb * expect.unsqueeze(-1))


@pytest.mark.parametrize("use_scale", [False, True])
def test_self_attention_matches_manual_softmax(use_scale):
    f, d, hd, h = 4, 5, 3, 2
    layer = InteractingLayer(d, head_dim=hd, num_heads=h, use_scale=use_scale).double()
    emb = _e(f=f, d=d)
    out = layer(emb)
    assert out.shape == (3, f, h * hd)
    wq, wk, wv, wr = (m.weight.detach() for m in (layer.query, layer.key, layer.value, layer.residual))
    for b in range(emb.shape[0]):
        for m in range(f):
            heads = []
            for k in range(h):
                sl = slice(k * hd, (k + 1) * hd)
                q = wq[sl] @ emb[b, m]
                scores = [
                    float(q @ (wk[sl] @ emb[b, j])) / (math.sqrt(hd) if use_scale else 1.0) for j in range(f)
                ]
                z = sum(math.exp(s) for s in scores)
                heads.append(sum(math.exp(s) / z * (wv[sl] @ emb[b, j]) for j, s in enumerate(scores)))
            expect = torch.relu(torch.cat(heads) + wr @ emb[b, m])
            torch.testing.assert_close(out[b, m], expect.detach())


def test_log_transform_is_product_of_powers():
    f, d, neurons = 3, 4, 5
    layer = LogTransform(f, neurons, batch_norm=False).double()
    emb = _e(f=f, d=d)
    emb[0, 1, 2] = 0.0  # zero is clamped, not -inf
    out = layer(emb)
    w = layer.coefficients.weight  # [L, F]
    mag = emb.abs().clamp_min(layer.eps)
    expect = torch.ones(3, neurons, d, dtype=torch.float64)
    for j in range(neurons):
        for i in range(f):
            expect[:, j] = expect[:, j] * mag[:, i] ** w[j, i]
    torch.testing.assert_close(out, expect.detach())
    assert torch.isfinite(LogTransform(f, neurons)(emb.float())).all()


@pytest.mark.parametrize("values", ["a", "e"])
def test_sam3_layer_matches_loop(values):
    f, d = 3, 4
    layer = SAM3Layer(f, d, values, use_residual=True).double()
    if layer.pair_weight is not None:
        with torch.no_grad():
            layer.pair_weight.normal_()
    emb = _e(f=f, d=d)
    out = layer(emb)
    wk, wq = layer.key.weight, layer.residual.weight
    for b in range(emb.shape[0]):
        for i in range(f):
            acc = wq @ emb[b, i]
            for j in range(f):
                s = emb[b, i] @ (wk @ emb[b, j])
                v = layer.pair_weight[i, j] if values == "a" else emb[b, i] * emb[b, j]
                acc = acc + s * v
            torch.testing.assert_close(out[b, i], acc.detach())


def test_sam2_blocks_match_loop():
    f, d = 3, 4
    emb = _e(f=f, d=d)
    sam2a = SAMInteraction("sam2a", f, d).double()
    with torch.no_grad():
        sam2a.pair_weight.normal_()
    out_a, out_e = sam2a(emb), SAMInteraction("sam2e", f, d).double()(emb)
    assert out_a.shape == out_e.shape == (3, f * f, d)
    for i, j in itertools.product(range(f), range(f)):
        s = (emb[:, i] * emb[:, j]).sum(-1, keepdim=True)
        torch.testing.assert_close(out_a[:, i * f + j], (s * sam2a.pair_weight[i, j]).detach())
        torch.testing.assert_close(out_e[:, i * f + j], s * emb[:, i] * emb[:, j])
    torch.testing.assert_close(SAMInteraction("sam1", f, d)(emb), emb)
