"""One budget search, any number of goals: calibrate once, then plan, apply and verify.

``BudgetSearch`` does the goal-independent work of the budget method once (candidates with
exact bytes, the per-candidate predicted AUC loss, the bytes-vs-loss frontier) and then
answers a byte budget or an AUC-loss cap with ``apply`` (a real validation pass, refined in
loss mode); ``restore`` puts the original modules back, so several goals can be read off
one search of one model (the benchmark's frontier, or a user comparing budgets).
"""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING, Any

from ctrzip.compression.api import MetricsReport, TargetDecision
from ctrzip.compression.budget.allocate import (
    Option,
    Plan,
    best_within_budget,
    frontier,
    smallest_within_loss,
)
from ctrzip.compression.budget.candidates import Candidate
from ctrzip.compression.budget.targets import Target, build_targets, head_rows
from ctrzip.compression.sharded import sharded_evaluate
from ctrzip.compression.sizes import size_report
from ctrzip.data.dataset import EncodedDataset, SplitArrays
from ctrzip.data.loader import resolve_device
from ctrzip.errors import CompressionError
from ctrzip.models.base import CTRModel

if TYPE_CHECKING:
    from ctrzip.compression.budget.method import BudgetConfig

MB = 2**20


class BudgetSearch:
    """Candidates, calibrated losses and the frontier of one model; goals applied on demand.

    Args:
        model: the trained model (moved to ``cfg.device``, left in eval mode).
        data: encoded dataset with training counts and ``cfg.eval_split``.
        cfg: the search settings (its goal, ``mb``/``max_auc_loss``, is not used here).

    Attributes:
        smallest: bytes of the smallest reachable model.
        before_bytes: bytes of the model as given.

    Raises:
        CompressionError: no data, or no target with a smaller form.
    """

    def __init__(self, model: CTRModel, data: EncodedDataset | None, cfg: BudgetConfig) -> None:
        if data is None:
            raise CompressionError("budget needs data: training counts and a validation split")
        self.model, self.data, self.cfg = model, data, cfg
        self.device = resolve_device(cfg.device)
        model.to(self.device).eval()
        self.valid = data[cfg.eval_split]
        self.before_bytes = size_report(model)["total"]["bytes"]
        self.targets = build_targets(model, data, cfg)
        if not any(len(t.candidates) > 1 for t in self.targets):
            raise CompressionError("budget: no table or layer has a smaller representation")
        self.fixed = self.before_bytes - sum(t.candidates[0].nbytes for t in self.targets)
        self.smallest = self.fixed + sum(min(c.nbytes for c in t.candidates) for t in self.targets)
        self._calibrated: tuple[dict[str, float], dict[str, list[float]], list[Plan]] | None = None

    def _evaluate(self, split: SplitArrays) -> dict[str, float]:
        # the validation passes: each rank its share of the batches, AUC on the gathered rows
        return sharded_evaluate(self.model, split, batch_size=self.cfg.batch_size, device=self.device)

    def check_budget(self, mb: float) -> None:
        """Raises ``CompressionError`` naming the smallest reachable size when ``mb`` is below it."""
        if self.smallest > mb * MB:
            raise CompressionError(
                f"budget of {mb} MB ({int(mb * MB):,} B) cannot be met: the smallest reachable "
                f"model is {self.smallest:,} B ({self.smallest / MB:.3f} MB)"
            )

    def calibrate(self) -> tuple[dict[str, float], dict[str, list[float]], list[Plan]]:
        """``(metrics before, predicted losses per target, frontier)``, computed once."""
        if self._calibrated is None:
            calib = head_rows(self.valid, self.cfg.calib_rows)
            before = self._evaluate(self.valid)
            score = lambda: self._evaluate(calib)["auc"]  # noqa: E731
            losses = calibrate_losses(self.targets, score(), score, self.cfg.calib_share)
            options = {
                t.name: [Option(c.name, c.nbytes, losses[t.name][i]) for i, c in enumerate(t.candidates)]
                for t in self.targets
            }
            self._calibrated = (before, losses, frontier(options))
        return self._calibrated

    def restore(self) -> None:
        """Put every target's original module back."""
        for t in self.targets:
            t.swap(t.candidates[0])

    def apply(self, mb: float | None = None, max_auc_loss: float | None = None) -> dict[str, Any]:
        """Install the plan for one goal, verified on the whole ``eval_split``; returns its report.

        Exactly one of ``mb`` (MB, 2^20 bytes) or ``max_auc_loss`` (validation AUC). In loss
        mode a measured miss rescales the predictions and re-plans (``cfg.refine`` times).

        Raises:
            CompressionError: neither or both goals, or a budget below ``smallest``.
            RuntimeError: the stored bytes differ from the plan's (a bug, never a user error).
        """
        if (mb is None) == (max_auc_loss is None):
            raise CompressionError("budget: set exactly one of mb or max_auc_loss")
        if mb is not None:
            self.check_budget(mb)
        before, losses, plans = self.calibrate()
        scale, history = 1.0, []
        for attempt in range(self.cfg.refine + 1):
            if mb is not None:
                plan = best_within_budget(plans, int(mb * MB) - self.fixed)
            else:
                assert max_auc_loss is not None
                plan = smallest_within_loss(plans, max_auc_loss / scale)
            self.restore()  # start from the original modules each attempt
            chosen = {
                t.name: next(c for c in t.candidates if c.name == plan.choice[t.name].name)
                for t in self.targets
            }
            for t in self.targets:
                t.swap(chosen[t.name])
            direct = self._evaluate(self.valid)
            measured = before["auc"] - direct["auc"]
            history.append(
                {"predicted_loss": plan.loss * scale, "measured_loss": measured, "bytes": plan.nbytes}
            )
            if max_auc_loss is None or measured <= max_auc_loss or attempt == self.cfg.refine:
                break
            scale *= max(measured / max(plan.loss * scale, 1e-9), 1.5)
        after_bytes = size_report(self.model)["total"]["bytes"]
        if after_bytes != self.fixed + plan.nbytes:
            raise RuntimeError(
                f"budget: planned {self.fixed + plan.nbytes:,} B but the model stores {after_bytes:,} B"
            )
        if mb is not None and after_bytes > mb * MB:
            raise RuntimeError(f"budget: {after_bytes:,} B exceeds the budget {mb * MB:,.0f} B")
        return make_report(
            self.targets,
            chosen,
            losses,
            before,
            direct,
            self.before_bytes,
            after_bytes,
            self.fixed,
            history,
            plans,
        )


