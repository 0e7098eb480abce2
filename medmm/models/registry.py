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
        self._check_options(name, fn, kwargs)
        return fn(**kwargs)

    def _check_options(self, name: str, fn: Callable[..., Any], kwargs: dict[str, Any]) -> None:
        """A ConfigError naming an option the constructor does not take (a config's typo or an
        option of another encoder), instead of the ``TypeError`` from inside the model's build."""
        import inspect

        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):  # a builtin or C constructor: nothing to check against
            return
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            from ..catalog import suggest

            options = sorted(k for k, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL
                             and k not in ("self", "in_shape", "out_dim", "dim", "modalities", "n_outputs"))
            raise ConfigError(f"{self.kind} {name!r} has no option {unknown[0]!r}{suggest(unknown[0], options)}",
                              hint=f"its options are {options}; remove {unknown}")

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
