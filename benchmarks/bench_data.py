"""Data-layer benchmark: generator rows/s, encoding rows/s and peak RSS, loader samples/s.

Each encode runs in a fresh subprocess so its peak RSS (ru_maxrss) is its own; comparing
1M and 10M rows shows whether memory grows with file size.

    python benchmarks/bench_data.py --rows 1000000 10000000 --workdir /tmp/ctrzip-bench
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

_CHILD = """
import json, resource, sys, time
from ctrzip.data.encode import encode_dataset
t0 = time.perf_counter()
rep = encode_dataset("criteo", sys.argv[1], sys.argv[2], progress=False)
dt = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
print(json.dumps({"seconds": dt, "peak_rss_gb": rss}))
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/ctrzip-bench-data"))
    ap.add_argument("--batch-size", type=int, default=10_000)
    ap.add_argument("--keep", action="store_true", help="keep generated files")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
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
