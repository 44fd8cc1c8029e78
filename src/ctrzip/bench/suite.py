"""Benchmark suites: the grid of cells ``ctrzip bench --suite NAME`` runs, one YAML per suite.

The shipped suites live in ``ctrzip/configs/bench/<name>.yaml`` (package data). A suite file::

    description: what the suite measures
    dense: {embedding_dim: 16, mlp: [400, 400, 400], epochs: 1, lr: 1.0e-3, batch_size: 4096}
    timing: {batch_size: 10000, rounds: 3, threads: 1}
    cells:
      - label: int8 rows
        steps:
          - method: int8                # a registered method or MEC variant
            settings: {eval_split: null}
      - label: budget 8x
        steps:
          - method: budget
            whole_model_ratio: 8        # sets mb = dense model bytes / 8 / 2^20
      - label: lowrank MLP r64
        control: dense + 1 ep fine-tune # also paired with that cell (same extra training)
        steps: [{method: lowrank, settings: {rank: 64}}]
      - label: dense + 1 ep fine-tune
        steps: [{method: finetune, settings: {epochs: 1, lr: 1.0e-4}}]

Each cell's steps are applied in order to a copy of the trained dense model. ``seed``,
``device`` and ``progress`` are filled in for every method config that has them and whose
settings do not name them (the cell's seed, ``--device``, off). Loading is strict: an unknown
key, an unknown method or a method setting it does not have raises ``ConfigError`` naming the
file and the key path.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ctrzip.config import ConfigError, from_dict, load_yaml

SUITES = ("mec", "lowrank", "budget", "baselines")


@dataclass
class DenseSection:
    """How the dense model of each (model, seed) is built and trained (CPU or ``--device``)."""

    embedding_dim: int = 16
    mlp: list[int] = field(default_factory=lambda: [400, 400, 400])
    epochs: int = 1
    lr: float = 1e-3
    batch_size: int = 4096
    embedding_l2: float = 0.0

    def __post_init__(self) -> None:
        if self.embedding_dim < 1 or self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("embedding_dim, epochs and batch_size must be >= 1")


@dataclass
class TimingSection:
    """CPU inference timing of each cell against its dense model (interleaved rounds)."""

    batch_size: int = 10_000
    rounds: int = 3
    threads: int = 1

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.rounds < 0 or self.threads < 1:
            raise ConfigError("batch_size >= 1, rounds >= 0 and threads >= 1 are required")


@dataclass
class FinetuneStep:
    """Step ``method: finetune``: train the model further (the same-protocol control of a
    fine-tuning method, spec/PROTOCOL.md 1). With ``keep_start`` the weights before the step
    are kept when validation AUC does not improve, as the methods' guarded fine-tunes do."""

    epochs: int = 1
    lr: float = 1e-4
    batch_size: int = 4096
    keep_start: bool = True
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError("epochs and batch_size must be >= 1 and lr > 0")


@dataclass
class Step:
    """One ``compress`` call: ``method`` with ``settings``; ``whole_model_ratio`` R sets the
    method's ``mb`` to the dense model's bytes / R (for ``budget``)."""

    method: str
    settings: dict[str, Any] = field(default_factory=dict)
    whole_model_ratio: float | None = None


@dataclass
class Cell:
    """A labelled sequence of steps (one method setting of the grid). ``control`` names the
    cell of the same suite this one is also paired with (its same-protocol control, e.g. the
    dense model fine-tuned as long as this cell's method fine-tunes)."""

    label: str
    steps: list[Step]
    control: str | None = None


@dataclass
class Suite:
    """A parsed suite file (``name`` and ``source`` are filled by :func:`load_suite`)."""

    description: str
    cells: list[Cell]
    dense: DenseSection = field(default_factory=DenseSection)
    timing: TimingSection = field(default_factory=TimingSection)
    name: str = ""
    source: str = ""

    def dense_key(self) -> str:
        """Hash of the dense section: dense models are cached and shared under it."""
        blob = json.dumps(dataclasses.asdict(self.dense), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:10]


def cell_hash(suite: Suite, cell: Cell) -> str:
    """Hash of what a cell computes (its steps, the dense and timing sections): a changed
    setting gives a new cell instead of reusing an old result."""
    blob = {"steps": [dataclasses.asdict(s) for s in cell.steps], "dense": suite.dense_key()}
    blob["timing"] = dataclasses.asdict(suite.timing)
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:10]


