"""Text inputs for neural encoders: token ids over a fitted vocabulary, and frozen sentence embeddings.

:class:`TokenPreprocessor` feeds ``text_transformer``; :class:`SentenceEmbeddingPreprocessor`
feeds ``sentence_mlp``. :func:`medmm.models.build_preprocessor` picks them from a model config.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import numpy as np

from ..errors import NotFittedError
from ..records import Notes

__all__ = ["TokenPreprocessor", "SentenceEmbeddingPreprocessor", "tokenize"]

PAD, UNK = 0, 1
_TOKEN = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?|\d+(?:[.,]\d+)?|[.;:!?]")


def tokenize(text: str) -> list[str]:
    """Lower-cased words, numbers as ``<num>``, and sentence punctuation (which bounds a negation)."""
    return ["<num>" if t[0].isdigit() else t for t in _TOKEN.findall(text.lower())]


class TokenPreprocessor:
    """Notes -> ``float32 [max_len]`` token ids over a vocabulary fitted on training notes.

    Id 0 is padding and 1 an unknown word; words seen in at least ``min_df`` training notes get
    ids from 2 by frequency, at most ``max_vocab`` of them. Notes longer than ``max_len`` tokens
    keep their first ``max_len`` (``truncate="head"``) or last (``"tail"``).
    """

    output_kind = "tokens"

    def __init__(self, *, max_len: int = 128, max_vocab: int = 5000, min_df: int = 2, truncate: str = "head") -> None:
        if truncate not in ("head", "tail"):
            raise ValueError(f"truncate must be 'head' or 'tail', got {truncate!r}")
        self.max_len = int(max_len)
        self.max_vocab = int(max_vocab)
        self.min_df = int(min_df)
        self.truncate = truncate

    def fit(self, notes: list[Notes]) -> "TokenPreprocessor":
        df: Counter[str] = Counter()
        for n in notes:
            df.update(set(tokenize(n.text)))
        min_df = self.min_df if len(notes) >= 4 * self.min_df else 1
        words = sorted((w for w, c in df.items() if c >= min_df), key=lambda w: (-df[w], w))[: self.max_vocab]
        self.vocabulary_ = {w: i + 2 for i, w in enumerate(words)}
        return self

    def transform(self, notes: Notes) -> np.ndarray:
        if not hasattr(self, "vocabulary_"):
            raise NotFittedError("TokenPreprocessor is not fitted", hint="call fit() on training notes first")
        ids = [self.vocabulary_.get(t, UNK) for t in tokenize(notes.text)]
        ids = ids[: self.max_len] if self.truncate == "head" else ids[-self.max_len:]
        out = np.zeros(self.max_len, dtype=np.float32)  # ids < 2**24 are exact in float32
        out[: len(ids)] = ids
        return out

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Settings and the vocabulary as words in id order (ids from 2)."""
        from .state import str_array

        state: dict[str, Any] = {"params": {"max_len": self.max_len, "max_vocab": self.max_vocab,
                                            "min_df": self.min_df, "truncate": self.truncate},
                                 "fitted": hasattr(self, "vocabulary_")}
        if not state["fitted"]:
            return state, {}
        return state, {"vocabulary": str_array(sorted(self.vocabulary_, key=self.vocabulary_.__getitem__))}

    @classmethod
    def from_state(cls, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> "TokenPreprocessor":
        obj = cls(**state["params"])
        if state.get("fitted"):
            obj.vocabulary_ = {str(w): i + 2 for i, w in enumerate(arrays["vocabulary"])}
        return obj

    @property
    def vocab_size(self) -> int:
        return len(getattr(self, "vocabulary_", {})) + 2

    def encoder_kwargs(self) -> dict[str, Any]:
        """What the encoder must know of the fitted vocabulary."""
        return {"vocab_size": self.vocab_size}

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (self.max_len,)


class SentenceEmbeddingPreprocessor:
    """Notes -> ``float32 [384]``: the mean all-MiniLM-L6-v2 embedding of chunks of ``chunk_words``
    words (the model reads at most 256 word pieces at a time). The encoder is frozen and
    pretrained, so nothing is fitted and embeddings are computed once, in preprocessing.

    ``encoder`` is any object with ``encode(list[str]) -> [n, dim]`` and ``dim``; by default
    :class:`medmm.preprocess.notes_nlp.SentenceEncoder` (the ``text`` extra), loaded on first use
    and never pickled with the model.
    """

    output_kind = "embedding"

    def __init__(self, *, chunk_words: int = 150, encoder: Any = None, dim: int = 384) -> None:
        self.chunk_words = int(chunk_words)
        self.encoder = encoder
        self.dim = int(getattr(encoder, "dim", dim))

    def _encoder(self) -> Any:
        if self.encoder is None:
            from .notes_nlp import SentenceEncoder

            self.encoder = SentenceEncoder()
        return self.encoder

    def fit(self, notes: list[Notes]) -> "SentenceEmbeddingPreprocessor":
        self.fitted_ = True
        return self

    def _chunks(self, text: str) -> list[str]:
        words = text.split()
        return [" ".join(words[i:i + self.chunk_words]) for i in range(0, len(words), self.chunk_words)] or [""]

    def transform(self, notes: Notes) -> np.ndarray:
        if not getattr(self, "fitted_", False):
            raise NotFittedError("SentenceEmbeddingPreprocessor is not fitted", hint="call fit() first")
        emb = np.asarray(self._encoder().encode(self._chunks(notes.text)), dtype=np.float32)
        return emb.mean(axis=0)

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Settings only: the default encoder's weights come from its package, not the model."""
        from ..errors import ConfigError
        from .notes_nlp import SentenceEncoder

        if self.encoder is not None and not isinstance(self.encoder, SentenceEncoder):
            raise ConfigError(f"a SentenceEmbeddingPreprocessor with a custom encoder "
                              f"({type(self.encoder).__name__}) cannot be saved as data",
                              hint="save models built with the default SentenceEncoder")
        enc = {} if self.encoder is None else {"device": self.encoder.device, "batch_size": self.encoder.batch_size,
                                                "normalize": self.encoder.normalize}
        return {"params": {"chunk_words": self.chunk_words, "dim": self.dim}, "encoder": enc,
                "fitted": bool(getattr(self, "fitted_", False))}, {}

    @classmethod
    def from_state(cls, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> "SentenceEmbeddingPreprocessor":
        from .notes_nlp import SentenceEncoder

        enc = state.get("encoder") or {}
        obj = cls(**state["params"], encoder=SentenceEncoder(**enc) if enc else None)
        if state.get("fitted"):
            obj.fitted_ = True
        return obj

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        from .notes_nlp import SentenceEncoder

        if isinstance(state.get("encoder"), SentenceEncoder):
            state["encoder"] = None  # the weights come from the package, not the model file
        return state

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (self.dim,)
