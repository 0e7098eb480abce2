"""The wide (linear) part of wide-and-deep (Cheng et al. 2016): a linear layer on a modality's
featurised vector, dense (a table's featurised row) or sparse (a note's full TF-IDF vocabulary).

Both start at zero, so an untrained wide path adds nothing. ``lr_scale`` multiplies the step an
Adam-type optimiser takes on them: the weights are stored as ``raw`` and used as
``lr_scale * raw`` (Adam's step on ``raw`` is about ``lr`` whatever the gradient's size), so a
logistic regression's weights, several units on TF-IDF inputs, are reached in a few hundred
steps without changing the trainer's learning rate for the deep part.

:func:`fit_logistic_path` refits a wide path alone as a logistic regression solved to convergence
(scikit-learn's L-BFGS), its inverse L2 strength ``C`` chosen on the inner validation split:
the "wide only" candidate that :meth:`~medmm.models.multimodal.MultimodalModel.select_wide_or_deep`
weighs against wide-and-deep. :func:`fit_cox_path` is the same for a Cox survival task: a ridge
Cox proportional hazards model (scikit-survival's ``CoxPHSurvivalAnalysis``, Efron's ties), its
``alpha`` chosen by the cross-validated negative log partial likelihood (:func:`cox_losses`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["DenseWide", "SparseWide", "LogisticPath", "fit_logistic_path", "refit_logistic_path", "log_loss", "log_losses",
           "WIDE_CS", "CoxPath", "cox_losses", "fit_cox_path", "refit_cox_path"]

#: inverse L2 strengths tried for the wide-only logistic regression (scikit-learn's ``C``: a grid of
#: half-decades from 0.01 to 1000; a TF-IDF row of unit norm over many n-grams wants a large one)
WIDE_CS = tuple(float(c) for c in np.logspace(-2, 3, 11))


class _Wide(nn.Module):
    l2: torch.Tensor  # [n_out] buffer: each output's L2 strength

    def __init__(self, n_terms: int, n_out: int, lr_scale: float = 1.0, *, l2: float = 0.0) -> None:
        super().__init__()
        self.lr_scale = float(lr_scale)
        self.raw = nn.Parameter(torch.zeros(n_out, n_terms))  # nn.Linear's layout
        self.bias = nn.Parameter(torch.zeros(n_out))
        # the L2 strength of each output's weights (a training setting: not saved with the weights)
        self.register_buffer("l2", torch.full((n_out,), float(l2)), persistent=False)
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
        """``sum_k l2[k] * ||W[k]||^2``: each output's squared effective weights times its L2 strength."""
        return (self.weight.pow(2).sum(1) * self.l2.to(self.raw.dtype)).sum()

    def set_l2(self, l2: Any, outputs: Any = None) -> None:
        """Set the L2 strength of ``outputs`` (all by default) to ``l2``."""
        with torch.no_grad():
            if outputs is None:
                self.l2.fill_(float(l2))
            else:
                self.l2[outputs] = float(l2)


class DenseWide(_Wide):
    """``x @ W + b`` on a dense feature vector ``[B, n_features]``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1).float() @ self.weight.t() + self.bias

    def rows(self, x: torch.Tensor) -> np.ndarray:
        """The rows of ``x`` as a float64 array ``[B, n_features]`` (for a solver that reads them)."""
        return x.reshape(x.shape[0], -1).detach().cpu().double().numpy()


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

    def rows(self, x: torch.Tensor) -> Any:
        """The rows of ``x`` as a SciPy CSR matrix ``[B, n_terms]`` (for a solver that reads them)."""
        from scipy import sparse

        x = x.reshape(x.shape[0], -1).detach().cpu()
        idx = x[:, self.offset:self.offset + self.nnz].long().numpy()
        val = x[:, self.offset + self.nnz:self.offset + 2 * self.nnz].double().numpy()
        rows = np.repeat(np.arange(x.shape[0]), self.nnz)
        keep = val.ravel() != 0
        return sparse.csr_matrix((val.ravel()[keep], (rows[keep], idx.ravel()[keep])),
                                 shape=(x.shape[0], self.raw.shape[1]))


def log_losses(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Binary cross-entropy of each probability ``p`` for its label ``y``."""
    p = np.clip(np.asarray(p, dtype=float), 1e-7, 1 - 1e-7)
    y = np.asarray(y, dtype=float)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    """Mean binary cross-entropy of probabilities ``p`` for labels ``y``."""
    return float(np.mean(log_losses(y, p))) if len(y) else float("nan")