def method_class(name: str, where: str) -> tuple[type, Any]:
    """``(config class, preset or None)`` of method or MEC variant ``name``.

    Raises:
        ConfigError: unknown name; the message names ``where`` and the valid names.
    """
    from ctrzip.compression import METHODS
    from ctrzip.compression.mec.method import VARIANTS, MECConfig

    if name == "finetune":
        return FinetuneStep, None
    if name in METHODS:
        return METHODS.get(name).config_class, None
    if name in VARIANTS:
        return MECConfig, MECConfig.variant(name)
    valid = [*METHODS.keys(), *(v for v in VARIANTS if v not in METHODS), "finetune"]
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"{where}: unknown method {name!r}{hint} (valid: {', '.join(valid)})")


def build_config(step: Step, where: str, injected: dict[str, Any] | None = None) -> Any:
    """The method config of ``step``: its settings, then ``injected`` keys the config has and
    the settings do not name (seed, device, progress, mb).

    Raises:
        ConfigError: unknown method or setting, bad value, or ``whole_model_ratio`` for a method
            without an ``mb`` setting; the message names ``where``.
    """
    cls, preset = method_class(step.method, f"{where}.method")
    names = {f.name for f in dataclasses.fields(cls)}
    if step.whole_model_ratio is not None:
        if "mb" not in names:
            raise ConfigError(
                f"{where}.whole_model_ratio: method {step.method!r} has no 'mb' setting; "
                "size it with its own settings instead"
            )
        if step.whole_model_ratio <= 1:
            raise ConfigError(f"{where}.whole_model_ratio must be > 1, got {step.whole_model_ratio}")
        if "mb" in step.settings:
            raise ConfigError(f"{where}: give settings.mb or whole_model_ratio, not both")
    extra = {k: v for k, v in (injected or {}).items() if k in names and k not in step.settings}
    return from_dict(cls, {**step.settings, **extra}, source=where, base=preset)


def suite_path(name: str) -> Path:
    """The shipped YAML of suite ``name``."""
    return Path(str(resources.files("ctrzip") / "configs" / "bench" / f"{name}.yaml"))


def load_suite(name_or_path: str | Path) -> Suite:
    """Parse and check a suite: a shipped name (``budget``) or a YAML path.

    Every method step is built once with placeholder seed/size so that unknown settings are
    refused now, not hours into a run.

    Raises:
        ConfigError: missing file, unknown key (naming file and key path), unknown method or
            setting, duplicate cell labels, or an empty grid.
    """
    path = Path(name_or_path)
    if str(name_or_path) in SUITES:
        path = suite_path(str(name_or_path))
    elif path.suffix not in (".yaml", ".yml"):
        raise ConfigError(f"--suite {name_or_path}: unknown suite (valid: {', '.join([*SUITES, 'all'])})")
    raw = load_yaml(path)
    suite = from_dict(Suite, {k: v for k, v in raw.items()}, source=str(path))
    if "name" in raw or "source" in raw:
        raise ConfigError(f"{path}: name/source are set from the file; remove them")
    suite.name = path.stem
    suite.source = str(path)
    if not suite.cells:
        raise ConfigError(f"{path}: cells is empty; add at least one cell")
    seen: set[str] = set()
    labels = {c.label for c in suite.cells}
    for i, cell in enumerate(suite.cells):
        if cell.label in seen or cell.label == "dense":
            raise ConfigError(f"{path}: cells[{i}].label {cell.label!r} is used twice (or is 'dense')")
        seen.add(cell.label)
        if not cell.steps:
            raise ConfigError(f"{path}: cells[{i}].steps is empty")
        if cell.control is not None and (cell.control == cell.label or cell.control not in labels):
            raise ConfigError(
                f"{path}: cells[{i}].control {cell.control!r} is not another cell of this suite "
                f"(cells: {', '.join(sorted(labels))})"
            )
        for j, step in enumerate(cell.steps):
            placeholder = {"mb": 1.0} if step.whole_model_ratio is not None else {}
            build_config(step, f"{path}: cells[{i}].steps[{j}]", placeholder)
    return suite


def load_suites(name: str) -> list[Suite]:
    """``all`` -> every shipped suite; otherwise the one suite ``name`` (or YAML path)."""
    return [load_suite(n) for n in SUITES] if name == "all" else [load_suite(name)]
