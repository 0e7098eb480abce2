"""Fitted preprocessing as data: a JSON-able state plus named arrays, never a pickle.

Every preprocessor has ``get_state() -> (state, arrays)``, where ``state`` is plain JSON
(settings and small fitted values) and ``arrays`` maps names to numpy arrays (vocabulary
weights, normalisation statistics), and a classmethod ``from_state(state, arrays)`` that
rebuilds an object whose ``transform`` gives identical outputs. :func:`dump_preprocessor`
adds the kind, :func:`load_preprocessor` picks the class from :data:`PREPROCESSOR_KINDS`
only (a state can name no other class, so reading one imports and runs nothing it names).

:func:`save_state` / :func:`read_state` write and read ``preprocessor.json`` +
``preprocessor.npz`` (``np.load(allow_pickle=False)``). The scikit-learn ColumnTransformer of
the EHR step is stored as a skops blob (an array of bytes), loaded with skops' trusted-types
check against the fixed list :data:`SKOPS_TRUSTED`.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import ReadError

__all__ = ["PREPROCESSOR_KINDS", "SKOPS_TRUSTED", "dump_preprocessor", "load_preprocessor", "save_state",
           "read_state", "STATE_JSON", "STATE_NPZ"]

STATE_JSON = "preprocessor.json"
STATE_NPZ = "preprocessor.npz"

#: kind written in a state -> "module:class" (the only classes a state can name)
PREPROCESSOR_KINDS: dict[str, str] = {
    "multimodal": "medmm.preprocess:MultimodalPreprocessor",
    "image": "medmm.preprocess.image:ImagePreprocessor",
    "tfidf": "medmm.preprocess.text:TextPreprocessor",
    "tabular": "medmm.preprocess.tabular:TabularPreprocessor",
    "vitals_grid": "medmm.preprocess.vitals:VitalsPreprocessor",
    "vitals_summary": "medmm.preprocess.vitals_summary:VitalsSummarizer",
    "tokens": "medmm.preprocess.tokens:TokenPreprocessor",
    "sentence_embedding": "medmm.preprocess.tokens:SentenceEmbeddingPreprocessor",
}

#: types outside skops' default trusted set that a fitted ColumnTransformer holds
SKOPS_TRUSTED: list[str] = ["numpy.dtype"]


def _trusted() -> list[str]:
    """:data:`SKOPS_TRUSTED` plus what a fitted ``SplineTransformer`` holds (scipy's ``BSpline`` and
    the array function it is rebuilt with, whose module path moves between scipy versions): found
    once from a spline fitted here, never from the file being read."""
    global _TRUSTED
    if _TRUSTED is None:
        import skops.io as sio
        from sklearn.preprocessing import SplineTransformer

        spline = SplineTransformer(n_knots=3).fit(np.linspace(0.0, 1.0, 8)[:, None])
        _TRUSTED = sorted(set(SKOPS_TRUSTED) | set(sio.get_untrusted_types(data=sio.dumps(spline))))
    return _TRUSTED


_TRUSTED: list[str] | None = None


class _FromState(Protocol):
    def from_state(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> Any: ...


def _class(kind: str) -> _FromState:
    import importlib

    target = PREPROCESSOR_KINDS.get(kind) if isinstance(kind, str) else None
    if target is None:
        raise ReadError(f"unknown preprocessor kind {kind!r} in the model's preprocessing state",
                        hint=f"a medmm state names one of {sorted(PREPROCESSOR_KINDS)}; the bundle is damaged "
                             "or was not written by medmm")
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _kind_of(obj: Any) -> str:
    for kind, target in PREPROCESSOR_KINDS.items():
        module, _, name = target.partition(":")
        if type(obj).__module__ == module and type(obj).__name__ == name:
            return kind
    from ..errors import ConfigError

    raise ConfigError(f"{type(obj).__name__} cannot be saved as data",
                      hint=f"use one of medmm's preprocessors ({sorted(PREPROCESSOR_KINDS)})")


def dump_preprocessor(obj: Any, prefix: str = "") -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``({"kind": ..., "state": ...}, arrays)``, array names prefixed with ``prefix``."""
    state, arrays = obj.get_state()
    return {"kind": _kind_of(obj), "state": state}, {prefix + k: np.asarray(v) for k, v in arrays.items()}


