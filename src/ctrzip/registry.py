"""Tiny name -> object registries so YAML configs can name models, tables and methods."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from ctrzip.config import ConfigError

T = TypeVar("T")


class UnknownNameError(ConfigError, KeyError):
    """A registry key that is not registered (a typo in a config or on the command line).

    A ``ConfigError`` (so the CLI prints one ``error:`` line) and a ``KeyError`` (what a
    mapping lookup raises), printed without ``KeyError``'s quotes.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """A case-sensitive mapping from registry key to object, filled by decorator.

    Lookups of an unknown key raise :class:`UnknownNameError` (a ``KeyError``) that lists
    the known keys and the closest match, so a typo in a config is caught with a useful message.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, key: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if key in self._items:
                raise ValueError(f"{self.kind} {key!r} is already registered")
            self._items[key] = obj
            return obj

        return deco

    def get(self, key: str) -> T:
        try:
            return self._items[key]
        except KeyError:
            close = difflib.get_close_matches(key, self._items, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            known = ", ".join(sorted(self._items))
            raise UnknownNameError(f"unknown {self.kind} {key!r}{hint} (known: {known})") from None

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def keys(self) -> list[str]:
        return sorted(self._items)
