"""TextPreprocessor: the vocabulary sized to the training notes, batched transform, findings."""

import numpy as np
import pytest

from medmm.errors import ConfigError
from medmm.records import Note, Notes


def _notes(n: int, seed: int = 0) -> list[Notes]:
    rng = np.random.default_rng(seed)
    words = [f"w{chr(97 + i % 26)}{chr(97 + i // 26 % 26)}x" for i in range(600)]
    return [Notes([Note(" ".join(rng.choice(words, 30)) + (" No mass seen." if i % 2 else " A solid mass."))])
            for i in range(n)]


@pytest.mark.parametrize("n_notes, expected", [(40, 32), (400, 100), (20_000, 2000)])
def test_auto_vocabulary_follows_the_number_of_training_notes(n_notes, expected):
    from medmm.preprocess.text import TextPreprocessor

    pre = TextPreprocessor()
    assert pre.vocabulary_size(n_notes) == expected
    if n_notes <= 400:
        pre.fit(_notes(n_notes))
        assert pre.max_features_ == expected
        layout = pre.sparse_layout()  # the MLP's dense columns, then the wide path's sparse indices and values
        assert pre.n_features_ <= expected and layout["dense"] == pre.n_features_ + len(pre.finding_names_)
        assert pre.output_shape == (layout["dense"] + 2 * layout["nnz"],)
        narrow = TextPreprocessor(wide_vocabulary=False).fit(_notes(n_notes))
        assert narrow.sparse_layout() is None and narrow.output_shape == (narrow.n_features_ + len(narrow.finding_names_),)


def test_explicit_vocabulary_and_bad_values():
    from medmm.preprocess.text import TextPreprocessor

    assert TextPreprocessor(max_features=500).vocabulary_size(40) == 500
    for bad in (0, -3, "big", 2.5, True):
        with pytest.raises(ConfigError, match="max_features"):
            TextPreprocessor(max_features=bad).fit(_notes(10))


def test_transform_many_equals_transform_and_keeps_negation():
    from medmm.preprocess.text import TextPreprocessor

    train = _notes(60)
    pre = TextPreprocessor().fit(train)
    batch = pre.transform_many(train[:7])
    assert batch.dtype == np.float32 and batch.shape == (7, pre.output_shape[0])
    for i in range(7):
        np.testing.assert_allclose(batch[i], pre.transform(train[i]), atol=1e-7)
    names = pre.finding_names_
    end = pre.sparse_layout()["dense"]  # the findings close the dense part; the wide path's sparse part follows
    neg = pre.transform(Notes([Note("No mass is seen.")]))[end - len(names):end]
    aff = pre.transform(Notes([Note("There is a solid mass.")]))[end - len(names):end]
    assert neg[names.index("tumor__negated")] == 1 and aff[names.index("tumor__affirmed")] == 1