def load_preprocessor(doc: dict[str, Any], arrays: dict[str, np.ndarray], prefix: str = "") -> Any:
    """The preprocessor described by :func:`dump_preprocessor`'s output."""
    if not isinstance(doc, dict) or "kind" not in doc:
        raise ReadError("a preprocessing state has no 'kind'", hint="the bundle is damaged; re-save the model")
    cls = _class(doc["kind"])
    own = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
    try:
        return cls.from_state(doc.get("state") or {}, own)
    except ReadError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise ReadError(f"the {doc['kind']} preprocessing state is malformed: {exc!r}",
                        hint="the bundle is damaged or from an incompatible medmm; re-save the model") from exc


def save_state(obj: Any, folder: str | Path) -> list[Path]:
    """Write ``preprocessor.json`` and ``preprocessor.npz`` into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    doc, arrays = dump_preprocessor(obj)
    js, npz = folder / STATE_JSON, folder / STATE_NPZ
    js.write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    buf = io.BytesIO()
    payload: dict[str, Any] = arrays  # numpy's stub merges **arrays with its allow_pickle keyword
    np.savez_compressed(buf, **payload)
    npz.write_bytes(buf.getvalue())
    return [js, npz]


def read_state(folder: str | Path) -> Any:
    """The preprocessor saved by :func:`save_state` in ``folder`` (no pickle is read)."""
    folder = Path(folder)
    js, npz = folder / STATE_JSON, folder / STATE_NPZ
    try:
        doc = json.loads(js.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ReadError(f"cannot read the preprocessing state: {exc}", path=js,
                        hint="re-save the model, or upgrade an old one with `medmm model upgrade`") from exc
    arrays: dict[str, np.ndarray] = {}
    if npz.exists():
        try:
            with np.load(npz, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except ValueError as exc:  # an object array needs pickle: refused
            raise ReadError(f"the preprocessing arrays hold objects that would need pickle: {exc}", path=npz,
                            hint="a medmm bundle stores plain numeric/string arrays only") from exc
    return load_preprocessor(doc, arrays)


# ------------------------------------------------------------------ helpers for the state methods

def fitted_flag(obj: Any, attr: str) -> bool:
    return hasattr(obj, attr)


def str_array(values: list[str]) -> np.ndarray:
    """Strings as a fixed-width unicode array (readable without pickle)."""
    return np.asarray(list(values), dtype=np.str_) if values else np.zeros(0, dtype="<U1")


def skops_dumps(obj: Any) -> np.ndarray:
    """``obj`` as a skops archive whose bytes depend only on its content: skops names the archive's
    members and ``__id__`` fields by ``id()`` and stamps the time, so the same fitted object saved
    twice would differ (and a bundle's digest with it); the ids are renumbered in order of first
    appearance and the members dated 1980-01-01."""
    import io
    import re
    import zipfile

    import skops.io as sio

    raw = sio.dumps(obj)
    with zipfile.ZipFile(io.BytesIO(raw)) as zin:
        schema = zin.read("schema.json").decode()
        members = {info.filename: zin.read(info.filename) for info in zin.infolist() if info.filename != "schema.json"}
    order: dict[str, str] = {}
    for m in re.finditer(r'"__id__": (\d+)|"(\d+)\.npy"', schema):
        order.setdefault(m.group(1) or m.group(2), str(len(order) + 1))
    for name in members:  # a member the schema does not name (none today) keeps its place
        order.setdefault(name.split(".", 1)[0], str(len(order) + 1))
    schema = re.sub(r"\b\d{6,}\b", lambda m: order.get(m.group(0), m.group(0)), schema)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as zout:
        for name in sorted(members, key=lambda n: int(order[n.split(".", 1)[0]])):
            stem, _, ext = name.partition(".")
            zout.writestr(zipfile.ZipInfo(f"{order[stem]}.{ext}", date_time=(1980, 1, 1, 0, 0, 0)), members[name])
        zout.writestr(zipfile.ZipInfo("schema.json", date_time=(1980, 1, 1, 0, 0, 0)), schema)
    return np.frombuffer(out.getvalue(), dtype=np.uint8)


def skops_loads(blob: np.ndarray, what: str) -> Any:
    import skops.io as sio
    from skops.io.exceptions import UntrustedTypesFoundException

    try:
        return sio.loads(np.asarray(blob, dtype=np.uint8).tobytes(), trusted=_trusted())
    except UntrustedTypesFoundException as exc:
        raise ReadError(f"the {what} state names types outside the trusted list: {exc}",
                        hint="the bundle was tampered with or written by something other than medmm; "
                             "do not load it") from exc