@dataclass
class LogisticPath:
    """A wide path refitted alone: ``coef [n_features]``, ``intercept``, the ``C`` chosen and its
    validation log loss (and that of every ``C`` tried)."""

    coef: np.ndarray
    intercept: float
    C: float
    val_loss: float
    tried: dict[float, float]


def fit_logistic_path(X: Any, y: np.ndarray, X_val: Any, y_val: np.ndarray, *,
                      Cs: tuple[float, ...] = WIDE_CS) -> LogisticPath | None:
    """L2 logistic regressions of ``y`` on ``X`` (dense or sparse), one per ``C``, scored on
    ``(X_val, y_val)`` by log loss; the best one (the stronger penalty on a tie). ``None`` when either part lacks one of the two classes."""
    from sklearn.linear_model import LogisticRegression

    y, y_val = np.asarray(y, dtype=int), np.asarray(y_val, dtype=int)
    if len(np.unique(y)) < 2 or len(np.unique(y_val)) < 2:
        return None
    best: LogisticPath | None = None
    tried: dict[float, float] = {}
    for C in sorted(Cs):
        lr = LogisticRegression(C=C, max_iter=5000, tol=1e-6).fit(X, y)
        loss = log_loss(y_val, lr.predict_proba(X_val)[:, 1])
        tried[float(C)] = loss
        if best is None or loss < best.val_loss - 1e-9:
            best = LogisticPath(lr.coef_[0].astype(np.float64), float(lr.intercept_[0]), float(C), loss, tried)
    assert best is not None
    best.tried = tried
    return best


def refit_logistic_path(path: LogisticPath, X: Any, y: np.ndarray, X_val: Any, y_val: np.ndarray) -> LogisticPath:
    """``path`` refitted at its ``C`` on both parts (``LogisticRegressionCV(refit=True)``'s way: the
    validation rows only chose ``C``, and a final model learns from them too); ``val_loss`` stays
    the held-out one."""
    from scipy import sparse
    from sklearn.linear_model import LogisticRegression

    both = sparse.vstack([X, X_val]).tocsr() if sparse.issparse(X) else np.concatenate([X, X_val])
    lr = LogisticRegression(C=path.C, max_iter=5000, tol=1e-6).fit(both, np.concatenate([y, y_val]).astype(int))
    return LogisticPath(lr.coef_[0].astype(np.float64), float(lr.intercept_[0]), path.C, path.val_loss, path.tried)


def cox_losses(eta: Any, time: Any, event: Any) -> np.ndarray:
    """Each event's term of the negative log partial likelihood of log hazards ``eta``:
    ``-(eta_i - log sum_{j: t_j >= t_i} exp(eta_j))`` for every patient ``i`` with an event
    (Breslow's handling of ties: the tied patients are all in each other's risk sets). Their mean
    is the loss a Cox fit minimises; per event, they give the paired differences whose standard
    error the wide-or-deep choice needs. Invariant to adding a constant to ``eta``."""
    eta, time = np.asarray(eta, dtype=float), np.asarray(time, dtype=float)
    event = np.asarray(event, dtype=bool)
    if not len(eta):
        return np.zeros(0)
    order = np.argsort(-time, kind="stable")
    t, e = time[order], eta[order]
    top = float(e.max())
    csum = np.log(np.cumsum(np.exp(e - top))) + top  # log-sum-exp over the patients at or after each time
    neg = -t
    last = np.searchsorted(neg, neg, side="right") - 1  # a tie's risk set runs to its last member
    return -(e - csum[last])[event[order]]


