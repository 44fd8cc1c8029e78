"""End-to-end steps shared by the CLI and the demo: train a run, evaluate, report sizes."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctrzip.config import ConfigError, from_dict
from ctrzip.data.dataset import EncodedDataset
from ctrzip.errors import TrainingError
from ctrzip.models.base import CTRModel, build_model
from ctrzip.run_config import RunConfig


@dataclass
class RunResult:
    model: CTRModel
    metrics: dict[str, dict[str, float]]  # split -> {"auc", "logloss", "n"}
    sizes: dict[str, Any]
    history: Any
    artifact: Path | None


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def train_run(
    run: RunConfig,
    *,
    save_to: str | Path | None = None,
    overwrite: bool = False,
    log: Callable[[str], None] = _stderr,
) -> RunResult:
    """Train ``run.model`` on ``run.dataset``, evaluate valid/test, optionally save an artifact.

    The model is initialized from ``train.seed`` (same run file and seed -> bit-identical
    weights on CPU). Everything that would fail after training fails before it: an empty
    train split, a valid or test split without both classes, an existing ``save_to`` (named
    with the settings that differ from the run saved in ``train.out_dir``, when they do).

    Under ``torchrun`` (``WORLD_SIZE > 1``) it joins the process group and trains with
    ``DistributedTrainer``; the metrics are gathered over all ranks and rank 0 alone logs and
    saves the artifact (see ``ctrzip.train.distributed``).

    Args:
        run: the parsed run file.
        save_to: artifact folder, or None to save nothing.
        overwrite: replace an existing artifact at ``save_to``.
        log: receives one-line notes (a missing valid split); stderr by default.

    Raises:
        TrainingError: a split cannot be trained or evaluated on (names the split).
        ArtifactError: ``save_to`` exists and not ``overwrite``.
        ConfigError: ``save_to`` is ``train.out_dir`` (checkpoints and artifact would mix).
    """
    from ctrzip import distributed as dist
    from ctrzip.compression.sizes import size_report
    from ctrzip.export import ArtifactError, check_destination, save
    from ctrzip.export.encoder_files import of_dataset
    from ctrzip.train.checks import check_both_classes
    from ctrzip.train.distributed import evaluate_split, setup, trainer_for
    from ctrzip.train.resume import saved_run_diffs
    from ctrzip.train.trainer import TrainConfig

    tcfg = from_dict(TrainConfig, run.train, path="train")
    tcfg = setup(tcfg)  # under torchrun: join the process group, this rank's device
    if save_to is not None and tcfg.out_dir and Path(save_to).resolve() == Path(tcfg.out_dir).resolve():
        raise ConfigError(
            f"the artifact folder {save_to} is train.out_dir, which holds the training checkpoints; "
            f"save to {Path(tcfg.out_dir) / 'model'} (the default) or another folder"
        )
    data = EncodedDataset.open(run.dataset)
    for name in ("valid", "test"):
        if name in data.splits:
            check_both_classes(data[name], f"{data.root}: {name} split")
    if "valid" not in data.splits and dist.is_main():
        log(
            f"note: {data.root} has no valid split: no early stopping or lr decay "
            "(train.early_stop_patience, train.lr_patience); the last epoch's weights are kept"
        )
    model = build_model(run.model.name, data.schema, run.model.params, source="model", seed=tcfg.seed)
    if save_to is not None:
        try:
            check_destination(save_to, overwrite)
        except ArtifactError:  # a rerun with other settings: name them, not only the artifact
            diffs = saved_run_diffs(tcfg, model, data["train"])
            if diffs:
                raise TrainingError(
                    f"{tcfg.out_dir}: this run differs from the saved one in {'; '.join(diffs)}; "
                    "start over with --fresh (and --overwrite to replace its artifact), or use "
                    "another train.out_dir"
                ) from None
            raise
    history = trainer_for(tcfg).fit(model, data["train"], data.splits.get("valid"))
    metrics = {
        name: evaluate_split(
            model, data[name], batch_size=max(tcfg.batch_size, 8192), device=tcfg.device, name=f"{name} split"
        )
        for name in ("valid", "test")
        if name in data.splits
    }
    artifact = (  # rank 0 writes; the others wait so the artifact exists when every rank returns
        save(save_to, model, extra={"metrics": metrics}, overwrite=overwrite, encoder=of_dataset(data))
        if save_to and dist.is_main()
        else None
    )
    dist.barrier()
    return RunResult(model, metrics, size_report(model), history, artifact)
