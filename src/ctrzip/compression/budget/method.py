"""Whole-model compression to a memory budget or an AUC-loss cap (method ``budget``).

Steps: (1) every target gets candidate representations with exact bytes (tables: float,
row-wise fp16/int8/int4/int2, count-weighted k-means PQ at several (M, K); first-order
tables: float or fp16; the dense network: float, int8 weights, or feature-mimicking low rank
at a few output-variance shares with int8 factors, ``network.py``); (2) a cheap sensitivity:
each table option's predicted validation-AUC loss is ``k_f * error``, where ``error`` is the
count-weighted reconstruction error and ``k_f`` is calibrated by one plug-in validation pass
of the field's most aggressive option (on ``calib_rows`` validation rows); the first-order
group is measured directly, and so is every form of the network (one pass each); (3) the
exact bytes-vs-loss frontier (``allocate.frontier``) gives the plan with the least predicted
loss within ``mb``, or the smallest within ``max_auc_loss``; (4) the plan is applied and
verified by a real validation pass; in loss mode a miss rescales the predictions by
measured/predicted and re-plans (at most ``refine`` times). The stored bytes never exceed
the budget (checked on the model's tensors, which are what ``ctrzip.save`` writes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ctrzip.compression.api import CompressionMethod, register_method
from ctrzip.compression.budget.search import BudgetSearch
from ctrzip.data.dataset import EncodedDataset
from ctrzip.errors import CompressionError
from ctrzip.models.base import CTRModel

MB = 2**20


@dataclass
class BudgetConfig:
    """Compress the whole model to ``mb`` MB, or to the smallest size within ``max_auc_loss``.

    Args:
        mb: byte budget in MB (2^20 bytes) for every stored tensor of the model.
        max_auc_loss: alternative goal: the smallest model whose validation AUC is at most this
            much below the uncompressed model's (e.g. 0.001).
        bits: row-wise widths offered to tables (16 = fp16).
        pq: product-quantization settings offered to tables, as ``"MxK"`` strings.
        bands: head shares of lookups for the popularity-banded table candidates (empty: none).
        dense_network: offer int8 weights for every plain ``nn.Linear``.
        lowrank_energy: output-variance shares at which the network is also offered as
            feature-mimicking low rank with int8 factors (empty: none; needs ``dense_network``).
        calib_rows: validation rows used by the calibration passes (the verify pass uses all).
        calib_share: the largest targets holding this share of the compressible bytes get a
            calibration pass each; the others use the median slope of those.
        eval_split: split used for calibration and verification.
        refine: re-plans allowed in loss mode when the measured loss misses the cap.
        batch_size: rows per evaluation forward.
        device: ``auto``, ``cpu`` or ``cuda``.
        seed: k-means seed.
        version: config schema version.

    Raises:
        CompressionError: neither or both goals set, a non-positive goal, a malformed ``pq``.
    """

    mb: float | None = None
    max_auc_loss: float | None = None
    bits: tuple[int, ...] = (16, 8, 4, 2)
    pq: tuple[str, ...] = ("4x256", "2x256", "1x256")
    bands: tuple[float, ...] = (0.8, 0.95)
    dense_network: bool = True
    lowrank_energy: tuple[float, ...] = (0.99, 0.95, 0.9, 0.8)
    calib_rows: int = 100_000
    calib_share: float = 0.95
    eval_split: str = "valid"
    refine: int = 2
    batch_size: int = 8192
    device: str = "auto"
    seed: int = 0
    version: int = 1

    def __post_init__(self) -> None:
        if (self.mb is None) == (self.max_auc_loss is None):
            raise CompressionError("budget: set exactly one of mb (a size) or max_auc_loss (an AUC loss)")
        if self.mb is not None and self.mb <= 0:
            raise CompressionError(f"budget: mb must be > 0, got {self.mb}")
        if self.max_auc_loss is not None and self.max_auc_loss < 0:
            raise CompressionError(f"budget: max_auc_loss must be >= 0, got {self.max_auc_loss}")
        if any(not 0.0 < b < 1.0 for b in self.bands):
            raise CompressionError(f"budget: bands are shares of lookups in (0, 1), got {list(self.bands)}")
        if any(not 0.0 < e < 1.0 for e in self.lowrank_energy):
            raise CompressionError(
                "budget: lowrank_energy are shares of output variance in (0, 1), "
                f"got {list(self.lowrank_energy)}"
            )
        if not 0.0 < self.calib_share <= 1.0:
            raise CompressionError(f"budget: calib_share must be in (0, 1], got {self.calib_share}")
        if self.calib_rows < 1000:
            raise CompressionError(f"budget: calib_rows must be >= 1000, got {self.calib_rows}")
        self.pq_settings()

    def pq_settings(self) -> list[tuple[int, int]]:
        out = []
        for s in self.pq:
            parts = s.lower().split("x")
            if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
                raise CompressionError(f"budget: pq entries look like '4x256' (M x K), got {s!r}")
            out.append((int(parts[0]), int(parts[1])))
        return out


@register_method("budget", BudgetConfig)
class Budget(CompressionMethod[BudgetConfig]):
    """Choose a representation per table and for the network under a byte or AUC budget."""

    def run(self, model: CTRModel, data: EncodedDataset | None) -> dict[str, Any]:
        cfg = self.config
        search = BudgetSearch(model, data, cfg)
        if cfg.mb is not None:  # refuse an impossible budget before any evaluation
            search.check_budget(cfg.mb)
        return search.apply(mb=cfg.mb, max_auc_loss=cfg.max_auc_loss)
