"""Small in-memory datasets and models for the trainer tests (no cohort, no files; no tests here)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from medmm.train.transfer import DatasetView


def toy_dataset(n: int = 48, *, seed: int = 0, features: int = 6, prevalence: float = 0.4,
                missing_label: float = 0.0, tasks: tuple[str, ...] = ("a", "b")) -> DatasetView:
    """``n`` patients with one 'ehr' vector; task labels depend linearly on the features."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype(np.float32)
    items = []
    for i in range(n):
        labels = {}
        for k, t in enumerate(tasks):
            score = x[i, k] + 0.5 * rng.normal()
            labels[t] = float(score > np.quantile(x[:, k], 1 - prevalence))
            if rng.random() < missing_label:
                labels[t] = None
        items.append({"values": {"ehr": x[i]}, "labels": labels, "id": f"P{i:03d}"})
    return DatasetView(items, tasks, ("ehr",), {"ehr": (features,)})


class ToyModel(nn.Module):
    """forward(values, present, return_aux) like MultimodalModel; no dropout (exact comparisons)."""

    def __init__(self, features: int = 6, tasks: int = 2, hidden: int = 8) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(features, hidden), nn.Tanh(), nn.Linear(hidden, tasks))

    def forward(self, values, present, return_aux=False):
        out = self.net(values["ehr"])
        return (out, {}) if return_aux else out


def toy_model(seed: int = 0, **kw) -> ToyModel:
    torch.manual_seed(seed)
    return ToyModel(**kw)


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
