"""``ctrzip bench``: run suites of (model, cell, seed) over one encoded dataset, resumably.

Per (model, seed) the dense model is trained once and cached under ``OUT/dense/`` (a rerun
loads it). Every cell applies its steps to a copy of it; the dense model of the same seed is
the paired control (spec/PROTOCOL.md 1; fine-tuning suites carry their fine-tuned dense
control as a cell of their own). One JSON line per cell goes to ``OUT/results.jsonl``
(:mod:`ctrzip.bench.records`); a cell whose key (data, model, suite, label, seed, settings
hash) is already there is skipped, so an interrupted run resumes where it stopped.

Under ``torchrun`` every rank runs the grid (training and compression share their passes
out, ``ctrzip.compression.sharded``); rank 0 alone writes the cache, the records and times
throughput, and the others receive what it decided (cached or not, the timings).
"""

from __future__ import annotations

import copy
import dataclasses
import shutil
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ctrzip import distributed as dist
from ctrzip.bench.provenance import provenance
from ctrzip.bench.records import append_record, read_records, repair
from ctrzip.bench.suite import Cell, DenseSection, FinetuneStep, Suite, TimingSection, build_config, cell_hash
from ctrzip.config import ConfigError, to_dict
from ctrzip.data.dataset import EncodedDataset
from ctrzip.errors import CompressionError

RESULTS = "results.jsonl"
EVAL_BATCH = 20_000


def projection_vocab(data: EncodedDataset) -> tuple[str, dict[str, int]] | None:
    """``(name, field -> ids)`` of the real vocabulary (Criteo first, then Avazu) whose fields
    are exactly the data's sparse fields, or None."""
    from ctrzip.compression.mec.projection import FULL_SCALE_VOCAB

    names = {f.name for f in data.schema.sparse_fields}
    for name in ("criteo", "avazu"):
        if set(FULL_SCALE_VOCAB[name]) == names:
            return name, FULL_SCALE_VOCAB[name]
    return None


def projected_bytes(model: Any, vocab: tuple[str, dict[str, int]] | None) -> dict[str, Any]:
    """``{"projected_vocab", "projected_bytes"}`` of ``model`` at that vocabulary; a table type
    without a projection rule gives ``projection_error`` (its message) instead."""
    from ctrzip.compression.budget.projection import project_bytes

    if vocab is None:
        return {}
    try:
        return {"projected_vocab": vocab[0], "projected_bytes": project_bytes(model, vocab[1])}
    except CompressionError as err:
        return {"projected_vocab": vocab[0], "projection_error": str(err)}


def size_fields(model: Any) -> dict[str, Any]:
    """Stored bytes in total and by component (``compression.sizes.size_report``)."""
    from ctrzip.compression.sizes import size_report

    rep = size_report(model)
    comps = {k: v["bytes"] for k, v in rep["components"].items()}
    return {"bytes": rep["total"]["bytes"], "bytes_by_component": comps, "params": rep["total"]["params"]}


def metrics(
    model: Any, data: EncodedDataset, device: str, splits: Sequence[str] = ("valid", "test")
) -> dict[str, float]:
    """``{split}_auc`` and ``{split}_logloss`` of each split."""
    from ctrzip.compression.sharded import sharded_evaluate as evaluate

    out: dict[str, float] = {}
    for split in splits:
        m = evaluate(model, data[split], batch_size=EVAL_BATCH, device=device, name=f"{split} split")
        out[f"{split}_auc"], out[f"{split}_logloss"] = m["auc"], m["logloss"]
    return out


class _Lookup(torch.nn.Module):
    """The model's embedding lookup alone (``model.embedding(batch)``), to time it."""

    def __init__(self, embedding: torch.nn.Module) -> None:
        super().__init__()
        self.embedding = embedding

    def forward(self, batch: Any) -> torch.Tensor:
        return self.embedding(batch)


