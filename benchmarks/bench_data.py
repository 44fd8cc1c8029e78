"""Data-layer benchmark: generator rows/s, encoding rows/s and peak RSS, loader samples/s.

Each encode runs in a fresh subprocess so its peak RSS (ru_maxrss) is its own; comparing
1M and 10M rows shows whether memory grows with file size.

    python benchmarks/bench_data.py --rows 1000000 10000000 --workdir /tmp/ctrzip-bench

``--encode-only`` runs the encoder comparison alone (``benchmarks/results/bench_data_encode_<tag>.json``):
the numpy path (``CTRZIP_NO_JIT=1``, the encoder before the compiled kernels) and the compiled
path on the same files in the same run, alternating, plus what bounds the rate (reading the
blocks, the compiled field split alone, Polars' own CSV parse of all 40 columns).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_tag, write_result  # noqa: E402

_CHILD = """
import json, resource, sys, time
from ctrzip.data.encode import encode_dataset
t0 = time.perf_counter()
rep = encode_dataset("criteo", sys.argv[1], sys.argv[2], progress=False)
dt = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
print(json.dumps({"seconds": dt, "peak_rss_gb": rss}))
"""

# one encode in a fresh process: the compiled kernels are loaded first (numba's one-time start,
# timed apart), then the encode is timed; the distinct values counted in pass 1 are recorded
_CHILD_ENCODE = """
import json, os, resource, sys, time
import numpy as np
t0 = time.perf_counter()
from ctrzip.data import columns, jit
from ctrzip.data import encode as E
t1 = time.perf_counter()
if jit.ENABLED:
    jit.field_keys(b"1\\t2\\n", "\\t", 1, 2, [0, 1], None)
    jit.JitKeyCoder(4).encode(np.arange(4, dtype=np.uint64))
    jit.lookup(np.zeros((1, 2), np.int32), np.zeros(1, np.int32), np.zeros(1, np.float32),
               np.zeros(1, bool), True, 1)
    jit.group_by_split(np.zeros(1, np.int8), 1, np.zeros((1, 1), np.int32),
                       np.zeros((1, 1), np.float32), np.zeros(1, np.float32))
t2 = time.perf_counter()
distinct = []
release = columns.ColumnPlan.release
def spy(plan):
    distinct.append(sum(plan.n_values(f.name) for f in plan.sparse))
    release(plan)
columns.ColumnPlan.release = spy
# CPU seconds of each thread: pass 1's background threads (reading + field split, and with the
# kernels the hash coding), pass 1's main thread, pass 2 (main thread and all threads)
cpu = {}
prefetch, calls = E.prefetch, [0]
def timed(items, label):
    t = time.thread_time()
    try:
        yield from items
    finally:
        cpu[label] = cpu.get(label, 0.0) + time.thread_time() - t
def timed_prefetch(items, depth=2):
    label = ("pass1_read_thread", "pass1_code_thread")[calls[0] % 2] if jit.ENABLED else "pass1_read_thread"
    calls[0] += 1
    return prefetch(timed(items, label), depth)
E.prefetch = timed_prefetch
def timed_method(name):
    fn = getattr(E.Encoder, name)
    def run(*a, **k):
        t, c = time.thread_time(), time.process_time()
        try:
            return fn(*a, **k)
        finally:
            cpu[name.strip("_") + "_main_thread"] = time.thread_time() - t
            cpu[name.strip("_") + "_all_threads"] = time.process_time() - c
    setattr(E.Encoder, name, run)
