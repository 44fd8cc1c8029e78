"""TTTable: TT-SVD parity at full TT-rank, gradients to the cores, padding, spec round trip."""

from __future__ import annotations

import pytest
import torch

from ctrzip.nn.embedding.base import DenseTable
from ctrzip.nn.embedding.tt import TTTable, tt_dim_factors, tt_row_factors
from ctrzip.nn.swappable import SWAPPABLE


def _table(v: int = 50, d: int = 8, seed: int = 0) -> torch.Tensor:
    w = torch.randn(v, d, generator=torch.Generator().manual_seed(seed))
    w[0] = 0
    return w


def test_factorizations() -> None:
    for v in (1, 2, 50, 999, 1001, 123457):
        n = tt_row_factors(v)
        assert n[0] * n[1] * n[2] >= v
    for d in (1, 8, 16, 50, 7):
        f = tt_dim_factors(d)
        assert len(f) == 3 and f[0] * f[1] * f[2] == d
    assert tt_dim_factors(16) == [2, 2, 4]


def test_full_tt_rank_reproduces_dense_table() -> None:
    w = _table()
    tt = TTTable.from_dense(w, tt_rank=1000)
    dense = DenseTable.from_tensor(w)
    torch.testing.assert_close(tt.materialize(), w, atol=1e-5, rtol=0)
    ids = torch.tensor([[0, 7, 49], [3, 3, 12]])
    torch.testing.assert_close(tt(ids), dense(ids), atol=1e-5, rtol=0)


def test_truncated_tt_is_smaller_and_trainable() -> None:
    w = _table(400, 16, 1)
    tt = TTTable.from_dense(w, tt_rank=4)
    assert tt.ranks == [1, 4, 4, 1] and tt.nbytes() < DenseTable.from_tensor(w).nbytes()
    err = (tt.materialize() - w).norm() / w.norm()
    assert 0 < err < 1
    ids = torch.tensor([5, 9, 5, 0])
    out = tt(ids)
    assert out[3].abs().max() == 0  # padding id
    torch.testing.assert_close(out[0], out[2])
    out.pow(2).sum().backward()
    assert all(c.grad is not None and c.grad.abs().sum() > 0 for c in tt.cores)


def test_random_init_scale_and_spec_round_trip() -> None:
    torch.manual_seed(0)
    tt = TTTable(1000, 16, tt_rank=16, init_std=0.01)
    rows = tt.materialize()[1:]
    assert 0.003 < float(rows.std()) < 0.03
    clone = SWAPPABLE.get("TTTable").empty(**tt.spec())
    clone.load_state_dict(tt.state_dict(), strict=True)
    ids = torch.randint(0, 1000, (3, 5))
    torch.testing.assert_close(clone(ids), tt(ids))
    with pytest.raises(ValueError, match="tt_rank"):
        TTTable(10, 4, tt_rank=0)
    with pytest.raises(ValueError, match="cover"):
        TTTable(10, 4, row_factors=[2, 2, 2])


def test_tt_method_swaps_only_large_tables() -> None:
    from ctrzip.compression import compress
    from ctrzip.compression.lowrank.tt import TTConfig
    from ctrzip.config import from_dict, to_dict
    from ctrzip.data.schema import FeatureSchema, FieldSpec
    from ctrzip.models.base import build_model

    schema = FeatureSchema(
        (FieldSpec("big", "categorical", vocab_size=300), FieldSpec("small", "categorical", vocab_size=9))
    )
    torch.manual_seed(0)
    model = build_model("deepfm", schema, {"embedding_dim": 4, "embedding_init_std": 0.1, "mlp": [8]})
    # tt_rank 2: the full TT-rank (64 is capped at 7, 14) would be larger than the 300 x 4 table
    cfg = TTConfig(tt_rank=2, min_vocab=100, finetune_epochs=0, eval_split=None, device="cpu")
    assert from_dict(TTConfig, to_dict(cfg)) == cfg
    ids = torch.randint(0, 300, (20, 1))
    expect = TTTable.from_dense(model.embedding.tables["big"].weight, tt_rank=2)(ids[:, 0])
    compress(model, cfg)
    assert isinstance(model.embedding.tables["big"], TTTable)
    assert isinstance(model.embedding.tables["small"], DenseTable)
    torch.testing.assert_close(model.embedding.tables["big"](ids[:, 0]), expect, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="tt_rank"):
        TTConfig(tt_rank=0)
