"""Child runner: train one model with ctrzip on the shared CSV splits (see ``peer_fuxictr.py``).

The same steps a user takes: ``encode_dataset`` (CSV -> encoded arrays, vocabularies fitted on
train), ``build_model``, ``Trainer.fit`` with validation, ``evaluate`` on test.
"""

from __future__ import annotations

import itertools
import sys
import time
from pathlib import Path
from typing import Any

from _child import read_job, run_fields, throughput, write_out
from clock import ListLoader, StepClock
from data import PeerDataset


def encode_config(ds: PeerDataset) -> dict[str, Any]:
    feats: list[dict[str, Any]] = []
    for f in ds.features:
        if f.kind == "sequence":
            feats.append({"name": f.name, "type": "sequence", "separator": f.separator, "max_len": f.max_len})
        else:
            feats.append({"name": f.name, "type": "categorical"})
    return {
        "name": ds.name,
        "format": "csv",
        "label": ds.label,
        "min_count": ds.min_count,
        "split": {"method": "files"},
        "features": feats,
    }


def model_params(key: str, hp: dict[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {"embedding_dim": hp["embedding_dim"], "mlp": list(hp["mlp"])}
    if key == "dcnv2":
        params.update(num_cross_layers=hp["num_cross_layers"], structure="parallel")
    return params


def train_config(hp: dict[str, Any], **over: Any) -> Any:
    from ctrzip.train import TrainConfig

    base = dict(
        epochs=hp["epochs"],
        batch_size=hp["batch_size"],
        lr=hp["lr"],
        embedding_l2=hp["embedding_l2"],
        weight_l2=hp["net_l2"],
        clip_grad_norm=hp["clip_grad_norm"],
        early_stop_patience=hp["early_stop_patience"],
        seed=hp["seed"],
        device="cpu",
        progress=False,
    )
    return TrainConfig(**{**base, **over})


def step_only(model: Any, split: Any, hp: dict[str, Any], k: int) -> dict[str, float]:
    """Samples/s of ``Trainer.fit`` over ``k`` batches already in memory (1 warm-up step excluded)."""
    from ctrzip.data.loader import BatchLoader
    from ctrzip.train import Trainer

    loader = BatchLoader(split, hp["batch_size"], shuffle=True, seed=hp["seed"] + 99)
    k = max(1, min(k, len(loader) - 2))
    batches = list(itertools.islice(iter(loader), k + 2))
    clock = StepClock(ListLoader(batches), 1, k + 1)
    Trainer(train_config(hp, epochs=1, max_steps=k + 2)).fit(model, clock)
    rows = sum(len(b) for b in batches[1 : k + 1])
    return {"step_samples_per_s": throughput(rows, clock.seconds), "step_batches": k}


def main() -> None:
    job = read_job()
    import torch

    import ctrzip
    from ctrzip.data.dataset import EncodedDataset
    from ctrzip.data.encode import encode_dataset
    from ctrzip.models.base import build_model
    from ctrzip.train import Trainer, evaluate

    ds = PeerDataset.from_dict(job["dataset"])
    enc = Path(job["work"]) / ds.name
    t0 = time.perf_counter()
    if not (enc / "feature_map.json").exists():
        splits = {"train": ds.train, "valid": ds.valid, "test": ds.test}
        encode_dataset(encode_config(ds), splits, enc, progress=False)
    result: dict[str, Any] = {
        "library": "ctrzip",
        "version": getattr(ctrzip, "__version__", "dev"),
        "prep_s": time.perf_counter() - t0,
        "data": {"encoded": str(enc)},
    }
    if job.get("prepare_only"):
        write_out(job, result)
        return

    hp = job["hp"]
    data = EncodedDataset.open(enc)
    torch.manual_seed(hp["seed"])
    model = build_model(job["model"], data.schema, model_params(job["model"], hp))
    t0 = time.perf_counter()
    hist = Trainer(train_config(hp)).fit(model, data["train"], data["valid"])
    fit_s = time.perf_counter() - t0
    n_train = len(data["train"])
    # the trainer times training only (validation excluded) per evaluation period = one epoch here
    train_s = sum(n_train / rec["samples_per_s"] for rec in hist.epochs)
    t0 = time.perf_counter()
    metrics = evaluate(model, data["test"], batch_size=max(hp["batch_size"], 8192), device="cpu")
    result.update(
        model=job["model"],
        torch=torch.__version__,
        **run_fields(
            model,
            {f.name: f.vocab_size for f in data.schema.sparse_fields},
            n_train=n_train,
            epochs_run=len(hist.epochs),
            fit_s=fit_s,
            train_s=train_s,
            auc=metrics["auc"],
            logloss=metrics["logloss"],
            eval_t0=t0,
        ),
    )
    if job.get("step_batches"):  # after the test metrics: these extra steps change the model
        result.update(step_only(model, data["train"], hp, job["step_batches"]))
    write_out(job, result)


if __name__ == "__main__":
    sys.exit(main())
