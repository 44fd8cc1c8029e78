"""Public entry point of the synthetic data generator (implementation: :mod:`ctrzip.data.synth`).

Example::

    from ctrzip.data.synthetic import generate
    report = generate("criteo-like", "criteo.tsv", rows=1_000_000, seed=0, workers=2)

Writes raw Criteo TSV (``label, I1..I13, C1..C26``, empty = missing) or raw Avazu CSV (with
header), so the real readers and encoder are exercised. Scripts that pass ``workers > 1`` on a
platform without ``fork`` need the usual ``if __name__ == "__main__":`` guard.
"""

from ctrzip.data.synth import (
    SynthReport,
    TeacherConfig,
    build_plan,
    generate,
    get_layout,
    rank_auc,
    register_synth,
)

__all__ = [
    "SynthReport",
    "TeacherConfig",
    "build_plan",
    "generate",
    "get_layout",
    "rank_auc",
    "register_synth",
]
