"""Survival heads: time-to-event with censoring, and missing modalities handled as for any task.

``cox`` (DeepSurv; Katzman et al. 2018)
    One output, the log relative hazard ``eta(x)``; the loss is the negative Cox partial
    log-likelihood over the batch's known labels (torchsurv's, Efron's ties). Absolute risk needs a
    baseline: after training, :func:`fit_survival_baselines` fits Breslow's cumulative baseline
    hazard on the training split (scikit-survival's ``BreslowEstimator``) and keeps it as a buffer
    on a fixed grid, so it saves with the weights; ``S(t | x) = exp(-H0(t) exp(eta(x)))``.
``discrete_time`` (logistic hazard; Gensheimer and Narasimhan 2019, pycox's ``LogisticHazard``)
    ``n_bins`` outputs, the logit of the hazard in each of ``n_bins`` equal intervals of
    ``[0, horizon]``; the loss is the discrete-time likelihood (an event in interval ``k``: survive
    ``0..k-1``, fail in ``k``; censored at ``t``: survive every interval that ends by ``t``).
    ``predict`` gives the cumulative incidence at each interval's end.
``survival``
    ``method: cox`` (default) or ``method: discrete``.

Labels are two columns, ``<task>.time`` and ``<task>.event`` (see :mod:`medmm.tasks`); both
heads censor at ``horizon`` first, so an event after the horizon never counts. A patient with
either column unknown adds nothing.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from .heads import Head, register_head

__all__ = ["SurvivalHead", "CoxHead", "DiscreteTimeHead", "fit_survival_baselines", "survival_heads",
           "survival_outputs", "GRID"]

#: points of the Cox baseline grid (fixed, so that saved weights load into a fresh head)
GRID = 256


class SurvivalHead(Head):
    """Common part of the survival heads: labels, administrative censoring, risk at horizons."""

    kind = "survival"
    method = ""

    def __init__(self, *, dim: int, time: str | None = None, event: str | None = None, horizon: float | None = None,
                 horizons: list[float] | None = None, time_unit: str = "days", dropout: float = 0.1,
                 project: bool = True) -> None:
        self.time_key, self.event_key = time, event
        self.horizon = None if horizon is None else float(horizon)
        self.horizons = [float(h) for h in (horizons or ([self.horizon] if self.horizon else []))]
        self.time_unit = time_unit
        super().__init__(dim=dim, dropout=dropout, project=project)

    def label_columns(self, task: str) -> list[str]:
        return [self.time_key or f"{task}.time", self.event_key or f"{task}.event"]

    def _labels(self, target: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(time, event, known)`` censored at the horizon."""
        known = mask[:, 0] & mask[:, 1]
        time = target[:, 0].to(torch.float32)
        event = target[:, 1] > 0.5
        if self.horizon is not None:
            beyond = time > self.horizon
            time = torch.where(beyond, torch.full_like(time, self.horizon), time)
            event = event & ~beyond
        return time, event, known

    def survival(self, logits: torch.Tensor, times: Any) -> torch.Tensor:
        """``S(t | x)`` ``[B, len(times)]``."""
        raise NotImplementedError

    def risk_at(self, logits: torch.Tensor, horizons: Any = None) -> torch.Tensor:
        """The risk of the event by each horizon, ``1 - S(h | x)`` ``[B, H]``."""
        hs = self.horizons if horizons is None else [float(h) for h in horizons]
        return 1.0 - self.survival(logits, hs)

    def risk_score(self, logits: torch.Tensor) -> torch.Tensor:
        """One number per patient that orders risk (higher: earlier event), for the C-index."""
        raise NotImplementedError

    def survival_from_output(self, out: torch.Tensor, times: Any) -> torch.Tensor:
        """``S(t | x)`` from :meth:`predict`'s output (what a served model returns)."""
        raise NotImplementedError

    def risk_score_from_output(self, out: torch.Tensor) -> torch.Tensor:
        """:meth:`risk_score` from :meth:`predict`'s output (a Cox head's output is its risk score)."""
        return out[:, 0]

    def can_give_risk(self) -> bool:
        """Whether absolute risk is available (a Cox head needs its fitted baseline)."""
        return True

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "method": self.method, "horizon": self.horizon, "horizons": self.horizons,
                "time_unit": self.time_unit}


