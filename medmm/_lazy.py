"""Lazily resolved module attributes (``"module:attribute"`` tables), as PEP 562 allows."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_attributes(module_name: str, table: dict[str, str], extra: list[str] = ()) -> tuple[
        Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """``__getattr__``, ``__dir__`` and ``__all__`` for a module whose names resolve on first use."""
    names = sorted({*table, *extra})

    def __getattr__(name: str) -> Any:
        target = table.get(name)
        if target is None:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        module, _, attr = target.partition(":")
        value = getattr(importlib.import_module(module), attr)
        setattr(sys.modules[module_name], name, value)
        return value

    def __dir__() -> list[str]:
        return names

    return __getattr__, __dir__, names
