"""``train.fuse_embeddings`` is honoured and exact: fused and per-field training give the same
weights, step for step, and the model's own ``fuse`` setting is restored after ``fit``."""

from __future__ import annotations

import pytest
import torch

from ctrzip.models import build_model
from ctrzip.nn.embedding import fused_plan as fused_mod
from ctrzip.nn.embedding.field import FieldEmbedding
from ctrzip.train import TrainConfig, Trainer
from ctrzip.train.resume import RESUME_FREE
from tests.train._synth import interaction_schema, planted_pairs


def _fit(fuse: bool, monkeypatch, l2: float = 0.0) -> tuple[dict[str, torch.Tensor], int]:  # noqa: ANN001
    calls = []
    real = fused_mod.FusedPlan.forward
    monkeypatch.setattr(
        fused_mod.FusedPlan, "forward", lambda self, fe, b: calls.append(1) or real(self, fe, b)
    )
    schema = interaction_schema()
    model = build_model("deepfm", schema, {"embedding_dim": 4, "mlp": [8]}, seed=0)
    cfg = TrainConfig(
        epochs=1, batch_size=64, progress=False, device="cpu", fuse_embeddings=fuse, embedding_l2=l2
    )
    Trainer(cfg).fit(model, planted_pairs(schema, 512, seed=0))
    fes = [m for m in model.modules() if isinstance(m, FieldEmbedding)]
    assert fes and all(m.fuse for m in fes)  # the model's own setting (True) is back
    monkeypatch.undo()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, len(calls)


@pytest.mark.parametrize("l2", [0.0, 1e-2])
def test_fuse_embeddings_setting_is_honoured_and_exact(monkeypatch, l2: float) -> None:  # noqa: ANN001
    """With embedding L2 the fused run sums squares per packed group (``square_sum``)."""
    fused, n_fused = _fit(True, monkeypatch, l2)
    plain, n_plain = _fit(False, monkeypatch, l2)
    assert n_plain == 0 and n_fused >= 2 * 8  # two FieldEmbeddings (second- and first-order), 8 steps
    assert fused.keys() == plain.keys()
    for k in fused:
        assert torch.equal(fused[k], plain[k]), k
    assert "fuse_embeddings" in RESUME_FREE  # exact, so a run may resume with it changed
