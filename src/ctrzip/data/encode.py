"""Encode raw CTR files into ctrzip's on-disk dataset layout, out of core.

Two passes; memory is a few blocks plus ~50 bytes per distinct raw value on the keyed fast
path (hash table slot, raw key, lookup word, training count; no string tables, see
``ColumnPlan.lazy``), and only values reaching ``min_count`` are decoded back to text:
1. read blocks -> validate -> provisional codes (``ColumnPlan``) -> assign rows to splits ->
   append to per-split temporary binaries, counting codes of training rows;
2. build vocabularies from the training counts (``min_count``, frequency order) and map each
   temporary binary through per-field lookup tables into ``{split}_{sparse,dense,label}.npy``
   (written with ``np.lib.format.open_memmap`` in chunks).
The fitted vocabularies are saved (``vocab/<field>.json``, ``encoder.json``) so new files are
encoded with the same mapping by ``Encoder.transform``.

Speed: a reader thread splits each block of raw Criteo/Avazu text into exact 64-bit keys of
its short fields (``readers.fields``), which the main thread codes through a hash table and
per-value lookup tables (``keyed``); other blocks take the Polars path. Pass 2 converts
chunks in a small thread pool.
"""

from __future__ import annotations

import ctypes
import json
import shutil
import sys
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ctrzip.data import jit
from ctrzip.data.columns import CodedBlock, ColumnPlan
from ctrzip.data.config import SPLIT_NAMES, DatasetConfig, load_dataset_config
from ctrzip.data.counts import CodeCounter, Moments, build_vocab, category_lut, id_counts
from ctrzip.data.dataset import save_counts
from ctrzip.data.progress import EncodeProgress, prefetch
from ctrzip.data.readers import BadRowError, BadRows, DataFormatError, RawTable, Reader, open_reader
from ctrzip.data.schema import FeatureSchema, FieldSpec
from ctrzip.data.split import SplitAssigner
from ctrzip.data.splitfiles import NpyWriter, SplitFiles

ENCODER_VERSION = 1
# pass 2 chunks: rows per chunk (arrays stay well under glibc's 32 MB mmap threshold, so
# their memory is reused instead of faulted in afresh) and chunks converted ahead of writing
_WRITE_ROWS = 1 << 16
_WRITE_AHEAD = 2
_TRIM_EVERY = 8  # blocks between returning freed heap pages to the OS (each return costs refaults)
Inputs = str | Path | Sequence[str | Path] | Mapping[str, str | Path]


