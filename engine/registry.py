"""Name → object registries (trainers, datasets) with Dassl's contract and helpful errors.

A registry maps a name to a class or function. ``register()`` works as a decorator or a call; a name that is
already taken is an error (never a silent overwrite); ``get()`` of an unknown name raises a ``KeyError`` that
lists what exists and suggests the nearest names.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def suggest(name: str, choices: list[str], n: int = 3) -> str:
    """Return a " Did you mean …?" suffix for ``name`` among ``choices`` (case-insensitive), or ""."""
    lowered = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.5)
    if not close:
        return ""
    return " Did you mean " + " or ".join(repr(lowered[c]) for c in close) + "?"


class RegistryError(KeyError):
    """An unknown or duplicate registry name. ``str()`` gives the plain message (KeyError would quote it)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class Registry:
    """A named collection of classes or builder functions.

    >>> TRAINER_REGISTRY = Registry("TRAINER")
    >>> @TRAINER_REGISTRY.register()
    ... class CoOp: ...
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, Any] = {}
        self._fallback: Callable[[str], Any] | None = None

    def _add(self, name: str, obj: Any) -> None:
        if name in self._items and self._items[name] is not obj:
            raise RegistryError(
                f"{self.kind} name {name!r} is already registered (by {self._items[name]!r}); "
                f"pick another name"
            )
        self._items[name] = obj

    def register(self, obj: T | None = None, *, name: str | None = None) -> Any:
        """Register ``obj`` under ``name`` (default: ``obj.__name__``). Usable as ``@register()``."""
        if obj is not None:
            self._add(name or obj.__name__, obj)
            return obj

        def deco(o: T) -> T:
            self._add(name or o.__name__, o)
            return o

        return deco

    def set_fallback(self, fallback: Callable[[str], Any] | None) -> None:
        """``get()`` of an unregistered name returns ``fallback(name)`` (e.g. the generic dataset class for a dataset
        without a catalogue row) when it is not None; the fallback logs or raises as it sees fit."""
        self._fallback = fallback

    def get(self, name: str) -> Any:
        """Return the object registered as ``name``; unknown names list what exists and suggest the nearest."""
        if name not in self._items and self._fallback is not None:
            found = self._fallback(name)
            if found is not None:
                return found
        if name not in self._items:
            names = self.registered_names()
            raise RegistryError(
                f"Unknown {self.kind.lower()} {name!r}.{suggest(name, names)} "
                f"Registered {self.kind.lower()}s: {', '.join(names) or '(none)'}"
            )
        return self._items[name]

    def registered_names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._items)

    def items(self) -> Iterator[tuple[str, Any]]:
        return iter(sorted(self._items.items()))

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.registered_names()})"


TRAINER_REGISTRY = Registry("TRAINER")
DATASET_REGISTRY = Registry("DATASET")


def build_from(registry: Registry, name: str, *args: Any, **kwargs: Any) -> Any:
    """Instantiate ``registry.get(name)(*args, **kwargs)``."""
    factory: Callable[..., Any] = registry.get(name)
    return factory(*args, **kwargs)
