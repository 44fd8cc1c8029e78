"""Bands of a ``BandedTable``: one module per representation, and the plan that places them."""

from ctrzip.nn.embedding.bands.base import BAND_KINDS, Band, register_band
from ctrzip.nn.embedding.bands.float_rows import FloatBand
from ctrzip.nn.embedding.bands.plan import BandPlan, BandSpec, band_nbytes, plan_nbytes, validate_plan
from ctrzip.nn.embedding.bands.pq import PQBand
from ctrzip.nn.embedding.bands.rowwise import RowwiseBand
from ctrzip.nn.embedding.bands.shared import SharedBand

__all__ = [
    "BAND_KINDS",
    "Band",
    "BandPlan",
    "BandSpec",
    "FloatBand",
    "PQBand",
    "RowwiseBand",
    "SharedBand",
    "band_nbytes",
    "plan_nbytes",
    "register_band",
    "validate_plan",
]
