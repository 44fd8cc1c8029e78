"""Registry of modules that compression swaps in, so artifacts can rebuild them.

A swappable module class registers under its class name and implements:
  * ``spec() -> dict``: JSON-able constructor arguments (shapes, M, K, rank, ...);
  * ``classmethod empty(**spec)``: a module of the right shapes (weights to be loaded).
``export.artifact`` stores ``{fqn: {"type": name, "spec": spec}}`` and replays it on load.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from torch import nn

from ctrzip.registry import Registry

SWAPPABLE: Registry[type[nn.Module]] = Registry("swappable module")


@runtime_checkable
class Swappable(Protocol):
    def spec(self) -> dict[str, Any]: ...


def register_swappable(cls: type[nn.Module]) -> type[nn.Module]:
    """Class decorator: register a swappable module under its class name."""
    SWAPPABLE.register(cls.__name__)(cls)
    return cls


def replace_module(root: nn.Module, fqn: str, new: nn.Module) -> nn.Module:
    """Set ``root.<fqn> = new`` (works inside ModuleDict/Sequential); returns the old module."""
    parent_name, _, child = fqn.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    old = parent.get_submodule(child)
    if isinstance(parent, (nn.ModuleDict, nn.Sequential, nn.ModuleList)):
        parent[child if isinstance(parent, nn.ModuleDict) else int(child)] = new  # type: ignore[index]
    else:
        setattr(parent, child, new)
    return old