timed_method("_scan")
timed_method("_write")
c0 = time.process_time()
w0 = time.perf_counter()
rep = E.encode_dataset("criteo", sys.argv[1], sys.argv[2], progress=False)
print(json.dumps({
    "path": "compiled" if jit.ENABLED else "numpy",
    "seconds": time.perf_counter() - w0,
    "cpu_seconds": time.process_time() - c0,
    "cpu_by_thread": cpu,
    "import_seconds": t1 - t0,
    "jit_start_seconds": t2 - t1,
    "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    "distinct_values": distinct[0],
    "rows_written": sum(rep.rows.values()),
}))
"""


def two_core_seconds(res: dict) -> float:
    """Wall seconds the encode would take on 2 cores of its own, from its per-thread CPU:
    pass 1 is bounded by its busiest thread and by its CPU over two cores, pass 2 likewise,
    the rest (fitting the vocabularies) is serial. A model for a shared machine, where the
    measured wall time mostly reflects the other jobs."""
    c = res["cpu_by_thread"]
    threads = [c.get("pass1_read_thread", 0.0), c.get("pass1_code_thread", 0.0), c["scan_main_thread"]]
    pass1 = max(max(threads), c["scan_all_threads"] / 2)
    pass2 = max(c["write_main_thread"], c["write_all_threads"] / 2)
    rest = max(res["cpu_seconds"] - c["scan_all_threads"] - c["write_all_threads"], 0.0)
    return pass1 + pass2 + rest


_CHILD_BOUNDS = """
import json, sys, time
from pathlib import Path
import polars as pl
from ctrzip.data import jit
from ctrzip.data.readers.delimited import CRITEO_COLUMNS
from ctrzip.data.readers.text import iter_blocks
path, rows = Path(sys.argv[1]), int(sys.argv[2])
out = {}
t = time.perf_counter()
blocks = list(iter_blocks(path, 8 << 20))
out["read_blocks_rows_per_s"] = rows / (time.perf_counter() - t)
if jit.ENABLED:
    jit.field_keys(blocks[0].data, "\\t", blocks[0].n_lines, 40, list(range(40)), '"')
    t = time.perf_counter()
    for b in blocks:
        jit.field_keys(b.data, "\\t", b.n_lines, 40, list(range(40)), '"')
    out["compiled_field_split_rows_per_s_1_thread"] = rows / (time.perf_counter() - t)
del blocks
t = time.perf_counter()
pl.read_csv(path, separator="\\t", has_header=False, quote_char=None,
            schema={c: pl.String for c in CRITEO_COLUMNS})