@register_head("cox", loss="cox_partial_likelihood")
class CoxHead(SurvivalHead):
    """The log relative hazard; Breslow's baseline (fitted after training) gives absolute risk."""

    method = "cox"
    n_outputs = 1
    baseline_times: torch.Tensor  # buffers (typed here: nn.Module's attribute lookup is untyped)
    baseline_cumhaz: torch.Tensor
    baseline_fitted: torch.Tensor

    def __init__(self, *, dim: int, ties: str = "efron", **kw: Any) -> None:
        if ties not in ("efron", "breslow"):
            raise ConfigError(f"Cox ties method {ties!r} is not supported", hint="use 'efron' or 'breslow'")
        self.ties = ties
        super().__init__(dim=dim, **kw)
        self.register_buffer("baseline_times", torch.zeros(GRID))
        self.register_buffer("baseline_cumhaz", torch.zeros(GRID))
        self.register_buffer("baseline_fitted", torch.zeros((), dtype=torch.bool))

    def output_names(self, task: str) -> list[str]:
        return [f"{task}.log_hazard"]

    def can_give_risk(self) -> bool:
        return bool(self.baseline_fitted)

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        return logits

    def risk_score(self, logits: torch.Tensor) -> torch.Tensor:
        return logits[:, 0]

    def loss(self, logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from torchsurv.loss.cox import neg_partial_log_likelihood

        time, event, known = self._labels(target, mask)
        n = known.sum().to(logits.dtype)
        if not bool((event & known).any()):  # no event among the known rows: the partial likelihood is empty
            return logits.sum() * 0.0, n * 0.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchsurv warns whenever event times tie
            nll = neg_partial_log_likelihood(logits[known, 0].float(), event[known], time[known],
                                             ties_method=self.ties, reduction="mean")
        return nll.to(logits.dtype) * n, n

    def fit_baseline(self, log_hazard: Any, time: Any, event: Any) -> "CoxHead":
        """Breslow's cumulative baseline hazard from training predictions, tabulated on the grid."""
        from sksurv.linear_model.coxph import BreslowEstimator

        lp = np.asarray(log_hazard, dtype=float)
        t = np.asarray(time, dtype=float)
        e = np.asarray(event, dtype=float) > 0.5
        if self.horizon is not None:
            e = e & (t <= self.horizon)
            t = np.minimum(t, self.horizon)
        if not e.any():
            raise ConfigError("the Cox baseline needs at least one event in the training split")
        est = BreslowEstimator().fit(lp, e, t)
        fn = est.cum_baseline_hazard_
        end = float(self.horizon if self.horizon is not None else t.max())
        grid = np.linspace(0.0, end, GRID)
        self.baseline_times.copy_(torch.as_tensor(grid, dtype=self.baseline_times.dtype))
        self.baseline_cumhaz.copy_(torch.as_tensor(np.interp(grid, fn.x, fn.y, left=0.0),
                                                   dtype=self.baseline_cumhaz.dtype))
        self.baseline_fitted.fill_(True)
        return self

    def cumulative_baseline(self, times: Any) -> torch.Tensor:
        if not bool(self.baseline_fitted):
            raise ConfigError("this Cox head has no baseline hazard yet, so it gives a risk score but no absolute "
                              "risk", hint="train with medmm (it fits the baseline) or call fit_survival_baselines")
        tt = torch.as_tensor(np.asarray(times, dtype=float), dtype=self.baseline_times.dtype,
                             device=self.baseline_times.device)
        idx = torch.searchsorted(self.baseline_times, tt, right=True).clamp(1, GRID) - 1
        return self.baseline_cumhaz[idx]

    def survival_from_output(self, out: torch.Tensor, times: Any) -> torch.Tensor:
        return self.survival(out, times)

    def survival(self, logits: torch.Tensor, times: Any) -> torch.Tensor:
        h0 = self.cumulative_baseline(times).to(logits.dtype)
        return torch.exp(-h0[None, :] * torch.exp(logits[:, :1]))


@register_head("discrete_time", loss="logistic_hazard")
class DiscreteTimeHead(SurvivalHead):
    """``n_bins`` hazard logits over equal intervals of ``[0, horizon]``."""

    method = "discrete"
    edges: torch.Tensor  # buffer: the interval edges, 0 to the horizon

    def __init__(self, *, dim: int, horizon: float | None = None, n_bins: int = 20, **kw: Any) -> None:
        if horizon is None:
            raise ConfigError("a discrete-time survival head needs a horizon", hint="set horizon: <time> on the task")
        if int(n_bins) < 2:
            raise ConfigError(f"n_bins {n_bins} is below 2")
        self.n_outputs = int(n_bins)
        super().__init__(dim=dim, horizon=horizon, **kw)
        self.register_buffer("edges", torch.linspace(0.0, float(horizon), int(n_bins) + 1), persistent=False)

    def output_names(self, task: str) -> list[str]:
        return [f"{task}.risk@{float(e):g}" for e in self.edges[1:]]

    def _survival_at_edges(self, logits: torch.Tensor) -> torch.Tensor:
        """``S`` at ``0, e_1, ..., e_K`` ``[B, K + 1]``."""
        s = torch.cumprod(torch.sigmoid(-logits), dim=1)  # 1 - sigmoid(h) = sigmoid(-h)
        return torch.cat([torch.ones_like(s[:, :1]), s], dim=1)

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        return 1.0 - self._survival_at_edges(logits)[:, 1:]

    def risk_score(self, logits: torch.Tensor) -> torch.Tensor:
        """Minus the restricted mean survival time up to the horizon."""
        s = self._survival_at_edges(logits)
        width = self.edges[1:] - self.edges[:-1]
        return -((s[:, 1:] + s[:, :-1]) / 2 * width.to(s.dtype)).sum(dim=1)

    def survival(self, logits: torch.Tensor, times: Any) -> torch.Tensor:
        return self._interpolate(self._survival_at_edges(logits), times)

    def risk_score_from_output(self, out: torch.Tensor) -> torch.Tensor:
        """Minus the restricted mean survival time, from :meth:`predict`'s output."""
        s = torch.cat([torch.ones_like(out[:, :1]), 1.0 - out], dim=1)
        width = (self.edges[1:] - self.edges[:-1]).to(s.dtype)
        return -((s[:, 1:] + s[:, :-1]) / 2 * width).sum(dim=1)

    def survival_from_output(self, out: torch.Tensor, times: Any) -> torch.Tensor:
        """``S(t)`` from :meth:`predict`'s cumulative incidences."""
        s = 1.0 - out
        return self._interpolate(torch.cat([torch.ones_like(s[:, :1]), s], dim=1), times)

    def _interpolate(self, s: torch.Tensor, times: Any) -> torch.Tensor:
        e = self.edges.to(s.dtype)
        tt = torch.as_tensor(np.asarray(times, dtype=float), dtype=s.dtype, device=s.device).clamp(0, float(e[-1]))
        k = torch.searchsorted(e, tt, right=True).clamp(1, len(e) - 1)
        w = (tt - e[k - 1]) / (e[k] - e[k - 1])
        return s[:, k - 1] * (1 - w) + s[:, k] * w  # S interpolated linearly within an interval

    def loss(self, logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        time, event, known = self._labels(target, mask)
        e = self.edges.to(time.dtype)
        k = torch.searchsorted(e[1:].contiguous(), time.contiguous(), right=False).clamp(max=self.n_outputs - 1)
        survived = (e[1:][None, :] <= time[:, None])  # intervals that ended by t
        j = torch.arange(self.n_outputs, device=logits.device)[None, :]
        fail = event[:, None] & (j == k[:, None])
        terms = torch.where(event[:, None], j <= k[:, None], survived)
        per = nn.functional.binary_cross_entropy_with_logits(logits.float(), fail.float(), reduction="none")
        per = (per * terms.float()).sum(dim=1)
        kf = known.to(logits.dtype)
        return (per.to(logits.dtype) * kf).sum(), kf.sum()


@register_head("survival", loss="survival")
def _survival_head(*, dim: int, method: str = "cox", **kw: Any) -> SurvivalHead:
    if method == "cox":
        kw.pop("n_bins", None)
        return CoxHead(dim=dim, **kw)
    if method == "discrete":
        kw.pop("ties", None)
        return DiscreteTimeHead(dim=dim, **kw)
    raise ConfigError(f"survival method {method!r} is not supported", hint="use 'cox' or 'discrete'")


def survival_heads(model: Any) -> dict[str, SurvivalHead]:
    """The model's survival heads by task (none for a model without heads)."""
    if not hasattr(model, "heads") or not hasattr(model, "tasks"):
        return {}
    return {t: model.heads[t] for t in model.tasks if isinstance(model.heads[t], SurvivalHead)}


@torch.no_grad()
def survival_outputs(model: Any, logits: torch.Tensor, *, horizons: dict[str, list[float]] | None = None,
                     curve_times: dict[str, Any] | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Per survival task: ``risk_score [B]``, ``risk [B, H]`` at its horizons (when the head can give
    absolute risk) and, with ``curve_times``, ``survival [B, len(times)]``."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for t, head in survival_heads(model).items():
        lg = logits[:, model.output_slices[t]]
        d: dict[str, np.ndarray] = {"risk_score": head.risk_score(lg).float().cpu().numpy()}
        hs = (horizons or {}).get(t, head.horizons)
        absolute = not isinstance(head, CoxHead) or bool(head.baseline_fitted)
        if hs and absolute:
            d["horizons"] = np.asarray(hs, dtype=float)
            d["risk"] = head.risk_at(lg, hs).float().cpu().numpy()
        if curve_times is not None and t in curve_times and absolute:
            d["times"] = np.asarray(curve_times[t], dtype=float)
            d["survival"] = head.survival(lg, curve_times[t]).float().cpu().numpy()
        out[t] = d
    return out


@torch.no_grad()
def fit_survival_baselines(model: Any, dataset: Any, *, batch_size: int = 32, device: Any = None) -> list[str]:
    """Fit every Cox head's baseline hazard on ``dataset`` (the training split); returns those tasks."""
    cox = {t: h for t, h in survival_heads(model).items() if isinstance(h, CoxHead)}
    if not cox or dataset is None or not len(dataset):
        return []
    device = device or next(model.parameters()).device
    was = model.training
    model.eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=dataset.collate)
    lps: dict[str, list] = {t: [] for t in cox}
    ys: dict[str, list] = {t: [] for t in cox}
    for batch in loader:
        b = batch.to(device)
        logits = model(b.values, b.present)
        for t in cox:
            cols = [batch.tasks.index(c) for c in model.label_columns[t]]
            known = batch.label_mask[:, cols].all(dim=1).cpu().numpy()
            lps[t].append(logits[:, model.output_slices[t]][:, 0].float().cpu().numpy()[known])
            ys[t].append(batch.labels[:, cols].cpu().numpy()[known])
    model.train(was)
    done = []
    for t, head in cox.items():
        y = np.concatenate(ys[t]) if ys[t] else np.zeros((0, 2))
        if len(y) and (y[:, 1] > 0.5).any():
            head.fit_baseline(np.concatenate(lps[t]), y[:, 0], y[:, 1])
            done.append(t)
    return done


def harrell_c(risk: Any, time: Any, event: Any) -> float:
    """Harrell's C-index (scikit-survival's), NaN when no pair is comparable."""
    from sksurv.metrics import concordance_index_censored

    r, t, e = (np.asarray(a, dtype=float) for a in (risk, time, event))
    keep = ~(np.isnan(r) | np.isnan(t) | np.isnan(e))
    if not (e[keep] > 0.5).any():
        return float("nan")
    try:
        return float(concordance_index_censored(e[keep] > 0.5, t[keep], r[keep])[0])
    except (ValueError, ZeroDivisionError):
        return float("nan")


def logits_from_output(head: Any, out: torch.Tensor) -> torch.Tensor:
    """The logits whose :meth:`predict` is ``out`` (``predict_proba``'s columns of one head), so that
    a validation loss is the training loss on held-out patients."""
    eps = 1e-6
    if isinstance(head, DiscreteTimeHead):
        s = torch.cat([torch.ones_like(out[:, :1]), 1.0 - out], dim=1).clamp(eps, 1.0)
        h = (1.0 - s[:, 1:] / s[:, :-1]).clamp(eps, 1 - eps)  # the interval hazards
        return torch.log(h) - torch.log1p(-h)
    if isinstance(head, CoxHead) or head.kind == "regression":
        return out
    if head.kind == "multiclass":
        return torch.log(out.clamp_min(eps))  # softmax(log p) = p
    p = out.clamp(eps, 1 - eps)
    return torch.log(p) - torch.log1p(-p)


def output_loss(head: Any, out: np.ndarray, target: np.ndarray, mask: np.ndarray) -> float:
    """The head's own loss (per known label) on outputs ``out``; NaN with no known label."""
    lg = logits_from_output(head, torch.as_tensor(np.asarray(out, dtype=np.float32)))
    with torch.no_grad():
        s, n = head.loss(lg, torch.as_tensor(np.asarray(target, dtype=np.float32)), torch.as_tensor(mask, dtype=torch.bool))
    return float(s / n) if float(n) > 0 else float("nan")


def task_val_metrics(model: Any, probs: np.ndarray, labels: np.ndarray, mask: np.ndarray,
                     columns: tuple[str, ...]) -> dict[str, float]:
    """Validation metrics of the non-binary tasks from ``predict_proba`` outputs and the batch label
    ``columns``: ``val_cindex_<task>`` (Harrell's) for survival, ``val_auroc_<task>`` (macro
    one-vs-rest) for multiclass, ``val_mae_<task>`` for regression (monitor them with ``monitor_mode:
    max`` / ``min``), and ``val_loss_<task>``: the head's training loss on the validation patients,
    which the trainer's ``val_loss`` averages with the binary tasks' so that it selects on every task."""
    out: dict[str, float] = {}
    if not hasattr(model, "heads"):
        return out
    for t in model.tasks:
        head = model.heads[t]
        sl = model.output_slices[t]
        if head.kind != "binary" and all(c in columns for c in model.label_columns[t]):
            out[f"val_loss_{t}"] = output_loss(head, probs[:, sl], labels[:, [columns.index(c) for c in model.label_columns[t]]],
                                               mask[:, [columns.index(c) for c in model.label_columns[t]]])
        if isinstance(head, SurvivalHead):
            tc, ec = (columns.index(c) for c in model.label_columns[t])
            known = mask[:, tc] & mask[:, ec]
            p = probs[known, sl]
            risk = p[:, 0] if isinstance(head, CoxHead) else p.mean(axis=1)  # mean F over equal bins: -RMST + const
            time, event = labels[known, tc], labels[known, ec]
            if head.horizon is not None:
                event = np.where(time > head.horizon, 0.0, event)
                time = np.minimum(time, head.horizon)
            out[f"val_cindex_{t}"] = harrell_c(risk, time, event)
        elif head.kind == "regression" and t in columns:
            k = columns.index(t)
            sel = mask[:, k]
            out[f"val_mae_{t}"] = float(np.abs(labels[sel, k] - probs[sel, sl][:, 0]).mean()) if sel.any() else np.nan
        elif head.kind == "multiclass" and t in columns:
            from sklearn.metrics import roc_auc_score

            k = columns.index(t)
            y = labels[mask[:, k], k].astype(int)
            p = probs[mask[:, k], sl]
            present = np.unique(y)
            if len(present) < 2:
                out[f"val_auroc_{t}"] = float("nan")
                continue
            aucs = [roc_auc_score(y == c, p[:, c]) for c in present]
            out[f"val_auroc_{t}"] = float(np.mean(aucs))
    return out
