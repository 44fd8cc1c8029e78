"""Serving cost of a dense model and its compressed versions over loopback HTTP (``ctrzip serve``).

For each artifact (a dense DeepFM and its row-wise int8, MEC and budget-compressed versions)
a fresh ``ctrzip serve`` process is started on 127.0.0.1 and measured:

* cold start: process start to the first answered ``POST /predict``;
* RSS of the serving process after the load test, minus the RSS of an empty Python process
  that imported torch (same interpreter): what holding and serving the model costs;
* a bounded load test (a fixed number of requests and a time cap) with 1 and 8 concurrent
  clients, one record per request: p50 / p99 latency and requests/s.

The model is untrained (serving cost does not depend on the weights) and its data is a raw
CSV generated here with large vocabularies, so the embedding tables dominate the model as they
do at Criteo scale. The clients run on the same machine as the server (2 cores here), so the
figures are a lower bound of what the service does on its own.

    python benchmarks/bench_serve.py   # ~3 min on 2 cores: 200k rows, 4 fields of 60k values, d=64
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

import ctrzip
from ctrzip.compression.sizes import size_report
from ctrzip.data.dataset import EncodedDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_tag, write_result  # noqa: E402

SRC = str(Path(ctrzip.__file__).resolve().parents[1])


def make_data(root: Path, rows: int, vocab: int, fields: int, seed: int) -> EncodedDataset:
    """A raw CSV (``fields`` categorical columns of ~``vocab`` values, one number) and its encoding."""
    rng = np.random.default_rng(seed)
    cols = {f"C{j}": rng.integers(0, vocab, rows) for j in range(fields)}
    x = rng.normal(size=rows).round(3)
    logit = sum(np.sin(c * (0.01 + 0.001 * j)) for j, c in enumerate(cols.values())) / fields + 0.3 * x
    label = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    import polars as pl

    frame = pl.DataFrame({"label": label, **{k: [f"v{v}" for v in c] for k, c in cols.items()}, "x": x})
    frame.write_csv(root / "raw.csv")
    cfg = {
        "name": "serve_bench",
        "format": "csv",
        "features": [{"name": k, "type": "categorical"} for k in cols] + [{"name": "x", "type": "numeric"}],
        "split": {"method": "random", "ratios": [0.9, 0.1], "seed": seed},
    }
    ctrzip.encode_dataset(cfg, root / "raw.csv", root / "enc", progress=False)
    return EncodedDataset.open(root / "enc")


def make_artifacts(root: Path, data: EncodedDataset, dim: int) -> dict[str, Path]:
    """Dense DeepFM + compressed versions, saved with the dataset's encoder."""
    base = ctrzip.build_model("deepfm", data.schema, {"embedding_dim": dim, "mlp": [256, 128]}, seed=0).eval()
    dense_mb = size_report(base)["total"]["bytes"] / 2**20
    quick = {"device": "cpu"}
    configs = {
        "rowwise int8": ctrzip.RowwiseConfig(bits=8, eval_split=None, **quick),
        # MEC's product quantization with its popularity-weighted k-means codes (the ablation that
        # ties with full MEC, see README); code learning is off to keep the run short
        "mec-pq M=4 K=256": ctrzip.MECConfig.variant(
            "weighted_kmeans", num_subspaces=4, codebook_size=256, min_vocab=1000, protocol="none",
            plugin_per_field=False, kmeans_iters=3, **quick,
        ),
        f"budget {dense_mb / 10:.1f} MB": ctrzip.BudgetConfig(
            mb=round(dense_mb / 10, 2), pq=("4x256",), bits=(8, 4), bands=(), calib_rows=5_000, refine=0,
            **quick,
        ),
    }  # fmt: skip
    out = {"dense": ctrzip.save(root / "dense", base, encoder=data, overwrite=True)}
    for name, cfg in configs.items():
        t0 = time.perf_counter()
        model = ctrzip.compress(copy.deepcopy(base), cfg, data)
        slug = name.split()[0]
        out[name] = ctrzip.save(root / slug, model, encoder=data, overwrite=True)
        print(f"  {name}: compressed in {time.perf_counter() - t0:.1f} s", flush=True)
    return out


def records(raw: Path, n: int) -> list[bytes]:
    """``n`` one-record request bodies from the raw file (typed as a client would send them)."""
    import polars as pl

    frame = pl.read_csv(raw, n_rows=n).drop("label")
    return [json.dumps({"records": [r]}).encode() for r in frame.to_dicts()]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def baseline_rss() -> int:
    """RSS of an idle Python process that imported torch (and numpy)."""
    code = "import torch, numpy, sys; print('ready', flush=True); sys.stdin.read()"
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    time.sleep(0.5)
    rss = psutil.Process(proc.pid).memory_info().rss
    proc.kill()
    proc.wait()
    return int(rss)


