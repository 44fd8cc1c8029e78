"""``ctrzip.predict`` / ``ctrzip predict`` on raw rows (issue 11, item 1).

Round trip for every compression method: compress -> save -> predict on the raw file equals the
in-memory model's probabilities on the encoded rows; the shared fixtures with unseen and
missing values against ``Encoder.transform`` (the encoder's own path for new files).
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from compression.test_compose import METHOD_CONFIGS  # tests/ is on sys.path (rootdir packages)
from typer.testing import CliRunner

import ctrzip
from ctrzip.compression import compress
from ctrzip.data.dataset import EncodedDataset
from ctrzip.data.encode import Encoder, encode_dataset
from ctrzip.export import save
from ctrzip.models.base import build_model
from ctrzip.train.evaluation import predict as predict_arrays

from ._fixtures import COMPOSE_CONFIG, criteo_files, ml100k_files, shared, tiny_model, write_compose_raw

runner = CliRunner()


@pytest.fixture(scope="module", autouse=True)
def one_thread():  # type: ignore[no-untyped-def]
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> dict[str, Path]:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("raw")
    files = {
        "train": write_compose_raw(root / "train.csv", 600, 0),
        "valid": write_compose_raw(root / "valid.csv", 200, 1, unseen=True),
    }
    encode_dataset(COMPOSE_CONFIG, files, root / "enc", progress=False)
    return {**files, "enc": root / "enc"}


@pytest.fixture(scope="module")
def trained(raw) -> ctrzip.models.base.CTRModel:  # type: ignore[no-untyped-def]
    data = EncodedDataset.open(raw["enc"])
    torch.manual_seed(0)
    cfg = {"embedding_dim": 8, "embedding_init_std": 0.1, "mlp": [32, 32, 32]}
    model = build_model("deepfm", data.schema, cfg)
    ctrzip.Trainer(ctrzip.TrainConfig(epochs=2, lr=3e-3, batch_size=64, progress=False, device="cpu")).fit(
        model, data["train"], data["valid"]
    )
    return model.eval()


@pytest.mark.parametrize("method", ["dense", *METHOD_CONFIGS])
def test_round_trip_every_method_predicts_raw_rows_as_in_memory(method, raw, trained, tmp_path) -> None:
    data = EncodedDataset.open(raw["enc"])
    model = copy.deepcopy(trained)
    if method != "dense":
        compress(model, METHOD_CONFIGS[method](), data)
    want = predict_arrays(model, data["valid"], device="cpu")  # in memory, on the encoded rows
    art = save(tmp_path / "art", model, encoder=data)
    got = ctrzip.predict(art, raw["valid"], device="cpu", batch_rows=64)
    assert isinstance(got, np.ndarray) and got.shape == (200,)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)  # float32 models; batching may differ
    # the streamed file: same numbers, input order, the id column passed through
    report = ctrzip.predict(
        art, raw["valid"], tmp_path / "p.parquet", id_column="uid", device="cpu", block_mb=0.002
    )
    out = pl.read_parquet(tmp_path / "p.parquet")
    assert report.rows == 200 and out.columns == ["uid", "row", "probability"]
    assert out["uid"].to_list() == [f"u1-{i}" for i in range(200)] and out["row"].to_list() == list(
        range(200)
    )
    np.testing.assert_allclose(out["probability"].to_numpy(), want, rtol=0, atol=1e-6)
    assert want.std() > 1e-3  # the rows get different scores: the test can tell rows apart


def _with_missing_and_unseen(src: Path, dst: Path, columns: list[str]) -> Path:
    """Blank some cells and put never-seen values in others (the raw fixtures' own values)."""
    frame = pl.read_csv(src, infer_schema=False)
    n = len(frame)
    idx = pl.Series(np.arange(n))
    exprs = []
    for j, c in enumerate(columns):
        blank, new = (idx % 5) == (j % 5), (idx % 7) == (j % 7)
        exprs.append(
            pl.when(pl.lit(blank))
            .then(pl.lit(None))
            .when(pl.lit(new))
            .then(pl.lit("999999" if c.startswith("I") or c == "age" else "zz-unseen"))
            .otherwise(pl.col(c))
            .alias(c)
        )
    frame.with_columns(exprs).write_csv(dst)
    return dst


@pytest.mark.parametrize("fixture", ["criteo", "ml100k"])
def test_shared_fixtures_with_unseen_and_missing_values(fixture, tmp_path) -> None:
    if fixture == "criteo":
        data = criteo_files(shared(), tmp_path / "enc")
        src = shared() / "criteo_sample" / "test.csv"
        cols = ["I1", "I5", "C1", "C7", "C20"]
    else:
        data = ml100k_files(shared(), tmp_path / "enc")
        src = shared() / "ml100k_mini" / "test.csv"
        cols = ["user_id", "item_id", "genres", "age", "occupation"]
    model = tiny_model(data)
    art = save(tmp_path / "art", model, encoder=data)
    rows = _with_missing_and_unseen(src, tmp_path / "rows.csv", cols)
    # the reference: the encoder's own path for new files, then the in-memory model
    Encoder.load(data.root).transform(rows, tmp_path / "ref", split="test")
    ref = EncodedDataset.open(tmp_path / "ref")["test"]
    sl = data.schema.sparse_slices()
    sparse = np.asarray(ref.sparse)
    oov = [
        sparse[:, sl[c]] == f.vocab_size - 1
        for c, f in zip(data.schema.names, data.schema.fields, strict=True)
        if c in sl and c in cols
    ]
    assert any(o.any() for o in oov) and (sparse == 0).any()  # unseen -> OOV, empty -> 0
    want = predict_arrays(model, ref, device="cpu")
    assert want.std() > 1e-3 and 0.01 < want.mean() < 0.99  # not saturated: rows are told apart
    ctrzip.predict(art, rows, tmp_path / "p.csv", device="cpu")
    got = pl.read_csv(tmp_path / "p.csv")
    np.testing.assert_allclose(got["probability"].to_numpy(), want, rtol=0, atol=1e-6)
    assert got["row"].to_list() == list(range(len(want)))
    frame = pl.read_csv(rows, infer_schema=False)  # a frame in memory gives the same
    np.testing.assert_allclose(
        ctrzip.Predictor.load(art, device="cpu").predict(frame), want, rtol=0, atol=1e-6
    )