out["polars_read_csv_strings_rows_per_s"] = rows / (time.perf_counter() - t)
print(json.dumps(out))
"""


def bench_generate(rows: int, out: Path, workers: int) -> dict:
    from ctrzip.data.synthetic import generate

    t0 = time.perf_counter()
    rep = generate("criteo-like", out, rows=rows, seed=0, workers=workers, progress=False)
    dt = time.perf_counter() - t0
    return {
        "rows": rows,
        "workers": workers,
        "seconds": dt,
        "rows_per_s": rows / dt,
        "positive_rate": getattr(rep, "positive_rate", None),
    }


def bench_encode(raw: Path, out: Path, rows: int) -> dict:
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(raw), str(out)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res.update(rows=rows, rows_per_s=rows / res["seconds"])
    return res


def _child(code: str, args: list[str], env: dict[str, str] | None = None) -> dict:
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=full_env)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_encode_paths(raw: Path, workdir: Path, rows: int, repeats: int) -> list[dict]:
    """The numpy path and the compiled path on one file, alternating, each in a fresh process."""
    out = []
    for rep in range(repeats):
        for no_jit in ("0", "1"):
            enc = workdir / f"encoded_{rows}_{no_jit}"
            res = _child(_CHILD_ENCODE, [str(raw), str(enc)], {"CTRZIP_NO_JIT": no_jit})
            shutil.rmtree(enc, ignore_errors=True)
            res.update(rows=rows, repeat=rep, rows_per_s=rows / res["seconds"])
            res["rows_per_s_with_jit_start"] = rows / (res["seconds"] + res["jit_start_seconds"])
            res["two_core_seconds_model"] = two_core_seconds(res)
            res["rows_per_s_two_core_model"] = rows / res["two_core_seconds_model"]
            out.append(res)
            print(
                f"encode {rows:>11,} rows [{res['path']:>8}]: {res['rows_per_s']:>10,.0f} rows/s measured, "
                f"{res['rows_per_s_two_core_model']:>10,.0f} rows/s 2-core model "
                f"({res['cpu_seconds']:.1f} CPU-s, +{res['jit_start_seconds']:.1f} s kernel start), "
                f"peak RSS {res['peak_rss_gb']:.2f} GB, {res['distinct_values']:,} distinct values",
                flush=True,
            )
    return out


def encode_only(args: argparse.Namespace) -> None:
    results: dict = {"encode": [], "bounds": {}}
    for i, rows in enumerate(args.rows):
        raw = args.workdir / f"criteo_like_{rows}.txt"
        if not raw.exists():
            results.setdefault("generate", []).append(bench_generate(rows, raw, args.workers))
        if i == 0:
            results["bounds"] = {"rows": rows, **_child(_CHILD_BOUNDS, [str(raw), str(rows)])}
            print("bounds", json.dumps(results["bounds"]), flush=True)
        results["encode"] += bench_encode_paths(raw, args.workdir, rows, args.repeats if i == 0 else 1)
        if not args.keep:
            raw.unlink(missing_ok=True)
    results["targets"] = {"encode_rows_per_s": 1_000_000, "peak_rss": "flat from 1M to 10M rows"}
    results["note"] = args.note
    path = write_result(f"bench_data_encode_{machine_tag()}", results)
    print(f"wrote {path}")


def bench_loader(encoded: Path, batch_size: int, shuffle: bool) -> dict:
    from ctrzip.data.dataset import EncodedDataset
    from ctrzip.data.loader import BatchLoader

    split = EncodedDataset.open(encoded)["train"]
    loader = BatchLoader(split, batch_size=batch_size, shuffle=shuffle, seed=0)
    n = 0
    t0 = time.perf_counter()
    for b in loader:
        n += len(b)
    dt = time.perf_counter() - t0
    return {"rows": n, "batch_size": batch_size, "shuffle": shuffle, "seconds": dt, "samples_per_s": n / dt}


# ---------------------------------------------------------------- loader (issue 13 item 3)
def _loader_pass(batches, consumer_s_per_row: float = 0.0) -> tuple[int, float, float]:
    """One epoch through ``batches``; with ``consumer_s_per_row`` each batch is followed by a
    wait of that many seconds per row (a consumer that releases the GIL, like a training step
    waiting on the GPU). Returns (rows, wall seconds, process CPU seconds: all threads)."""
    import torch

    n = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for b in batches:
        n += len(b)
        if consumer_s_per_row:
            time.sleep(consumer_s_per_row * len(b))
    if torch.cuda.is_available():
        torch.cuda.synchronize()  # batches on the GPU are done, not just queued
    return n, time.perf_counter() - t0, time.process_time() - c0


def _check_same_first_batches(loaders: dict) -> None:
    """Every variant serves the same first batches (on whatever device), or the run stops."""
    import itertools

    import torch

    ref = [b for b in itertools.islice(loaders["old"], 3)]
    for k, lo in loaders.items():
        for x, y in zip(ref, itertools.islice(lo, 3), strict=True):
            for a, b in ((x.sparse, y.sparse), (x.dense, y.dense), (x.label, y.label)):
                if not torch.equal(a, b.cpu()):
                    raise AssertionError(f"loader {k} serves other batches than the old loader")


def bench_loaders(split, batch_sizes: list[int], rounds: int, consumer_rate: float) -> dict:
    """Old (pre-issue-13) vs new loader samples/s on one split, in interleaved rounds.

    Per batch size and shuffle setting, each loader makes one pass per round (after one
    warm-up pass each, so the page cache and allocator are warm for all); the ratio to the old
    loader is taken within each round and the median over rounds is reported, so load from
    other jobs on a shared machine hits both sides of a ratio alike. Samples per CPU-second
    (process time, every thread) estimate the rate on a core of its own. ``consumer_rate``
    adds a run with a simulated consumer of that many samples/s, with and without the prefetch
    thread, against the consumer alone (the best any loader can do).
    """
    import statistics

    import torch
    from loader_baseline import BatchLoader as OldLoader

    from ctrzip.data.loader import BatchLoader

    variants = {
        "old": lambda bs, sh: OldLoader(split, bs, shuffle=sh, seed=0),
        "new_stream_sync": lambda bs, sh: BatchLoader(split, bs, shuffle=sh, seed=0, prefetch=0),
        "new_stream_thread": lambda bs, sh: BatchLoader(split, bs, shuffle=sh, seed=0, prefetch=2),
        "new_resident": lambda bs, sh: BatchLoader(split, bs, shuffle=sh, seed=0, data_placement="resident"),
    }
    if torch.cuda.is_available():  # batches delivered on the GPU: pinned + async copies, or resident
        variants["new_stream_cuda"] = lambda bs, sh: BatchLoader(split, bs, shuffle=sh, seed=0, device="cuda")
        variants["new_resident_cuda"] = lambda bs, sh: BatchLoader(
            split, bs, shuffle=sh, seed=0, device="cuda", data_placement="resident"
        )
    rows = []
    for bs in batch_sizes:
        for shuffle in (True, False):
            loaders = {k: make(bs, shuffle) for k, make in variants.items()}
            for lo in loaders.values():
                _loader_pass(lo)
            _check_same_first_batches(loaders)
            rates: dict[str, list[float]] = {k: [] for k in loaders}
            cpu_rates: dict[str, list[float]] = {k: [] for k in loaders}
            for _ in range(rounds):
                for k, lo in loaders.items():
                    n, dt, cpu = _loader_pass(lo)
                    rates[k].append(n / dt)
                    cpu_rates[k].append(n / max(cpu, 1e-9))
            for k in loaders:
                ratios = [r / o for r, o in zip(rates[k], rates["old"], strict=True)]
                med, ratio, per_cpu = (statistics.median(x) for x in (rates[k], ratios, cpu_rates[k]))
                rows.append({
                    "loader": k, "batch_size": bs, "shuffle": shuffle, "samples_per_s_median": med,
                    "samples_per_s_rounds": rates[k], "ratio_to_old_median": ratio,
                    "samples_per_cpu_s_median": per_cpu,
                })  # fmt: skip
                print(
                    f"loader bs={bs:>6} shuffle={shuffle!s:5} {k:18} {med:>12,.0f}/s  x{ratio:.2f} of old  "
                    f"{per_cpu:>12,.0f}/CPU-s",
                    flush=True,
                )
            del loaders
    overlap = []
    if consumer_rate > 0:
        per_row, bs = 1.0 / consumer_rate, batch_sizes[0]
        sizes = [len(b) for b in BatchLoader(split, bs, prefetch=0)]
        _, alone, _ = _loader_pass([range(s) for s in sizes], per_row)  # the consumer with free batches
        for k, prefetch in (("new_stream_sync", 0), ("new_stream_thread", 2)):
            n, dt, _ = _loader_pass(BatchLoader(split, bs, shuffle=True, seed=0, prefetch=prefetch), per_row)
            overlap.append({
                "loader": k, "batch_size": bs, "consumer_samples_per_s": consumer_rate,
                "consumer_alone_samples_per_s": n / alone, "samples_per_s": n / dt,
                "fraction_of_consumer_alone": alone / dt,
            })  # fmt: skip
            print(f"loader + consumer ({n / alone:,.0f}/s alone), {k:18}: {n / dt:>12,.0f}/s", flush=True)
    return {"loader": rows, "loader_with_consumer": overlap}


def loader_main(args: argparse.Namespace) -> None:
    """``--loader-only``: the loader comparison on ``--data`` (an encoded dataset folder) or on
    a synthetic Criteo-shaped split (39 int32 ids, no dense, float32 label) of ``--rows[0]``
    rows written to ``--workdir``; writes ``results/bench_loader_<machine>.json``."""
    import os

    import numpy as np
    from _common import machine_tag

    from ctrzip.data.dataset import EncodedDataset, SplitArrays, save_split

    if args.data is not None:
        root = args.data
    else:
        root = args.workdir / f"loader_split_{args.rows[0]}"
        if not (root / "train_label.npy").exists():
            rng = np.random.default_rng(0)
            n = args.rows[0]
            save_split(root, "train", SplitArrays(
                rng.integers(0, 1 << 20, (n, 39), dtype=np.int32), np.zeros((n, 0), np.float32),
                (rng.random(n) < 0.25).astype(np.float32),
            ))  # fmt: skip
    split = EncodedDataset.open(root)["train"] if (root / "feature_map.json").exists() else SplitArrays(
        *(np.load(root / f"train_{k}.npy", mmap_mode="r") for k in ("sparse", "dense", "label"))
    )  # fmt: skip
    load0 = os.getloadavg()
    res = bench_loaders(split, args.loader_batch_sizes, args.rounds, args.consumer_rate)
    res.update(
        data=str(root), rows=len(split), row_bytes=int(split.sparse[:1].nbytes + split.dense[:1].nbytes + 4),
        load_average_before=load0, load_average_after=os.getloadavg(),
        note="shared 2-core machine: other jobs ran during the measurement; compare ratios, not absolutes",
        targets={"loader_samples_per_s": 5_000_000},
    )  # fmt: skip
    path = write_result(f"bench_loader_{machine_tag()}", res)
    print(f"wrote {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/ctrzip-bench-data"))
    ap.add_argument("--batch-size", type=int, default=10_000)
    ap.add_argument("--keep", action="store_true", help="keep generated files")
    ap.add_argument("--loader-only", action="store_true", help="only the old-vs-new loader comparison")
    ap.add_argument("--data", type=Path, default=None, help="encoded dataset for --loader-only")
    ap.add_argument("--loader-batch-sizes", type=int, nargs="+", default=[10_000, 4096])
    ap.add_argument("--rounds", type=int, default=3, help="interleaved loader rounds")
    ap.add_argument("--consumer-rate", type=float, default=2_000_000, help="simulated consumer samples/s")
    ap.add_argument("--encode-only", action="store_true", help="compare the encoder's two paths only")
    ap.add_argument("--repeats", type=int, default=2, help="--encode-only: runs per path on the first size")
    ap.add_argument("--note", default="", help="--encode-only: recorded with the results")
    args = ap.parse_args()
    if args.loader_only:
        loader_main(args)
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.encode_only:
        encode_only(args)
        return
    results = {"generate": [], "encode": [], "loader": []}
    for rows in args.rows:
        raw = args.workdir / f"criteo_like_{rows}.txt"
        enc = args.workdir / f"encoded_{rows}"
        g = bench_generate(rows, raw, args.workers)
        results["generate"].append(g)
        print(
            f"generate {rows:>11,} rows: {g['rows_per_s']:>10,.0f} rows/s ({args.workers} workers)",
            flush=True,
        )
        e = bench_encode(raw, enc, rows)
        results["encode"].append(e)
        print(
            f"encode   {rows:>11,} rows: {e['rows_per_s']:>10,.0f} rows/s, "
            f"peak RSS {e['peak_rss_gb']:.2f} GB",
            flush=True,
        )
        for shuffle in (False, True):
            lo = bench_loader(enc, args.batch_size, shuffle)
            results["loader"].append({**lo, "dataset_rows": rows})
            print(
                f"loader   {rows:>11,} rows, shuffle={shuffle}: {lo['samples_per_s']:>12,.0f} samples/s",
                flush=True,
            )
        if not args.keep:
            raw.unlink(missing_ok=True)
    results["targets"] = {"encode_rows_per_s": 500_000, "peak_rss_gb": 3.0, "loader_samples_per_s": 5_000_000}
    results["self_peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    path = write_result("bench_data", results)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