def calibrate_losses(targets: list[Target], base: float, score: Any, share: float) -> dict[str, list[float]]:
    """Predicted AUC loss of every candidate: ``k * error``.

    ``k`` comes from one plug-in pass of the target's most aggressive candidate, for the
    largest targets holding ``share`` of the compressible bytes; the small rest borrow the
    median ``k`` of those (a pass each would cost more than their bytes can matter).
    """
    movable = sorted((t for t in targets if len(t.candidates) > 1), key=lambda t: -t.candidates[0].nbytes)
    total = sum(t.candidates[0].nbytes for t in movable)
    losses: dict[str, list[float]] = {t.name: [0.0] for t in targets if len(t.candidates) == 1}
    slopes: list[float] = []
    seen = 0
    for t in movable:
        if t.measure_all:  # a few forms of one unit: measure each rather than extrapolate
            drops = [0.0]
            for c in t.candidates[1:]:
                t.swap(c)
                drops.append(max(base - score(), 0.0))
            t.swap(t.candidates[0])
            losses[t.name] = [d + 1e-9 * i for i, d in enumerate(drops)]
            seen += t.candidates[0].nbytes
            continue
        ref = max(range(1, len(t.candidates)), key=lambda i: t.candidates[i].error)
        err = t.candidates[ref].error
        if seen >= share * total and slopes:
            k = statistics.median(slopes)
        else:
            t.swap(t.candidates[ref])
            drop = max(base - score(), 0.0)
            t.swap(t.candidates[0])
            k = drop / err if err > 0 else 0.0
            slopes.append(k)
        seen += t.candidates[0].nbytes
        # a small floor per unit of error keeps ties broken toward the more accurate option
        losses[t.name] = [k * c.error + 1e-9 * c.error for c in t.candidates]
    return losses


def make_report(
    targets: list[Target],
    chosen: dict[str, Candidate],
    losses: dict[str, list[float]],
    before: dict[str, float],
    direct: dict[str, float],
    before_bytes: int,
    after_bytes: int,
    fixed: int,
    history: list[dict[str, float]],
    plans: list[Plan],
) -> dict[str, Any]:
    decisions: list[TargetDecision] = []
    plan_rows = []
    for t in targets:
        c = chosen[t.name]
        i = t.candidates.index(c)
        keep = t.candidates[0]
        decisions.append(
            TargetDecision(
                target=t.name,
                kind=t.kind,
                action="kept" if c.name == "float" else "compressed",
                reason="float chosen by the allocator" if c.name == "float" else c.name,
                bytes_before=keep.nbytes,
                bytes_after=c.nbytes,
            )
        )
        plan_rows.append(
            {"target": t.name, "representation": c.name, "bytes": c.nbytes, "error": c.error,
             "predicted_auc_loss": losses[t.name][i],
             "options": [{"name": o.name, "bytes": o.nbytes, "predicted_auc_loss": losses[t.name][j]}
                         for j, o in enumerate(t.candidates)]}
        )  # fmt: skip
    return {
        "plan": plan_rows,
        "targets": decisions,
        "metrics": MetricsReport(before=before, direct=direct, final=direct),
        "bytes": {"before": before_bytes, "after": after_bytes, "fixed": fixed},
        "ratio": before_bytes / max(1, after_bytes),
        "refine_history": history,
        "frontier": [{"bytes": fixed + p.nbytes, "predicted_auc_loss": p.loss} for p in plans],
    }
