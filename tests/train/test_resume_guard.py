"""Resume only the same run: a saved run with other settings, model or data is refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ctrzip.errors import TrainingError
from ctrzip.models.base import build_model
from ctrzip.train import TrainConfig, Trainer
from ctrzip.train.checkpoint import BEST, LAST, METRICS, load_checkpoint

from ._synth import interaction_schema, planted_pairs

SCHEMA = interaction_schema(num_fields=4, vocab=10)
TRAIN = planted_pairs(SCHEMA, 1200, seed=0)
VALID = planted_pairs(SCHEMA, 400, seed=1)
PARAMS = {"mlp": [8], "embedding_dim": 4}


def _cfg(out: Path, **kw) -> TrainConfig:
    base = {"epochs": 1, "batch_size": 256, "lr": 5e-3, "progress": False, "device": "cpu"}
    return TrainConfig(out_dir=str(out), **{**base, **kw})


def _model(params: dict | None = None, name: str = "deepfm"):
    return build_model(name, SCHEMA, params or PARAMS, seed=7)


@pytest.fixture
def finished(tmp_path: Path) -> Path:
    Trainer(_cfg(tmp_path)).fit(_model(), TRAIN, VALID)
    return tmp_path


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"lr": 0.01}, "train.lr 0.005 -> 0.01"),
        ({"batch_size": 128}, "train.batch_size 256 -> 128"),
        ({"seed": 1}, "train.seed 2024 -> 1"),
        ({"weight_l2": 1e-4}, "train.weight_l2 0.0 -> 0.0001"),
        ({"lr": 0.01, "shuffle": False}, "train.lr 0.005 -> 0.01; train.shuffle True -> False"),
    ],
)
def test_changed_setting_is_refused_naming_the_keys(finished: Path, change: dict, named: str) -> None:
    before = (finished / LAST).read_bytes()
    with pytest.raises(TrainingError) as err:
        Trainer(_cfg(finished, **change)).fit(_model(), TRAIN, VALID)
    msg = str(err.value)
    assert f"{finished / LAST}: this run differs from the saved one in {named}: refusing to resume" in msg
    assert "train.resume=false (ctrzip train --fresh)" in msg and "\n" not in msg
    assert (finished / LAST).read_bytes() == before  # the saved run is left as it was


@pytest.mark.parametrize(
    ("name", "params", "named"),
    [
        ("deepfm", {"mlp": [16], "embedding_dim": 4}, "model.mlp [8] -> [16]"),
        ("deepfm", {"mlp": [8], "embedding_dim": 4, "dropout": 0.1}, "model.dropout 0.0 -> 0.1"),
        ("dcn", {"mlp": [8], "embedding_dim": 4}, "model 'deepfm' -> 'dcn'"),
    ],
)
def test_changed_model_is_refused_naming_the_keys(
    finished: Path, name: str, params: dict, named: str
) -> None:
    with pytest.raises(TrainingError) as err:  # not a raw size-mismatch traceback
        Trainer(_cfg(finished)).fit(_model(params, name), TRAIN, VALID)
    assert f"differs from the saved one in {named}: refusing to resume" in str(err.value)


def test_changed_training_rows_are_refused(finished: Path) -> None:
    with pytest.raises(TrainingError, match="training rows 1200 -> 1000"):
        Trainer(_cfg(finished)).fit(_model(), planted_pairs(SCHEMA, 1000, seed=0), VALID)


def test_module_without_spec_with_other_shapes_is_refused(finished: Path) -> None:
    class Bare(torch.nn.Module):  # no spec(): compared by parameter names and shapes
        def __init__(self) -> None:
            super().__init__()
            self.inner = _model()
            self.extra = torch.nn.Parameter(torch.zeros(2))

        def forward(self, batch):  # noqa: ANN001, ANN201
            return self.inner(batch) + self.extra.sum()

    with pytest.raises(TrainingError, match=r"model's parameters \(names or shapes\)"):
        Trainer(_cfg(finished)).fit(Bare(), TRAIN, VALID)


def test_lowering_the_stop_limit_below_the_saved_run_is_refused(tmp_path: Path) -> None:
    Trainer(_cfg(tmp_path, epochs=2)).fit(_model(), TRAIN, VALID)
    with pytest.raises(TrainingError, match=r"train.epochs 2 -> 1 \(it already trained 2 epochs\)"):
        Trainer(_cfg(tmp_path, epochs=1)).fit(_model(), TRAIN, VALID)
    with pytest.raises(TrainingError, match=r"train.max_steps None -> 3 \(it already trained 10 steps\)"):
        Trainer(_cfg(tmp_path, epochs=2, max_steps=3)).fit(_model(), TRAIN, VALID)


def test_raising_epochs_resumes_to_the_uninterrupted_result(tmp_path: Path, capsys) -> None:
    ref = _model()
    ref_hist = Trainer(_cfg(tmp_path / "ref", epochs=2)).fit(ref, TRAIN, VALID)
    Trainer(_cfg(tmp_path / "run", epochs=1)).fit(_model(), TRAIN, VALID)
    capsys.readouterr()
    model = _model()
    hist = Trainer(_cfg(tmp_path / "run", epochs=2)).fit(model, TRAIN, VALID)
    assert f"resuming {tmp_path / 'run'} from step 5 (train.epochs 1 -> 2)\n" in capsys.readouterr().err
    assert hist.resumed_at_step == 5 and hist.steps == ref_hist.steps == 10
    ref_state, state = ref.state_dict(), model.state_dict()
    assert all(torch.equal(ref_state[k], state[k]) for k in ref_state)


def test_same_settings_resume_and_say_so(finished: Path, capsys) -> None:
    capsys.readouterr()
    # progress/device/deterministic do not change the result: they may differ
    Trainer(_cfg(finished, progress=False, deterministic=False)).fit(_model(), TRAIN, VALID)
    assert f"resuming {finished} from step 5\n" in capsys.readouterr().err


def test_fresh_start_removes_the_old_run(finished: Path) -> None:
    (finished / METRICS).write_text('{"stale": 1}\n')
    stale_best = (finished / BEST).read_bytes()
    hist = Trainer(_cfg(finished, lr=0.01, resume=False, max_steps=2)).fit(_model(), TRAIN, VALID)
    assert hist.resumed_at_step is None and hist.steps == 2
    assert "stale" not in (finished / METRICS).read_text()
    _, meta = load_checkpoint(finished / LAST)
    assert meta["global_step"] == 2 and meta["config"]["lr"] == 0.01
    assert (finished / BEST).read_bytes() != stale_best


def test_lowering_epochs_into_a_started_epoch_is_refused(tmp_path: Path) -> None:
    Trainer(_cfg(tmp_path, epochs=2, max_steps=7)).fit(_model(), TRAIN, VALID)  # 5 steps per epoch
    msg = r"train.epochs 2 -> 1 \(it already trained 1 epochs and 2 steps\)"
    with pytest.raises(TrainingError, match=msg):
        Trainer(_cfg(tmp_path, epochs=1, max_steps=7)).fit(_model(), TRAIN, VALID)
