"""Training survives what real data and settings do to it, or stops before work with a clear error.

One-row last batches with BatchNorm, diverging runs, empty and one-class splits, loaders and
settings that would be ignored, and bit-identical results from the same seed.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ctrzip.data.dataset import SplitArrays
from ctrzip.data.loader import BatchLoader
from ctrzip.errors import TrainingError, UserError
from ctrzip.models.base import MODELS, build_model
from ctrzip.train import TrainConfig, Trainer, evaluate, predict
from ctrzip.train.checkpoint import LAST, load_checkpoint

from ._synth import interaction_schema, planted_pairs

SCHEMA = interaction_schema(num_fields=4, vocab=10)
FAST = {"progress": False, "device": "cpu"}
_NORM_KEYS = ("batch_norm", "interaction_batch_norm", "log_batch_norm")


def _bn_params(name: str) -> dict[str, object]:
    fields = {f.name for f in dataclasses.fields(MODELS.get(name).config_class)}
    return {k: True for k in _NORM_KEYS if k in fields}


def _bn_models() -> list[str]:
    import ctrzip.models  # noqa: F401  (registers the zoo)

    return [k for k in MODELS if _bn_params(k)]


def _finite(model: nn.Module) -> bool:
    return all(torch.isfinite(t).all() for t in model.state_dict().values() if t.is_floating_point())


def _one_class(n: int, label: float) -> SplitArrays:
    split = planted_pairs(SCHEMA, n, seed=5)
    return SplitArrays(split.sparse, split.dense, np.full(n, label, np.float32))


# ------------------------------------------------------------------ one-row last batch
def test_every_batchnorm_model_is_covered() -> None:
    # the kind: any model with a BatchNorm option; this list must grow with the zoo
    assert {"afn", "dcn", "deepfm", "nfm", "pnn"} <= set(_bn_models())


@pytest.mark.parametrize("name", _bn_models())
def test_batchnorm_model_trains_when_last_batch_has_one_row(name: str) -> None:
    train, valid = planted_pairs(SCHEMA, 65, seed=0), planted_pairs(SCHEMA, 40, seed=1)
    model = build_model(name, SCHEMA, {"embedding_dim": 4, **_bn_params(name)}, seed=0)
    assert any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    hist = Trainer(TrainConfig(epochs=2, batch_size=64, **FAST)).fit(model, train, valid)
    assert hist.steps == 2  # one merged batch of 65 rows per epoch
    assert _finite(model)
    assert evaluate(model, valid, batch_size=64, device="cpu")["n"] == 40  # evaluation sees every row


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("n", [65, 4 * 8 + 1, 3 * 4 * 8 + 1, 64, 1])  # incl. a one-row last shuffle block
def test_merge_single_last_serves_every_row_once(n: int, shuffle: bool) -> None:
    split = SplitArrays(
        np.arange(n, dtype=np.int32)[:, None], np.zeros((n, 0), np.float32), np.zeros(n, np.float32)
    )
    loader = BatchLoader(split, 8, shuffle=shuffle, seed=3, block_batches=4, merge_single_last=True)
    batches = list(loader)
    assert len(batches) == len(loader)
    rows = np.concatenate([b.sparse[:, 0].numpy() for b in batches])
    assert np.array_equal(np.sort(rows), np.arange(n))
    sizes = [len(b) for b in batches]
    assert min(sizes) >= 2 or n == 1
    plain = BatchLoader(split, 8, shuffle=shuffle, seed=3, block_batches=4)
    if n % 8 == 1 and n > 1:  # only the last batch changes: it absorbs the one-row remainder
        assert sizes == [8] * (len(sizes) - 1) + [9] and len(plain) == len(loader) + 1
    else:
        assert [len(b) for b in plain] == sizes


def test_caller_loader_is_not_modified_and_still_merges() -> None:
    train = planted_pairs(SCHEMA, 65, seed=0)
    loader = BatchLoader(train, 64, shuffle=True, seed=2024)
    model = build_model("deepfm", SCHEMA, {"embedding_dim": 4, "mlp": [8], "batch_norm": True}, seed=0)
    hist = Trainer(TrainConfig(epochs=1, batch_size=64, **FAST)).fit(model, loader)
    assert hist.steps == 1 and loader.merge_single_last is False


@pytest.mark.parametrize(("rows", "batch_size"), [(1, 64), (50, 1)])
def test_batchnorm_with_one_row_batches_is_refused_before_training(rows: int, batch_size: int) -> None:
    model = build_model("deepfm", SCHEMA, {"embedding_dim": 4, "mlp": [8], "batch_norm": True}, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(TrainingError, match="BatchNorm.*at least 2 rows.*batch_size"):
        Trainer(TrainConfig(epochs=1, batch_size=batch_size, **FAST)).fit(
            model, planted_pairs(SCHEMA, rows, 0)
        )
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_one_row_batch_from_a_custom_loader_names_epoch_and_step() -> None:
    batches = list(BatchLoader(planted_pairs(SCHEMA, 9, seed=0), 4))  # 4, 4, 1

    class Loader:
        def __len__(self) -> int:
            return len(batches)

        def set_epoch(self, epoch: int) -> None:
            pass

        def __iter__(self):
            return iter(batches)

    model = build_model("deepfm", SCHEMA, {"embedding_dim": 4, "mlp": [8], "batch_norm": True}, seed=0)
    with pytest.raises(TrainingError, match=r"epoch 1, step 3: a training batch of 1 row"):
        Trainer(TrainConfig(epochs=1, batch_size=4, **FAST)).fit(model, Loader())


# ------------------------------------------------------------------ divergence
@pytest.mark.parametrize("with_valid", [False, True])
def test_diverging_run_without_out_dir_raises_and_never_returns_nan(with_valid: bool) -> None:
    train, valid = planted_pairs(SCHEMA, 600, seed=0), planted_pairs(SCHEMA, 200, seed=1)
    model = build_model("deepfm", SCHEMA, {"embedding_dim": 4, "mlp": [8]}, seed=0)
    cfg = TrainConfig(epochs=2, batch_size=64, lr=1e30, clip_grad_norm=None, **FAST)
    with pytest.raises(TrainingError) as err:
        Trainer(cfg).fit(model, train, valid if with_valid else None)
    msg = str(err.value)
    assert "training diverged" in msg and "lr 1e+30" in msg and "\n" not in msg
    assert "epoch 1, step " in msg and "train.out_dir is not set" in msg
    assert "lower train.lr or set train.clip_grad_norm" in msg


def test_diverging_run_keeps_last_finite_checkpoint_and_restores_best(tmp_path: Path) -> None:
    train, valid = planted_pairs(SCHEMA, 600, seed=0), planted_pairs(SCHEMA, 200, seed=1)
    model = build_model("deepfm", SCHEMA, {"embedding_dim": 4, "mlp": [8]}, seed=0)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = TrainConfig(epochs=2, batch_size=64, lr=1e30, eval_at_start=True, out_dir=str(tmp_path), **FAST)
    with pytest.raises(TrainingError) as err:
        Trainer(cfg).fit(model, train, valid)
    msg = str(err.value)
    assert f"last finite checkpoint: {tmp_path / LAST} (step 0)" in msg
    assert "the model holds the best finite weights (step 0)" in msg
    tensors, meta = load_checkpoint(tmp_path / LAST)  # not overwritten on the way out
    assert meta["global_step"] == 0
    assert all(torch.isfinite(v).all() for v in tensors["model"].values() if v.is_floating_point())
    assert all(torch.equal(start[k], v) for k, v in model.state_dict().items())  # step-0 best restored


def test_diverging_before_any_checkpoint_says_so(tmp_path: Path) -> None:
    model = build_model("deepfm", SCHEMA, {"embedding_dim": 4, "mlp": [8]}, seed=0)
    cfg = TrainConfig(epochs=1, batch_size=64, lr=1e30, out_dir=str(tmp_path), **FAST)
    with pytest.raises(TrainingError, match="no checkpoint was written to .* before it"):
        Trainer(cfg).fit(model, planted_pairs(SCHEMA, 600, seed=0), None)
    assert not (tmp_path / LAST).exists()


class _WithUnusedWeight(nn.Module):
    """A model whose loss stays finite while one (unused) weight is not: only a weight check sees it."""

    def __init__(self) -> None:
        super().__init__()
        self.net = build_model("lr", SCHEMA, {}, seed=0)
        self.unused = nn.Parameter(torch.tensor([float("inf")]), requires_grad=False)

    def forward(self, batch):  # noqa: ANN001, ANN201
        return self.net(batch)


@pytest.mark.parametrize("out", [False, True])
def test_non_finite_weights_are_never_checkpointed_or_returned(tmp_path: Path, out: bool) -> None:
    cfg = TrainConfig(epochs=1, batch_size=64, out_dir=str(tmp_path) if out else None, **FAST)
    with pytest.raises(TrainingError, match=r"weights unused became non-finite at epoch 1, step 10"):
        Trainer(cfg).fit(_WithUnusedWeight(), planted_pairs(SCHEMA, 600, seed=0), None)
    assert not (tmp_path / LAST).exists() and not (tmp_path / "best.pt").exists()


# ------------------------------------------------------------------ splits checked up front
@pytest.mark.parametrize("label", [0.0, 1.0])
def test_one_class_validation_split_is_refused_before_training(label: float) -> None:
    model = build_model("deepfm", SCHEMA, {"embedding_dim": 4, "mlp": [8]}, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    kind = "clicks" if label else "non-clicks"
    with pytest.raises(TrainingError, match=f"validation split has only {kind} .* in its 30 rows"):
        Trainer(TrainConfig(epochs=1, batch_size=64, **FAST)).fit(
            model, planted_pairs(SCHEMA, 300, seed=0), _one_class(30, label)
        )
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # no step taken


def test_one_class_validation_loader_is_refused_too() -> None:
    model = build_model("lr", SCHEMA, {}, seed=0)
    valid = BatchLoader(_one_class(30, 0.0), 8)
    with pytest.raises(TrainingError, match="validation split has only non-clicks"):
        Trainer(TrainConfig(epochs=1, batch_size=64, **FAST)).fit(model, planted_pairs(SCHEMA, 300, 0), valid)


def test_evaluate_one_class_names_the_data_and_predict_still_works() -> None:
    model = build_model("lr", SCHEMA, {}, seed=0)
    with pytest.raises(TrainingError, match="^enc: test split has only clicks"):
        evaluate(model, _one_class(20, 1.0), device="cpu", name="enc: test split")
    batches = list(BatchLoader(_one_class(20, 1.0), 8))  # not a split: checked after the forward
    with pytest.raises(TrainingError, match="the evaluated data has only clicks"):
        evaluate(model, batches, device="cpu")
    assert predict(model, _one_class(20, 1.0), device="cpu").shape == (20,)


def test_empty_training_split_is_refused_before_training() -> None:
    model = build_model("lr", SCHEMA, {}, seed=0)
    empty = planted_pairs(SCHEMA, 0, seed=0)
    with pytest.raises(TrainingError, match="train split has no rows"):
        Trainer(TrainConfig(epochs=1, **FAST)).fit(model, empty)
    with pytest.raises(TrainingError, match="validation split has no rows"):
        Trainer(TrainConfig(epochs=1, **FAST)).fit(model, planted_pairs(SCHEMA, 10, 0), empty)
    with pytest.raises(TrainingError, match="^x has no rows$"):
        evaluate(model, [], device="cpu", name="x")


def test_loader_that_yields_nothing_stops_instead_of_spinning() -> None:
    class Silent:
        calls = 0

        def __len__(self) -> int:
            return 3

        def set_epoch(self, epoch: int) -> None:
            pass

        def __iter__(self):
            Silent.calls += 1
            if Silent.calls > 3:  # before the fix the loop asked forever; fail instead of hanging
                raise AssertionError("training loop kept asking an empty loader for batches")
            return iter(())

    with pytest.raises(TrainingError, match="yielded no batches in epoch 1"):
        Trainer(TrainConfig(epochs=2, **FAST)).fit(build_model("lr", SCHEMA, {}, seed=0), Silent())


# ------------------------------------------------------------------ settings that would be ignored
@pytest.mark.parametrize(("kw", "key"), [({"batch_size": 32}, "batch_size"), ({"shuffle": False}, "shuffle")])
def test_loader_disagreeing_with_config_is_refused(kw: dict, key: str) -> None:
    loader = BatchLoader(planted_pairs(SCHEMA, 100, seed=0), **{"batch_size": 64, "shuffle": True, **kw})
    with pytest.raises(TrainingError, match=f"BatchLoader has {key}=.* but train.{key} is"):
        Trainer(TrainConfig(epochs=1, batch_size=64, **FAST)).fit(build_model("lr", SCHEMA, {}), loader)


def test_eval_at_start_without_validation_is_refused() -> None:
    with pytest.raises(TrainingError, match="train.eval_at_start needs a validation split"):
        Trainer(TrainConfig(epochs=1, eval_at_start=True, **FAST)).fit(
            build_model("lr", SCHEMA, {}), planted_pairs(SCHEMA, 100, seed=0)
        )


def test_training_errors_are_user_errors() -> None:
    assert issubclass(TrainingError, UserError)


# ------------------------------------------------------------------ seeding
def test_build_model_seed_is_reproducible_and_leaves_global_rng_alone() -> None:
    params = {"embedding_dim": 4, "mlp": [8]}
    torch.manual_seed(1)
    a = build_model("deepfm", SCHEMA, params, seed=7)
    after_a = torch.rand(1)
    torch.manual_seed(1)
    torch.rand(3)  # a different global state must not matter
    b = build_model("deepfm", SCHEMA, params, seed=7)
    c = build_model("deepfm", SCHEMA, params, seed=8)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    torch.manual_seed(1)
    assert torch.equal(torch.rand(1), after_a)  # building with a seed consumed no global randomness


def test_diverged_history_is_finite_when_training_is_fine() -> None:
    # control for the guards above: an ordinary run passes every check and ends finite
    model = build_model("deepfm", SCHEMA, {"embedding_dim": 4, "mlp": [8], "batch_norm": True}, seed=0)
    hist = Trainer(TrainConfig(epochs=1, batch_size=64, **FAST)).fit(
        model, planted_pairs(SCHEMA, 600, 0), planted_pairs(SCHEMA, 200, 1)
    )
    assert math.isfinite(hist.best["val_auc"]) and _finite(model)


def test_plateau_decay_never_raises_an_lr_below_min_lr() -> None:
    class Constant(nn.Module):  # validation AUC never improves: every evaluation is a plateau
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def forward(self, batch):  # noqa: ANN001, ANN201
            return batch.sparse[:, 0].float() * 0.01 + 0.0 * self.w

    trainer = Trainer(
        TrainConfig(epochs=3, batch_size=300, lr=1e-7, min_lr=1e-6, early_stop_patience=5, **FAST)
    )
    hist = trainer.fit(Constant(), planted_pairs(SCHEMA, 300, seed=0), planted_pairs(SCHEMA, 100, seed=1))
    assert [r["lr"] for r in hist.epochs] == [1e-7] * 3  # before: raised to min_lr, 10x the set lr


# ------------------------------------------------------------------ devices
def test_unknown_device_string_is_refused_by_the_config() -> None:
    with pytest.raises(ValueError, match="device must be auto, cpu, cuda or cuda:N, got 'gpu'"):
        TrainConfig(device="gpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_on_a_machine_without_cuda_is_one_clear_error() -> None:
    model = build_model("lr", SCHEMA, {}, seed=0)
    with pytest.raises(TrainingError, match="train.device: device 'cuda': CUDA is not available"):
        Trainer(TrainConfig(epochs=1, progress=False, device="cuda")).fit(model, planted_pairs(SCHEMA, 50, 0))
    with pytest.raises(TrainingError, match="device: device 'cuda:0': CUDA is not available"):
        evaluate(model, planted_pairs(SCHEMA, 50, 0), device="cuda:0")
