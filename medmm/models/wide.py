"""The wide (linear) part of wide-and-deep (Cheng et al. 2016): a linear layer on a modality's
featurised vector, dense (a table's featurised row) or sparse (a note's full TF-IDF vocabulary).

Both start at zero, so an untrained wide path adds nothing. ``lr_scale`` multiplies the step an
Adam-type optimiser takes on them: the weights are stored as ``raw`` and used as
``lr_scale * raw`` (Adam's step on ``raw`` is about ``lr`` whatever the gradient's size), so a
logistic regression's weights, several units on TF-IDF inputs, are reached in a few hundred
steps without changing the trainer's learning rate for the deep part.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["DenseWide", "SparseWide"]


class _Wide(nn.Module):
    def __init__(self, n_terms: int, n_out: int, lr_scale: float = 1.0, *, l2: float = 0.0) -> None:
        super().__init__()
        self.lr_scale = float(lr_scale)
        self.l2 = float(l2)
        self.raw = nn.Parameter(torch.zeros(n_out, n_terms))  # nn.Linear's layout
        self.bias = nn.Parameter(torch.zeros(n_out))
        self._register_load_state_dict_pre_hook(self._from_linear)

    def _from_linear(self, state_dict, prefix, *args) -> None:
        """Bundles written when the wide path was an ``nn.Linear`` load as they were."""
        w = state_dict.pop(prefix + "weight", None)
        if w is not None and prefix + "raw" not in state_dict:
            state_dict[prefix + "raw"] = w / self.lr_scale

    @property
    def weight(self) -> torch.Tensor:
        """The effective weights ``[n_out, n_terms]`` (``nn.Linear``'s layout)."""
        return self.raw * self.lr_scale

    def penalty(self) -> torch.Tensor:
        """``||W||^2`` of the effective weights."""
        return self.weight.pow(2).sum()


class DenseWide(_Wide):
    """``x @ W + b`` on a dense feature vector ``[B, n_features]``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1).float() @ self.weight.t() + self.bias


class SparseWide(_Wide):
    """A linear layer on a sparse vector carried inside a dense one: columns ``offset ..
    offset + nnz`` hold the term indices of a row's non-zero entries and the next ``nnz`` their
    values (padding: index 0, value 0); see :meth:`medmm.preprocess.text.TextPreprocessor.sparse_layout`.
    """

    def __init__(self, n_terms: int, n_out: int, lr_scale: float = 1.0, *, l2: float = 0.0, offset: int,
                 nnz: int) -> None:
        super().__init__(n_terms, n_out, lr_scale, l2=l2)
        self.offset, self.nnz = int(offset), int(nnz)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], -1)
        idx = x[:, self.offset:self.offset + self.nnz].long().clamp(0, self.raw.shape[1] - 1)
        val = x[:, self.offset + self.nnz:self.offset + 2 * self.nnz].float()
        return (self.weight.t()[idx] * val[..., None]).sum(1) + self.bias
