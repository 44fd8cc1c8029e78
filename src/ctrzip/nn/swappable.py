"""Registry of modules that compression swaps in, so artifacts can rebuild them, and the one
way to replace a module of a model (``replace_module`` / ``replace_modules``).

A swappable module class registers under its class name and implements:
  * ``spec() -> dict``: JSON-able constructor arguments (shapes, M, K, rank, ...);
  * ``classmethod empty(**spec)``: a module of the right shapes (weights to be loaded).
``export.artifact`` stores ``{fqn: {"type": name, "spec": spec}}`` and replays it on load.

Links between modules. Some modules read the state of *other* modules of the model: a
first-order ``SharedCodesPQTable`` reads its field's codes, a ``FoldedLinear`` reads the
codes of the low-rank tables folded into it. They implement ``LinkedModule``: the fqns they
read (``linked_sources``), how to reconnect after building or loading (``relink``), and a
self-contained equivalent for when a source is replaced (``unlinked``). ``replace_module``
hands every link to a replaced module over first, so methods compose in any order: the
dependent keeps computing exactly what it computed, now without the old source.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from torch import nn

from ctrzip.registry import Registry

SWAPPABLE: Registry[type[nn.Module]] = Registry("swappable module")


@runtime_checkable
class Swappable(Protocol):
    def spec(self) -> dict[str, Any]: ...


@runtime_checkable
class LinkedModule(Protocol):
    """A module that reads state held by other modules of the same model (plain Python links).

    ``linked_sources()`` are the fqns (from the model root) it reads; ``relink(root)``
    (re)connects to them and raises ``TypeError``/``ValueError`` naming the fqn when one is
    missing or of the wrong type; ``unlinked(source)`` returns a module computing exactly
    the same function without reading ``source`` (``self`` modified, or a new module).
    """

    def linked_sources(self) -> list[str]: ...

    def relink(self, root: nn.Module) -> None: ...

    def unlinked(self, source: str) -> nn.Module: ...


def register_swappable(cls: type[nn.Module]) -> type[nn.Module]:
    """Class decorator: register a swappable module under its class name."""
    SWAPPABLE.register(cls.__name__)(cls)
    return cls


def _within(fqn: str, prefixes: Mapping[str, Any] | list[str]) -> str | None:
    """The prefix in ``prefixes`` that is ``fqn`` or one of its ancestors, else None."""
    for p in prefixes:
        if fqn == p or fqn.startswith(p + "."):
            return p
    return None


def put_module(root: nn.Module, fqn: str, new: nn.Module) -> nn.Module:
    """Set ``root.<fqn> = new`` and nothing else; returns the old module.

    For rebuilding a saved model (``export.load`` replays the manifest, then calls
    ``relink_all`` once). To swap a module of a live model use ``replace_module``.
    """
    parent_name, _, child = fqn.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    old = parent.get_submodule(child)
    if isinstance(parent, (nn.ModuleDict, nn.Sequential, nn.ModuleList)):
        parent[child if isinstance(parent, nn.ModuleDict) else int(child)] = new  # type: ignore[index]
    else:
        setattr(parent, child, new)
    return old


def replace_modules(root: nn.Module, new: Mapping[str, nn.Module]) -> dict[str, nn.Module]:
    """Set ``root.<fqn> = module`` for every item of ``new`` at once; returns the old modules.

    Every ``LinkedModule`` outside ``new`` that reads a replaced module (or anything inside
    one) is first made independent of it with ``unlinked`` (e.g. a first-order table takes
    over the codes it shared; a ``FoldedLinear`` unfolds that field), so no module is left
    reading a module that is gone. Modules replaced together keep their links: swapping a
    code table and the table that shares its codes in one call hands nothing over.
    Afterwards every link of the model is reconnected (``relink_all``).
    """
    for fqn, mod in list(root.named_modules()):
        if not fqn or _within(fqn, new) or not isinstance(mod, LinkedModule):
            continue
        current: nn.Module = mod
        for source in mod.linked_sources():
            if _within(source, new) and isinstance(current, LinkedModule):
                current = current.unlinked(source)
        if current is not mod:
            put_module(root, fqn, current)
    old = {fqn: put_module(root, fqn, mod) for fqn, mod in new.items()}
    relink_all(root)
    return old


def replace_module(root: nn.Module, fqn: str, new: nn.Module) -> nn.Module:
    """Set ``root.<fqn> = new`` (works inside ModuleDict/Sequential); returns the old module.

    Links to the old module are handed over first (see ``replace_modules``).
    """
    return replace_modules(root, {fqn: new})[fqn]


def relink_all(root: nn.Module) -> int:
    """Reconnect every ``LinkedModule`` of ``root`` to its sources; returns how many.

    Raises:
        TypeError / ValueError: a source is missing or cannot serve the link (message names it).
    """
    n = 0
    for _, mod in root.named_modules():
        if isinstance(mod, LinkedModule):
            mod.relink(root)
            n += 1
    return n
