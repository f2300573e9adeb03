"""A name -> entry table that is the single source of truth for its names.

Losses, advantage estimators, filters, KL estimators and judges each have one. An entry may declare
what it needs at registration (``@POLICY_LOSSES.register("x", grouped=True)``), so no caller ever
special-cases a registered name; config validation reads the allowed names from here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class UnknownName(KeyError, ValueError):
    """A name nobody registered. Both a KeyError (a lookup) and a ValueError (a bad argument)."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0])


class Registry(Generic[T]):
    def __init__(self, what: str) -> None:
        self.what = what  # e.g. "policy loss", used in error messages
        self._entries: dict[str, T] = {}
        self._declared: dict[str, dict[str, Any]] = {}

    def add(self, name: str, entry: T, **declared: Any) -> T:
        """Register ``entry`` under ``name`` with what it declares about itself (e.g. ``grouped=True``)."""
        if name in self._entries:
            raise ValueError(f"{self.what} {name!r} is already registered")
        self._entries[name] = entry
        self._declared[name] = dict(declared)
        return entry

    def register(self, name: str, **declared: Any) -> Callable[[T], T]:
        """Decorator form of ``add``."""
        return lambda entry: self.add(name, entry, **declared)

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownName(f"unknown {self.what} {name!r}; registered: {self.names()}") from None

    def declared(self, name: str, key: str, default: Any = None) -> Any:
        """What the entry ``name`` declared under ``key`` at registration (``default`` if nothing)."""
        self.get(name)  # unknown names fail here, with the list
        return self._declared[name].get(key, default)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, name: str) -> T:
        return self.get(name)
