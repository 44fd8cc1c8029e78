"""Table baselines beside MEC and feature mimicking, each a method of the same interface sized
by a ratio, a byte budget or its own knob (``common``):

- ``hashing``: the hashing trick (``HashedTable``);
- ``qr``: DLRM's quotient-remainder embeddings (``QRTable``);
- ``mixed_dim``: DLRM's mixed-dimension embeddings, power-law rule (``MixedDimTable``);
- ``dhe``: deep hash embedding, no table (``DHETable``);
- ``prune``: magnitude pruning of elements (CSR) or rows (``PrunedTable``);
- ``cce``: clustered compositional embeddings, training alternated with k-means (``CCETable``).
"""

from ctrzip.compression.baselines.cce import CCEConfig
from ctrzip.compression.baselines.dhe import DHEConfig
from ctrzip.compression.baselines.hashing import HashingConfig
from ctrzip.compression.baselines.mixed_dim import MixedDimConfig
from ctrzip.compression.baselines.prune import PruneConfig
from ctrzip.compression.baselines.qr import QRConfig

__all__ = ["CCEConfig", "DHEConfig", "HashingConfig", "MixedDimConfig", "PruneConfig", "QRConfig"]
