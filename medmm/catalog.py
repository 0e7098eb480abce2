"""The names medmm's registries hold, known without importing torch.

A config is checked against these before any data is read (:mod:`medmm.config`). The built-in
names are listed here (``tests/test_model_factory.py`` checks they equal the registries'); names
registered at run time (``register_encoder`` and friends) are added from the live registries once
:mod:`medmm.models` is imported, which a plug-in must have done to register anything.
"""

from __future__ import annotations

import difflib
import sys
from typing import Any

__all__ = ["BUILTIN", "names", "meta", "suggest", "check_name"]

#: family -> name -> registry metadata that config checks need (default modality, modality kind and input of encoders)
BUILTIN: dict[str, dict[str, dict[str, Any]]] = {
    "encoder": {
        "tiny_cnn3d": {"modality": "image", "kind": "image", "input": "image"},
        "monai_resnet": {"modality": "image", "kind": "image", "input": "image"},
        "monai_densenet": {"modality": "image", "kind": "image", "input": "image"},
        "monai_efficientnet": {"modality": "image", "kind": "image", "input": "image"},
        "monai_seresnet": {"modality": "image", "kind": "image", "input": "image"},
        "monai_vit": {"modality": "image", "kind": "image", "input": "image"},
        "swin": {"modality": "image", "kind": "image", "input": "image"},
        "tfidf_mlp": {"modality": "notes", "kind": "text", "input": "vector"},
        "text_transformer": {"modality": "notes", "kind": "text", "input": "tokens"},
        "sentence_mlp": {"modality": "notes", "kind": "text", "input": "embedding"},
        "gru": {"modality": "vitals", "kind": "series", "input": "sequence"},
        "grud": {"modality": "vitals", "kind": "series", "input": "sequence"},
        "tcn": {"modality": "vitals", "kind": "series", "input": "sequence"},
        "vitals_transformer": {"modality": "vitals", "kind": "series", "input": "sequence"},
        "mlp": {"modality": "ehr", "kind": "table", "input": "vector"},
        "ft_transformer": {"modality": "ehr", "kind": "table", "input": "vector"},
    },
    "fusion": {"attention": {}, "concat": {}, "gated": {}, "late": {}, "cross_attention": {}},
    "head": {"binary": {}, "multiclass": {}, "multilabel": {}, "regression": {}, "survival": {}, "cox": {},
             "discrete_time": {}},
}

_LIVE = {"encoder": ("medmm.models.encoders.base", "ENCODERS"), "fusion": ("medmm.models.fusion", "FUSIONS"),
         "head": ("medmm.models.heads", "HEADS")}


def _live(family: str) -> Any:
    module, attr = _LIVE[family]
    mod = sys.modules.get(module)
    return getattr(mod, attr, None) if mod is not None else None


def names(family: str) -> list[str]:
    """Every known name of ``family`` (``encoder``, ``fusion`` or ``head``)."""
    live = _live(family)
    return sorted(set(BUILTIN[family]) | (set(live) if live is not None else set()))


def meta(family: str, name: str) -> dict[str, Any]:
    live = _live(family)
    if live is not None and name in live:
        return dict(live.meta[name])
    return dict(BUILTIN[family].get(name, {}))


def suggest(name: str, choices: list[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, or nothing."""
    close = difflib.get_close_matches(str(name), choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_name(family: str, name: Any) -> str:
    """``name`` if ``family`` has it, else a ``ValueError`` naming the choices and the closest one."""
    known = names(family)
    if name not in known:
        raise ValueError(f"unknown {family} {name!r}{suggest(name, known)}; choose one of {known}")
    return name
