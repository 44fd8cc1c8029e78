"""What the table baselines share: the sizing settings (a ratio, a byte budget or the method's
own size knob), the target selection, the keep-or-compress rule, the swap and the fine-tune.

A baseline is a ``TableBaseline`` subclass that says, for one table, which setting of its own
form fits a byte target (``size``), the bytes of that form (``form_bytes``) and how to build it
(``build``). The rest runs as in the factorized methods (``FactorizedMethod``): plan (refuse
before any work), swap through ``replace_module``, evaluate "direct", fine-tune with the guarded
routine (``compression.finetune.guarded_finetune``) and evaluate again.

Sizing (exactly one, or none for the default ``ratio: 4``):
  * ``ratio``: each selected table gets at most ``bytes / ratio``; a table that cannot reach it
    is kept with the reason (refused if listed by name in ``fields``);
  * ``budget_bytes``: the selected tables together get at most this many bytes, shared in
    proportion to their current bytes; a table that cannot fit its share is an error (one that
    already fits it and would not shrink is kept);
  * the method's knob (``num_buckets``, ``collisions``, ``base_dim``, ``hidden``, ``sparsity``):
    the same setting for every selected table.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Literal, TypeVar

import numpy as np
import torch
from torch import Tensor

from ctrzip.compression.api import TargetDecision
from ctrzip.compression.lowrank.factorized import FactorizedMethod, StepOptions
from ctrzip.compression.select import tables
from ctrzip.compression.shrink import decide, explicit_names, module_bytes, not_smaller, refuse_listed
from ctrzip.config import ConfigError
from ctrzip.data.dataset import EncodedDataset
from ctrzip.errors import CompressionError
from ctrzip.models.base import CTRModel
from ctrzip.nn.embedding.base import EmbeddingTable
from ctrzip.nn.swappable import replace_module

DEFAULT_RATIO = 4.0


@dataclass
class BaselineConfig(StepOptions):
    """Settings every table baseline shares (and ``StepOptions``' fine-tune settings).

    Args:
        fields: field-name globs (None = every sparse field with ``vocab_size >= min_vocab``);
            a field named literally must shrink or the run is refused.
        min_vocab: with ``fields`` None, only tables at least this large are replaced.
        ratio: each table to at most ``bytes / ratio`` (> 1).
        budget_bytes: all selected tables together to at most this many bytes (>= 1).
        init: ``from_table`` (start from the trained table: a fit, see each method) or
            ``random`` (train from scratch; rows drawn at the trained rows' std).
        (``StepOptions.seed`` seeds the fine-tune and, here, every random initialization, draw
        and k-means start: field ``i`` of a run builds under ``seed + i``.)
        version: config schema version.

    At most one of ``ratio``, ``budget_bytes`` and the method's own size knob; with none of them
    the ratio is ``DEFAULT_RATIO`` (4).

    Raises:
        ConfigError: two size settings, a ratio <= 1, a budget < 1, ``min_vocab < 0``, an
            unknown ``init`` (each message names the setting).
    """

    fields: tuple[str, ...] | None = None
    min_vocab: int = 1000
    ratio: float | None = None
    budget_bytes: int | None = None
    init: Literal["from_table", "random"] = "from_table"

    method: ClassVar[str] = ""  # the registry key, for messages
    knob: ClassVar[str] = ""  # the method's own size setting

    def __post_init__(self) -> None:
        super().__post_init__()
        given = [k for k in ("ratio", "budget_bytes", self.knob) if k and getattr(self, k) is not None]
        if len(given) > 1:
            raise ConfigError(
                f"{self.method}: set only one of {' / '.join(given)} (they all size the tables)"
            )
        if self.ratio is not None and not self.ratio > 1.0:
            raise ConfigError(f"{self.method}: ratio must be > 1, got {self.ratio}")
        if self.budget_bytes is not None and self.budget_bytes < 1:
            raise ConfigError(f"{self.method}: budget_bytes must be >= 1, got {self.budget_bytes}")
        if self.min_vocab < 0:
            raise ConfigError(f"{self.method}: min_vocab must be >= 0, got {self.min_vocab}")
        if self.init not in ("from_table", "random"):
            raise ConfigError(f"{self.method}: init must be 'from_table' or 'random', got {self.init!r}")

    def sizing(self) -> tuple[str, Any]:
        """``("ratio", r)``, ``("budget_bytes", b)`` or ``(knob, value)``: the setting in force."""
        for k in ("budget_bytes", self.knob):
            if k and getattr(self, k) is not None:
                return k, getattr(self, k)
        return "ratio", self.ratio if self.ratio is not None else DEFAULT_RATIO


C = TypeVar("C", bound=BaselineConfig)


class TableBaseline(FactorizedMethod[C], Generic[C]):
    """Replace selected tables by the method's form, sized by the config (module docstring)."""

    form: ClassVar[str] = ""  # the table type's name, for messages

    # --- what a baseline defines -------------------------------------------------------------
    @abc.abstractmethod
    def size(self, name: str, table: EmbeddingTable, target_bytes: int | None) -> dict[str, Any] | None:
        """The form's settings for ``table`` within ``target_bytes`` (None: from the knob), or
        None when no setting fits."""

    @abc.abstractmethod
    def form_bytes(self, table: EmbeddingTable, params: dict[str, Any]) -> int:
        """Stored bytes of the form with ``params`` (the formula; tests check it against ``nbytes``)."""

    @abc.abstractmethod
    def build(self, name: str, weight: Tensor, params: dict[str, Any], pad: int | None) -> EmbeddingTable:
        """The new table from the old one's rows ``weight [V, D]`` (``init`` decides how)."""

    def smallest_bytes(self, table: EmbeddingTable) -> int:
        """Bytes of the smallest form this method can make of ``table`` (for messages)."""
        return 0

    # --- the shared driver --------------------------------------------------------------------
    def steps(self) -> list[str]:
        return ["embedding"]

    def hint(self) -> str:
        setting = self.config.sizing()[0]
        if setting == "ratio":
            return "lower ratio (no form gets that small), lower min_vocab or list larger fields"
        return f"change {setting} so the form is smaller than the table, or list larger fields"

    def run(self, model: CTRModel, data: EncodedDataset | None) -> dict[str, Any]:
        self.data = data  # counts for fits and popularity (plan runs before the data check)
        self._plans: dict[str, tuple[TargetDecision, dict[str, Any] | None]] | None = None
        return super().run(model, data)

    def counts(self, name: str) -> np.ndarray | None:
        """Training counts of field ``name`` (None when the dataset has none)."""
        data = getattr(self, "data", None)
        return None if data is None else data.counts.get(name)

    def selected(self, model: CTRModel) -> dict[str, EmbeddingTable]:
        cfg = self.config
        found = tables(model, cfg.fields)
        if cfg.fields is not None:
            return found
        return {n: t for n, t in found.items() if t.num_embeddings >= cfg.min_vocab}

    def plan(self, step: str, model: CTRModel) -> list[TargetDecision]:
        if getattr(self, "_plans", None) is None:
            self._plans = self._plan(model)
        return [d for d, _ in self._plans.values()]  # type: ignore[union-attr]

    def _plan(self, model: CTRModel) -> dict[str, tuple[TargetDecision, dict[str, Any] | None]]:
        cfg = self.config
        key = self.key
        listed = explicit_names(cfg.fields)
        everything = tables(model, cfg.fields)
        chosen = self.selected(model)
        setting, value = cfg.sizing()
        total = sum(module_bytes(t) for t in chosen.values())
        out: dict[str, tuple[TargetDecision, dict[str, Any] | None]] = {}
        for name, old in everything.items():
            fqn = f"embedding.tables.{name}"
            before = module_bytes(old)
            if name not in chosen:
                reason = f"vocab {old.num_embeddings:,} < min_vocab {cfg.min_vocab:,}"
                out[name] = (decide(fqn, "table", before, before, reason), None)
                continue
            target: int | None = None
            if setting == "ratio":
                target = int(before / value)
            elif setting == "budget_bytes":
                target = int(value * before / max(1, total))
            params = self.size(name, old, target)
            if params is None:
                fits = f"{target:,} B" if target is not None else "this table"
                reason: str | None = (
                    f"no {self.form} fits {setting} {value} ({fits}; the smallest is "
                    f"{self.smallest_bytes(old):,} B)"
                )
                after = before
            else:
                after = self.form_bytes(old, params)
                reason = not_smaller(f"{self.form}({_fmt(params)})", before, after)
            if reason is not None and setting == "budget_bytes" and name not in listed:
                if target is not None and before > target:
                    raise CompressionError(
                        f"{key}: budget_bytes {value:,}: field {name!r} cannot fit its share: {reason}; "
                        "raise budget_bytes or select fewer fields"
                    )
                reason = f"already within its share of budget_bytes ({before:,} B <= {target:,} B)"
            if reason is not None and name in listed:
                raise refuse_listed(key, "fields", name, reason)
            out[name] = (decide(fqn, "table", before, after, reason), params)
        return out

    def compress_embeddings(self, model: CTRModel, data: EncodedDataset | None) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        plans = self._plans if self._plans is not None else self._plan(model)
        for name, (decision, params) in plans.items():
            if not self.decided(decision) or params is None:
                continue
            old = model.embedding.tables[name]
            weight = old.materialize().float()
            with seeded(self.config.seed + len(fields)):  # random rows and draws, reproducible
                new = self.build(name, weight, params, getattr(old, "padding_idx", 0)).to(weight.device)
            rows = new.materialize()
            err = float((rows - weight).norm() / weight.norm().clamp_min(1e-30))
            replace_module(model, f"embedding.tables.{name}", new)  # hands over links to the old table
            fields[name] = {
                **params,
                "relative_error": err,
                "bytes": {"before": decision["bytes_before"], "after": new.nbytes()},
            }
        return {"fields": fields, "sizing": dict([self.config.sizing()]), "init": self.config.init}

    def random_std(self, weight: Tensor) -> float:
        """Std of the trained rows (init ``random`` draws at this scale)."""
        return float(weight.std()) if weight.numel() > 1 else 1e-4


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block under ``torch.manual_seed(seed)`` without touching the caller's RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _fmt(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())


__all__ = ["DEFAULT_RATIO", "BaselineConfig", "TableBaseline"]
