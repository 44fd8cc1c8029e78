"""Trainer.fit: learning, early stopping, plateau decay, frozen params, config checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from ctrzip.config import ConfigError, from_dict, to_dict
from ctrzip.models.base import build_model
from ctrzip.train import TrainConfig, Trainer, evaluate, predict
from ctrzip.train.trainer import l2_penalty, split_embedding_params

from ._synth import interaction_schema, planted_pairs

FAST = {"progress": False, "device": "cpu"}


@pytest.fixture(scope="module")
def splits():
    schema = interaction_schema()
    return schema, planted_pairs(schema, 16000, seed=0), planted_pairs(schema, 4000, seed=1)


def test_deepfm_learns_interactions_lr_cannot(splits) -> None:
    schema, train, valid = splits
    cfg = TrainConfig(epochs=3, batch_size=512, lr=1e-2, **FAST)
    scores = {}
    for name, params in [("lr", {}), ("deepfm", {"mlp": [32, 32], "embedding_dim": 8})]:
        torch.manual_seed(0)
        model = build_model(name, schema, params)
        hist = Trainer(cfg).fit(model, train, valid)
        scores[name] = evaluate(model, valid, device="cpu")["auc"]
        # best weights are loaded: evaluating them reproduces the best record
        assert scores[name] == pytest.approx(hist.best["val_auc"], abs=1e-9)
        assert hist.best["val_auc"] == max(r["val_auc"] for r in hist.epochs)
    assert scores["deepfm"] > scores["lr"] + 0.1, scores
    assert scores["deepfm"] > 0.7


class _ConstantScore(nn.Module):
    """Scores do not depend on the (gradient-free) parameter, so validation AUC never moves."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, batch):
        return batch.sparse[:, 0].float() * 0.01 + 0.0 * self.w


@pytest.mark.parametrize(("lr_patience", "stop_patience", "decays"), [(1, 2, 2), (2, 3, 1)])
def test_early_stopping_and_plateau_decay(splits, lr_patience, stop_patience, decays) -> None:
    _, train, valid = splits
    cfg = TrainConfig(
        epochs=10,
        batch_size=4000,
        lr=1e-2,
        lr_patience=lr_patience,
        early_stop_patience=stop_patience,
        lr_decay=0.5,
        **FAST,
    )
    trainer = Trainer(cfg)
    hist = trainer.fit(_ConstantScore(), train, valid)
    assert hist.stopped_early
    assert len(hist.epochs) == 1 + stop_patience  # first eval improves on -inf
    assert hist.best_epoch == 1
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-2 * 0.5**decays)
    assert [r["epoch"] for r in hist.epochs] == list(range(1, 2 + stop_patience))


def test_min_lr_floor(splits) -> None:
    _, train, valid = splits
    cfg = TrainConfig(epochs=4, batch_size=8000, lr=1e-3, lr_decay=0.01, min_lr=5e-5, early_stop_patience=5)
    trainer = Trainer(TrainConfig(**{**to_dict(cfg), **FAST}))
    trainer.fit(_ConstantScore(), train, valid)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(5e-5)


def test_trainable_filter_freezes_and_excludes(splits) -> None:
    schema, train, valid = splits
    torch.manual_seed(0)
    model = build_model("deepfm", schema, {"mlp": [16], "embedding_dim": 4})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = Trainer(TrainConfig(epochs=1, batch_size=1024, **FAST))
    trainer.fit(model, train, valid, trainable=lambda fqn, p: not fqn.startswith("embedding."))
    after = model.state_dict()
    frozen = [k for k in before if k.startswith("embedding.")]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert not torch.equal(before["mlp.layers.0.weight"], after["mlp.layers.0.weight"])
    in_opt = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    for fqn, p in model.named_parameters():
        assert (id(p) in in_opt) == (not fqn.startswith("embedding.")), fqn
        assert p.requires_grad  # restored after fit


def test_same_seed_same_weights(splits) -> None:
    schema, train, valid = splits
    states = []
    for _ in range(2):
        torch.manual_seed(3)
        model = build_model("deepfm", schema, {"mlp": [16], "dropout": 0.2, "embedding_dim": 4})
        Trainer(TrainConfig(epochs=1, batch_size=1024, **FAST)).fit(model, train, valid)
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_no_validation_keeps_last_and_max_steps(splits) -> None:
    schema, train, _ = splits
    model = build_model("lr", schema, {})
    hist = Trainer(TrainConfig(epochs=5, batch_size=1000, max_steps=7, **FAST)).fit(model, train)
    assert hist.steps == 7 and len(hist.epochs) == 1
    assert hist.best == hist.epochs[-1] and "val_auc" not in hist.best
    assert math.isfinite(hist.best["train_loss"])


def test_l2_penalty_matches_manual_sum(tiny_schema) -> None:
    model = build_model("deepfm", tiny_schema, {"mlp": [8], "embedding_dim": 4})
    emb, net = split_embedding_params(model)
    names = {id(p): n for n, p in model.named_parameters()}
    emb_names = {names[id(p)] for p in emb}
    assert emb_names == {n for n in names.values() if n.startswith(("embedding.", "first_order.embedding."))}
    manual_emb = sum(
        float((p.detach().double() ** 2).sum()) for n, p in model.named_parameters() if n in emb_names
    )
    manual_net = sum(
        float((p.detach().double() ** 2).sum()) for n, p in model.named_parameters() if n not in emb_names
    )
    with torch.no_grad():
        assert float(l2_penalty(emb, 0.3)) == pytest.approx(0.15 * manual_emb, rel=1e-5)
        assert float(l2_penalty(net, 2.0)) == pytest.approx(1.0 * manual_net, rel=1e-5)
    assert l2_penalty(emb, 0.0) == 0.0