@dataclass
class CoxPath:
    """A wide path refitted alone as a ridge Cox model: ``coef [n_features]`` (log hazard ratios;
    a Cox model has no intercept; zero outside the chosen columns), the ``alpha`` chosen, its
    validation loss (mean of :func:`cox_losses`), the cross-validated loss of every ``alpha``
    tried on the chosen columns, the name of the column set chosen and its columns (``None``: all)
    and the best cross-validated loss of each column set tried."""

    coef: np.ndarray
    alpha: float
    val_loss: float
    tried: dict[float, float]
    columns_name: str = "all"
    columns: np.ndarray | None = None
    sets_tried: dict[str, float] | None = None


def _surv(time: np.ndarray, event: np.ndarray) -> np.ndarray:
    out = np.empty(len(time), dtype=[("event", bool), ("time", float)])
    out["event"], out["time"] = np.asarray(event, dtype=bool), np.asarray(time, dtype=float)
    return out


def _ridge_cox(X: np.ndarray, time: np.ndarray, event: np.ndarray, alpha: float) -> np.ndarray | None:
    import warnings

    from sksurv.linear_model import CoxPHSurvivalAnalysis

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence and overflow warnings of a weak penalty: scored below
        try:
            fit = CoxPHSurvivalAnalysis(alpha=alpha, ties="efron", n_iter=200).fit(X, _surv(time, event))
        except (ValueError, np.linalg.LinAlgError, ArithmeticError):
            return None
    coef = np.asarray(fit.coef_, dtype=np.float64)
    return coef if np.all(np.isfinite(coef)) else None


#: ridge strengths tried for the wide-only Cox model (scikit-survival's ``alpha``, which scales
#: ``||w||^2 / 2`` beside the summed log partial likelihood): ``1 / C`` over :data:`WIDE_CS`
COX_ALPHAS = tuple(sorted(1.0 / c for c in WIDE_CS))


