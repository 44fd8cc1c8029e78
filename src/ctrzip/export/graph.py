"""The tensor-in, tensor-out module every export traces, and the batches parity checks run on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ctrzip.data.batch import Batch
from ctrzip.data.schema import FeatureSchema
from ctrzip.export.plain import ExportError, plain_copy
from ctrzip.models.base import CTRModel


class ProbabilityModel(nn.Module):
    """``(sparse [B, S] int64, dense [B, Dn] float32) -> probabilities [B] float32``.

    ``S`` is ``schema.sparse_width`` (a sequence field takes ``max_len`` columns, in
    ``schema.sparse_slices()`` order) and ``Dn`` the number of dense fields (may be 0).
    A row holding an id outside its field's ``[0, vocab_size)`` scores NaN, never a plausible
    probability (an ONNX graph cannot raise; the PyTorch model raises on such ids).
    """

    def __init__(self, model: CTRModel) -> None:
        super().__init__()
        self.model = model
        schema = model.schema
        vocab = [f.vocab_size for f in schema.sparse_fields for _ in range(f.max_len)]
        self.register_buffer("_vocab", torch.tensor(vocab, dtype=torch.long).reshape(1, -1))

    def forward(self, sparse: Tensor, dense: Tensor) -> Tensor:
        label = dense.new_zeros(sparse.shape[0])  # models never read it
        prob = torch.sigmoid(self.model(Batch(sparse, dense, label)))
        bad = ((sparse < 0) | (sparse >= self._vocab)).any(dim=1)
        return torch.where(bad, torch.full_like(prob, float("nan")), prob)


def export_module(model: CTRModel) -> tuple[ProbabilityModel, dict[str, str]]:
    """The module to trace: ``ProbabilityModel`` over ``plain_copy(model)`` on CPU, eval mode.

    Returns:
        The module and ``{fqn: "Type -> PlainType"}`` for the modules given export-friendly forms.
    """
    plain, swapped = plain_copy(model)
    return ProbabilityModel(plain).eval(), swapped  # type: ignore[arg-type]


@dataclass
class ParityBatch:
    """Inputs of a parity check: ``sparse [B, S]`` int64, ``dense [B, Dn]`` float32, and where
    they come from (``source``: ``"data:<folder> split <name>"`` or ``"random ids"``)."""

    sparse: Tensor
    dense: Tensor
    source: str

    def head(self, n: int) -> ParityBatch:
        return ParityBatch(self.sparse[:n], self.dense[:n], self.source)


def random_batch(schema: FeatureSchema, rows: int, seed: int = 0) -> ParityBatch:
    """``rows`` rows of ids uniform in each field's ``[0, vocab_size)`` (missing 0 and OOV
    included) and standard-normal dense values; seeded."""
    g = torch.Generator().manual_seed(seed)
    cols = [torch.randint(0, f.vocab_size, (rows, f.max_len), generator=g) for f in schema.sparse_fields]
    sparse = torch.cat(cols, 1) if cols else torch.zeros(rows, 0, dtype=torch.long)
    dense = torch.randn(rows, len(schema.dense_fields), generator=g)
    return ParityBatch(sparse, dense, "random ids")


def data_batch(schema: FeatureSchema, data: str | Path, split: str = "test", rows: int = 256) -> ParityBatch:
    """The first ``rows`` rows of split ``split`` of encoded dataset folder ``data``.

    Raises:
        ExportError: not an encoded dataset, no such split or an empty one, or fields that
            differ from the model's schema (naming the folder, the split or the field).
    """
    from ctrzip.data.dataset import EncodedDataset

    data = Path(data)
    try:
        ds = EncodedDataset.open(data)
    except (FileNotFoundError, ValueError) as err:
        raise ExportError(f"--data {data}: {err}") from None
    if ds.schema.to_dict()["fields"] != schema.to_dict()["fields"]:
        theirs = {f["name"]: f for f in ds.schema.to_dict()["fields"]}
        diff = next(
            (f["name"] for f in schema.to_dict()["fields"] if theirs.get(f["name"]) != f), "field count"
        )
        raise ExportError(
            f"--data {data}: its feature map differs from the model's schema at {diff!r}; "
            "give the dataset the model was trained on"
        )
    if split not in ds.splits or len(ds.splits[split]) == 0:
        have = ", ".join(k for k, v in ds.splits.items() if len(v)) or "none"
        raise ExportError(f"--data {data}: no rows in split {split!r} (splits with rows: {have})")
    arrays = ds.splits[split]
    sparse = torch.from_numpy(np.array(arrays.sparse[:rows], dtype=np.int64))
    dense = torch.from_numpy(np.array(arrays.dense[:rows], dtype=np.float32))
    return ParityBatch(sparse, dense, f"data:{data} split {split}")


__all__ = ["ExportError", "ParityBatch", "ProbabilityModel", "data_batch", "export_module", "random_batch"]
