"""The budget allocator against brute force on toy problems with a known optimum."""

from __future__ import annotations

import itertools
import random

import pytest

from ctrzip.compression.budget.allocate import Option, best_within_budget, frontier, smallest_within_loss
from ctrzip.errors import CompressionError


def _random_problem(seed: int, targets: int = 5, per: int = 4) -> dict[str, list[Option]]:
    rng = random.Random(seed)
    out = {}
    for t in range(targets):
        sizes = sorted(rng.sample(range(10, 1000), per))
        losses = sorted((rng.random() for _ in range(per)), reverse=True)  # bigger is better
        out[f"t{t}"] = [
            Option(f"o{i}", b, loss) for i, (b, loss) in enumerate(zip(sizes, losses, strict=True))
        ]
    return out


def _brute(problem: dict[str, list[Option]]) -> list[tuple[int, float]]:
    return [
        (sum(o.nbytes for o in combo), sum(o.loss for o in combo))
        for combo in itertools.product(*problem.values())
    ]


@pytest.mark.parametrize("seed", range(8))
def test_budget_answer_equals_brute_force(seed: int) -> None:
    problem = _random_problem(seed)
    plans = frontier(problem)
    every = _brute(problem)
    smallest = min(b for b, _ in every)
    for budget in (smallest, smallest + 300, smallest + 900, 10**6):
        best = min(loss for b, loss in every if b <= budget)
        plan = best_within_budget(plans, budget)
        assert plan.nbytes <= budget
        assert plan.loss == pytest.approx(best)
        assert plan.nbytes == sum(o.nbytes for o in plan.choice.values())


@pytest.mark.parametrize("seed", range(4))
def test_loss_answer_equals_brute_force(seed: int) -> None:
    problem = _random_problem(seed)
    plans = frontier(problem)
    every = _brute(problem)
    for cap in (0.5, 1.0, 2.0):
        feasible = [b for b, loss in every if loss <= cap + 1e-12]
        if feasible:
            assert smallest_within_loss(plans, cap).nbytes == min(feasible)


def test_frontier_is_pareto_and_sorted() -> None:
    plans = frontier(_random_problem(3))
    assert all(a.nbytes < b.nbytes and a.loss > b.loss for a, b in zip(plans, plans[1:], strict=False))


def test_known_optimum() -> None:
    # two fields and a network; 100 B: the head must stay fine, the tail can be coarse
    problem = {
        "head": [Option("int4", 10, 0.5), Option("int8", 40, 0.01)],
        "tail": [Option("int2", 5, 0.02), Option("int8", 40, 0.0)],
        "mlp": [Option("int8", 30, 0.001), Option("fp32", 120, 0.0)],
    }
    plan = best_within_budget(frontier(problem), 100)
    assert {t: o.name for t, o in plan.choice.items()} == {"head": "int8", "tail": "int2", "mlp": "int8"}
    assert plan.nbytes == 75


def test_impossible_budget_names_smallest_size() -> None:
    with pytest.raises(CompressionError, match=r"smallest reachable model is 45 B"):
        best_within_budget(frontier(_toy()), 44)


def test_thinning_keeps_exact_bytes_and_budget() -> None:
    problem = _random_problem(0, targets=12, per=5)
    plans = frontier(problem, max_states=64)
    assert len(plans) <= 64
    for p in plans:
        assert p.nbytes == sum(o.nbytes for o in p.choice.values())
    assert best_within_budget(plans, 6000).nbytes <= 6000


def _toy() -> dict[str, list[Option]]:
    return {"a": [Option("x", 20, 1.0), Option("y", 50, 0.0)], "b": [Option("x", 25, 1.0)]}
