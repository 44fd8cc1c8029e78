"""Whole-model compression to a byte budget or an AUC-loss cap (method ``budget``).

Modules: ``allocate`` (the exact bytes-vs-loss frontier over per-target options),
``candidates`` (representations with exact bytes and count-weighted reconstruction error),
``method`` (``BudgetConfig``: calibrate, plan, apply, verify).
"""

from ctrzip.compression.budget.method import BudgetConfig

__all__ = ["BudgetConfig"]
