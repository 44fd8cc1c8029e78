"""Child runner: train one model with FuxiCTR on the shared CSV splits (see ``peer_fuxictr.py``).

Uses FuxiCTR's own pipeline as its documentation describes it: ``FeatureProcessor`` +
``build_dataset`` (CSV -> parquet, fitted vocabularies), ``FeatureMap``, ``RankDataLoader``
(parquet), a model class from its ``model_zoo`` and ``BaseModel.fit`` / ``evaluate``.
The model classes are loaded from ``job["zoo"]`` (a FuxiCTR ``model_zoo`` checkout) at run time;
no FuxiCTR code is part of ctrzip.
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from _child import read_job, run_fields, throughput, write_out
from data import PeerDataset

ZOO_CLASS = {"deepfm": "DeepFM", "pnn": "PNN", "dcnv2": "DCNv2"}


def load_zoo_class(zoo: str, key: str) -> tuple[type, str]:
    """The PyTorch model class ``key`` from a FuxiCTR model_zoo folder, and its file's sha256."""
    name = ZOO_CLASS[key]
    hits = [p for p in sorted(Path(zoo).glob(f"**/src/{name}.py")) if "_tf" not in str(p)]
    if not hits:
        raise FileNotFoundError(f"{zoo}: no */src/{name}.py (pass --fuxictr-zoo <FuxiCTR>/model_zoo)")
    spec = importlib.util.spec_from_file_location(f"fuxictr_zoo_{name}", hits[0])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name), hashlib.sha256(hits[0].read_bytes()).hexdigest()[:16]


def feature_cols(ds: PeerDataset) -> list[dict[str, Any]]:
    cols = [
        {
            "name": [f.name for f in ds.features if f.kind == "categorical"],
            "active": True,
            "dtype": "str",
            "type": "categorical",
        }
    ]
    for f in ds.features:
        if f.kind == "sequence":
            cols.append(
                {
                    "name": f.name,
                    "active": True,
                    "dtype": "str",
                    "type": "sequence",
                    "splitter": f.separator,
                    "max_len": f.max_len,
                    "padding": "post",
                }
            )
    return cols


def arch_params(key: str, hp: dict[str, Any]) -> dict[str, Any]:
    """Our neutral settings in FuxiCTR's argument names."""
    mlp = list(hp["mlp"])
    if key == "dcnv2":
        return {
            "model_structure": "parallel",
            "parallel_dnn_hidden_units": mlp,
            "num_cross_layers": hp["num_cross_layers"],
            "use_low_rank_mixture": False,
        }
    return {"hidden_units": mlp}


def step_only(model: Any, train_gen: Any, k: int, label: str) -> dict[str, float]:
    """Samples/s of ``BaseModel.train_step`` over ``k`` batches already in memory (1 warm-up excluded).

    ``loss.item()`` per step mirrors ``BaseModel.train_epoch``.
    """
    batches = list(itertools.islice(iter(train_gen), k + 1))
    k = len(batches) - 1
    model.train()
    model.train_step(batches[0]).item()
    t0 = time.perf_counter()
    for batch in batches[1:]:
        model.train_step(batch).item()
    seconds = time.perf_counter() - t0
    rows = sum(len(b[label]) for b in batches[1:])
    return {"step_samples_per_s": throughput(rows, seconds), "step_batches": k}


def start_ray() -> None:
    """Start Ray before FuxiCTR does (it skips ``ray.init`` when one is running): local
    addresses only and no dashboard, which also spares FuxiCTR the dashboard's CPU time."""
    import ray

    ray.init(_node_ip_address="127.0.0.1", include_dashboard=False, logging_level=logging.ERROR)


def _reg(value: float) -> float | int:
    # FuxiCTR reads a float as L2 (lambda/2 ||W||^2); integer 0 disables the term entirely.
    return float(value) if value > 0 else 0


