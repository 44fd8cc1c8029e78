"""Mixed-precision embeddings by popularity as a compression method (``mixed``).

Post-training and explicit: the config names, for every field to compress, its band plan
(``BandSpec`` list tiling the field's ids ``[0, V)``); each listed field's float table becomes
a ``BandedTable`` fitted to it with the training counts of the dataset. Choosing plans to a
byte budget is the allocator's job, not this method's. Only the main embedding tables are
planned; first-order (dimension-1) tables stay as they are (compose with ``fp16`` for them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ctrzip.compression.api import CompressionMethod, TargetDecision, register_method
from ctrzip.compression.posttraining import PostTrainingOptions, swap_and_report
from ctrzip.data.dataset import EncodedDataset
from ctrzip.data.loader import resolve_device
from ctrzip.distributed import broadcast_module_
from ctrzip.errors import CompressionError
from ctrzip.models.base import CTRModel
from ctrzip.nn.embedding.banded import BandedTable
from ctrzip.nn.embedding.bands import BandSpec, band_nbytes, validate_plan
from ctrzip.nn.embedding.base import DenseTable


@dataclass
class MixedConfig(PostTrainingOptions):
    """Band plans per field.

    Args:
        plans: ``{field: [band, ...]}``; a band is ``{start, end, representation, params}``
            (see ``BandSpec``: ``float``; ``rowwise`` with ``bits``; ``pq`` with ``M``, ``K``;
            ``shared`` with ``S``). Bands tile the field's ids ``[0, vocab_size)``; id 0
            (padding) maps to zero, the OOV id ``vocab_size - 1`` belongs to the last band.
        use_counts: weight fits by the dataset's training counts (refused if the dataset has
            none); False fits with uniform weights.
        (and ``PostTrainingOptions``: eval_split, batch_size, device)
        version: config schema version.

    Raises:
        CompressionError: a bad ``batch_size`` (an empty ``plans`` is refused when compressing).
    """

    plans: dict[str, tuple[BandSpec, ...]] = field(default_factory=dict)
    use_counts: bool = True
    version: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        self.plans = {
            name: tuple(b if isinstance(b, BandSpec) else BandSpec.from_dict(b) for b in bands)
            for name, bands in self.plans.items()
        }


def _check(model: CTRModel, cfg: MixedConfig, data: EncodedDataset | None) -> list[TargetDecision]:
    """Refuse any plan that cannot be carried out; one decision per planned field."""
    if not cfg.plans:
        raise CompressionError("mixed: plans is empty; give a band plan for at least one field")
    tables = model.embedding.tables
    decisions = []
    for name, plan in cfg.plans.items():
        if name not in tables:
            known = ", ".join(tables) or "none"
            raise CompressionError(
                f"mixed: plans.{name}: no sparse field {name!r} in the model (fields: {known})"
            )
        old = tables[name]
        if type(old) is not DenseTable:
            raise CompressionError(
                f"mixed: plans.{name}: field {name!r} is already compressed ({type(old).__name__}); "
                "a band plan takes a float table"
            )
        bands = validate_plan(plan, old.num_embeddings, old.embedding_dim, f"mixed: plans.{name}")
        before, after = old.nbytes(), sum(band_nbytes(b, old.embedding_dim) for b in bands)
        if after >= before:
            raise CompressionError(
                f"mixed: plans.{name}: the plan stores {after:,} B, "
                f"not less than the float table's {before:,} B"
            )
        if cfg.use_counts and (data is None or name not in data.counts):
            raise CompressionError(
                f"mixed: plans.{name}: use_counts is true but the dataset has no training counts for "
                f"{name!r}; give a dataset with counts.npz or set use_counts: false"
            )
        decisions.append(
            TargetDecision(
                target=f"embedding.tables.{name}",
                kind="table",
                action="compressed",
                reason="",
                bytes_before=before,
                bytes_after=after,
            )
        )
    return decisions


@register_method("mixed", MixedConfig)
class Mixed(CompressionMethod[MixedConfig]):
    """Swap the planned fields' float tables for ``BandedTable``s; no training."""

    def run(self, model: CTRModel, data: EncodedDataset | None) -> dict[str, Any]:
        cfg = self.config
        dev = resolve_device(cfg.device)
        model.to(dev)
        decisions = _check(model, cfg, data)

        def build(name: str) -> Any:
            def make(old: Any) -> BandedTable:
                counts = data.counts[name] if cfg.use_counts and data is not None else None
                pad = getattr(old, "padding_idx", 0)
                table = BandedTable.from_dense(
                    old.materialize().float(), counts, cfg.plans[name], pad, name=name
                )
                return broadcast_module_(table)  # k-means bands: every rank keeps rank 0's fit

            return make

        builds = {f"embedding.tables.{name}": build(name) for name in cfg.plans}
        report = swap_and_report(
            model, data, builds, decisions, eval_split=cfg.eval_split, batch_size=cfg.batch_size, device=dev
        )
        bands = {fqn: model.get_submodule(fqn).band_report() for fqn in builds}  # type: ignore[operator]
        weights = "training counts" if cfg.use_counts else "uniform"
        return {**report, "bands": bands, "weights": weights}
