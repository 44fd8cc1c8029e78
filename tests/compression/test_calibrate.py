"""observe(): hooks always removed, activations untouched; calibrate(): one eval/no_grad pass."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ctrzip.compression.calibrate import IdMaskedMoments, calibrate, observe
from ctrzip.compression.stats import RunningMoments


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 6)
        self.drop = nn.Dropout(0.5)
        self.b = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.drop(torch.relu(self.a(x))))


def _hooks(m: nn.Module) -> int:
    return sum(len(x._forward_hooks) for x in m.modules())


def test_observe_removes_hooks_even_on_exception() -> None:
    net = _Net()
    with pytest.raises(RuntimeError, match="boom"), observe(net, {"a": RunningMoments()}):
        assert _hooks(net) == 1
        raise RuntimeError("boom")
    assert _hooks(net) == 0
    with pytest.raises(AttributeError), observe(net, {"a": RunningMoments(), "nope": RunningMoments()}):
        pass
    assert _hooks(net) == 0


def test_observers_see_outputs_and_do_not_change_them() -> None:
    net = _Net().eval()
    x = torch.randn(10, 4)
    ref = net(x)
    obs = {"a": RunningMoments(), "b": RunningMoments()}
    with observe(net, obs):
        out = net(x)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    torch.testing.assert_close(obs["a"].mean.float(), net.a(x).mean(0).detach())
    inp = RunningMoments()
    with observe(net, {"a": inp}, where="input"):
        net(x)
    torch.testing.assert_close(inp.mean.float(), x.mean(0))


class _Batches:
    def __init__(self, xs: list[torch.Tensor]) -> None:
        self.xs = xs

    def __len__(self) -> int:
        return len(self.xs)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.xs)


def test_calibrate_runs_in_eval_mode_and_restores_training() -> None:
    net = _Net().train()
    xs = [torch.randn(8, 4) for _ in range(3)]
    obs = calibrate(net, {"b": RunningMoments()}, _Batches(xs), max_batches=2)  # type: ignore[arg-type]
    assert net.training
    ref = RunningMoments()
    net.eval()
    with torch.no_grad():
        for x in xs[:2]:
            ref.update(net(x))  # dropout off: eval mode was used
    torch.testing.assert_close(obs["b"].s2, ref.s2)
    assert obs["b"].n == 16


def test_id_masked_moments_skip_padding_lookups() -> None:
    emb = nn.Embedding(5, 3, padding_idx=0)
    ids = torch.tensor([[0, 1, 2], [3, 0, 0]])
    obs = IdMaskedMoments(0)
    with observe(emb, {"": obs}):
        emb(ids)
    assert obs.n == 3
    torch.testing.assert_close(obs.mean.float(), emb.weight[[1, 2, 3]].mean(0).detach())
