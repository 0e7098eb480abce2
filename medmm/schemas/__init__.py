"""The JSON Schemas of every file format medmm reads or writes, shipped inside the package.

Read them through :func:`load_schema` (or :func:`schema_path`), never from the source tree, so a
wheel-installed medmm validates manifests, experiment configs and model bundles the same way a
checkout does.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

__all__ = ["load_schema", "schema_path", "schema_names"]


def schema_path(name: str) -> Traversable:
    """The packaged file of a schema by file name (``"manifest.schema.json"``)."""
    path = resources.files(__name__) / name
    if not path.is_file():
        raise FileNotFoundError(
            f"no schema {name!r} in medmm.schemas; known: {', '.join(schema_names())}")
    return path


def schema_names() -> list[str]:
    """The file names of the packaged schemas."""
    return sorted(p.name for p in resources.files(__name__).iterdir() if p.name.endswith(".schema.json"))


@lru_cache(maxsize=None)
def load_schema(name: str) -> dict[str, Any]:
    """A packaged JSON Schema, parsed (cached: treat it as read-only)."""
    return json.loads(schema_path(name).read_text(encoding="utf-8"))
