"""ctrzip.distributed: shard arithmetic, single-process identities, and 2-rank gloo collectives."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from ctrzip import distributed as d
from ctrzip.config import ConfigError


@pytest.mark.parametrize("n,parts", [(0, 1), (7, 3), (10, 4), (3, 5), (100, 1)])
def test_shard_bounds_cover_once(n: int, parts: int) -> None:
    seen = []
    sizes = []
    for p in range(parts):
        a, b = d.shard_bounds(n, p, parts)
        seen.extend(range(a, b))
        sizes.append(b - a)
    assert seen == list(range(n))
    assert max(sizes) - min(sizes) <= 1


def test_shard_bounds_rejects_bad_part() -> None:
    with pytest.raises(ValueError, match="part 3 of 3"):
        d.shard_bounds(10, 3, 3)


def test_single_process_identities(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert d.init_from_env(torch.device("cpu")) is None
    t = torch.arange(4.0)
    assert d.all_reduce_sum_(t) is t and t.tolist() == [0, 1, 2, 3]
    assert d.all_gather_rows(t) is t
    assert d.broadcast_object({"a": 1}) == {"a": 1}
    assert (d.rank(), d.world_size(), d.is_main()) == (0, 1, True)


def test_bad_world_size_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ConfigError, match="WORLD_SIZE='two'"):
        d.env_world_size()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, out: dict) -> None:
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    ctx = d.init_from_env(torch.device("cpu"), timeout_s=60)
    assert ctx is not None and ctx.backend == "gloo"
    s = d.all_reduce_sum_(torch.tensor([float(rank + 1)], dtype=torch.float64))
    rows = d.all_gather_rows(torch.full((rank + 1, 2), float(rank)))  # 1 row from rank 0, 2 from rank 1
    obj = d.broadcast_object({"plan": rank * 10 + 7})
    out[rank] = (s.item(), rows.tolist(), obj)
    torch.distributed.destroy_process_group()


def test_two_rank_collectives() -> None:
    with mp.Manager() as mgr:
        out = mgr.dict()
        mp.spawn(_worker, args=(_free_port(), out), nprocs=2, join=True)
        res = dict(out)
    for r in (0, 1):
        total, rows, obj = res[r]
        assert total == 3.0
        assert rows == [[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]]
        assert obj == {"plan": 7}


def test_collective_failure_is_one_line_naming_rank_and_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    err = torch.distributed.DistBackendError("[gloo] Timed out waiting 5000ms for recv\nmore detail")
    with (
        pytest.raises(d.CollectiveError) as info,
        d.collective_failures("compress.dist_timeout_s", 5.0, hint="; rerun"),
    ):
        raise err
    msg = str(info.value)
    assert msg == (
        "rank 1 of 3: a collective failed: another rank died or did not answer within "
        "compress.dist_timeout_s=5 s ([gloo] Timed out waiting 5000ms for recv); see that rank's log; rerun"
    )


def test_other_errors_pass_through_collective_failures() -> None:
    with (
        pytest.raises(RuntimeError, match="shape mismatch"),
        d.collective_failures("train.dist_timeout_s", 5.0),
    ):
        raise RuntimeError("shape mismatch")  # not distributed: never a collective failure
