"""Extra outcomes of the synthetic cohort, each with its Bayes oracle: a tumour grade (multi-class)
and death with follow-up (time-to-event with censoring).

``grade`` (``label_grade``: 0 ``none``, 1 ``low``, 2 ``high``)
    ``none`` without a tumour; with one, ``high`` when the tumour-marker evidence ``z_cea`` exceeds
    ``GRADE_CUT`` and ``low`` otherwise. Given the modalities a patient has,
    ``P(high) = P(tumour | subset) * P(z_cea > cut | tumour, subset)``: 1 or 0 when the EHR shows
    the CEA value, the Gaussian tail ``1 - Phi(cut - mu)`` otherwise.
``death`` (``label_death.time`` days, ``label_death.event``)
    Exponential time to death with hazard ``LAMBDA0 * exp(B_TUMOR * tumour + B_DISEASE * disease)``,
    independent exponential loss to follow-up and administrative censoring at ``HORIZON`` days.
    The oracle's risk by ``h`` is the mixture ``1 - sum_{t,d} P(t|subset) P(d|subset) S(h | t, d)``
    over the label posteriors the binary oracle already gives.

The oracle is written to ``outcomes_oracle.csv`` (``patient_id, task, subset, output, score``),
where ``output`` is a class name or ``risk@<h>``. A generator seed gives the same outcomes; they
use their own random stream, so the other files do not change.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["GRADE_CLASSES", "HORIZON", "HORIZONS", "draw_outcomes", "outcome_oracle", "add_outcomes",
           "outcome_tasks", "compare_typed_to_oracle", "oracle_gaps"]

GRADE_CLASSES = ("none", "low", "high")
GRADE_CUT = 1.0
LAMBDA0 = 1.0 / 4000.0  # per day
B_TUMOR, B_DISEASE = 1.4, 1.1
LOSS_RATE = 1.0 / 3000.0
HORIZON = 1825.0
HORIZONS = (365.0, 1095.0, 1825.0)


def outcome_tasks(method: str = "cox") -> dict[str, Any]:
    """The ``model.tasks`` declaration of the two outcomes."""
    return {"grade": {"kind": "multiclass", "classes": list(GRADE_CLASSES)},
            "death": {"kind": "survival", "method": method, "horizon": HORIZON, "horizons": list(HORIZONS),
                      "time_unit": "days"}}


def draw_outcomes(lat: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """``grade``, ``death_time`` and ``death_event`` for every patient."""
    rng = np.random.default_rng([int(seed), 17])
    tumor, disease = lat["tumor"].astype(float), lat["disease"].astype(float)
    grade = np.where(tumor > 0, np.where(lat["z_cea"] > GRADE_CUT, 2, 1), 0)
    rate = LAMBDA0 * np.exp(B_TUMOR * tumor + B_DISEASE * disease)
    t_event = rng.exponential(1.0 / rate)
    t_loss = rng.exponential(1.0 / LOSS_RATE, size=len(rate))
    time = np.minimum(np.minimum(t_event, t_loss), HORIZON)
    event = (t_event <= np.minimum(t_loss, HORIZON)).astype(int)
    return {"grade": grade, "death_time": np.round(time, 1), "death_event": event}


def _posteriors(lat: dict[str, np.ndarray], cfg: Any, subset: str) -> tuple[np.ndarray, np.ndarray]:
    from .oracle import log_likelihood_ratios

    llr = log_likelihood_ratios(lat)
    mods = [] if subset == "none" else subset.split("+")
    out = []
    for task, prior in (("tumor", cfg.prevalence_tumor), ("disease", cfg.prevalence_disease)):
        logit = math.log(prior / (1 - prior)) + sum((llr[(task, m)] for m in mods), np.zeros(len(lat["tumor"])))
        out.append(1.0 / (1.0 + np.exp(-logit)))
    return out[0], out[1]


def outcome_oracle(lat: dict[str, np.ndarray], cfg: Any, subset: str) -> dict[str, np.ndarray]:
    """The Bayes-optimal outputs given ``subset``'s modalities: class probabilities of ``grade`` and
    the risk of death by each horizon."""
    from scipy.stats import norm

    from .latent import MU

    pt, pd_ = _posteriors(lat, cfg, subset)
    sees_cea = ("ehr" in subset.split("+")) & lat["has_cea"]
    p_high_given_t = np.where(sees_cea, (lat["z_cea"] > GRADE_CUT).astype(float),
                              1.0 - norm.cdf(GRADE_CUT - MU[("tumor", "cea")]))
    out = {"none": 1.0 - pt, "high": pt * p_high_given_t}
    out["low"] = pt - out["high"]
    for h in HORIZONS:
        s = 0.0
        for t, wt in ((0, 1 - pt), (1, pt)):
            for d, wd in ((0, 1 - pd_), (1, pd_)):
                s = s + wt * wd * math.exp(-LAMBDA0 * math.exp(B_TUMOR * t + B_DISEASE * d) * h)
        out[f"risk@{h:g}"] = 1.0 - s
    return out


def add_outcomes(out: Path, manifest: list[dict[str, Any]], lat: dict[str, np.ndarray], cfg: Any,
                 pids: list[str]) -> None:
    """Add ``label_grade``, ``label_death.time`` and ``label_death.event`` to the manifest rows and
    write ``outcomes_oracle.csv``."""
    import pandas as pd

    from .oracle import all_subsets

    o = draw_outcomes(lat, cfg.seed)
    by_id = {pid: i for i, pid in enumerate(pids)}
    for row in manifest:
        i = by_id[row["patient_id"]]
        row["label_grade"] = int(o["grade"][i])
        row["label_death.time"] = float(o["death_time"][i])
        row["label_death.event"] = int(o["death_event"][i])
    frames = []
    for subset in all_subsets(include_empty=True):
        orc = outcome_oracle(lat, cfg, subset)
        for name, score in orc.items():
            frames.append(pd.DataFrame({"patient_id": pids, "task": "death" if name.startswith("risk@") else "grade",
                                        "subset": subset, "output": name, "score": np.round(score, 8)}))
    pd.concat(frames, ignore_index=True).to_csv(Path(out) / "outcomes_oracle.csv", index=False)


def compare_typed_to_oracle(predictions: Any, oracle_path: str | Path) -> dict[str, dict[str, float]]:
    """A model's grade macro AUROC and death C-index beside the oracle's on the same patients (the
    oracle given the modalities each patient has). ``predictions`` is a
    :func:`~medmm.evaluate.task_metrics.typed_predictions` table."""
    import pandas as pd

    from ..evaluate.task_metrics import multiclass_metrics, survival_metrics

    orc = pd.read_csv(oracle_path, dtype={"patient_id": str})
    orc = orc.set_index(["patient_id", "subset", "output"])["score"]
    keys = list(zip(predictions["patient_id"].astype(str), predictions["pattern"].astype(str)))
    res: dict[str, dict[str, float]] = {}
    if "label_grade" in predictions:
        model_p = np.column_stack([predictions[f"prob_grade.{c}"].to_numpy(float) for c in GRADE_CLASSES])
        oracle_p = np.array([[orc[(i, s, c)] for c in GRADE_CLASSES] for i, s in keys])
        y = predictions["label_grade"].to_numpy(float)
        res["grade"] = {"auroc_macro": multiclass_metrics(y, model_p)["auroc_macro"],
                        "oracle_auroc_macro": multiclass_metrics(y, oracle_p)["auroc_macro"]}
    if "time_death" in predictions:
        h = f"risk@{HORIZON:g}"
        oracle_r = np.array([orc[(i, s, h)] for i, s in keys])
        t, e = predictions["time_death"].to_numpy(float), predictions["event_death"].to_numpy(float)
        res["death"] = {"harrell_c": survival_metrics(t, e, predictions["risk_score_death"])["harrell_c"],
                        "oracle_harrell_c": survival_metrics(t, e, oracle_r)["harrell_c"]}
    return res


def oracle_gaps(predictions: Any, oracle_path: str | Path, *, grade: str | None = "grade",
                survival: tuple[str, ...] = ("death",), n_boot: int = 1000, seed: int = 0) -> dict[str, dict[str, float]]:
    """The model's grade macro AUROC and each survival task's Harrell's C beside the oracle's on
    the same test patients, with the gap (model - oracle) and its 95 % paired bootstrap interval
    (both scored on each resample of patients, so the test set's sampling noise cancels).

    ``survival`` names the prediction table's survival tasks (``risk_score_<t>``, ``time_<t>``,
    ``event_<t>``), each compared to the oracle's risk of death; ``grade`` the multiclass task."""
    import pandas as pd
    from sklearn.metrics import roc_auc_score
    from sksurv.metrics import concordance_index_censored

    orc = pd.read_csv(oracle_path, dtype={"patient_id": str}).set_index(["patient_id", "subset", "output"])["score"]
    keys = list(zip(predictions["patient_id"].astype(str), predictions["pattern"].astype(str)))
    rng = np.random.default_rng(seed)
    n = len(keys)
    boots = [rng.integers(0, n, n) for _ in range(n_boot)]

    def summarise(metric, model_arrays, oracle_arrays, label):
        m, o = metric(*model_arrays), metric(*oracle_arrays)
        d = []
        for idx in boots:
            try:
                d.append(metric(*(a[idx] for a in model_arrays)) - metric(*(a[idx] for a in oracle_arrays)))
            except (ValueError, ZeroDivisionError):
                continue
        d = np.asarray([x for x in d if np.isfinite(x)])
        lo, hi = (np.quantile(d, [0.025, 0.975]) if len(d) else (np.nan, np.nan))
        return {"metric": label, "model": float(m), "oracle": float(o), "gap": float(m - o), "gap_low": float(lo),
                "gap_high": float(hi), "n": int(len(model_arrays[0]))}

    res: dict[str, dict[str, float]] = {}
    if grade and f"label_{grade}" in predictions:
        y = predictions[f"label_{grade}"].to_numpy(float)
        keep = ~np.isnan(y)
        mp = np.column_stack([predictions[f"prob_{grade}.{c}"].to_numpy(float) for c in GRADE_CLASSES])[keep]
        op = np.array([[orc[(i, s, c)] for c in GRADE_CLASSES] for i, s in keys])[keep]
        yk = y[keep].astype(int)

        def macro(yy, pp):
            present = np.unique(yy)
            if len(present) < 2:
                return float("nan")
            return float(np.mean([roc_auc_score(yy == c, pp[:, c]) for c in present]))

        res[grade] = summarise(macro, (yk, mp), (yk, op), "auroc_macro")
    oracle_r = np.array([orc[(i, s, f"risk@{HORIZON:g}")] for i, s in keys])
    for t in survival:
        if f"risk_score_{t}" not in predictions:
            continue
        tt, ee = predictions[f"time_{t}"].to_numpy(float), predictions[f"event_{t}"].to_numpy(float)
        keep = ~(np.isnan(tt) | np.isnan(ee))

        def harrell(time, event, score):
            if not (event > 0.5).any():
                return float("nan")
            return float(concordance_index_censored(event > 0.5, time, score)[0])

        base = (tt[keep], ee[keep])
        res[t] = summarise(harrell, (*base, predictions[f"risk_score_{t}"].to_numpy(float)[keep]),
                           (*base, oracle_r[keep]), "harrell_c")
    return res
