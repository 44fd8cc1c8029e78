"""The "does it shrink" rule, one for every method and every target.

A target (an embedding table, a Linear) is compressed only when its compressed form is
smaller in bytes than what it replaces, counting every module the swap changes (a folded
first MLP layer, a first-order table on the same codes). Otherwise it stays as it is and the
report says why (a :class:`~ctrzip.compression.api.TargetDecision`). A target the user named
explicitly that cannot shrink, or a request under which nothing at all can shrink, is a
:class:`~ctrzip.errors.CompressionError` raised before any work.

The byte formulas of the compressed forms live here so each method decides before building
anything; tests check each one against the module it predicts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from torch import nn

from ctrzip.compression.api import TargetDecision
from ctrzip.errors import CompressionError
from ctrzip.nn.embedding.tt import tt_dim_factors, tt_row_factors

GLOB_CHARS = frozenset("*?[")


# --- byte formulas of compressed forms ----------------------------------------------------
def module_bytes(module: nn.Module) -> int:
    """Bytes of a module's saved tensors (parameters and persistent buffers)."""
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


def lowrank_linear_bytes(n: int, m: int, k: int, down_bias: bool, itemsize: int = 4) -> int:
    """``LowRankLinear(n -> k -> m)``: ``k x n`` (+ ``k`` bias) and ``m x k`` + ``m`` bias."""
    return (k * n + (k if down_bias else 0) + m * k + m) * itemsize


def lowrank_table_bytes(v: int, d: int, k: int, itemsize: int = 4) -> int:
    """``LowRankTable``: codes ``V x k``, basis ``D x k``, bias ``D``."""
    return (v * k + d * k + d) * itemsize


def fold_delta_bytes(out_features: int, d: int, k: int, itemsize: int = 4) -> int:
    """Change of the consumer Linear when one field's ``D`` input columns become ``k + 1`` code columns."""
    return out_features * (k + 1 - d) * itemsize


def tt_table_bytes(v: int, d: int, tt_rank: int, itemsize: int = 4) -> int:
    """``TTTable(v, d, tt_rank)`` with its default factors (the ranks it caps, as it does)."""
    ns, ds = tt_row_factors(v), tt_dim_factors(d)
    r1 = min(tt_rank, ns[0] * ds[0], ns[1] * ds[1] * ns[2] * ds[2])
    r2 = min(tt_rank, r1 * ns[1] * ds[1], ns[2] * ds[2])
    ranks = [1, r1, r2, 1]
    return sum(ranks[i] * ns[i] * ds[i] * ranks[i + 1] for i in range(3)) * itemsize


# --- decisions ------------------------------------------------------------------------------
def not_smaller(form: str, before: int, after: int) -> str | None:
    """The reason a form is refused (``after >= before``), or None when it is smaller."""
    if after < before:
        return None
    return f"{form} would not be smaller: {after:,} B >= {before:,} B"


def decide(target: str, kind: str, before: int, after: int, reason: str | None) -> TargetDecision:
    """A ``TargetDecision``: ``compressed`` when ``reason`` is None, else ``kept`` (bytes unchanged)."""
    if reason is None:
        return TargetDecision(
            target=target, kind=kind, action="compressed", reason="", bytes_before=before, bytes_after=after
        )
    return TargetDecision(
        target=target, kind=kind, action="kept", reason=reason, bytes_before=before, bytes_after=before
    )


def explicit_names(patterns: Sequence[str] | None) -> set[str]:
    """Names the user listed literally (no glob characters): those must shrink or be refused."""
    return {p for p in patterns or () if not GLOB_CHARS & set(p)}


def compressed(decisions: Iterable[TargetDecision]) -> list[TargetDecision]:
    return [d for d in decisions if d["action"] == "compressed"]


def refuse_listed(method: str, setting: str, name: str, reason: str) -> CompressionError:
    """The error for a target named in ``setting`` that cannot shrink."""
    return CompressionError(f"{method}: {name!r} listed in {setting} cannot be compressed: {reason}")


def require_some(method: str, decisions: Sequence[TargetDecision], hint: str) -> None:
    """Raise ``CompressionError`` when no decision is ``compressed`` (nothing would shrink).

    The one-line message gives the reasons of the largest kept targets (up to four) and
    ``hint``, the setting to change; the error's ``targets`` attribute holds every decision
    (for a caller that prints them all).
    """
    if compressed(decisions):
        return
    if not decisions:
        err = CompressionError(f"{method}: nothing to compress: the settings select no target in this model")
    else:
        largest = sorted(decisions, key=lambda d: -d["bytes_before"])
        shown = "; ".join(f"{d['target']}: {d['reason']}" for d in largest[:4])
        more = f"; and {len(decisions) - 4} more" if len(decisions) > 4 else ""
        err = CompressionError(f"{method}: nothing would be compressed ({shown}{more}); {hint}")
    err.targets = list(decisions)  # type: ignore[attr-defined]
    raise err