def load_test(url: str, bodies: list[bytes], clients: int, n: int, cap_s: float) -> dict[str, float]:
    """``n`` requests (at most ``cap_s`` seconds) from ``clients`` threads, one connection each."""
    lat: list[float] = []
    errors: list[int] = []
    sent = [0]
    lock = threading.Lock()
    stop = time.perf_counter() + cap_s

    def worker() -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            while True:
                with lock:
                    if sent[0] >= n or time.perf_counter() > stop:
                        return
                    i = sent[0]
                    sent[0] += 1
                t0 = time.perf_counter()
                res = http.post("/predict", content=bodies[i % len(bodies)])
                dt = time.perf_counter() - t0
                with lock:
                    (lat if res.status_code == 200 else errors).append(
                        dt if res.status_code == 200 else res.status_code
                    )

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ms = np.array(lat) * 1e3
    return {
        "requests": len(lat),
        "errors": len(errors),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "requests_per_s": round(len(lat) / wall, 1),
    }


def serve_and_measure(
    art: Path, bodies: list[bytes], args: argparse.Namespace, load: bool = True
) -> dict[str, Any]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "ctrzip.cli.main", "serve", "--model", str(art), "--port", str(port),
           "--device", "cpu"]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"ctrzip serve exited with {proc.returncode} for {art}")
            try:
                if httpx.post(f"{url}/predict", content=bodies[0], timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        cold = time.perf_counter() - t0
        out: dict[str, Any] = {"cold_start_s": round(cold, 2)}
        for clients in (1, 8) if load else ():
            out[f"c{clients}"] = load_test(url, bodies, clients, args.requests, args.cap_s)
        out["rss_bytes"] = psutil.Process(proc.pid).memory_info().rss
        return out
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--vocab", type=int, default=60_000, help="values drawn per field (uniform)")
    ap.add_argument("--fields", type=int, default=4)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--requests", type=int, default=300, help="requests per load test")
    ap.add_argument("--cap-s", type=float, default=6.0, help="time cap per load test")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=None, help="work folder (default: a temporary one)")
    args = ap.parse_args()
    root = args.work or Path(tempfile.mkdtemp(prefix="ctrzip-bench-serve-"))
    root.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    print(f"data: {args.rows:,} rows, {args.fields} fields of ~{args.vocab:,} values -> {root}", flush=True)
    data = make_data(root, args.rows, args.vocab, args.fields, args.seed)
    arts = make_artifacts(root, data, args.dim)
    bodies = records(root / "raw.csv", 500)
    base = baseline_rss()
    serve_and_measure(arts["dense"], bodies, args, load=False)  # warm-up: file cache, bytecode
    rows = []
    for name, art in arts.items():
        m = serve_and_measure(art, bodies, args)
        model_bytes = size_report(ctrzip.load(art))["total"]["bytes"]
        rows.append(
            {"model": name, "model_bytes": int(model_bytes), **m, "rss_above_torch": m["rss_bytes"] - base}
        )
        print(f"  {name}: measured", flush=True)
    dense = rows[0]
    for r in rows:
        r["bytes_ratio"] = round(dense["model_bytes"] / r["model_bytes"], 2)
        r["rss_above_torch_ratio"] = round(dense["rss_above_torch"] / r["rss_above_torch"], 2)
    print(f"{'model':<18}{'MB':>8}{'RSS+ MB':>9}{'cold s':>8}  1 client p50/p99 ms, req/s  8 clients ...")
    for r in rows:
        c1, c8 = r["c1"], r["c8"]
        mb, rss = r["model_bytes"] / 2**20, r["rss_above_torch"] / 2**20
        print(f"{r['model']:<18}{mb:>8.1f}{rss:>9.1f}{r['cold_start_s']:>8.2f}  "
              f"{c1['p50_ms']:>6.1f}/{c1['p99_ms']:<6.1f}{c1['requests_per_s']:>8.1f}      "
              f"{c8['p50_ms']:>6.1f}/{c8['p99_ms']:<6.1f}{c8['requests_per_s']:>8.1f}")  # fmt: skip
    payload = {
        "setup": {**vars(args), "work": str(root), "baseline_rss_bytes": base, "records_per_request": 1,
                  "clients_on_same_machine": True, "seconds": round(time.perf_counter() - t_start, 1)},
        "rows": rows,
    }  # fmt: skip
    path = write_result(f"serve_{machine_tag()}", payload)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
