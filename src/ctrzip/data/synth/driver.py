"""``generate``: plan, calibrate the teacher, then stream chunks to disk (optionally in parallel)."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from ctrzip.config import to_dict
from ctrzip.data.synth.layouts import get_layout
from ctrzip.data.synth.sampler import (
    Plan,
    calibration_rng,
    chunk_rng,
    draw_labels,
    sample_rows,
    token_keys,
)
from ctrzip.data.synth.teacher import TeacherConfig, build_teacher, calibrate
from ctrzip.data.synth.writer import chunk_text
from ctrzip.progress import ProgressBars


@dataclass
class SynthReport:
    """What a generation run produced (also written next to the file as ``<file>.json``)."""

    kind: str
    path: str
    rows: int
    positive_rate: float
    seconds: float
    rows_per_s: float
    oracle_auc: float
    seed: int
    workers: int
    chunk_rows: int
    popularity: str
    bytes: int


def build_plan(
    kind: str,
    rows: int,
    seed: int = 0,
    chunk_rows: int = 100_000,
    teacher: TeacherConfig | None = None,
    popularity: str = "scaled",
) -> tuple[Plan, float]:
    """Fit the popularity laws, draw and calibrate the teacher; returns (plan, oracle AUC).

    The oracle AUC is the noise-free teacher logit's AUC on the calibration sample, i.e. the
    ceiling any student can reach on this data.
    """
    if rows < 1 or chunk_rows < 1:
        raise ValueError(f"rows and chunk_rows must be >= 1, got {rows}, {chunk_rows}")
    layout = get_layout(kind)
    config = teacher or TeacherConfig()
    fields = tuple(f.name for f in layout.categorical) + (() if layout.numeric else ("hour_of_day",))
    big = tuple(f.big for f in layout.categorical) + (() if layout.numeric else (False,))
    laws = layout.laws(rows, popularity)
    supports = tuple(laws[f.name].n for f in layout.categorical) + (() if layout.numeric else (24,))
    plan = Plan(
        layout=layout,
        rows=rows,
        seed=seed,
        chunk_rows=chunk_rows,
        laws=laws,
        token_keys=token_keys(layout, seed),
        teacher=build_teacher(config, fields, big, supports, len(layout.numeric), seed),
    )
    rng = calibration_rng(seed)
    sample = sample_rows(plan, rng, rng.integers(0, rows, config.calibration_rows))
    rate = config.positive_rate if config.positive_rate is not None else layout.positive_rate
    noise = rng.standard_normal(config.calibration_rows)
    calibrate(plan.teacher, sample.teacher_ids(layout, rows), sample.numeric, noise, rate)
    labels, oracle = draw_labels(plan, rng, sample)
    return plan, rank_auc(labels, oracle)


def make_chunk(plan: Plan, index: int) -> tuple[bytes, int, int]:
    """(raw text, rows, positives) of chunk ``index``; depends on (seed, index) only."""
    start = index * plan.chunk_rows
    row_index = np.arange(start, min(start + plan.chunk_rows, plan.rows), dtype=np.int64)
    rng = chunk_rng(plan.seed, index)
    sample = sample_rows(plan, rng, row_index)
    labels, _ = draw_labels(plan, rng, sample)
    return chunk_text(plan, sample, labels, first=index == 0), len(row_index), int(labels.sum())


def generate(
    kind: str,
    out_path: str | Path,
    rows: int,
    seed: int = 0,
    workers: int = 1,
    chunk_rows: int = 100_000,
    progress: bool = True,
    teacher: TeacherConfig | None = None,
    popularity: str = "scaled",
) -> SynthReport:
    """Write a synthetic raw dataset file (Criteo TSV or Avazu CSV) with teacher labels.

    Output bytes depend on (kind, rows, seed, chunk_rows, teacher, popularity), never on
    ``workers``. Memory stays at a few chunks, so 45M rows are fine.

    Args:
        kind: ``criteo-like`` or ``avazu-like``.
        out_path: file to write (replaced atomically when complete).
        rows: number of data rows.
        seed: seeds popularity tokens, teacher and every chunk.
        workers: processes generating chunks (1 = in this process).
        chunk_rows: rows per chunk (the unit of work and of determinism).
        progress: show a progress bar on stderr.
        teacher: teacher strength/shape; default ``TeacherConfig()``.
        popularity: ``scaled`` (default) or ``full``; see :meth:`Layout.laws`.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    t0 = time.perf_counter()
    with threadpool_limits(1):
        plan, oracle = build_plan(kind, rows, seed, chunk_rows, teacher, popularity)
    written = positives = 0
    with open(tmp, "wb") as fh, _progress(progress, rows, kind) as advance:
        for text, n, pos in _chunks(plan, workers):
            fh.write(text)
            written, positives = written + n, positives + pos
            advance(n)
    os.replace(tmp, out)
    seconds = time.perf_counter() - t0
    report = SynthReport(
        kind=kind,
        path=str(out),
        rows=written,
        positive_rate=positives / max(written, 1),
        seconds=seconds,
        rows_per_s=written / max(seconds, 1e-9),
        oracle_auc=oracle,
        seed=seed,
        workers=workers,
        chunk_rows=chunk_rows,
        popularity=popularity,
        bytes=out.stat().st_size,
    )
    _write_sidecar(out, report, plan)
    return report