def test_embedding_l2_shrinks_tables(splits) -> None:
    schema, train, _ = splits
    norms = []
    for reg in (0.0, 1e-1):
        torch.manual_seed(0)
        model = build_model("deepfm", schema, {"mlp": [8], "embedding_dim": 4})
        cfg = TrainConfig(epochs=1, batch_size=2000, lr=1e-2, embedding_l2=reg, **FAST)
        Trainer(cfg).fit(model, train)
        norms.append(sum(float(p.detach().norm()) for p in split_embedding_params(model)[0]))
    assert norms[1] < 0.5 * norms[0]


def test_predict_and_evaluate_agree_with_forward(splits) -> None:
    schema, _, valid = splits
    model = build_model("deepfm", schema, {"mlp": [8], "embedding_dim": 4, "dropout": 0.5})
    model.train()
    probs = predict(model, valid, batch_size=1000, device="cpu")
    assert model.training  # mode restored
    from ctrzip.data.loader import BatchLoader

    model.eval()
    with torch.no_grad():
        ref = torch.cat([torch.sigmoid(model(b)) for b in BatchLoader(valid, 4000)]).double().numpy()
    np.testing.assert_allclose(probs, ref, rtol=1e-6)
    res = evaluate(model, valid, device="cpu")
    assert res["n"] == len(valid)
    assert res["auc"] == pytest.approx(roc_auc_score(valid.label, probs), abs=1e-6)


def test_config_is_strict_and_round_trips() -> None:
    cfg = TrainConfig(epochs=3, clip_grad_norm=None, amp="bf16", eval_every_steps=10)
    assert from_dict(TrainConfig, to_dict(cfg)) == cfg
    with pytest.raises(ConfigError, match="did you mean lr"):
        from_dict(TrainConfig, {"lr_rate": 0.1})
    with pytest.raises(ConfigError, match="amp"):
        from_dict(TrainConfig, {"amp": "fp8"})
    for bad in ({"epochs": 0}, {"lr": 0.0}, {"lr_decay": 1.5}, {"clip_grad_norm": -1.0}):
        with pytest.raises(ValueError):
            TrainConfig(**bad)


def test_amp_on_cpu_warns_and_trains(splits) -> None:
    schema, train, _ = splits
    model = build_model("lr", schema, {})
    with pytest.warns(UserWarning, match="needs CUDA"):
        hist = Trainer(TrainConfig(epochs=1, batch_size=4000, amp="fp16", **FAST)).fit(model, train)
    assert hist.steps == 4


def test_progress_bar_reports_samples_per_second(splits, capsys) -> None:
    schema, train, valid = splits
    cfg = TrainConfig(epochs=1, batch_size=4000, progress=True, device="cpu")
    Trainer(cfg).fit(build_model("lr", schema, {}), train, valid)
    err = capsys.readouterr().err
    assert "samples/s" in err and "val auc" in err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="autocast runs on CUDA only")
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_on_cuda_trains(splits, amp) -> None:
    schema, train, valid = splits
    torch.manual_seed(0)
    model = build_model("deepfm", schema, {"mlp": [32, 32], "embedding_dim": 8})
    cfg = TrainConfig(epochs=2, batch_size=512, lr=1e-2, amp=amp, progress=False, device="cuda")
    hist = Trainer(cfg).fit(model, train, valid)
    assert all(math.isfinite(r["train_loss"]) for r in hist.epochs)
    assert hist.best["val_auc"] > 0.6
    assert next(model.parameters()).dtype == torch.float32  # weights stay fp32 under autocast


def test_clip_scales_only_above_max_norm() -> None:
    a, b = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(4))
    trainer = Trainer(TrainConfig(progress=False))
    trainer._params = [a, b]
    a.grad, b.grad = torch.full((3,), 2.0), torch.full((4,), 2.0)  # global norm = 2 * sqrt(7)
    trainer._clip(1.0)
    total = torch.cat([a.grad, b.grad]).norm()
    assert abs(float(total) - 1.0) < 1e-5
    a.grad, b.grad = torch.full((3,), 0.1), torch.full((4,), 0.1)
    trainer._clip(1.0)
    assert torch.equal(a.grad, torch.full((3,), 0.1)) and torch.equal(b.grad, torch.full((4,), 0.1))


def test_eval_at_start_keeps_a_start_that_training_cannot_beat(splits) -> None:
    """A destructive learning rate ruins the model; with eval_at_start the trained start wins."""
    schema, train, valid = splits
    torch.manual_seed(0)
    model = build_model("deepfm", schema, {"mlp": [32, 32], "embedding_dim": 8})
    Trainer(TrainConfig(epochs=2, batch_size=512, lr=1e-2, **FAST)).fit(model, train, valid)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    start_auc = evaluate(model, valid, device="cpu")["auc"]
    wreck = {"epochs": 1, "batch_size": 512, "lr": 5.0, "clip_grad_norm": None, **FAST}
    for keep in (False, True):
        model.load_state_dict(start)
        hist = Trainer(TrainConfig(eval_at_start=keep, **wreck)).fit(model, train, valid)
        auc = evaluate(model, valid, device="cpu")["auc"]
        if keep:
            assert hist.epochs[0]["step"] == 0 and hist.epochs[0]["val_auc"] == pytest.approx(start_auc)
            assert hist.best["step"] == 0 and auc == pytest.approx(start_auc, abs=1e-9)
            assert all(torch.equal(v, start[k]) for k, v in model.state_dict().items())
        else:
            assert [r["step"] for r in hist.epochs] == [hist.steps] and auc < start_auc - 0.02
