"""Synthetic criteo-like / avazu-like raw data with labels from a hidden teacher.

Modules: ``hashing`` (stateless per-id randomness), ``popularity`` (truncated power laws and
their refit), ``layouts`` (fields of each kind), ``teacher`` (the label model), ``sampler``
(rows per chunk), ``writer`` (raw text), ``driver`` (``generate``, the driver; named so that
``ctrzip.data.synth.generate`` stays the function), ``cli``.
"""

from ctrzip.data.synth.driver import SynthReport, build_plan, generate, make_chunk, rank_auc
from ctrzip.data.synth.layouts import LAYOUTS, get_layout
from ctrzip.data.synth.popularity import PowerLaw, refit
from ctrzip.data.synth.teacher import TeacherConfig

__all__ = [
    "LAYOUTS",
    "PowerLaw",
    "SynthReport",
    "TeacherConfig",
    "build_plan",
    "generate",
    "get_layout",
    "make_chunk",
    "rank_auc",
    "refit",
    "register_synth",
]


def register_synth(data_app):  # type: ignore[no-untyped-def]
    """Add ``ctrzip data synth`` to ``data_app`` (imported lazily: typer only when used)."""
    from ctrzip.data.synth.cli import register_synth as _register

    _register(data_app)
