"""Name -> class tables: how stages, responses and solvers become available to case files and the CLI."""

from __future__ import annotations

from .errors import LightweightError


class Registry:
    """A table of classes by name, filled by a class decorator (``@REGISTRY.register("name")``)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, type] = {}

    def register(self, name: str):
        def decorate(cls):
            if name in self._items and self._items[name] is not cls:
                raise ValueError(f"{self.kind} {name!r} is registered twice "
                                 f"({self._items[name].__name__} and {cls.__name__})")
            self._items[name] = cls
            cls.registered_name = name
            return cls
        return decorate

    def get(self, name: str) -> type:
        try:
            return self._items[name]
        except KeyError:
            raise LightweightError(f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self._items))}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name) -> bool:
        return name in self._items
