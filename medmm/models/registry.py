"""A tiny timm-style registry: ``create(name, **kwargs)`` over registered constructors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import ConfigError


class Registry:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, Callable[..., Any]] = {}
        self.meta: dict[str, dict[str, Any]] = {}

    def register(self, name: str, **meta: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = fn
            self.meta[name] = meta
            return fn

        return deco

    def create(self, name: str, **kwargs: Any) -> Any:
        try:
            fn = self._items[name]
        except KeyError:
            from ..catalog import suggest

            raise ConfigError(
                f"unknown {self.kind} {name!r}{suggest(name, sorted(self._items))}",
                hint=f"choose one of {sorted(self._items)}"
            ) from None
        return fn(**kwargs)

    def names(self, **where: Any) -> list[str]:
        return sorted(n for n in self._items if all(self.meta[n].get(k) == v for k, v in where.items()))

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __iter__(self):
        return iter(sorted(self._items))


#: how a model bundle (:mod:`medmm.models.bundle`) becomes a model: kind name -> builder
#: ``(config: dict, input_shapes: dict, preprocessor) -> model``, registered with ``cls=<class name>``
#: so that saving finds the kind of a model. The bundle reads data and asks here; it imports no model.
BUNDLED_MODELS = Registry("bundled model kind")
