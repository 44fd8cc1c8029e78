"""Choosing one representation per target under a byte budget (multiple-choice knapsack).

Each target (a field's table or band, the dense network) offers options with a size in
bytes and a predicted loss (validation AUC lost, additive over targets). ``frontier`` runs
a dynamic program over targets that keeps only Pareto-optimal partial plans (no other plan
is both smaller and better), so the result is the exact bytes-vs-loss frontier of the whole
model; with many targets the states are thinned to ``max_states`` by byte buckets (sizes are
never rounded down, so a plan's bytes are exact). ``best_within_budget`` and
``smallest_within_loss`` read the two user questions off that frontier.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ctrzip.errors import CompressionError


@dataclass(frozen=True)
class Option:
    """One way to store a target: ``name`` (e.g. ``int4``), exact ``nbytes``, predicted ``loss``."""

    name: str
    nbytes: int
    loss: float


@dataclass(frozen=True)
class Plan:
    """A choice of option per target with its total bytes and predicted loss."""

    choice: Mapping[str, Option]
    nbytes: int
    loss: float


# (bytes, loss, options chosen so far as a cons list (last option, rest) so that growing a
# state is O(1), not a copy of every earlier choice)
_State = tuple[int, float, tuple | None]


def frontier(options: Mapping[str, Sequence[Option]], max_states: int = 4096) -> list[Plan]:
    """All Pareto-optimal plans, sorted by bytes (ascending; loss then descends).

    Args:
        options: target -> its options (at least one each).
        max_states: cap on partial plans kept per step; above it, the best plan of each of
            ``max_states`` equal byte buckets is kept (exact when never reached).

    Raises:
        CompressionError: a target without options.
    """
    empty = [t for t, opts in options.items() if not opts]
    if empty:
        raise CompressionError(f"budget: no representation available for {', '.join(empty)}")
    states: list[_State] = [(0, 0.0, None)]
    targets = list(options)
    for t in targets:
        useful = _useful(options[t])
        grown = [(b + o.nbytes, loss + o.loss, (o, plan)) for b, loss, plan in states for o in useful]
        states = _thin(_pareto(grown), max_states)
    return [Plan(dict(zip(targets, _unroll(plan), strict=True)), b, loss) for b, loss, plan in states]


def _useful(opts: Sequence[Option]) -> list[Option]:
    """The target's options that no other of its options beats on both bytes and loss (an
    option another one dominates is in no Pareto-optimal plan, so dropping it is exact)."""
    out: list[Option] = []
    for o in sorted(opts, key=lambda o: (o.nbytes, o.loss)):
        if not out or o.loss < out[-1].loss:
            out.append(o)
    return out


def _unroll(plan: tuple | None) -> list[Option]:
    out = []
    while plan is not None:
        out.append(plan[0])
        plan = plan[1]
    return out[::-1]


def _pareto(states: list[_State]) -> list[_State]:
    states.sort(key=lambda s: (s[0], s[1]))
    out: list[_State] = []
    best = math.inf
    for s in states:
        if s[1] < best:  # strictly better than every smaller plan
            out.append(s)
            best = s[1]
    return out


def _thin(states: list[_State], max_states: int) -> list[_State]:
    if len(states) <= max_states:
        return states
    lo, hi = states[0][0], states[-1][0]
    width = (hi - lo) / max_states or 1
    kept: dict[int, _State] = {}
    for s in states:  # sorted by bytes with loss descending: the last of a bucket is its best
        kept[int((s[0] - lo) / width)] = s
    return sorted(kept.values(), key=lambda s: s[0])


def best_within_budget(plans: Sequence[Plan], budget_bytes: int) -> Plan:
    """The plan with the lowest predicted loss whose bytes fit ``budget_bytes``.

    Raises:
        CompressionError: even the smallest plan is larger (the message names its size).
    """
    fitting = [p for p in plans if p.nbytes <= budget_bytes]
    if not fitting:
        smallest = min(p.nbytes for p in plans)
        raise CompressionError(
            f"budget of {budget_bytes:,} B ({budget_bytes / 2**20:.3f} MB) cannot be met: "
            f"the smallest reachable model is {smallest:,} B ({smallest / 2**20:.3f} MB)"
        )
    return min(fitting, key=lambda p: (p.loss, p.nbytes))


def smallest_within_loss(plans: Sequence[Plan], max_loss: float) -> Plan:
    """The smallest plan whose predicted loss is at most ``max_loss`` (the best plan if none)."""
    fitting = [p for p in plans if p.loss <= max_loss]
    if not fitting:
        return min(plans, key=lambda p: (p.loss, p.nbytes))
    return min(fitting, key=lambda p: (p.nbytes, p.loss))
