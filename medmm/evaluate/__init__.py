"""Metrics and evaluation (knows nothing of how a model was trained).

* :mod:`~medmm.evaluate.metrics`: AUROC, AUPRC, Brier, ECE, thresholds (light, per call);
* :mod:`~medmm.evaluate.bootstrap`: every metric of a task with vectorised bootstrap CIs;
* :mod:`~medmm.evaluate.compare`: DeLong's test and the paired bootstrap of two models;
* :mod:`~medmm.evaluate.calibration`: temperature scaling and isotonic regression;
* :mod:`~medmm.evaluate.subgroups`, :mod:`~medmm.evaluate.robustness`: metrics per
  subgroup, per presence pattern, with modalities masked, Shapley values over modalities;
* :mod:`~medmm.evaluate.scoring`: batch scoring of a manifest with bounded memory;
* :mod:`~medmm.evaluate.report`: figures and the self-contained HTML report;
* :func:`evaluate_cohort` (:mod:`~medmm.evaluate.api`): all of it at once.

The package itself is callable: ``medmm.evaluate(model, manifest, ...)`` is
``medmm.evaluate_cohort(model, manifest, ...)``, and ``medmm.evaluate.metrics`` etc. stay
ordinary submodules. Nothing heavy is imported until used.
"""

from __future__ import annotations

import sys
import types
from typing import Any

__all__ = ["evaluate_cohort", "EvaluationResult"]


def evaluate_cohort(*args: Any, **kwargs: Any):
    """See :func:`medmm.evaluate.api.evaluate_cohort`."""
    from .api import evaluate_cohort as _impl

    return _impl(*args, **kwargs)


def __getattr__(name: str) -> Any:
    if name == "EvaluationResult":
        from .api import EvaluationResult

        return EvaluationResult
    raise AttributeError(f"module 'medmm.evaluate' has no attribute {name!r}")


class _CallableModule(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any):
        """``medmm.evaluate(model, cohort, ...)``: see :func:`medmm.evaluate.api.evaluate_cohort`."""
        return evaluate_cohort(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
#: the package object itself, for ``medmm._LAZY`` (``medmm.evaluate`` without an import)
package = sys.modules[__name__]