def _chunks(plan: Plan, workers: int):  # type: ignore[no-untyped-def]
    """Yield chunk results in file order; with workers > 1 from a process pool (ordered imap)."""
    if workers == 1 or plan.num_chunks == 1:
        with threadpool_limits(1):
            for i in range(plan.num_chunks):
                yield make_chunk(plan, i)
        return
    # fork (POSIX) hands the plan to workers for free; spawn re-imports ctrzip (and torch) per worker
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    with ctx.Pool(min(workers, plan.num_chunks), initializer=_init_worker, initargs=(plan,)) as pool:
        yield from pool.imap(_worker_chunk, range(plan.num_chunks))


_WORKER_PLAN: Plan | None = None


def _init_worker(plan: Plan) -> None:
    global _WORKER_PLAN
    _WORKER_PLAN = plan
    threadpool_limits(1)


def _worker_chunk(index: int) -> tuple[bytes, int, int]:
    assert _WORKER_PLAN is not None
    return make_chunk(_WORKER_PLAN, index)


class _progress:
    """A transient bar over rows (``ctrzip.progress``); entering returns ``advance(n)``."""

    def __init__(self, enabled: bool, rows: int, kind: str) -> None:
        self._bars = ProgressBars(enabled, transient=True)
        self.rows, self.kind = rows, kind

    def __enter__(self):  # type: ignore[no-untyped-def]
        self._bars.__enter__()
        task = self._bars.add(f"synth {self.kind}", self.rows, unit="rows")
        return lambda n: self._bars.advance(task, n)

    def __exit__(self, *exc: object) -> None:
        self._bars.__exit__(None, None, None)


def _write_sidecar(out: Path, report: SynthReport, plan: Plan) -> None:
    """Recipe and report as JSON next to the data: enough to regenerate the same bytes."""
    meta = {
        "report": asdict(report),
        "teacher": to_dict(plan.teacher.config),
        "laws": {name: {"n": law.n, "s": law.s} for name, law in plan.laws.items()},
        "intercept": plan.teacher.intercept,
    }
    out.with_name(out.name + ".json").write_text(json.dumps(meta, indent=2))


def rank_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Tie-aware ROC AUC (Mann-Whitney U); NaN when only one class is present."""
    labels = np.asarray(labels).astype(bool)
    pos = int(labels.sum())
    neg = len(labels) - pos
    if pos == 0 or neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(np.asarray(scores), return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]  # average rank of each tie group
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))
