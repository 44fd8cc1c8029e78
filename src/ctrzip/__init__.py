"""ctrzip: train CTR models and compress them (MEC product quantization, low-rank feature mimicking).

Public API::

    from ctrzip import EncodedDataset, build_model, Trainer, TrainConfig, evaluate
    from ctrzip import compress, MECConfig, LowRankConfig, save, load
    from ctrzip import BudgetConfig, RowwiseConfig, LinearInt8Config, MixedConfig
    from ctrzip import predict, Predictor   # raw rows -> probabilities with a saved artifact
"""

from ctrzip._version import __version__
from ctrzip.compression.api import compress
from ctrzip.compression.budget import BudgetConfig
from ctrzip.compression.lowrank.feature_mimicking import LowRankConfig
from ctrzip.compression.mec.method import MECConfig, PQConfig
from ctrzip.compression.mixed import MixedConfig
from ctrzip.compression.quantize import LinearInt8Config, RowwiseConfig
from ctrzip.data.batch import Batch
from ctrzip.data.dataset import EncodedDataset
from ctrzip.data.encode import encode_dataset
from ctrzip.data.schema import FeatureSchema, FieldSpec
from ctrzip.data.synthetic import generate
from ctrzip.export import load, save
from ctrzip.models.base import build_model
from ctrzip.serving.predict import Predictor, predict
from ctrzip.train.trainer import TrainConfig, Trainer, evaluate

__all__ = [
    "Batch",
    "BudgetConfig",
    "EncodedDataset",
    "FeatureSchema",
    "FieldSpec",
    "LinearInt8Config",
    "LowRankConfig",
    "MECConfig",
    "MixedConfig",
    "PQConfig",
    "Predictor",
    "RowwiseConfig",
    "TrainConfig",
    "Trainer",
    "__version__",
    "build_model",
    "compress",
    "encode_dataset",
    "evaluate",
    "generate",
    "load",
    "predict",
    "save",
]
