"""Dataset schema configs (YAML, close to FuxiCTR's ``dataset_config``), strictly validated.

Why: the encoder, the CLI and the built-in ``criteo`` / ``avazu`` schemas all describe raw data
the same way, and a misspelled key must fail loudly with ``file: key`` instead of being ignored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from ctrzip.config import ConfigError, apply_overrides, from_dict, load_yaml, to_dict

FeatureType = Literal["categorical", "numeric", "sequence"]
Format = Literal["criteo_tsv", "avazu_csv", "csv", "parquet", "libsvm"]
SPLIT_NAMES = ("train", "valid", "test")
MIN_BLOCK_BYTES = 1024


@dataclass
class FeatureConfig:
    """One model field and the raw column it comes from.

    Args:
        name: field name in the encoded schema (an identifier).
        type: ``categorical`` (one token per row), ``numeric`` (a number) or ``sequence``
            (``separator``-joined tokens, padded/truncated to ``max_len``).
        source: raw column it is read from (default: ``name``). For ``libsvm`` the field key
            (``field:feat:val``) or the 0-based pair position (``feat:val``); default: its index.
        min_count: keep a value only if it occurs at least this often in the training split
            (default: the dataset's ``min_count``); rarer and unseen values map to OOV. Not
            for dense fields (they have no vocabulary).
        transform: numeric only: ``dense`` (the default, FuxiCTR's convention: one float32
            value, normalized, embedded by a Linear) or ``log_square_bucket`` (asked for
            explicitly, as the built-in ``criteo`` schema does: v > 2 -> floor(ln(v)^2), else
            int(v); the token becomes a categorical id).
        normalizer: dense only: ``zscore`` (default) or ``minmax``, fitted on the training split;
            a missing value encodes as 0 after normalization (the training mean for zscore, the
            training minimum for minmax), recorded in the dataset's metadata.
        separator: sequence only: token separator.
        max_len: sequence only: tokens kept per row (first ``max_len``; pad id 0 after).
        derive: categorical only: read a ``YYMMDDHH`` timestamp column and keep its
            ``hour_of_day`` (00-23) or ``weekday`` (1 = Monday .. 7 = Sunday).
    """

    name: str
    type: FeatureType
    source: str | None = None
    min_count: int | None = None
    transform: Literal["log_square_bucket", "dense"] | None = None
    normalizer: Literal["zscore", "minmax"] | None = None
    separator: str | None = None
    max_len: int | None = None
    derive: Literal["hour_of_day", "weekday"] | None = None

    def __post_init__(self) -> None:
        where = f"feature {self.name}"
        if not self.name.isidentifier():
            raise ValueError(f"{where}: name must be an identifier (letters, digits, _)")
        if self.min_count is not None and self.min_count < 1:
            raise ValueError(f"{where}: min_count must be >= 1")
        if self.type == "numeric":
            self.transform = self.transform or "dense"
            if self.transform == "dense":
                self.normalizer = self.normalizer or "zscore"
                if self.min_count is not None:
                    raise ValueError(
                        f"{where}: min_count applies to ids; a dense numeric field has none "
                        "(remove min_count, or set transform: log_square_bucket)"
                    )
            elif self.normalizer is not None:
                raise ValueError(f"{where}: normalizer applies to transform: dense only")
        elif self.transform is not None or self.normalizer is not None:
            raise ValueError(f"{where}: transform/normalizer apply to numeric features only")
        if self.type == "sequence":
            if not self.separator:
                raise ValueError(f"{where}: a sequence feature needs a separator")
            if self.max_len is None or self.max_len < 1:
                raise ValueError(f"{where}: a sequence feature needs max_len >= 1")
        elif self.separator is not None or self.max_len is not None:
            raise ValueError(f"{where}: separator/max_len apply to sequence features only")
        if self.derive is not None and self.type != "categorical":
            raise ValueError(f"{where}: derive applies to categorical features only")

    @property
    def column(self) -> str:
        return self.source if self.source is not None else self.name

    @property
    def is_dense(self) -> bool:
        return self.type == "numeric" and self.transform == "dense"

    @property
    def width(self) -> int:
        """Columns taken in the sparse matrix (0 for dense fields)."""
        if self.is_dense:
            return 0
        return self.max_len if self.type == "sequence" else 1


@dataclass
class SplitConfig:
    """How rows are assigned to train/valid/test.

    Args:
        method: ``random`` (hash of (seed, row index): deterministic, chunking-independent),
            ``sequential`` (file order, e.g. time-ordered logs) or ``files`` (one input per split).
        ratios: fractions for (train, valid) or (train, valid, test); they must sum to 1
            (default 0.8/0.1/0.1; not for ``files``).
        seed: seed of the random split (default 2024; ``random`` only).

    A setting the method does not use is refused rather than ignored.
    """

    method: Literal["random", "sequential", "files"] = "random"
    ratios: list[float] | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.method == "files":
            if self.ratios is not None or self.seed is not None:
                raise ValueError(
                    "split.ratios and split.seed do not apply to split method 'files' "
                    "(each input file is one split): remove them"
                )
            return
        if self.seed is not None and self.method != "random":
            raise ValueError(f"split.seed applies to method 'random' only, not {self.method!r}: remove it")
        if self.method == "random" and self.seed is None:
            self.seed = 2024
        if self.ratios is None:
            self.ratios = [0.8, 0.1, 0.1]
        if len(self.ratios) not in (2, 3) or any(r < 0 for r in self.ratios):
            raise ValueError(f"split.ratios must be 2 or 3 non-negative numbers, got {self.ratios}")
        if not math.isclose(sum(self.ratios), 1.0, abs_tol=1e-6):
            raise ValueError(f"split.ratios must sum to 1, got {self.ratios} (sum {sum(self.ratios)})")

    @property
    def names(self) -> tuple[str, ...]:
        return SPLIT_NAMES[: len(self.ratios)] if self.ratios is not None else SPLIT_NAMES


@dataclass
class DatasetConfig:
    """A raw dataset: file format, label, fields, vocabulary threshold, split, bad-row policy.

    Args:
        name: dataset name (recorded in the encoded metadata).
        format: ``criteo_tsv`` (raw Kaggle file, no header), ``avazu_csv`` (raw Kaggle file,
            header), ``csv`` (header; ``separator``), ``parquet`` or ``libsvm``
            (``label feat:val ...`` or ``label field:feat:val ...``; labels -1/0/1, -1 = 0).
        features: fields in model order.
        label: label column (values 0/1).
        min_count: default per-feature ``min_count``.
        separator: csv only: column separator (default ``,``).
        split: see ``SplitConfig``.
        on_bad_rows: ``error`` (raise naming file, line and column) or ``skip`` (drop, count
            and report them).
        encoding: text formats only: ``utf-8`` (default; a row with invalid UTF-8 bytes is a
            bad row) or ``latin-1`` (every byte is a character; for logs exported as Latin-1).
        block_mb: MiB read per block, at least 0.001 (memory per block is a few times this).
        version: schema version, 1.

    Text inputs may be gzip, bzip2, xz or zstd compressed (detected from the file's first
    bytes, whatever its name) and may start with a UTF-8 byte-order mark.
    """

    name: str
    format: Format
    features: list[FeatureConfig]
    label: str = "label"
    min_count: int = 1
    separator: str | None = None
    split: SplitConfig = field(default_factory=SplitConfig)
    on_bad_rows: Literal["error", "skip"] = "error"
    encoding: Literal["utf-8", "latin-1"] = "utf-8"
    block_mb: float = 32.0
    version: int = 1

    def __post_init__(self) -> None:
        if not self.features:
            raise ValueError("features: at least one feature is required")
        names = [f.name for f in self.features]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"features: duplicate names {dup}")
        if self.min_count < 1:
            raise ValueError("min_count must be >= 1")
        if not self.block_mb * (1 << 20) >= MIN_BLOCK_BYTES:
            raise ValueError(f"block_mb must be at least 1 KiB (0.001), got {self.block_mb}")
        if self.version != 1:
            raise ValueError(f"version: this ctrzip reads dataset schema version 1, got {self.version}")
        if self.encoding != "utf-8" and self.format == "parquet":
            raise ValueError("encoding applies to text formats; parquet strings are always UTF-8")
        if self.separator is not None and (self.format != "csv" or len(self.separator) != 1):
            raise ValueError("separator: a single character, for format csv only")
        if self.format == "libsvm":
            for i, f in enumerate(self.features):
                if f.source is None:
                    f.source = str(i)
                if f.type == "sequence" or f.derive:
                    raise ValueError(f"feature {f.name}: libsvm supports categorical/numeric only")

    def min_count_of(self, feature: FeatureConfig) -> int:
        return feature.min_count if feature.min_count is not None else self.min_count

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


def _builtin_dir() -> Any:
    return resources.files("ctrzip") / "configs"


def builtin_names() -> list[str]:
    """Names of the dataset schemas shipped with ctrzip (``criteo``, ``avazu``, ...)."""
    return sorted(p.name[: -len(".yaml")] for p in _builtin_dir().iterdir() if p.name.endswith(".yaml"))


def load_dataset_config(
    spec: str | Path | dict[str, Any] | DatasetConfig, overrides: list[str] | tuple[str, ...] = ()
) -> DatasetConfig:
    """Build a ``DatasetConfig`` from a built-in name, a YAML path, a dict or a config.

    Args:
        spec: ``"criteo"`` / ``"avazu"`` (built-in), a path to a YAML file, or a mapping.
        overrides: ``key.sub=value`` strings applied before validation (``--set``).
    """
    if isinstance(spec, DatasetConfig):
        if not overrides:
            return spec
        spec = spec.to_dict()
    source: str | None = None
    if isinstance(spec, dict):
        data = dict(spec)
    else:
        path = Path(spec)
        if not path.exists() and str(spec) in builtin_names():
            res = _builtin_dir() / f"{spec}.yaml"
            source = f"{spec} (built-in)"
            data = _safe_yaml(res.read_text(), source)
        elif not path.exists() and path.suffix not in (".yaml", ".yml"):
            raise ConfigError(
                f"unknown dataset schema {str(spec)!r}: not a file nor one of {builtin_names()}"
            )
        else:
            source = str(path)
            data = load_yaml(path)
    apply_overrides(data, list(overrides))
    return from_dict(DatasetConfig, data, source=source)


def _safe_yaml(text: str, source: str) -> dict[str, Any]:
    from ctrzip.config import parse_yaml

    data = parse_yaml(text, source)
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: top level must be a mapping")
    return data
