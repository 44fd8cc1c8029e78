"""Whole-model compression to a byte budget or an AUC-loss cap (method ``budget``).

Modules: ``allocate`` (the exact bytes-vs-loss frontier over per-target options),
``candidates`` (representations with exact bytes and count-weighted reconstruction error),
``network`` (the dense network's int8 and low-rank forms), ``targets`` (allocation units),
``search`` (``BudgetSearch``: calibrate once, then plan, apply and verify any number of goals),
``method`` (``BudgetConfig`` and the registered method).
"""

from ctrzip.compression.budget.method import BudgetConfig
from ctrzip.compression.budget.search import BudgetSearch

__all__ = ["BudgetConfig", "BudgetSearch"]
