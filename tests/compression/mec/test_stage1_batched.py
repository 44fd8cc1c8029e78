"""MEC stage 1 batched across fields (issue 13, item 5): every field gets what ``fit_codes``
alone gives it (losses per step, codes, codebooks), no gradient crosses fields, padded rows
reach no loss, and ``MEC`` uses it with a small field left dense."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from ctrzip.compression import compress
from ctrzip.compression.mec import stage1_batched
from ctrzip.compression.mec.method import MECConfig
from ctrzip.compression.mec.stage1 import CodeLearningConfig, CodeLearningResult, fit_codes
from ctrzip.compression.mec.stage1_batched import _buckets, batched_losses, fit_codes_batched
from ctrzip.config import ConfigError
from ctrzip.data.dataset import EncodedDataset, SplitArrays, save_counts, save_split
from ctrzip.data.loader import resolve_device
from ctrzip.data.schema import FeatureSchema, FieldSpec
from ctrzip.models.base import build_model
from ctrzip.nn.embedding.base import DenseTable
from ctrzip.nn.embedding.pq import PQTable

from ._mec_data import one_thread  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

# three vocabularies: batches of 128, 128 and 90 rows
SIZES = (300, 1500, 90)
BASE = {"batch_size": 128, "kmeans_iters": 3, "num_negatives": 4}


def _fields(sizes=SIZES, d=8, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    tables = [torch.randn(n, d, generator=g).to(device) for n in sizes]
    counts = [torch.randint(0, 60, (n,), generator=g).to(device) for n in sizes]
    return tables, counts


def _same(ref: CodeLearningResult, got: CodeLearningResult) -> None:
    """``got`` is ``ref`` up to float summation order: every logged loss, codes, codebooks."""
    assert (got.steps, got.batch_size, got.layout) == (ref.steps, ref.batch_size, ref.layout)
    assert got.scale == ref.scale
    assert len(got.history) == len(ref.history)
    for hr, hg in zip(ref.history, got.history, strict=True):
        assert hr.keys() == hg.keys()
        for key, value in hr.items():
            assert hg[key] == pytest.approx(value, rel=1e-5, abs=1e-6), (key, hr, hg)
    assert torch.equal(got.codes, ref.codes)
    torch.testing.assert_close(got.codebooks, ref.codebooks, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.decoded, ref.decoded, rtol=1e-5, atol=1e-6)
    assert (got.bias is None) == (ref.bias is None)
    if ref.bias is not None:
        torch.testing.assert_close(got.bias, ref.bias, rtol=1e-5, atol=1e-6)
    assert got.encoder_change == pytest.approx(ref.encoder_change, rel=1e-4, abs=1e-6)


@pytest.mark.parametrize(
    "overrides",
    [
        {},  # linear encoder, PWR and contrastive terms
        {"encoder": "identity"},
        {"alpha": 0.0, "beta": 0.0, "weighting": "count"},
        {"epochs": 2.0, "min_steps": 7, "rho": 0.7},  # budgets 7, 24, 7 steps
    ],
)
@pytest.mark.parametrize("one_loop", [False, True])
def test_batched_gives_each_field_what_fit_codes_gives_it(overrides, one_loop, monkeypatch):
    """``one_loop``: every field in one padded loop, as on CUDA (on CPU the 90-row field
    otherwise gets its own loop rather than being padded to 128 rows)."""
    if one_loop:
        monkeypatch.setattr(stage1_batched, "_CPU_PAD_RATIO", 0.0)
    tables, counts = _fields()
    cfg = CodeLearningConfig(**{**BASE, "epochs": 1.0, "min_steps": 8, **overrides})  # 8, 12, 8 steps
    ref = [fit_codes(t, c, 2, 16, cfg, seed=3, log_every=2) for t, c in zip(tables, counts, strict=True)]
    assert len({(r.steps, r.batch_size) for r in ref}) > 1  # fields really differ in budget
    got = fit_codes_batched(tables, counts, 2, 16, cfg, seed=3, log_every=2)
    for r, g in zip(ref, got, strict=True):
        _same(r, g)


def test_dead_code_replacement_and_selection_match_per_field(monkeypatch):
    """Revivals draw from each field's generator; selection keeps each field's best state
    (in one padded loop, as on CUDA)."""
    monkeypatch.setattr(stage1_batched, "_CPU_PAD_RATIO", 0.0)
    tables, counts = _fields()
    g = torch.Generator().manual_seed(1)
    centers = torch.randn(4, 8, generator=g)  # 4 tight clusters, 16 codewords: dead codes
    tables[0] = centers[torch.randint(0, 4, (300,), generator=g)] + 0.01 * torch.randn(300, 8, generator=g)
    cfg = CodeLearningConfig(**{**BASE, "kmeans_iters": 0}, steps=12, dead_code_steps=2, select_every=3)
    scores = [lambda d, i=i: float(-d[:5].pow(2).sum()) + i for i in range(3)]
    ref = [
        fit_codes(t, c, 2, 16, cfg, seed=3, log_every=2, score=s)
        for t, c, s in zip(tables, counts, scores, strict=True)
    ]
    assert max(h.get("revived", 0) for h in ref[0].history) > 0  # codewords were moved
    assert [h["selected_step"] for r in ref for h in r.history if "selected_step" in h] != [12.0] * 3
    got = fit_codes_batched(tables, counts, 2, 16, cfg, seed=3, log_every=2, scores=scores)
    for r, g in zip(ref, got, strict=True):
        _same(r, g)


def test_a_field_trains_the_same_alone_or_beside_others():
    tables, counts = _fields()
    cfg = CodeLearningConfig(**BASE, steps=15)
    alone = fit_codes_batched(tables[:1], counts[:1], 2, 16, cfg, seed=3)[0]
    other = [t * 5 + 1 for t in tables[1:]]  # different neighbours
    beside = fit_codes_batched([tables[0], *other], counts, 2, 16, cfg, seed=3)[0]
    assert torch.equal(alone.codes, beside.codes)
    torch.testing.assert_close(alone.codebooks, beside.codebooks, rtol=1e-6, atol=1e-7)


def test_gradients_stay_in_their_field_and_padding_reaches_no_loss():
    g = torch.Generator().manual_seed(0)
    f, b, m, k, w = 3, 10, 2, 4, 3
    d = m * w
    params = [
        torch.eye(d).repeat(f, 1, 1) + 0.1 * torch.randn(f, d, d, generator=g),
        0.1 * torch.randn(f, d, generator=g),
        torch.eye(d).repeat(f, 1, 1) + 0.1 * torch.randn(f, d, d, generator=g),
        0.1 * torch.randn(f, d, generator=g),
        torch.randn(f, m, k, w, generator=g),
    ]
    params = [p.requires_grad_(True) for p in params]
    xb = torch.randn(f, b, d, generator=g)
    rows = torch.tensor([10.0, 6.0, 3.0])
    mask = (torch.arange(b)[None] < rows[:, None]).float()
    cfg = CodeLearningConfig()
    neg = torch.randint(1, k, (f, b, 3, m), generator=g)

    def negatives(codes):
        return (codes.unsqueeze(2) + neg) % k

    loss, terms, _ = batched_losses(params, xb, mask, rows, cfg, negatives)
    assert set(terms) == {"vq", "commit", "recon", "reg", "con"}
    for i in range(f):
        grads = torch.autograd.grad(loss[i], params, retain_graph=True)
        for p_grad in grads:
            others = [j for j in range(f) if j != i]
            assert torch.count_nonzero(p_grad[others]) == 0
            assert torch.count_nonzero(p_grad[i]) > 0
    # padded rows (beyond each field's count) can hold anything: no loss term moves
    junk = xb.clone()
    junk[1, 6:] = 1e3
    junk[2, 3:] = -7.0
    loss2, terms2, _ = batched_losses(params, junk, mask, rows, cfg, negatives)
    torch.testing.assert_close(loss2, loss)
    # and one field's loss is the per-field formula on its real rows alone
    one, _, _ = batched_losses([p[2:3] for p in params], xb[2:3, :3], mask[2:3, :3], rows[2:3], cfg, None)
    cfg0 = CodeLearningConfig(beta=0.0)
    ref, _, _ = batched_losses(params, xb, mask, rows, cfg0, None)
    torch.testing.assert_close(one[0], ref[2])


def test_rq_and_mixed_widths_match_per_field_and_bad_inputs_are_refused():
    tables, counts = _fields(sizes=(120, 60))
    cfg = CodeLearningConfig(**BASE, steps=4, quantizer="rq")
    ref = [fit_codes(t, c, 2, 8, cfg, seed=0) for t, c in zip(tables, counts, strict=True)]
    for r, g in zip(ref, fit_codes_batched(tables, counts, 2, 8, cfg, seed=0), strict=True):
        _same(r, g)
    with pytest.raises(ConfigError, match="2 tables, 1 counts"):
        fit_codes_batched(tables, counts[:1], 2, 8, cfg)
    mixed = [tables[0], torch.randn(60, 6, generator=torch.Generator().manual_seed(0))]
    with pytest.raises(ConfigError, match="num_subspaces=4 must divide the embedding width 6 .*field 1"):
        fit_codes_batched(mixed, counts, 4, 8, CodeLearningConfig(**BASE, steps=2))
    pq = CodeLearningConfig(**BASE, steps=4)  # two widths: two loops, each field as alone
    ref = [fit_codes(t, c, 2, 8, pq, seed=0) for t, c in zip(mixed, counts, strict=True)]
    for r, g in zip(ref, fit_codes_batched(mixed, counts, 2, 8, pq, seed=0), strict=True):
        _same(r, g)
    with pytest.raises(ConfigError, match="select_every needs a score .* field 0"):
        fit_codes_batched(tables, counts, 2, 8, CodeLearningConfig(**BASE, steps=2, select_every=1))


def test_runs_on_the_auto_device():
    dev = resolve_device("auto")
    tables, counts = _fields(sizes=(200, 70), device=dev)
    res = fit_codes_batched(tables, counts, 2, 8, CodeLearningConfig(**BASE, steps=5), seed=0)
    assert all(
        r.codes.device.type == dev.type and r.codes.shape == (len(t), 2)
        for r, t in zip(res, tables, strict=True)
    )


def _dataset(root, vocabs=(300, 150), rows=3000, seed=0) -> EncodedDataset:
    """Two large fields of different vocabularies, one 8-id field, one dense feature."""
    names = [f"f{i}" for i in range(len(vocabs))]
    schema = FeatureSchema(
        fields=(
            *(FieldSpec(n, "categorical", vocab_size=v) for n, v in zip(names, vocabs, strict=True)),
            FieldSpec("small", "categorical", vocab_size=8),
            FieldSpec("x", "dense", source="numeric"),
        )
    )
    rng = np.random.default_rng(seed)
    counts = {}
    for split, n in (("train", rows), ("valid", rows // 3)):
        ids = [rng.integers(1, v - 1, size=n) for v in vocabs] + [rng.integers(1, 7, size=n)]
        dense = rng.normal(size=(n, 1)).astype(np.float32)
        label = (rng.random(n) < 0.3).astype(np.float32)
        save_split(root, split, SplitArrays(np.stack(ids, 1).astype(np.int32), dense, label))
        if split == "train":
            counts = {
                f: np.bincount(c, minlength=v)
                for f, c, v in zip([*names, "small"], ids, [*vocabs, 8], strict=True)
            }
    schema.save(root / "feature_map.json")
    save_counts(root / "counts.npz", counts)
    return EncodedDataset.open(root)


def test_mec_codes_equal_per_field_fit_codes_and_the_small_field_stays_dense(tmp_path):
    data = _dataset(tmp_path)
    torch.manual_seed(0)
    base = build_model("deepfm", data.schema, {"embedding_dim": 8, "mlp": [8]})
    cfg = MECConfig(
        min_vocab=100,
        num_subspaces=2,
        codebook_size=16,
        code_learning=CodeLearningConfig(
            batch_size=64, epochs=2.0, min_steps=5, kmeans_iters=3, num_negatives=4
        ),
        protocol="none",
        plugin_per_field=False,
        progress=False,
        device="auto",
    )
    model = copy.deepcopy(base)
    report = compress(model, cfg, data).compression_log[-1]["report"]
    assert set(report["fields"]) == {"f0", "f1"} and "small" in report["skipped"]
    assert isinstance(model.embedding.tables["small"], DenseTable)
    assert torch.equal(model.embedding.tables["small"].weight, base.embedding.tables["small"].weight)
    budgets = set()
    for name in ("f0", "f1"):
        table = base.embedding.tables[name]
        v = table.num_embeddings
        counts = torch.as_tensor(data.counts[name])[1 : v - 1]
        ref = fit_codes(table.materialize()[1 : v - 1], counts, 2, 16, cfg.code_learning, cfg.seed)
        pq = model.embedding.tables[name]
        assert isinstance(pq, PQTable)
        assert torch.equal(pq.codes[1 : v - 1].long().cpu(), ref.codes.cpu())
        st = report["fields"][name]["stage1"]
        assert (st["steps"], st["batch_size"]) == (ref.steps, ref.batch_size)
        budgets.add(ref.steps)
    assert len(budgets) == 2  # the two fields trained for different numbers of steps


def test_cpu_loops_group_fields_of_similar_batch():
    tables, counts = _fields(sizes=(300, 1500, 90, 70))
    cfg = CodeLearningConfig(**BASE, steps=1)
    fields = [
        stage1_batched._prepare(t, c, 2, 8, cfg, 0, None, i)
        for i, (t, c) in enumerate(zip(tables, counts, strict=True))
    ]
    assert [f.batch for f in fields] == [128, 128, 90, 70]
    assert _buckets([0, 1, 2, 3], fields) == [[0, 1], [2, 3]]  # 90 < 0.75 * 128, 70 >= 0.75 * 90


def test_dead_code_usage_counts_equal_table_usage():
    from ctrzip.compression.mec.stage1 import _Coder, table_usage

    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 8, generator=g)
    coder = _Coder(8, torch.randn(2, 16, 4, generator=g), linear=True)
    with torch.no_grad():
        coder.enc.weight.add_(0.1 * torch.randn(8, 8, generator=g))
    fast = stage1_batched._pq_usage(coder, x, 2, 16)
    assert torch.equal(fast, table_usage(coder, x, 16, CodeLearningConfig()))
    assert fast.sum() == 2 * 500