def throughput(model: Any, dense: Any, data: EncodedDataset, timing: TimingSection) -> dict[str, Any]:
    """CPU samples/s of ``model`` and ``dense`` at ``timing.batch_size`` rows (the test split's
    first batch), interleaved over ``timing.rounds`` (spec/PROTOCOL.md 5): medians and the
    median of the per-round ratios; the same for the embedding lookup alone (seconds per
    batch). Both models are left on the CPU, in eval mode (under torchrun rank 0 times them
    and every rank returns its numbers)."""
    if timing.rounds == 0:
        return {}
    if dist.is_distributed():  # one timer on the machine: rank 0 times, the others wait
        got = _throughput(model, dense, data, timing) if dist.is_main() else None
        return dist.broadcast_object(got)
    return _throughput(model, dense, data, timing)


def _throughput(model: Any, dense: Any, data: EncodedDataset, timing: TimingSection) -> dict[str, Any]:
    from ctrzip.bench.timing import time_forward
    from ctrzip.data.loader import BatchLoader
    from ctrzip.nn.embedding.field import FieldEmbedding

    batch = next(iter(BatchLoader(data["test"], batch_size=timing.batch_size)))
    kw = {"warmup": 1, "repeats": 2, "threads": timing.threads, "device": "cpu"}
    same = model is dense
    lookups = all(isinstance(getattr(m, "embedding", None), FieldEmbedding) for m in (model, dense))
    got: dict[str, list[float]] = {k: [] for k in ("ours", "base", "ratio", "look", "look_base")}
    for _ in range(timing.rounds):
        a = time_forward(model, [batch], **kw)["samples_per_s"]
        b = a if same else time_forward(dense, [batch], **kw)["samples_per_s"]
        got["ours"].append(a)
        got["base"].append(b)
        got["ratio"].append(a / b)
        if lookups:
            la = time_forward(_Lookup(model.embedding), [batch], **kw)["median_s"]
            lb = la if same else time_forward(_Lookup(dense.embedding), [batch], **kw)["median_s"]
            got["look"].append(la)
            got["look_base"].append(lb)
    out = {
        "samples_per_s": statistics.median(got["ours"]),
        "dense_samples_per_s": statistics.median(got["base"]),
        "speed_vs_dense": statistics.median(got["ratio"]),
        "timing_batch": len(batch),
        "timing_threads": timing.threads,
    }
    if lookups:
        out["lookup_s_per_batch"] = statistics.median(got["look"])
        out["dense_lookup_s_per_batch"] = statistics.median(got["look_base"])
    return out


def apply_finetune(model: Any, cfg: FinetuneStep, data: EncodedDataset) -> None:
    """Train ``model`` further by ``cfg`` (validation picks the best of start and end when
    ``keep_start``)."""
    from ctrzip.train.trainer import TrainConfig, Trainer

    tc = TrainConfig(
        epochs=cfg.epochs,
        lr=cfg.lr,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        device=cfg.device,
        progress=False,
        eval_at_start=cfg.keep_start,
    )
    Trainer(tc).fit(model, data["train"], data["valid"])


@dataclass
class DenseModel:
    """A trained dense model with what every paired record needs."""

    model: Any
    train_seconds: float
    epochs: int
    metrics: dict[str, float]
    sizes: dict[str, Any]
    projected: dict[str, Any]


def _dense_dir(out: Path, tag: str, model: str, seed: int, suite: Suite) -> Path:
    """Cache folder of a dense model: data label, model, seed and the dense settings' hash."""
    return out / "dense" / f"{tag}-{model}-s{seed}-{suite.dense_key()}"


def train_dense(
    name: str, data: EncodedDataset, seed: int, dense: DenseSection, device: str, progress: bool
) -> tuple[Any, float]:
    """Model ``name`` built with ``dense``'s parameters and trained; (model in eval mode, seconds)."""
    from ctrzip.models.base import build_model
    from ctrzip.train.trainer import TrainConfig, Trainer

    params = {"embedding_dim": dense.embedding_dim, "mlp": list(dense.mlp)}
    model = build_model(name, data.schema, params, seed=seed)
    cfg = TrainConfig(
        epochs=dense.epochs,
        lr=dense.lr,
        batch_size=dense.batch_size,
        embedding_l2=dense.embedding_l2,
        seed=seed,
        device=device,
        progress=progress,
    )
    t0 = time.perf_counter()
    Trainer(cfg).fit(model, data["train"], data["valid"])
    return model.eval(), time.perf_counter() - t0