def fit_cox_path(X: Any, time: Any, event: Any, X_val: Any, time_val: Any, event_val: Any, *,
                 alphas: tuple[float, ...] = COX_ALPHAS, folds: int = 5, seed: int = 0,
                 column_sets: dict[str, Any] | None = None) -> CoxPath | None:
    """A ridge Cox model of ``(time, event)`` on the dense rows ``X`` whose ``alpha`` is chosen by
    ``folds``-fold cross-validation (stratified by event) over the training and validation rows
    together: each held-out fold's mean negative log partial likelihood (:func:`cox_losses`),
    the stronger penalty on a tie. The returned coefficients are the training rows' fit at that
    alpha and ``val_loss`` its loss on the validation rows (what the wide-or-deep choice compares).
    Why not the validation split alone, as for the logistic path: a real survival table's
    validation split holds 20-140 patients, and the Cox partial likelihood on so few chose alpha
    erratically (``benchmarks/bench_survival.py --pipeline``, Veterans: Harrell's C 0.035 below a Cox
    PH model with the validation choice, 0.016 with cross-validation; WHAS500 0.009 / 0.007).
    With too few events or censored patients for two folds, the validation split chooses.

    ``column_sets`` (name -> column indices; default: all columns) are alternative feature sets
    chosen on the same folds as ``alpha`` (the pair with the lowest cross-validated loss; on a
    tie the set named first): a table's featurised row holds each numeric column twice (normal
    scores and its own scale, see ``TabularPreprocessor(numeric_raw=True)``), and on ~100
    patients the doubled columns cost a ridge Cox model more than either scale gains
    (``bench_survival.py --pipeline`` on Veterans, 137 patients: Harrell's C 0.015 below Cox PH with
    all columns, 0.008 with the set chosen here; WHAS500 and GBSG2 within 0.01 either way).
    ``None`` when either part has no event or no fit succeeded."""
    from sklearn.model_selection import KFold, StratifiedKFold

    X, X_val = np.asarray(X, dtype=np.float64), np.asarray(X_val, dtype=np.float64)
    time, time_val = np.asarray(time, dtype=float), np.asarray(time_val, dtype=float)
    event, event_val = np.asarray(event, dtype=bool), np.asarray(event_val, dtype=bool)
    if not event.any() or not event_val.any() or len(X) < 2:
        return None
    Xa, ta, ea = np.concatenate([X, X_val]), np.concatenate([time, time_val]), np.concatenate([event, event_val])
    n_ev, n_cens = int(ea.sum()), int((~ea).sum())
    k = min(int(folds), n_ev)
    splitter: Any = StratifiedKFold(min(k, n_cens), shuffle=True, random_state=seed) if min(k, n_cens) >= 2 else \
        (KFold(k, shuffle=True, random_state=seed) if k >= 2 else None)
    parts = list(splitter.split(Xa, ea)) if splitter is not None else [(np.arange(len(X)), len(X) + np.arange(len(X_val)))]
    sets: dict[str, np.ndarray | None] = {"all": None}
    if column_sets:
        sets = {str(name): (None if cols is None else np.asarray(cols, dtype=int)) for name, cols in column_sets.items()}
    results: dict[str, dict[float, float]] = {}
    for name, cols in sets.items():
        Xs = Xa if cols is None else Xa[:, cols]
        tried: dict[float, float] = {}
        for alpha in sorted(alphas, reverse=True):
            losses: list[np.ndarray] = []
            for fit_rows, held in parts:
                coef = _ridge_cox(Xs[fit_rows], ta[fit_rows], ea[fit_rows], alpha) if ea[fit_rows].any() else None
                if coef is None:
                    losses = []
                    break
                losses.append(cox_losses(Xs[held] @ coef, ta[held], ea[held]))
            if losses:
                loss = float(np.mean(np.concatenate(losses)))
                if np.isfinite(loss):
                    tried[float(alpha)] = loss
        if tried:
            results[name] = tried
    if not results:
        return None
    order = list(sets)
    name, best = min(((n, a) for n, tr in results.items() for a in tr),
                     key=lambda na: (round(results[na[0]][na[1]], 12), order.index(na[0]), -na[1]))
    cols = sets[name]
    coef = _ridge_cox(X if cols is None else X[:, cols], time, event, best)
    if coef is None:
        return None
    coef = _expand(coef, cols, X.shape[1])
    return CoxPath(coef, float(best), float(np.mean(cox_losses(X_val @ coef, time_val, event_val))), results[name],
                   name, cols, {n: min(tr.values()) for n, tr in results.items()})


def _expand(coef: np.ndarray, cols: np.ndarray | None, width: int) -> np.ndarray:
    """``coef`` of the columns ``cols`` as a full-width vector (zero elsewhere)."""
    if cols is None:
        return coef
    full = np.zeros(width, dtype=np.float64)
    full[cols] = coef
    return full


def refit_cox_path(path: CoxPath, X: Any, time: Any, event: Any, X_val: Any, time_val: Any, event_val: Any) -> CoxPath:
    """``path`` refitted at its ``alpha`` on both parts (the validation rows chose ``alpha``; the
    final model learns from them too); ``val_loss`` stays the held-out one. The held-out fit is
    kept if the refit fails."""
    Xa = np.concatenate([np.asarray(X, np.float64), np.asarray(X_val, np.float64)])
    coef = _ridge_cox(Xa if path.columns is None else Xa[:, path.columns],
                      np.concatenate([np.asarray(time, float), np.asarray(time_val, float)]),
                      np.concatenate([np.asarray(event, bool), np.asarray(event_val, bool)]), path.alpha)
    if coef is None:
        return path
    return CoxPath(_expand(coef, path.columns, Xa.shape[1]), path.alpha, path.val_loss, path.tried,
                   path.columns_name, path.columns, path.sets_tried)
