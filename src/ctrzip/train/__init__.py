"""Training: ``Trainer(TrainConfig(...)).fit(model, train, valid)``, ``evaluate``, ``predict``, metrics."""

from ctrzip.train.evaluation import evaluate, predict
from ctrzip.train.metrics import auc, logloss
from ctrzip.train.trainer import History, TrainConfig, Trainer

__all__ = ["History", "TrainConfig", "Trainer", "auc", "evaluate", "logloss", "predict"]