@dataclass
class EncodeReport:
    """What an encode run produced (also recorded in ``feature_map.json`` meta)."""

    out_dir: str
    dataset: str
    rows: dict[str, int]
    bad_rows: dict[str, Any]
    vocab_sizes: dict[str, int]
    sources: list[str]
    seconds: float
    rows_per_s: float = field(default=0.0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Stats:
    """Pass-1 accumulators: training counts of provisional codes, dense moments."""

    codes: CodeCounter
    moments: dict[str, Moments]


class Encoder:
    """Fit vocabularies on the training split and encode files with them.

    Args:
        config: a ``DatasetConfig``, a built-in schema name, a YAML path or a mapping.
    """

    def __init__(self, config: DatasetConfig | str | Path | dict[str, Any]) -> None:
        self.config = load_dataset_config(config)
        self.vocabs: dict[str, list[Any]] = {}
        self.normalizers: dict[str, dict[str, Any]] = {}
        self.meta: dict[str, Any] = {}

    @property
    def fitted(self) -> bool:
        return bool(self.vocabs) or bool(self.normalizers)

    # --- public API ----------------------------------------------------------------------
    def fit_encode(self, inputs: Inputs, out_dir: str | Path, *, progress: bool = True) -> EncodeReport:
        """Split ``inputs``, fit on the training split, write every split to ``out_dir``."""
        cfg = self.config
        sources = _sources(cfg, inputs)
        for path, _ in sources:
            if not path.is_file():
                raise DataFormatError(f"{path}: input file not found")
        assigner = None
        if cfg.split.method != "files":
            total = None
            if cfg.split.method == "sequential":
                total = sum(open_reader(cfg, p).count_rows() for p, _ in sources)
            assigner = SplitAssigner(cfg.split, total)
        names = cfg.split.names if cfg.split.method != "files" else tuple(s for _, s in sources)
        return self._run(sources, assigner, tuple(n for n in names if n), Path(out_dir), progress, fit=True)

    def transform(
        self, input: str | Path, out_dir: str | Path, split: str = "test", *, progress: bool = False
    ) -> EncodeReport:
        """Encode a new file with the fitted vocabularies into ``{split}_*.npy`` of ``out_dir``."""
        if not self.fitted:
            raise RuntimeError("Encoder.transform needs a fitted encoder (fit_encode or Encoder.load)")
        if not Path(input).is_file():
            raise DataFormatError(f"{input}: input file not found")
        if split not in SPLIT_NAMES:
            raise ValueError(f"split must be one of {SPLIT_NAMES}, got {split!r}")
        return self._run([(Path(input), split)], None, (split,), Path(out_dir), progress, fit=False)

    def save(self, out_dir: str | Path) -> None:
        """Write ``encoder.json`` and ``vocab/<field>.json`` (value -> id = position + 1)."""
        out = Path(out_dir)
        (out / "vocab").mkdir(parents=True, exist_ok=True)
        state = {"version": ENCODER_VERSION, "config": self.config.to_dict(), "normalizers": self.normalizers}
        (out / "encoder.json").write_text(json.dumps(state, indent=2))
        for name, values in self.vocabs.items():
            doc = {"field": name, "oov_id": len(values) + 1, "values": values}
            (out / "vocab" / f"{name}.json").write_text(json.dumps(doc))

    @classmethod
    def load(cls, out_dir: str | Path) -> Encoder:
        """The encoder saved in an encoded dataset folder."""
        root = Path(out_dir)
        path = root / "encoder.json"
        if not path.exists():
            raise FileNotFoundError(f"{root}: no encoder.json (not encoded by ctrzip.data.encode?)")
        state = json.loads(path.read_text())
        if state.get("version") != ENCODER_VERSION:
            raise ValueError(f"{path}: encoder version {state.get('version')} is not {ENCODER_VERSION}")
        enc = cls(_without_unused_split_keys(state["config"]))
        enc.normalizers = state["normalizers"]
        for f in enc.config.features:
            if not f.is_dense:
                enc.vocabs[f.name] = json.loads((root / "vocab" / f"{f.name}.json").read_text())["values"]
        fmap = root / "feature_map.json"
        if fmap.exists():
            enc.meta = FeatureSchema.load(fmap).meta
        return enc

    def schema(self, meta: dict[str, Any] | None = None) -> FeatureSchema:
        """The ``FeatureSchema`` of the encoded data (field order = config order)."""
        specs = []
        for f in self.config.features:
            if f.is_dense:
                specs.append(FieldSpec(f.name, "dense", source="numeric"))
            else:
                kind = "sequence" if f.type == "sequence" else "categorical"
                size = len(self.vocabs[f.name]) + 2
                specs.append(FieldSpec(f.name, kind, vocab_size=size, max_len=f.width, source=f.type))
        return FeatureSchema(tuple(specs), label=self.config.label, meta=dict(meta or self.meta))

    # --- passes ----------------------------------------------------------------------------
    def _run(
        self,
        sources: list[tuple[Path, str | None]],
        assigner: SplitAssigner | None,
        names: tuple[str, ...],
        out: Path,
        progress: bool,
        fit: bool,
    ) -> EncodeReport:
        start = time.perf_counter()
        plan = ColumnPlan(self.config)
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / ".encode_tmp"
        files = SplitFiles(tmp, names, plan.width, len(plan.dense))
        bad = BadRows(self.config.on_bad_rows)
        try:
            with EncodeProgress(progress, sum(p.stat().st_size for p, _ in sources)) as bar:
                stats = self._scan(plan, sources, assigner, names, files, bad, bar, fit)
                self._check_rows(files.rows, names, fit, bad)
                luts = self._fit(plan, stats) if fit else self._luts(plan)
                plan.release()
                counts = self._counts(stats, luts) if fit else None
                self._write(plan, luts, files, out, bar)
        finally:
            files.close()
            shutil.rmtree(tmp, ignore_errors=True)
        seconds = time.perf_counter() - start
        rows = dict(files.rows)
        report = EncodeReport(
            out_dir=str(out),
            dataset=self.config.name,
            rows=rows,
            bad_rows=bad.to_dict(),
            vocab_sizes={k: len(v) + 2 for k, v in self.vocabs.items()},
            sources=[str(p) for p, _ in sources],
            seconds=round(seconds, 3),
            rows_per_s=round(sum(rows.values()) / max(seconds, 1e-9), 1),
        )
        self._save_outputs(out, report, counts, fit)
        return report

    def _scan(
        self,
        plan: ColumnPlan,
        sources: list[tuple[Path, str | None]],
        assigner: SplitAssigner | None,
        names: tuple[str, ...],
        files: SplitFiles,
        bad: BadRows,
        bar: EncodeProgress,
        fit: bool,
    ) -> _Stats:
        stats = _Stats(
            CodeCounter({f.name: f.width for f in plan.sparse}), {f.name: Moments() for f in plan.dense}
        )
        blocks = 0
        for path, fixed in sources:
            reader = open_reader(self.config, path)
            seen, bad_before = 0, bad.count
            tables = reader.iter_tables(plan.source_columns, bad, plan.key_columns)
            try:
                for table in _pipeline(plan, tables):
                    block = plan.apply(table, bad, str(path))
                    if seen == 0 and len(block.rows) and block.rows[0] > 0 and (hint := reader.describe()):
                        bad.notes.append(f"{path}: the first {block.rows[0]} rows are bad; {hint}")
                    seen += len(block.label)
                    blocks += self._store(block, fixed, assigner, names, files, stats, fit)
                    bar.advance(table.nbytes, len(block.label))
                    if blocks % _TRIM_EVERY == 0:
                        _trim()
            except BadRowError as err:
                if seen == 0 and (hint := reader.describe()):  # the very first rows are bad
                    raise BadRowError(f"{err}; the start of {path.name}: {hint}") from None
                raise
            if seen == 0:
                raise DataFormatError(self._no_rows(reader, path, bad, bad.count - bad_before))
        return stats

    @staticmethod
    def _no_rows(reader: Reader, path: Path, bad: BadRows, n_bad: int) -> str:
        """Why a file gave no usable row, with what its start looks like."""
        hint = reader.describe()
        if n_bad == 0:
            what = "no data rows" + (" after the header line" if reader.has_header else "")
        else:
            example = next((e for e in bad.examples if e.startswith(f"{path}:")), None)
            what = f"all {n_bad} rows are bad" + (f" (first: {example})" if example else "")
        return f"{path}: {what}" + (f"; the start of the file: {hint}" if hint else "")

    @staticmethod
    def _store(
        block: CodedBlock,
        fixed: str | None,
        assigner: SplitAssigner | None,
        names: tuple[str, ...],
        files: SplitFiles,
        stats: _Stats,
        fit: bool,
    ) -> int:
        """Append one coded block to its splits' files and count the training rows; 1."""
        n = len(block.label)
        if fixed is not None:
            split = np.full(n, names.index(fixed), dtype=np.int8)
        else:
            assert assigner is not None
            split = assigner.assign(block.rows)
        if jit.ENABLED:  # one compiled pass groups the rows by split
            codes_all, dense_all, label_all, bounds = jit.group_by_split(
                split, len(names), block.codes, block.dense, block.label
            )
        else:  # one stable gather groups rows by split (cheaper than a mask per split)
            order = np.argsort(split, kind="stable")
            bounds = np.searchsorted(split[order], np.arange(len(names) + 1))
            codes_all, dense_all, label_all = block.codes[order], block.dense[order], block.label[order]
        for i, name in enumerate(names):
            a, b = bounds[i], bounds[i + 1]
            if a == b:
                continue
            files.append(name, codes_all[a:b], dense_all[a:b], label_all[a:b])
            if fit and i == 0:
                stats.codes.add(codes_all[a:b])
                for j, mo in enumerate(stats.moments.values()):
                    mo.add(dense_all[a:b, j])
        return 1

    def _check_rows(self, rows: dict[str, int], names: tuple[str, ...], fit: bool, bad: BadRows) -> None:
        """An encode that writes no rows, or fits on no training rows, is an error."""
        skipped = f" ({bad.count} bad rows skipped)" if bad.count else ""
        if sum(rows.values()) == 0:
            raise DataFormatError(f"{self.config.name}: no rows to write{skipped}")
        if fit and rows[names[0]] == 0:
            got = ", ".join(f"{k} {v}" for k, v in rows.items())
            raise DataFormatError(
                f"{self.config.name}: the {names[0]} split is empty ({got}){skipped}: nothing to fit "
                "the vocabularies on; check split.ratios or the train input"
            )

    def _fit(self, plan: ColumnPlan, stats: _Stats) -> dict[str, np.ndarray]:
        """Fit vocabularies and normalizers; returns each sparse field's code -> id table.

        Only values reaching ``min_count`` are read back as text (most raw values are rare),
        and the lookup table is filled by code, not by a join over every value.
        """
        self.vocabs, self.normalizers, luts = {}, {}, {}
        for f in plan.sparse:
            n = plan.n_values(f.name)
            counts = np.zeros(n + 1, dtype=np.int64)
            seen = stats.codes.counts[f.name][: len(counts)]
            counts[: len(seen)] = seen
            kept = np.flatnonzero(counts[1:] >= self.config.min_count_of(f))
            vocab, order = build_vocab(plan.values(f.name, kept), counts[1:][kept], None, ordered=True)
            lut = np.full(n + 1, len(vocab) + 1, dtype=np.int32)
            lut[0] = 0
            lut[kept[order] + 1] = np.arange(1, len(vocab) + 1, dtype=np.int32)
            self.vocabs[f.name], luts[f.name] = vocab, lut
        for f in plan.dense:
            assert f.normalizer is not None
            norm = stats.moments[f.name].normalizer(f.normalizer)
            if not (np.isfinite(norm["shift"]) and np.isfinite(norm["scale"]) and norm["scale"] > 0):
                raise DataFormatError(
                    f"field {f.name}: the fitted {f.normalizer} normalizer is not finite: {norm}"
                )
            self.normalizers[f.name] = norm
        return luts

    def _luts(self, plan: ColumnPlan) -> dict[str, np.ndarray]:
        """Per sparse field: provisional code -> final id, by value (a fitted encoder)."""
        return {f.name: category_lut(plan.values(f.name), self.vocabs[f.name]) for f in plan.sparse}

    def _counts(self, stats: _Stats, luts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Training counts per final id, from the provisional counts (no second read)."""
        out = {}
        for name, lut in luts.items():
            prov = stats.codes.counts[name][: len(lut)]  # past the last code: zeros
            out[name] = id_counts(lut[: len(prov)], prov, len(self.vocabs[name]) + 2)
        return out

    def _write(
        self, plan: ColumnPlan, luts: dict[str, np.ndarray], files: SplitFiles, out: Path, bar: EncodeProgress
    ) -> None:
        """Pass 2: one gather through the concatenated lookup tables per chunk of rows.

        Chunks are converted in a small thread pool (the gathers release the GIL) while the
        main thread reads and writes in order; at most ``_WRITE_AHEAD`` chunks are in flight.
        """
        big = np.concatenate([luts[f.name] for f in plan.sparse]) if plan.sparse else np.zeros(1, np.int32)
        starts = np.cumsum([0] + [len(luts[f.name]) for f in plan.sparse])[:-1]
        off_type = np.int32 if len(big) < np.iinfo(np.int32).max else np.int64
        col_off = np.repeat(starts, [f.width for f in plan.sparse]).astype(off_type)
        norm = [self.normalizers[f.name] for f in plan.dense]
        shift = np.array([n["shift"] for n in norm], dtype=np.float64)
        scale = np.array([n["scale"] for n in norm], dtype=np.float64)

        def convert(codes: np.ndarray, raw: np.ndarray, y: np.ndarray, split: str) -> tuple[np.ndarray, ...]:
            idx = np.add(codes, col_off, out=codes) if off_type is np.int32 else codes + col_off
            dense = normalize_dense(raw, shift, scale)
            if not np.isfinite(dense).all():
                self._not_finite(plan, dense, raw, split)
            return big.take(idx), dense, y

        bar.start_write(sum(files.rows.values()))
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="ctrzip-write") as pool:
            for name, n in files.rows.items():
                writers = (
                    NpyWriter(out / f"{name}_sparse.npy", np.int32, (n, plan.width)),
                    NpyWriter(out / f"{name}_dense.npy", np.float32, (n, len(plan.dense))),
                    NpyWriter(out / f"{name}_label.npy", np.float32, (n,)),
                )
                pending: deque[Future[tuple[np.ndarray, ...]]] = deque()
                for chunk in files.chunks(name, _WRITE_ROWS):
                    pending.append(pool.submit(convert, *chunk, name))
                    if len(pending) > _WRITE_AHEAD:
                        self._write_chunk(writers, pending.popleft().result(), bar)
                while pending:
                    self._write_chunk(writers, pending.popleft().result(), bar)
                for w in writers:
                    w.close()

    def _not_finite(self, plan: ColumnPlan, dense: np.ndarray, raw: np.ndarray, split: str) -> None:
        """Raise naming the dense field whose normalized values overflow float32 (a raw value
        far outside the training range with a small fitted scale)."""
        j = int(np.flatnonzero(~np.isfinite(dense).all(axis=0))[0])
        f = plan.dense[j]
        value = raw[~np.isfinite(dense[:, j]), j][0]
        raise DataFormatError(
            f"field {f.name}: raw value {value:g} in the {split} split normalizes to a non-finite "
            f"float32 with the fitted {self.normalizers[f.name]}: clean the value or use "
            "normalizer: minmax fitted on data that covers it"
        )

    @staticmethod
    def _write_chunk(
        writers: tuple[NpyWriter, ...], arrays: tuple[np.ndarray, ...], bar: EncodeProgress
    ) -> None:
        for w, a in zip(writers, arrays, strict=True):
            w.write(a)
        bar.advance_write(len(arrays[-1]))

    def _save_outputs(
        self, out: Path, report: EncodeReport, counts: dict[str, np.ndarray] | None, fit: bool
    ) -> None:
        if fit:
            cfg = self.config
            self.meta = {
                "dataset": cfg.name,
                "format": cfg.format,
                "sources": report.sources,
                "split": {"method": cfg.split.method, "ratios": cfg.split.ratios, "seed": cfg.split.seed},
                "rows": report.rows,
                "bad_rows": report.bad_rows,
                "min_count": {f.name: cfg.min_count_of(f) for f in cfg.features if not f.is_dense},
                "normalizers": self.normalizers,
                "dense_missing": "0 after normalization (the training mean for zscore)",
                "encoder_version": ENCODER_VERSION,
            }
            assert counts is not None
            save_counts(out / "counts.npz", counts)
        elif (out / "feature_map.json").exists():
            return
        self.schema().save(out / "feature_map.json")
        self.save(out)


def _pipeline(plan: ColumnPlan, tables: Iterator[RawTable]) -> Iterator[RawTable]:
    """Blocks read and prepared in one thread; with the compiled kernels, their values coded
    in a second one (the hash table is the largest serial step), so the main thread only
    learns new values, looks up and stores. Abandoning the iterator stops both threads."""
    prepared = prefetch(plan.prepare(t) for t in tables)
    if not jit.ENABLED:
        yield from prepared
        return
    coded = prefetch(plan.code(t) for t in prepared)
    try:
        yield from coded
    finally:
        coded.close()  # stops and joins the coding thread, which was reading ``prepared``
        prepared.close()


def normalize_dense(raw: np.ndarray, shift: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Dense model inputs from raw values: ``(raw - shift) / scale`` per column, missing (NaN) -> 0.

    Args:
        raw: float32 [n, Dn] raw values (NaN = missing).
        shift, scale: float64 [Dn], the fitted normalizers (``Encoder.normalizers``).
    Returns:
        float32 [n, Dn]; a value overflowing float32 is inf (callers check and report it).
    """
    with np.errstate(over="ignore"):
        return np.nan_to_num((raw - shift) / scale, nan=0.0).astype(np.float32)


def _load_trim() -> Any:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


_MALLOC_TRIM = _load_trim() if sys.platform.startswith("linux") else None


def _trim() -> None:
    """Hand the allocator's free pages back to the OS after a block: glibc keeps the freed
    temporaries of many blocks (hundreds of MB at scale) otherwise."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _without_unused_split_keys(config: dict[str, Any]) -> dict[str, Any]:
    """A saved config as ``SplitConfig`` now takes it: encoders saved before it refused
    unused split keys recorded the defaults of ``ratios`` / ``seed`` for methods that do
    not use them; those values never had an effect."""
    split = dict(config.get("split") or {})
    method = split.get("method", "random")
    drop = ("ratios", "seed") if method == "files" else ("seed",) if method == "sequential" else ()
    for key in drop:
        split.pop(key, None)
    return {**config, "split": split}


def _sources(cfg: DatasetConfig, inputs: Inputs) -> list[tuple[Path, str | None]]:
    """Input files with their fixed split (``files`` method) or None (split by row)."""
    if cfg.split.method == "files":
        if not isinstance(inputs, Mapping):
            raise ValueError("split method 'files' needs inputs {'train': ..., 'valid': ..., 'test': ...}")
        unknown = sorted(set(inputs) - set(SPLIT_NAMES))
        if unknown or "train" not in inputs:
            raise ValueError(
                f"files inputs need a 'train' file and splits among {SPLIT_NAMES}; got {list(inputs)}"
            )
        return [(Path(inputs[s]), s) for s in SPLIT_NAMES if s in inputs and inputs[s] is not None]
    if isinstance(inputs, Mapping):
        raise ValueError(f"split method {cfg.split.method!r} takes one input file (or a list), not a mapping")
    paths = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    if not paths:
        raise ValueError("no input files")
    return [(Path(p), None) for p in paths]


def encode_dataset(
    config_or_name: DatasetConfig | str | Path | dict[str, Any],
    inputs: Inputs,
    out_dir: str | Path,
    *,
    progress: bool = True,
    overrides: Sequence[str] = (),
) -> EncodeReport:
    """Encode raw files into ``out_dir`` (see module docstring).

    Args:
        config_or_name: ``"criteo"``, ``"avazu"``, a YAML path, a mapping or a ``DatasetConfig``.
        inputs: one file (or a list) for ``random``/``sequential`` splits, or
            ``{"train": f, "valid": f, "test": f}`` for ``files``.
        out_dir: output folder (created).
        progress: show rows/s and ETA on stderr.
        overrides: ``key=value`` config overrides (``split.seed=1``).
    """
    config = load_dataset_config(config_or_name, tuple(overrides))
    return Encoder(config).fit_encode(inputs, out_dir, progress=progress)
