"""CCETable (clustered compositional embeddings): exact when every row has its own cluster,
lookups and hashes against independent computations, re-clustering, bytes, gradients, spec."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ctrzip.compression.baselines.cce import cluster_rows, recluster
from ctrzip.errors import CompressionError
from ctrzip.nn.embedding.base import DenseTable
from ctrzip.nn.embedding.cce import CCETable, cce_bytes
from ctrzip.nn.embedding.hashed import PRIME, universal_constants
from ctrzip.nn.swappable import SWAPPABLE

V, D = 30, 8


def _weight(seed: int = 0) -> torch.Tensor:
    w = torch.randn(V, D, generator=torch.Generator().manual_seed(seed))
    w[0] = 0
    return w


def test_as_many_clusters_as_rows_is_the_dense_table() -> None:
    w = _weight()
    table = CCETable(V, D, num_chunks=2, codebook_size=V - 1)
    cluster_rows(table, w, iters=10, seed=0)
    ids = torch.tensor([[0, 1, 29], [7, 7, 3]])
    torch.testing.assert_close(table(ids), DenseTable.from_tensor(w)(ids), rtol=0, atol=1e-6)
    assert torch.equal(table.hashed, torch.zeros_like(table.hashed)) and table.generation == 1


def test_lookup_and_hashes_match_an_independent_computation() -> None:
    torch.manual_seed(0)
    table = CCETable(V, D, num_chunks=4, codebook_size=7, seed=3, init_std=1.0)
    first = universal_constants(3, 4)
    assert table.assign.tolist() == [[((a * i + b) % PRIME) % 7 for a, b in first] for i in range(V)]
    g = universal_constants(3 * 1_000_003 + 0 + 1, 4)  # the hashed table's family, generation 0
    cl, ha, asg = table.clustered.detach().numpy(), table.hashed.detach().numpy(), table.assign.numpy()
    out = table(torch.arange(V)).detach().numpy()
    for i in range(1, V):
        want = np.concatenate(
            [cl[j, asg[i, j]] + ha[j, ((a * i + b) % PRIME) % 7] for j, (a, b) in enumerate(g)]
        )
        np.testing.assert_allclose(out[i], want, rtol=1e-6, atol=1e-7)
    assert np.array_equal(out[0], np.zeros(D))


def test_reclustering_assigns_each_chunk_to_its_nearest_centroid() -> None:
    torch.manual_seed(0)
    table = CCETable(V, D, num_chunks=2, codebook_size=4, init_std=1.0)
    before = table.materialize().numpy()
    change = recluster(table, iters=15, seed=0)
    cents = table.clustered.detach().numpy()
    for j in range(2):
        x = before[1:, 4 * j : 4 * j + 4]
        dist = ((x[:, None, :] - cents[j][None]) ** 2).sum(-1)  # [V - 1, k]
        got = table.assign[1:, j].long().numpy()
        np.testing.assert_allclose(dist[np.arange(V - 1), got], dist.min(1), rtol=1e-5, atol=1e-6)
    after = table.materialize().numpy()
    assert change == pytest.approx(np.linalg.norm(after - before) / np.linalg.norm(before), rel=1e-5)
    assert table.generation == 1 and not table.hashed.detach().any()


@pytest.mark.parametrize(("k", "index_bytes"), [(7, 1), (256, 1), (257, 2)])
def test_bytes_match_the_formula_and_the_stored_tensors(k: int, index_bytes: int) -> None:
    table = CCETable(300, D, num_chunks=2, codebook_size=k)
    stored = sum(t.numel() * t.element_size() for t in table.state_dict().values())
    by_hand = 300 * 2 * index_bytes + 2 * k * D * 4  # index, clustered and hashed tables
    assert table.nbytes() == stored == cce_bytes(300, D, 2, k) == by_hand


def test_gradients_reach_both_tables_and_not_the_index() -> None:
    table = CCETable(V, D, num_chunks=2, codebook_size=5, init_std=0.1)
    table(torch.tensor([3, 9, 0])).pow(2).sum().backward()
    assert table.clustered.grad.abs().sum() > 0 and table.hashed.grad.abs().sum() > 0
    assert not table.assign.is_floating_point() and not table.assign.requires_grad


def test_spec_round_trip_after_reclustering_keeps_the_hash_generation() -> None:
    torch.manual_seed(0)
    table = CCETable(V, D, num_chunks=2, codebook_size=5, seed=4, init_std=1.0)
    recluster(table, iters=3, seed=0)
    with torch.no_grad():
        table.hashed.normal_()  # as after training: the generation's hash matters
    clone = SWAPPABLE.get("CCETable").empty(**table.spec())
    clone.load_state_dict(table.state_dict(), strict=True)
    assert clone.generation == 1
    ids = torch.randint(0, V, (4, 3))
    assert torch.equal(clone(ids), table(ids))


def test_bad_settings_raise_naming_the_setting() -> None:
    with pytest.raises(CompressionError, match="cce: num_chunks 3 must divide the embedding dim 8"):
        CCETable(V, D, num_chunks=3)
    with pytest.raises(CompressionError, match="cce: num_chunks and codebook_size must be >= 1"):
        CCETable(V, D, codebook_size=0)
    table = CCETable(V, D, num_chunks=2, codebook_size=5)
    with pytest.raises(CompressionError, match=r"cce: set_clusters needs assign \[30, 2\]"):
        table.set_clusters(torch.zeros(V, 3, dtype=torch.long), torch.zeros(2, 5, 4))
    with pytest.raises(CompressionError, match=r"cce: cluster indices must lie in \[0, 5\)"):
        table.set_clusters(torch.full((V, 2), 5), torch.zeros(2, 5, 4))
    with pytest.raises(IndexError, match=r"cce table: ids must lie in \[0, 30\)"):
        table(torch.tensor([30]))
