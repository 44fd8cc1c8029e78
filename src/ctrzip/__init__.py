"""ctrzip: train CTR models and compress them (MEC product quantization, low-rank feature mimicking).

Public API::

    from ctrzip import EncodedDataset, build_model, Trainer, TrainConfig, evaluate
    from ctrzip import compress, MECConfig, LowRankConfig, save, load
"""

from ctrzip._version import __version__
from ctrzip.compression.api import compress
from ctrzip.compression.lowrank.feature_mimicking import LowRankConfig
from ctrzip.compression.mec.method import MECConfig, PQConfig
from ctrzip.data.batch import Batch
from ctrzip.data.dataset import EncodedDataset
from ctrzip.data.encode import encode_dataset
from ctrzip.data.schema import FeatureSchema, FieldSpec
from ctrzip.data.synthetic import generate
from ctrzip.export import load, save
from ctrzip.models.base import build_model
from ctrzip.train.trainer import TrainConfig, Trainer, evaluate

__all__ = [
    "Batch",
    "EncodedDataset",
    "FeatureSchema",
    "FieldSpec",
    "LowRankConfig",
    "MECConfig",
    "PQConfig",
    "TrainConfig",
    "Trainer",
    "__version__",
    "build_model",
    "compress",
    "encode_dataset",
    "evaluate",
    "generate",
    "load",
    "save",
]
