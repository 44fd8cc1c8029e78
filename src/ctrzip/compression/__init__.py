"""Compression methods, one subpackage per family.

- ``mec/``: product quantization of embedding tables (MEC, plain PQ, RQ/AQ, k-means variants),
  stage 1 (code learning), stage 2 (the CTR model on codes), losses, diagnostics, byte projection.
- ``budget/``: whole-model compression to a memory budget or an AUC-loss cap.
- ``mixed/``: mixed-precision embeddings by popularity (a band plan per field, ``BandedTable``).
- ``quantize/``: row-wise post-training quantization of tables (fp16, int8, int4, int2).
- ``lowrank/``: low-rank factorizations: feature mimicking (``lowrank``), SVD and Tensor-Train
  baselines, and folding a projection into the first MLP layer.
- ``baselines/``: hashing trick, quotient-remainder, mixed dimensions, deep hash embedding and
  magnitude pruning, each sized by a ratio, a byte budget or its own knob.
- Shared here: ``api`` (the one entry point, ``compress``), ``select`` (target finders),
  ``calibrate``/``stats`` (output statistics), ``sizes`` (byte accounting).

The package is ``ctrzip.compression`` so that ``ctrzip.compress`` can stay the function.
Importing it registers every method.
"""

from ctrzip.compression import baselines, budget, lowrank, mec, mixed, quantize  # noqa: F401  (registers the methods)
from ctrzip.compression.api import METHODS, CompressionMethod, compress, register_method

__all__ = ["METHODS", "CompressionMethod", "compress", "register_method"]
