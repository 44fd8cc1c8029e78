"""Issue 9, kind 3, the reported case: fine-tuning a folded low-rank model keeps padding at zero,
so a padded sequence gives the folded first layer and the FM part the same vector."""

from __future__ import annotations

import copy

import pytest
import torch

from ctrzip.compression import compress
from ctrzip.compression.lowrank.factorized import probe_batch
from ctrzip.compression.lowrank.feature_mimicking import LowRankConfig
from ctrzip.compression.lowrank.fold import FoldedLinear
from ctrzip.nn.embedding.base import DenseTable
from ctrzip.nn.embedding.lowrank import LowRankTable
from ctrzip.nn.swappable import replace_module

from ._lowrank_data import make_dataset, make_model


@pytest.mark.parametrize("form", ["centered", "paper"])
def test_finetuned_folded_model_keeps_padding_zero(form: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    data = make_dataset(tmp_path / "ds")
    model = make_model("deepfm")
    cfg = LowRankConfig(
        mlp=False, embedding=True, embedding_rank=4, embedding_form=form, finetune_epochs=1, lr=1e-2,
        finetune_batch_size=64, eval_split=None, keep_start=False, device="cpu",
    )  # fmt: skip
    start = {n: t.materialize()[1:].clone() for n, t in model.embedding.tables.items()}
    compress(model, cfg, data)
    assert isinstance(model.get_submodule(model.embedding_consumer()), FoldedLinear)
    for name, table in model.embedding.tables.items():
        assert isinstance(table, LowRankTable)
        assert torch.equal(table(torch.tensor([0])), torch.zeros(1, 8)), name
        assert torch.equal(table.materialize()[0], torch.zeros(8)), name
        assert not torch.allclose(table.materialize()[1:], start[name], atol=1e-3)  # it did train
    # the folded consumer sees the same pooled [5, 0, 0] as the FM part: compare with the
    # same model whose consumer reads the reconstructed vectors (every field unfolded)
    batch = probe_batch(model.schema, 64, torch.device("cpu"), seed=2)
    tags = model.schema.sparse_slices()["tags"]
    batch.sparse[:, tags] = torch.tensor([5, 0, 0], dtype=batch.sparse.dtype)
    unfolded = copy.deepcopy(model)
    for name, table in list(unfolded.embedding.tables.items()):
        replace_module(unfolded, f"embedding.tables.{name}", DenseTable.from_tensor(table.materialize()))
    assert type(unfolded.get_submodule(unfolded.embedding_consumer())) is torch.nn.Linear
    with torch.no_grad():
        folded, plain = model.eval()(batch).double(), unfolded.eval()(batch).double()
    torch.testing.assert_close(folded, plain, atol=1e-5, rtol=0)
