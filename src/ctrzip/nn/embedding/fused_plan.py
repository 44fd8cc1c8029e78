"""How a ``FieldEmbedding`` looks its fields up when fused: the plan of ``TableGroup`` units
(``ctrzip.nn.embedding.fused`` explains groups), its per-module slot, and the switches that turn
fusing on and off for a fit. Derived state only: nothing here is saved or copied.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable

import torch
from torch import Tensor, nn

from ctrzip.nn.embedding.fused import DenseTableGroup, TableGroup, pack_key

__all__ = ["FusedPlan", "PlanSlot", "global_hooks", "hooked", "restore_fuse", "set_fuse", "tracing"]


class FusedPlan:
    """How a ``FieldEmbedding`` looks its fields up when fused (derived state, rebuilt on demand).

    Units, in schema order of their first field: one ``TableGroup`` per set of >= 2
    categorical fields whose tables share ``(group_class(), group_key())``; every other
    field (sequences, tables that cannot be packed, dense numeric fields) on its own.
    Dense numeric fields are not fused: one ``[B, n, D]`` product is exact forward, but its
    weight gradient sums over the batch in another order than per field (differs in the
    last bits), and fused lookups promise per-field results exactly. ``forward`` concatenates the units'
    outputs and permutes them into schema order when the units interleave.
    """

    def __init__(self, fe: nn.Module) -> None:  # fe: FieldEmbedding (no import cycle)
        self.signature = plan_signature(fe)
        self.sparse_grad = bool(fe.sparse_grad)
        names = [n for n, _ in fe._order]
        pos = {n: i for i, n in enumerate(names)}
        by_key: dict[tuple[type[TableGroup], Hashable], list[str]] = {}
        uses: dict[int, int] = {}
        for t in fe.tables.values():
            uses[id(t)] = uses.get(id(t), 0) + 1
        for name, kind in fe._order:
            # a table serving several fields keeps its own storage (one Parameter cannot view
            # two rows ranges of the packed tensor)
            if kind == "categorical" and uses[id(fe.tables[name])] == 1 and not hooked(fe.tables[name]):
                key = pack_key(fe.tables[name])
                if key is not None:
                    by_key.setdefault(key, []).append(name)
        units: list[tuple[int, str, object]] = []
        grouped: set[str] = set()
        self.groups: list[TableGroup] = []
        for (cls, _), members in by_key.items():
            if len(members) < 2:
                continue
            tables = [fe.tables[n] for n in members]
            group = cls.pack(tables)
            if isinstance(group, DenseTableGroup):  # other groups have no sparse gradients
                group.sparse_grad = self.sparse_grad
            self.groups.append(group)
            grouped.update(members)
            starts = [fe._slices[n].start for n in members]
            units.append((pos[members[0]], "group", (group, _columns(starts), members)))
        for name in names:
            if name not in grouped:
                units.append((pos[name], "field", name))
        units.sort(key=lambda u: u[0])
        self.units = [(kind, payload) for _, kind, payload in units]
        order: list[str] = []
        for kind, payload in self.units:
            order += payload[2] if kind == "group" else [payload]  # type: ignore[index,operator,list-item]
        # interleaved units are written straight into their schema positions (one pass; a
        # concat followed by a permuting index_select read and wrote the output twice)
        self.interleaved = order != names
        self.slots = [
            _columns([pos[n] for n in payload[2]]) if kind == "group" else pos[payload]  # type: ignore[index]
            for kind, payload in self.units
        ]
        self.num_fields = len(names)

    def current(self, fe: nn.Module) -> bool:
        return (
            self.sparse_grad == bool(fe.sparse_grad)
            and self.signature == plan_signature(fe)
            and all(g.in_sync() for g in self.groups)
        )

    def _on(self, t: Tensor, device: torch.device) -> Tensor:
        """``t`` on ``device``, copied there once (no host-to-device copy per lookup)."""
        cache = self.__dict__.setdefault("_device_copies", {})
        key = (id(t), device)
        if key not in cache:
            cache[key] = t.to(device)
        return cache[key]

    def _take(self, x: Tensor, cols: slice | Tensor) -> Tensor:
        if isinstance(cols, slice):
            return x[:, cols]  # a view: no copy
        return x.index_select(1, self._on(cols, x.device))

    def release(self) -> None:
        """Give every packed table storage of its own again (the plan is unusable after)."""
        for g in self.groups:
            g.unpack()
        self.groups, self.units = [], []

    def forward(self, fe: nn.Module, batch) -> Tensor:  # noqa: ANN001 (Batch) -> [B, F, D]
        chunks = []
        for kind, payload in self.units:
            if kind == "group":
                group, cols, _ = payload  # type: ignore[misc]
                chunks.append(group(self._take(batch.sparse, cols)))
            else:
                chunks.append(fe.field_output(payload, batch).unsqueeze(1))
        if not self.interleaved or len({c.dtype for c in chunks}) != 1:
            out = chunks[0] if len(chunks) == 1 else torch.cat(chunks, dim=1)
            return out if not self.interleaved else self._permute(out)
        first = chunks[0]
        out = first.new_empty(first.shape[0], self.num_fields, first.shape[2])
        for slot, chunk in zip(self.slots, chunks, strict=True):
            if isinstance(slot, Tensor):
                out.index_copy_(1, self._on(slot, out.device), chunk)
            else:
                out[:, slot] = chunk.squeeze(1) if isinstance(slot, int) else chunk
        return out

    def _permute(self, out: Tensor) -> Tensor:
        """Units' concatenated outputs into schema order (units of mixed dtypes only)."""
        order = torch.cat([s if isinstance(s, Tensor) else _index_of(s) for s in self.slots])
        return out.index_select(1, torch.argsort(order).to(out.device))


