"""ctrzip: train CTR models and compress them (MEC product quantization, low-rank feature mimicking)."""

from ctrzip.data.batch import Batch
from ctrzip.data.schema import FeatureSchema, FieldSpec
from ctrzip.models.base import build_model

__version__ = "0.1.0"
__all__ = ["Batch", "FeatureSchema", "FieldSpec", "build_model", "__version__"]