def main() -> None:
    job = read_job()
    logging.basicConfig(level=logging.WARNING)
    import fuxictr
    import torch
    from fuxictr.features import FeatureMap
    from fuxictr.preprocess import FeatureProcessor, build_dataset
    from fuxictr.pytorch.dataloaders import RankDataLoader
    from fuxictr.pytorch.torch_utils import seed_everything

    ds = PeerDataset.from_dict(job["dataset"])
    root = Path(job["work"])
    start_ray()
    data_dir = root / ds.name
    if not all((data_dir / f"{s}.parquet").exists() for s in ("train", "valid", "test")):
        shutil.rmtree(data_dir, ignore_errors=True)  # a half-built folder would be skipped, not rebuilt
    t0 = time.perf_counter()
    proc = FeatureProcessor(
        feature_cols=feature_cols(ds),
        label_col={"name": ds.label, "dtype": "float"},
        dataset_id=ds.name,
        data_root=str(root),
    )
    train, valid, test = build_dataset(
        proc,
        train_data=ds.train,
        valid_data=ds.valid,
        test_data=ds.test,
        min_categr_count=ds.min_count,
        data_format="csv",
    )
    prep_s = time.perf_counter() - t0
    result: dict[str, Any] = {
        "library": "fuxictr",
        "version": fuxictr.__version__,
        "prep_s": prep_s,
        "data": {"train": train, "valid": valid, "test": test},
    }
    if job.get("prepare_only"):
        write_out(job, result)
        return

    hp = job["hp"]
    fmap = FeatureMap(ds.name, str(data_dir))
    fmap.load(str(data_dir / "feature_map.json"), {"embedding_dim": hp["embedding_dim"]})
    seed_everything(hp["seed"])
    cls, sha = load_zoo_class(job["zoo"], job["model"])
    (root / "checkpoints" / ds.name).mkdir(
        parents=True, exist_ok=True
    )  # BaseModel saves but never creates it
    model = cls(
        fmap,
        model_id=f"{job['model']}_peer",
        gpu=-1,
        task="binary_classification",
        learning_rate=hp["lr"],
        embedding_dim=hp["embedding_dim"],
        optimizer="adam",
        loss="binary_crossentropy",
        metrics=["logloss", "AUC"],
        monitor="AUC",
        monitor_mode="max",
        embedding_regularizer=_reg(hp["embedding_l2"]),
        net_regularizer=_reg(hp["net_l2"]),
        early_stop_patience=hp["early_stop_patience"],
        save_best_only=True,
        verbose=0,
        model_root=str(root / "checkpoints"),
        net_dropout=0,
        batch_norm=False,
        **arch_params(job["model"], hp),
    )
    train_gen, valid_gen = RankDataLoader(
        fmap,
        stage="train",
        train_data=train,
        valid_data=valid,
        batch_size=hp["batch_size"],
        shuffle=True,
        data_format="parquet",
    )
    outside = {"eval": 0.0, "evals": 0}
    eval_step, load_weights = model.eval_step, model.load_weights

    def timed_eval() -> None:  # validation + checkpoint inside fit: not training time
        t = time.perf_counter()
        eval_step()
        outside["eval"] += time.perf_counter() - t
        outside["evals"] += 1

    def timed_load(path: str) -> None:
        t = time.perf_counter()
        load_weights(path)
        outside["eval"] += time.perf_counter() - t

    model.eval_step, model.load_weights = timed_eval, timed_load
    t0 = time.perf_counter()
    model.fit(
        train_gen, epochs=hp["epochs"], validation_data=valid_gen, max_gradient_norm=hp["clip_grad_norm"]
    )
    fit_s = time.perf_counter() - t0
    n_train = train_gen.num_samples
    train_s = fit_s - outside["eval"]
    test_gen = RankDataLoader(
        fmap, stage="test", test_data=test, batch_size=hp["batch_size"], shuffle=False, data_format="parquet"
    )
    t0 = time.perf_counter()
    metrics = model.evaluate(test_gen)
    result.update(
        model=job["model"],
        zoo_file_sha256=sha,
        torch=torch.__version__,
        **run_fields(
            model,
            {k: v["vocab_size"] for k, v in fmap.features.items()},
            n_train=n_train,
            epochs_run=outside["evals"],  # one evaluation per finished epoch
            fit_s=fit_s,
            train_s=train_s,
            auc=metrics["AUC"],
            logloss=metrics["logloss"],
            eval_t0=t0,
        ),
    )
    if job.get("step_batches"):  # after the test metrics: these extra steps change the model
        result.update(step_only(model, train_gen, job["step_batches"], ds.label))
    write_out(job, result)


if __name__ == "__main__":
    sys.exit(main())
