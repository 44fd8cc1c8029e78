"""Folding low-rank embedding projections into the Linear that consumes the flat embeddings.

Design (why a side channel). Models stay untouched: they call ``self.embedding(batch)``
and feed ``emb.flatten(1)`` (+ other columns) to the Linear named by
``CTRModel.embedding_consumer()``, while interaction modules (FM, cross nets, attention)
read the same reconstructed ``[B, F, D]`` tensor. Folding only saves work if that Linear
reads the ``k``-dim codes instead of the ``D``-dim reconstructions, so:

* each folded ``LowRankTable`` also hands its *augmented code* ``[e'; present]`` (``k + 1``
  wide, see ``LowRankTable``) to a ``_CodeSink`` shared with the consumer;
* the consumer is replaced by ``FoldedLinear``, whose weight holds ``W'_f [U_f | b_f]`` for
  folded fields and ``W'_f`` for the others. It takes the augmented codes from the sink
  and ignores the reconstructed columns of its input for those fields, so the consumer's
  cost drops from ``F*D`` to ``F*(k+1)`` input columns and the model code never changes.

Because the reconstruction is linear in the augmented code (padding rows included, and
so is the mean pooling of sequence fields), the folded model is exact: ``fold_into_consumer``
callers check logits against the unfolded model (``max_abs_diff``). The mean term of the
centered form ends up in the "present" column (``W'_f mu_f``), not in the bias, which keeps
the padding id's contribution exactly zero.

The sink is plain Python state: after loading an artifact, call ``bind_folds(model)``.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from ctrzip.nn.embedding.base import tensor_bytes
from ctrzip.nn.embedding.lowrank import LowRankTable
from ctrzip.nn.swappable import register_swappable, replace_module


class _CodeSink:
    """Hands augmented codes from tables to a ``FoldedLinear`` within one forward pass."""

    def __init__(self) -> None:
        self._codes: dict[str, Tensor] = {}

    def put(self, key: str, codes: Tensor) -> None:
        self._codes[key] = codes

    def take(self, key: str) -> Tensor:
        try:
            return self._codes.pop(key)
        except KeyError:
            raise RuntimeError(
                f"FoldedLinear found no codes for field {key!r}: the embedding must run "
                "before its consumer in the same forward"
            ) from None

    def __deepcopy__(self, memo: dict[int, Any]) -> _CodeSink:
        return _CodeSink()  # codes are per-forward; a copy starts empty


@register_swappable
class FoldedLinear(nn.Module):
    """Consumer Linear reading low-rank codes for folded fields (drop-in for the Linear it replaces).

    Args:
        in_features: width of the original input (``F * D`` + extra columns).
        out_features: output width.
        parts: per field in the consumer's column order, ``[field, width_in_input, code_width]``
            with ``code_width = k + 1`` for folded fields and 0 for pass-through ones.
        embedding_fqn: where the ``FieldEmbedding`` holding the folded tables lives.
    """

    def __init__(
        self, in_features: int, out_features: int, parts: list[list[Any]], embedding_fqn: str = "embedding"
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.parts = [[str(f), int(w), int(c)] for f, w, c in parts]
        self.embedding_fqn = embedding_fqn
        self.field_width = sum(w for _, w, _ in self.parts)
        if self.field_width > in_features:
            raise ValueError(f"parts cover {self.field_width} columns, input has {in_features}")
        width = sum(c or w for _, w, c in self.parts) + in_features - self.field_width
        self.weight = nn.Parameter(torch.zeros(out_features, width))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self._sink: _CodeSink | None = None

    @classmethod
    def fold(cls, linear: nn.Linear, tables: dict[str, LowRankTable], parts: list[list[Any]]) -> FoldedLinear:
        """Fold ``tables`` (the fields with ``code_width > 0`` in ``parts``) into ``linear``."""
        mod = cls(linear.in_features, linear.out_features, parts).to(linear.weight.device)
        w = linear.weight.detach().to(torch.float64)
        blocks, col = [], 0
        for name, width, code_w in mod.parts:
            w_f = w[:, col : col + width]  # [o, D]
            if code_w:
                blocks.append(w_f @ tables[name].augmented_basis().detach().to(torch.float64))
            else:
                blocks.append(w_f)
            col += width
        blocks.append(w[:, col:])
        with torch.no_grad():
            mod.weight.copy_(torch.cat(blocks, dim=1).to(mod.weight.dtype))
            if linear.bias is not None:
                mod.bias.copy_(linear.bias)
        return mod.to(linear.weight.dtype)

    def forward(self, x: Tensor) -> Tensor:  # [B, in_features] -> [B, out_features]
        if self._sink is None:
            raise RuntimeError(
                "FoldedLinear is not bound to its tables; call "
                "ctrzip.compression.lowrank.fold.bind_folds(model)"
            )
        pieces, col = [], 0
        for name, width, code_w in self.parts:
            if code_w:
                aug = self._sink.take(name)
                if aug.dim() == 3:  # sequence field: mean over present ids, like FieldEmbedding
                    aug = aug.sum(1) / aug[..., -1:].sum(1).clamp_min(1.0)
                pieces.append(aug.to(x.dtype))
            else:
                pieces.append(x[:, col : col + width])
            col += width
        pieces.append(x[:, col:])
        return nn.functional.linear(torch.cat(pieces, dim=1), self.weight, self.bias)

    def folded_fields(self) -> list[str]:
        return [name for name, _, c in self.parts if c]

    def nbytes(self) -> int:
        return tensor_bytes(self.weight, self.bias)

    def spec(self) -> dict[str, Any]:
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "parts": copy.deepcopy(self.parts),
            "embedding_fqn": self.embedding_fqn,
        }

    @classmethod
    def empty(cls, **spec: Any) -> FoldedLinear:
        return cls(**spec)

    def extra_repr(self) -> str:
        return f"{self.in_features} -> {self.out_features}, folded={self.folded_fields()}"


def bind_folds(model: nn.Module) -> int:
    """Connect every ``FoldedLinear`` in ``model`` to its tables (after building or loading).

    Returns the number of ``FoldedLinear`` modules bound.
    """
    n = 0
    for _, mod in model.named_modules():
        if not isinstance(mod, FoldedLinear):
            continue
        sink = _CodeSink()
        mod._sink = sink
        emb = model.get_submodule(mod.embedding_fqn)
        for name in mod.folded_fields():
            table = emb.tables[name]  # type: ignore[index]
            if not isinstance(table, LowRankTable):
                raise TypeError(f"folded field {name!r} holds {type(table).__name__}, not LowRankTable")
            table._code_sink, table._code_key = sink, name
        n += 1
    return n


def fold_into_consumer(model: nn.Module, consumer_fqn: str) -> dict[str, Any]:
    """Replace the consumer Linear by a ``FoldedLinear`` reading the codes of LowRankTable fields.

    A categorical field is folded when its table is a ``LowRankTable``; a sequence field also
    needs ``padding_idx == 0`` (the id ``FieldEmbedding`` masks when pooling). A
    ``LowRankLinear`` consumer has its first factor folded. Returns a report; the caller
    checks parity of logits.
    """
    emb = model.embedding  # type: ignore[union-attr]
    fqn = consumer_fqn
    consumer = model.get_submodule(fqn)
    if hasattr(consumer, "down") and isinstance(consumer.down, nn.Linear):  # LowRankLinear
        fqn, consumer = f"{fqn}.down", consumer.down
    if not isinstance(consumer, nn.Linear):
        return {"folded": False, "reason": f"{consumer_fqn} is {type(consumer).__name__}, not nn.Linear"}
    parts, folded = [], {}
    for spec in emb.schema.fields:
        table = emb.tables[spec.name] if spec.is_sparse else None
        ok = isinstance(table, LowRankTable) and (spec.kind == "categorical" or table.padding_idx == 0)
        if ok:
            assert isinstance(table, LowRankTable)
            folded[spec.name] = table
            parts.append([spec.name, emb.dim, table.rank + 1])
        else:
            parts.append([spec.name, emb.dim, 0])
    if not folded:
        return {"folded": False, "reason": "no LowRankTable field to fold"}
    if sum(p[1] for p in parts) > consumer.in_features:
        raise ValueError(
            f"{fqn} has {consumer.in_features} inputs, fewer than the embedding's {emb.output_dim}"
        )
    new = FoldedLinear.fold(consumer, folded, parts)
    replace_module(model, fqn, new)
    bind_folds(model)
    return {
        "folded": True,
        "consumer": fqn,
        "fields": list(folded),
        "in_columns": {"before": consumer.in_features, "after": int(new.weight.shape[1])},
    }
