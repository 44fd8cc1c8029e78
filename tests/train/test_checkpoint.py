"""Checkpoints: atomic writes, and resume after an interruption gives the uninterrupted weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ctrzip.data.loader import BatchLoader
from ctrzip.models.base import build_model
from ctrzip.train import TrainConfig, Trainer
from ctrzip.train.checkpoint import atomic_save, load_checkpoint, save_checkpoint

from ._synth import interaction_schema, planted_pairs

SCHEMA = interaction_schema(num_fields=4, vocab=10)
TRAIN = planted_pairs(SCHEMA, 3000, seed=0)
VALID = planted_pairs(SCHEMA, 1000, seed=1)
PARAMS = {"mlp": [16], "dropout": 0.3, "embedding_dim": 4}  # dropout: resume must restore the RNG


class _Boom(RuntimeError):
    pass


class _FailingLoader(BatchLoader):
    """Raises while fetching batch ``at`` of epoch ``epoch`` (an injected crash)."""

    def __init__(self, *args, epoch: int, at: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fail_epoch, self.fail_at = epoch, at

    def __iter__(self):
        for i, batch in enumerate(super().__iter__()):
            if self.epoch == self.fail_epoch and i == self.fail_at:
                raise _Boom("injected")
            yield batch


def _cfg(out: Path, **kw) -> TrainConfig:
    base = {"epochs": 2, "batch_size": 256, "lr": 5e-3, "progress": False, "device": "cpu"}
    return TrainConfig(out_dir=str(out), **{**base, **kw})


def _model():
    torch.manual_seed(7)
    return build_model("deepfm", SCHEMA, PARAMS)


def _strip_timing(records):
    return [{k: v for k, v in r.items() if k not in ("samples_per_s", "elapsed_s")} for r in records]


def _assert_same_run(ref_model, ref_hist, model, hist) -> None:
    ref, got = ref_model.state_dict(), model.state_dict()
    assert ref.keys() == got.keys()
    for k in ref:
        assert torch.equal(ref[k], got[k]), k
    assert _strip_timing(hist.epochs) == _strip_timing(ref_hist.epochs)
    assert hist.best_epoch == ref_hist.best_epoch and hist.steps == ref_hist.steps


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    model = _model()
    hist = Trainer(_cfg(tmp_path_factory.mktemp("ref"), eval_every_steps=5)).fit(model, TRAIN, VALID)
    return model, hist


def test_resume_after_crash_mid_epoch_is_exact(tmp_path, reference) -> None:
    ref_model, ref_hist = reference
    cfg = _cfg(tmp_path, eval_every_steps=5)
    crash = _FailingLoader(TRAIN, 256, shuffle=True, seed=cfg.seed, epoch=1, at=7)
    with pytest.raises(_Boom):
        Trainer(cfg).fit(_model(), crash, VALID)
    _, meta = load_checkpoint(tmp_path / "last.pt")
    assert (meta["epoch"], meta["step_in_epoch"]) == (1, 7)  # saved on the way out
    model = _model()  # fresh init: everything must come from the checkpoint
    hist = Trainer(cfg).fit(model, TRAIN, VALID)
    assert hist.resumed_at_step == len(BatchLoader(TRAIN, 256)) + 7
    _assert_same_run(ref_model, ref_hist, model, hist)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert _strip_timing([json.loads(x) for x in lines]) == _strip_timing(ref_hist.epochs)


@pytest.mark.parametrize("max_steps", [12, 15])  # epoch end (12 steps/epoch), a mid-epoch eval
def test_resume_after_max_steps_is_exact(tmp_path, reference, max_steps) -> None:
    ref_model, ref_hist = reference
    first = Trainer(_cfg(tmp_path, eval_every_steps=5, max_steps=max_steps)).fit(_model(), TRAIN, VALID)
    assert first.steps == max_steps
    model = _model()
    hist = Trainer(_cfg(tmp_path, eval_every_steps=5)).fit(model, TRAIN, VALID)
    _assert_same_run(ref_model, ref_hist, model, hist)


def test_finished_run_resumes_to_same_result_and_resume_false_restarts(tmp_path) -> None:
    cfg = _cfg(tmp_path, epochs=1)
    m1 = _model()
    h1 = Trainer(cfg).fit(m1, TRAIN, VALID)
    m2 = _model()
    h2 = Trainer(cfg).fit(m2, TRAIN, VALID)  # nothing left to do: loads best, same history
    assert h2.epochs == h1.epochs
    s1, s2 = m1.state_dict(), m2.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    h3 = Trainer(_cfg(tmp_path, epochs=1, resume=False)).fit(_model(), TRAIN, VALID)
    assert h3.resumed_at_step is None
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1  # restarted, log truncated


def test_no_temp_files_left_and_checkpoints_load_without_pickle(tmp_path) -> None:
    Trainer(_cfg(tmp_path, epochs=1)).fit(_model(), TRAIN, VALID)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt", "metrics.jsonl"]
    tensors, meta = load_checkpoint(tmp_path / "best.pt")
    model = _model()
    model.load_state_dict(tensors["model"])
    assert meta["record"]["epoch"] == 1


def test_atomic_save_failure_keeps_old_file(tmp_path) -> None:
    path = tmp_path / "x.pt"
    save_checkpoint(path, {"w": torch.ones(3)}, {"v": 1})
    with pytest.raises(Exception):  # noqa: B017 - pickling a lambda fails inside torch.save
        atomic_save({"bad": lambda: 0}, path)
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]
    tensors, meta = load_checkpoint(path)
    assert torch.equal(tensors["w"], torch.ones(3)) and meta == {"v": 1}


def test_load_checkpoint_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"w": torch.zeros(1)}, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="not a ctrzip"):
        load_checkpoint(tmp_path / "plain.pt")