def dense_model(
    out: Path, tag: str, name: str, seed: int, suite: Suite, data: EncodedDataset, device: str, vocab: Any
) -> DenseModel:
    """The cached dense model of (model, seed, dense settings), trained and saved if absent.
    The artifact is written to a temporary folder and renamed, so a killed run leaves none
    half-written."""
    from ctrzip.export import load, save
    from ctrzip.export.artifact import read_manifest

    path = _dense_dir(out, tag, name, seed, suite)
    if dist.broadcast_object((path / "manifest.json").exists()):  # rank 0's view: it writes
        model = load(path).eval()
        extra = read_manifest(path).get("extra") or {}
        train_s, epochs = float(extra["train_seconds"]), int(extra["epochs"])
    else:
        model, train_s = train_dense(name, data, seed, suite.dense, device, progress=False)
        epochs = suite.dense.epochs
        if dist.is_main():
            tmp = path.with_name(path.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(path, ignore_errors=True)  # a folder without a manifest: not a finished save
            save(tmp, model.cpu(), extra={"train_seconds": train_s, "epochs": epochs, "seed": seed})
            tmp.rename(path)
        dist.barrier()
    model = model.cpu().eval()
    return DenseModel(
        model,
        train_s,
        epochs,
        metrics(model, data, device),
        size_fields(model),
        projected_bytes(model, vocab),
    )


def run_cell(
    dense: DenseModel, cell: Cell, suite: Suite, seed: int, data: EncodedDataset, device: str
) -> tuple[Any, float, list[dict[str, Any]]]:
    """Apply ``cell``'s steps to a copy of the dense model: (model, seconds, resolved configs).

    Raises:
        CompressionError: a method refused (nothing would shrink, impossible setting).
    """
    from ctrzip.compression import compress

    model = copy.deepcopy(dense.model)
    configs: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for j, step in enumerate(cell.steps):
        injected: dict[str, Any] = {"seed": seed, "device": device, "progress": False}
        if step.whole_model_ratio is not None:
            injected["mb"] = dense.sizes["bytes"] / step.whole_model_ratio / 2**20
        cfg = build_config(step, f"{suite.source}: {cell.label}.steps[{j}]", injected)
        configs.append({"method": step.method, "config": to_dict(cfg)})
        if isinstance(cfg, FinetuneStep):
            apply_finetune(model, cfg, data)
        else:
            compress(model, cfg, data)
    return model.cpu().eval(), time.perf_counter() - t0, configs


def cell_record(
    *,
    label: str,
    model: Any,
    dense: DenseModel,
    data: EncodedDataset,
    device: str,
    timing: TimingSection,
    vocab: Any,
    seconds: float,
    splits: Sequence[str] = ("valid", "test"),
) -> dict[str, Any]:
    """The measured part of a record: metrics on ``splits``, paired deltas against ``dense``
    (whose ``metrics`` must hold those splits), bytes (and projected bytes), throughput against
    dense, seconds, and for a model with PQ codes ``pq_bands`` (``bench.pq_bands``). Shared by
    ``ctrzip bench`` and ``ctrzip demo`` (one code path measures)."""
    met = metrics(model, data, device, splits) if model is not dense.model else dict(dense.metrics)
    sizes = size_fields(model)
    proj = projected_bytes(model, vocab)
    role = "dense" if model is dense.model else "cell"  # the dense model is the reference
    rec: dict[str, Any] = {"method": label, "role": role, **met}
    for k, v in met.items():
        rec[f"dense_{k}"] = dense.metrics[k]
        rec[f"delta_{k}"] = v - dense.metrics[k]
    rec |= sizes
    rec["dense_bytes"] = dense.sizes["bytes"]
    rec["ratio"] = dense.sizes["bytes"] / sizes["bytes"]
    rec |= proj
    if "projected_bytes" in proj and "projected_bytes" in dense.projected:
        rec["dense_projected_bytes"] = dense.projected["projected_bytes"]
        rec["projected_ratio"] = dense.projected["projected_bytes"] / proj["projected_bytes"]
    rec |= throughput(model, dense.model, data, timing)
    if model is not dense.model:
        from ctrzip.bench.pq_bands import pq_band_diagnostics

        bands = pq_band_diagnostics(model, dense.model, data.counts)
        if bands is not None:
            rec["pq_bands"] = bands
    rec["method_seconds"] = seconds
    rec["dense_train_seconds"] = dense.train_seconds
    rec["dense_epoch_seconds"] = dense.train_seconds / dense.epochs
    return rec


def cell_key(rec: dict[str, Any]) -> tuple[Any, ...]:
    """What identifies a cell in the result file."""
    return (rec["data"], rec["model"], rec["suite"], rec["method"], rec["seed"], rec["settings_hash"])


def data_tag(path: Path) -> str:
    """A dataset's label: its folder name, or the parent's for a folder named ``encoded``."""
    path = path.resolve()
    return path.parent.name if path.name == "encoded" and path.parent.name else path.name


def _plan(model: Any) -> dict[str, int]:
    """Representations the budget method chose (empty for other methods)."""
    plan: Counter[str] = Counter()
    for entry in getattr(model, "compression_log", []):
        plan.update(p["representation"] for p in entry["report"].get("plan", []))
    return dict(plan)


def run_bench(
    suites: Sequence[Suite],
    data_dir: Path,
    models: Sequence[str],
    seeds: Sequence[int],
    out: Path,
    *,
    epochs: int | None = None,
    device: str = "auto",
    tag: str | None = None,
    say: Callable[[str], None] = print,
) -> Path:
    """Run every (model, seed, suite cell) not yet in ``out/results.jsonl``; returns that path.

    Args:
        suites: parsed suites (``suite.load_suites``).
        data_dir: encoded dataset with train, valid and test splits.
        models: model names (``ctrzip.models.MODELS``).
        seeds: seeds; each trains its own dense model and seeds every method.
        out: result folder (created); ``results.jsonl`` and ``dense/`` live there.
        epochs: overrides every suite's ``dense.epochs``.
        device: training and method device (``auto``, ``cpu``, ``cuda``); timing is on CPU.
        tag: the data label of each record (default: ``data_tag(data_dir)``).
        say: progress printer.

    Raises:
        ConfigError: unknown model, no seeds, or data without a train/valid/test split.
    """
    from ctrzip.models import MODELS

    unknown = [m for m in models if m not in MODELS]
    if unknown or not models:
        raise ConfigError(
            f"--models: unknown model(s) {unknown or '(none given)'} (valid: {', '.join(MODELS)})"
        )
    if not seeds:
        raise ConfigError("--seeds must be >= 1")
    data = EncodedDataset.open(data_dir)
    missing = [s for s in ("train", "valid", "test") if s not in data.splits]
    if missing:
        raise ConfigError(
            f"--data {data_dir}: no {', '.join(missing)} split (bench needs train, valid and test)"
        )
    if epochs is not None:
        if epochs < 1:
            raise ConfigError(f"--epochs must be >= 1, got {epochs}")
        suites = [dataclasses.replace(s, dense=dataclasses.replace(s.dense, epochs=epochs)) for s in suites]
    path = out / RESULTS
    if dist.is_main():
        out.mkdir(parents=True, exist_ok=True)
        if repair(path):
            say(f"{path}: cut a torn last line (a cell killed while written); that cell runs again")
    dist.barrier()  # every rank reads the repaired results before rank 0 appends
    old = [r for r in read_records(path) if "settings_hash" in r]
    done = {cell_key(r) for r in old}
    # the same steps in another suite (a shared fine-tuned dense control): measured once
    same: dict[tuple[Any, ...], dict[str, Any]] = {_same_key(r): r for r in old}
    tag = tag or data_tag(data_dir)
    vocab = projection_vocab(data)
    meta = provenance()
    todo = []
    for name in models:
        for seed in seeds:
            for suite in suites:
                dense_hash = suite.dense_key()
                todo.append((name, seed, suite, None, dense_hash))
                todo += [(name, seed, suite, c, cell_hash(suite, c)) for c in suite.cells]
    # the dense record is shared by suites of the same dense settings: count it once
    seen: set[tuple[Any, ...]] = set()
    cells = []
    for name, seed, suite, cell, h in todo:
        k = (
            tag,
            name,
            "dense" if cell is None else suite.name,
            "dense" if cell is None else cell.label,
            seed,
            h,
        )
        if k not in seen:
            seen.add(k)
            cells.append((k, name, seed, suite, cell))
    total = len(cells)
    finished = sum(1 for c in cells if c[0] in done)
    say(f"{total} cells, {finished} already in {path}; {total - finished} to run")
    t_start, ran = time.perf_counter(), 0
    denses: dict[tuple[str, int, str], DenseModel] = {}
    for key, name, seed, suite, cell in cells:
        if key in done:
            continue
        twin = same.get((key[0], key[1], key[3], key[4], key[5]))  # key without its suite
        if twin is not None:
            rec = {k: v for k, v in twin.items() if k != "control"}  # this suite names its own
            if cell is not None and cell.control is not None:
                rec["control"] = cell.control
            if dist.is_main():
                append_record(path, {**rec, "suite": key[2], "copied_from_suite": twin["suite"]})
            finished += 1
            say(f"[{finished}/{total}] {name} s{seed} {key[2]}/{key[3]}: as in {twin['suite']}, copied")
            continue
        dk = (name, seed, suite.dense_key())
        if dk not in denses:
            denses = {dk: dense_model(out, tag, name, seed, suite, data, device, vocab)}  # one at a time
        dense = denses[dk]
        base = {"data": tag, "model": name, "suite": key[2], "seed": seed, "settings_hash": key[5]}
        base["dense_settings"] = dataclasses.asdict(suite.dense)
        if cell is not None and cell.control is not None:
            base["control"] = cell.control
        try:
            if cell is None:
                model, seconds, configs = dense.model, 0.0, []
            else:
                model, seconds, configs = run_cell(dense, cell, suite, seed, data, device)
        except CompressionError as err:
            rec = {**base, "method": key[3], "refused": str(err), **meta}
            line = f"refused: {err}"
        else:
            measured = cell_record(
                label=key[3],
                model=model,
                dense=dense,
                data=data,
                device=device,
                timing=suite.timing,
                vocab=vocab,
                seconds=seconds,
            )
            rec = {**base, **measured, "settings": configs, "plan": _plan(model), **meta}
            proj = (
                f", {rec['projected_ratio']:.1f}x {rec['projected_vocab']}-projected"
                if "projected_ratio" in rec
                else ""
            )
            line = (
                f"test AUC {rec['test_auc']:.4f} ({rec['delta_test_auc']:+.4f}), "
                f"{rec['bytes'] / 2**20:.3f} MB, {rec['ratio']:.2f}x{proj}, {seconds:.1f} s"
            )
        rec["when"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if dist.is_main():
            append_record(path, rec)
        same[_same_key(rec)] = rec
        ran += 1
        finished += 1
        eta = (time.perf_counter() - t_start) / ran * (total - finished)
        say(f"[{finished}/{total}] {name} s{seed} {key[2]}/{key[3]}: {line}; ETA {_hms(eta)}")
    say(f"results in {path}")
    return path


def _same_key(rec: dict[str, Any]) -> tuple[Any, ...]:
    """A cell's key without its suite: equal steps, dense and timing settings."""
    return (rec["data"], rec["model"], rec["method"], rec["seed"], rec["settings_hash"])


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