def tracing() -> bool:
    """Whether a tracer (``torch.export``/dynamo, ``torch.jit.trace``, FX) is running: packing
    must not run then (it would point Parameters at the tracer's fake tensors)."""
    return bool(
        torch.compiler.is_compiling()
        or torch.jit.is_tracing()
        or torch.fx._symbolic_trace.is_fx_symbolic_tracing()
    )


def plan_signature(fe: nn.Module) -> tuple:
    """What a plan was built for: each categorical field's table object, pack key and whether
    it has hooks."""
    return tuple(
        (name, id(fe.tables[name]), pack_key(fe.tables[name]), hooked(fe.tables[name]))
        for name, kind in fe._order
        if kind == "categorical"
    )


def hooked(module: nn.Module) -> bool:
    """Whether ``module`` has forward (pre-)hooks: a packed table's own ``forward`` is not
    called, so such a table (e.g. one ``compression.calibrate`` observes) is looked up alone."""
    return bool(module._forward_hooks or module._forward_pre_hooks)


def global_hooks() -> bool:
    """Whether module hooks registered for every module are active (then nothing is packed)."""
    m = nn.modules.module
    return bool(m._global_forward_hooks or m._global_forward_pre_hooks)


def _index_of(slot: int | slice) -> Tensor:
    """Schema positions of an int or slice slot as an int64 tensor."""
    if isinstance(slot, int):
        return torch.tensor([slot])
    return torch.arange(slot.start, slot.stop)


def _columns(cols: list[int]) -> slice | Tensor:
    """A slice when ``cols`` are consecutive (a view, no copy), else an index tensor."""
    if cols == list(range(cols[0], cols[0] + len(cols))):
        return slice(cols[0], cols[0] + len(cols))
    return torch.tensor(cols)


class PlanSlot:
    """Holds a ``FieldEmbedding``'s ``FusedPlan``; empty after ``deepcopy`` or pickling (the copy
    re-packs its own tables on first use), and locked so concurrent forwards re-pack once."""

    def __init__(self) -> None:
        self.plan: FusedPlan | None = None
        self.lock = threading.Lock()

    def get(self, fe: nn.Module) -> FusedPlan:
        plan = self.plan
        if plan is not None and plan.current(fe):
            return plan
        with self.lock, torch.inference_mode(False), torch.no_grad():
            if self.plan is not None and self.plan.current(fe):
                return self.plan
            if self.plan is not None:
                self.plan.release()
                self.plan = None
            self.plan = FusedPlan(fe)
            return self.plan

    def clear(self) -> None:
        with self.lock:
            if self.plan is not None:
                self.plan.release()
            self.plan = None

    def __deepcopy__(self, memo: dict) -> PlanSlot:
        return PlanSlot()

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()  # type: ignore[misc]


def set_fuse(model: nn.Module, fuse: bool) -> dict[nn.Module, bool]:
    """Set ``fuse`` on every ``FieldEmbedding`` of ``model``; returns their previous values (to
    restore with ``restore_fuse``). ``fuse=False`` also gives the tables their own storage."""
    from ctrzip.nn.embedding.field import FieldEmbedding

    prev = {}
    for m in model.modules():
        if isinstance(m, FieldEmbedding):
            prev[m] = m.fuse
            m.fuse = fuse
            if not fuse:
                m._plan.clear()
    return prev


def restore_fuse(prev: dict[nn.Module, bool]) -> None:
    for m, fuse in prev.items():
        m.fuse = fuse  # type: ignore[assignment]
