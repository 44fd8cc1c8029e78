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

Composition. ``FoldedLinear`` is a ``LinkedModule`` (``ctrzip.nn.swappable``): when a method
replaces a folded table (a second low-rank pass, MEC, TT...), ``replace_module`` first
*unfolds* that field: its block ``G_f = W'_f A_f`` (``A_f = [U_f | b_f]``) becomes
``G_f pinv(A_f)``, which gives exactly ``G_f a`` on every reconstruction ``e = A_f a`` of the
old table, so the consumer keeps its function and now reads the field's ``D`` columns.
Folding again (``fold_into_consumer`` on a ``FoldedLinear``) folds the newly eligible fields
and leaves the folded ones as they are.
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
        bias: whether the replaced Linear had a bias (a ``LowRankLinear``'s first factor may not).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        parts: list[list[Any]],
        embedding_fqn: str = "embedding",
        bias: bool = True,
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
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self._sink: _CodeSink | None = None
        self._tables: dict[str, LowRankTable] = {}  # bound tables (plain refs, not submodules)

    def _blocks(self) -> tuple[list[Tensor], Tensor]:
        """Weight blocks per part (``[o, code_w or width]``, float64) and the extra columns."""
        w = self.weight.detach().to(torch.float64)
        blocks, col = [], 0
        for _, width, code_w in self.parts:
            blocks.append(w[:, col : col + (code_w or width)])
            col += code_w or width
        return blocks, w[:, col:]

    @classmethod
    def fold(cls, linear: nn.Module, tables: dict[str, LowRankTable], parts: list[list[Any]]) -> FoldedLinear:
        """Fold ``tables`` (the fields with ``code_width > 0`` in ``parts``) into ``linear``.

        ``linear`` is an ``nn.Linear`` or a ``FoldedLinear`` over the same fields: fields it
        already folds keep their block (their table must be the one it is bound to).
        """
        weight = linear.weight
        has_bias = linear.bias is not None
        mod = cls(linear.in_features, linear.out_features, parts, bias=has_bias).to(weight.device)  # type: ignore[arg-type]
        if isinstance(linear, FoldedLinear):
            if [p[:2] for p in linear.parts] != [p[:2] for p in mod.parts]:
                raise ValueError(f"{linear.parts} and {mod.parts} do not describe the same fields")
            old_blocks, rest = linear._blocks()
            done = {name for name, _, c in linear.parts if c}
            stale = [n for n in done if n in tables and linear._tables.get(n) is not tables[n]]
            if stale:
                raise ValueError(f"fields {stale} hold other tables than the ones folded; unfold them first")
        else:
            w = weight.detach().to(torch.float64)  # type: ignore[union-attr]
            old_blocks, col = [], 0
            for _, width, _ in mod.parts:
                old_blocks.append(w[:, col : col + width])
                col += width
            rest, done = w[:, col:], set()
        blocks = []
        for (name, _, code_w), w_f in zip(mod.parts, old_blocks, strict=True):
            if code_w and name not in done:
                w_f = w_f @ tables[name].augmented_basis().detach().to(torch.float64)
            elif not code_w and name in done:
                raise ValueError(f"field {name!r} is folded in {type(linear).__name__}; unfold it first")
            blocks.append(w_f)
        blocks.append(rest)
        with torch.no_grad():
            mod.weight.copy_(torch.cat(blocks, dim=1).to(mod.weight.dtype))
            if mod.bias is not None:
                mod.bias.copy_(linear.bias)  # type: ignore[arg-type]
        return mod.to(weight.dtype)  # type: ignore[arg-type]

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
        return tensor_bytes(*self.parameters())

    # --- LinkedModule (ctrzip.nn.swappable) -------------------------------------------------
    def linked_sources(self) -> list[str]:
        return [f"{self.embedding_fqn}.tables.{name}" for name in self.folded_fields()]

    def relink(self, root: nn.Module) -> None:
        """Give this module and its folded tables one fresh code sink.

        Raises:
            TypeError: a folded field's table is not a ``LowRankTable`` of the folded rank.
        """
        emb = root.get_submodule(self.embedding_fqn)
        tables = {}
        for name, _, code_w in self.parts:
            if not code_w:
                continue
            table = emb.tables[name]  # type: ignore[index]
            if not isinstance(table, LowRankTable) or table.rank + 1 != code_w:
                raise TypeError(
                    f"folded field {name!r} holds {type(table).__name__}, not the LowRankTable "
                    f"of rank {code_w - 1} it was folded with"
                )
            tables[name] = table
        sink = _CodeSink()
        self._sink, self._tables = sink, tables
        for name, table in tables.items():
            table._code_sink, table._code_key = sink, name

    def unlinked(self, source: str) -> nn.Module:
        """This consumer with the field at ``source`` unfolded (exact; see the module docstring).

        Returns an ``nn.Linear`` when no folded field is left.
        """
        name = source.rpartition(".")[2]
        if name not in self._tables:
            raise RuntimeError(f"FoldedLinear is not bound to {source!r}; call bind_folds(model) first")
        table = self._tables[name]
        table._code_sink = None  # it no longer feeds this consumer
        blocks, rest = self._blocks()
        parts = copy.deepcopy(self.parts)
        for i, (field, _, code_w) in enumerate(parts):
            if field == name and code_w:
                a = table.augmented_basis().detach().to(torch.float64)  # [D, k + 1]
                blocks[i] = blocks[i] @ torch.linalg.pinv(a)  # [o, D]
                parts[i][2] = 0
        weight = torch.cat([*blocks, rest], dim=1).to(self.weight.dtype)
        bias = self.bias is not None
        if any(c for _, _, c in parts):
            new: nn.Module = FoldedLinear(
                self.in_features, self.out_features, parts, self.embedding_fqn, bias
            )
            new._sink = self._sink  # the other folded tables keep feeding it
            new._tables = {f: t for f, t in self._tables.items() if f != name}
        else:
            new = nn.Linear(self.in_features, self.out_features, bias=bias)
        new = new.to(device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            new.weight.copy_(weight)
            if self.bias is not None:
                new.bias.copy_(self.bias)
        new.train(self.training)
        return new

    def spec(self) -> dict[str, Any]:
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "parts": copy.deepcopy(self.parts),
            "embedding_fqn": self.embedding_fqn,
            "bias": self.bias is not None,
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
        if isinstance(mod, FoldedLinear):
            mod.relink(model)
            n += 1
    return n


def fold_into_consumer(model: nn.Module, consumer_fqn: str) -> dict[str, Any]:
    """Replace the consumer Linear by a ``FoldedLinear`` reading the codes of LowRankTable fields.

    A categorical field is folded when its table is a ``LowRankTable``; a sequence field also
    needs ``padding_idx == 0`` (the id ``FieldEmbedding`` masks when pooling). A
    ``LowRankLinear`` consumer has its first factor folded. A consumer that is already a
    ``FoldedLinear`` (an earlier fold) keeps its folded fields and folds the new ones.
    Returns a report; the caller checks parity of logits.
    """
    emb = model.embedding  # type: ignore[union-attr]
    fqn = consumer_fqn
    consumer = model.get_submodule(fqn)
    if hasattr(consumer, "down") and isinstance(consumer.down, (nn.Linear, FoldedLinear)):  # LowRankLinear
        fqn, consumer = f"{fqn}.down", consumer.down
    if not isinstance(consumer, (nn.Linear, FoldedLinear)):
        return {"folded": False, "reason": f"{consumer_fqn} is {type(consumer).__name__}, not nn.Linear"}
    if isinstance(consumer, FoldedLinear) and consumer.embedding_fqn != "embedding":
        return {"folded": False, "reason": f"{fqn} is folded with {consumer.embedding_fqn!r}"}
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
    if isinstance(consumer, FoldedLinear) and consumer.folded_fields() == list(folded):
        return {"folded": False, "reason": f"{fqn} already folds {list(folded)}"}
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
