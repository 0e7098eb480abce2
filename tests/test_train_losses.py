"""Class imbalance: weighted and focal losses, positive-class weight from prevalence, balanced sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medmm.data import Batch
from medmm.errors import ConfigError
from medmm.train.distributed import EpochSampler
from medmm.models.losses import MaskedLoss, balanced_sample_weights, build_criterion, label_counts
from medmm.train.trainer import TrainConfig, train
from test_train_toys import toy_dataset, toy_model


def _batch(y, mask):
    y = torch.tensor(y, dtype=torch.float32)
    return Batch({}, torch.ones((len(y), 1), dtype=torch.bool), ("ehr",), y, torch.tensor(mask), ("a", "b"))


def test_unknown_labels_contribute_nothing():
    logits = torch.tensor([[2.0, -1.0], [0.5, 3.0]])
    b1 = _batch([[1, 0], [0, 1]], [[True, False], [True, True]])
    b2 = _batch([[1, 1], [0, 1]], [[True, False], [True, True]])  # the masked label changed
    for kind in ("bce", "weighted_bce", "focal"):
        crit = MaskedLoss(kind, class_weight=[[1.0, 2.0], [0.5, 1.5]] if kind == "weighted_bce" else None)
        assert float(crit(logits, b1)) == pytest.approx(float(crit(logits, b2)))


def test_focal_loss_formula_and_downweighting():
    logits = torch.tensor([[3.0, -3.0], [0.1, -0.2]])
    b = _batch([[1, 0], [0, 1]], [[True, True], [True, True]])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, b.labels, reduction="none")
    p = torch.sigmoid(logits)
    pt = p * b.labels + (1 - p) * (1 - b.labels)
    expected = (bce * (1 - pt) ** 2).mean()
    assert float(MaskedLoss("focal", gamma=2.0)(logits, b)) == pytest.approx(float(expected), rel=1e-6)
    assert float(MaskedLoss("focal", gamma=0.0)(logits, b)) == pytest.approx(float(bce.mean()), rel=1e-6)


def test_pos_weight_auto_is_the_training_negative_to_positive_ratio():
    ds = toy_dataset(50, prevalence=0.2, missing_label=0.1)
    pos, neg = label_counts(ds)
    crit = build_criterion(TrainConfig(pos_weight="auto"), ds)
    assert crit.pos_weight.tolist() == pytest.approx((neg / pos).tolist())
    assert crit.describe()["pos_weight"] == pytest.approx((neg / pos).round(4).tolist())
    assert crit.prevalence["a"] == pytest.approx(pos[0] / (pos[0] + neg[0]))
    with pytest.raises(ConfigError):
        build_criterion(TrainConfig(pos_weight="sometimes"), ds)


def test_weighted_bce_balances_the_classes():
    ds = toy_dataset(50, prevalence=0.2)
    crit = build_criterion(TrainConfig(loss="weighted_bce"), ds)
    pos, neg = label_counts(ds)
    cw = crit.class_weight.numpy()
    # total weight of each class is equal (N/2), as scikit-learn's class_weight="balanced"
    assert cw[:, 1] * pos == pytest.approx(cw[:, 0] * neg)
    assert cw[:, 1] * pos == pytest.approx((pos + neg) / 2)


def test_balanced_sampler_evens_out_the_classes():
    ds = toy_dataset(200, prevalence=0.1)
    w = balanced_sample_weights(ds, "a")
    s = EpochSampler(len(ds), seed=0, weights=w)
    ys = [ds.items[i]["labels"]["a"] for e in range(3) for i in (s.set_epoch(e) or s.indices())]
    assert 0.4 < np.mean(ys) < 0.6  # a plain shuffle gives about 0.1
    s.set_epoch(1)
    again = EpochSampler(len(ds), seed=0, weights=w)
    again.set_epoch(1)
    assert s.indices() == again.indices()  # fixed by (seed, epoch)
    again.set_epoch(2)
    assert s.indices() != again.indices()
    with pytest.raises(ConfigError):
        balanced_sample_weights(ds, "nope")


def test_imbalance_settings_are_reported_by_the_trainer():
    info = {}

    class Grab:
        def on_train_begin(self, i):
            info.update(i)

    res = train(toy_model(0), toy_dataset(40, prevalence=0.2), None,
                TrainConfig(epochs=1, batch_size=8, loss="focal", pos_weight="auto", sampler="balanced",
                            device="cpu"), callbacks=[Grab()], progress=False)
    assert res.loss_info["loss"] == "focal" and res.loss_info["sampler"] == "balanced"
    assert res.loss_info["balance_task"] == "a" and len(res.loss_info["pos_weight"]) == 2
    assert info["imbalance"] == res.loss_info


def test_distributed_sampler_shards_are_disjoint_and_cover_the_epoch():
    for weights in (None, np.ones(21) / 21):
        shards = []
        for rank in range(2):
            s = EpochSampler(21, seed=3, rank=rank, world_size=2, weights=weights)
            s.set_epoch(4)
            shards.append(s.indices())
            assert len(s) == 11
        if weights is None:
            assert set(shards[0]) | set(shards[1]) == set(range(21))
        assert len(shards[0]) == len(shards[1]) == 11
    s = EpochSampler(21, seed=3)
    s.set_epoch(4, skip=5)
    full = EpochSampler(21, seed=3)
    full.set_epoch(4)
    assert s.indices() == full.indices()[5:] and len(s) == 16


@pytest.mark.parametrize("weighting", ["fixed", "uncertainty"])
def test_data_parallel_shares_of_masked_means_average_to_the_global_batch_s_loss(weighting):
    """Two processes each holding half of a batch with unknown labels and absent modalities: with
    the counts summed over the processes, the average of their losses (what DDP's gradient
    averaging takes) is the loss of the whole batch, gradients included; without, a process with
    few known labels weighs as much as one with many."""
    from medmm.models.losses import LossWeighting, global_batch_means

    rng = np.random.default_rng(3)
    n, tasks = 12, ("a", "b")
    logits = torch.tensor(rng.normal(size=(n, 2)), dtype=torch.float32, requires_grad=True)
    y = (rng.random((n, 2)) < 0.4).astype(float)
    mask = rng.random((n, 2)) < 0.7
    mask[:6, 1] = [True, False, False, False, False, False]  # process 0: one known label of task b
    rows = torch.tensor(rng.random(n) < 0.6)  # an auxiliary head's rows: its modality present
    lw = LossWeighting(tasks, kind=weighting, weights={"a": 1.0, "b": 2.0})
    with torch.no_grad():
        if weighting == "uncertainty":
            lw.log_vars.copy_(torch.tensor([0.3, -0.2]))
    crit = MaskedLoss("bce")

    def pairs(idx):
        b = _batch(y[idx], mask[idx])
        out = []
        for r in (None, rows[idx]):
            means, counts = [], []
            for k in range(2):
                only = torch.zeros_like(b.label_mask)
                only[:, k] = b.label_mask[:, k] if r is None else b.label_mask[:, k] & r
                sub = Batch({}, b.present, b.modalities, b.labels, only, b.tasks)
                means.append(crit(logits[idx], sub))
                counts.append(only[:, k].sum().float())
            out.append((torch.stack(means), torch.stack(counts)))
        return out

    def loss(ps):
        return lw(*ps[0]) + 0.5 * lw(*ps[1])

    whole = loss(pairs(slice(None)))
    g_whole, = torch.autograd.grad(whole, logits)
    halves = [pairs(slice(0, 6)), pairs(slice(6, 12))]
    summed = [torch.stack([c for _, c in h]) for h in halves]
    total = summed[0] + summed[1]
    shared = [global_batch_means(h, lambda t: (total.clone(), 2)) for h in halves]
    ddp = sum(loss(s) for s in shared) / 2
    g_ddp, = torch.autograd.grad(ddp, logits)
    assert ddp.item() == pytest.approx(whole.item(), rel=1e-6)
    torch.testing.assert_close(g_ddp, g_whole, rtol=1e-5, atol=1e-7)
    naive = sum(loss(h) for h in halves) / 2  # each process's own means
    assert abs(naive.item() - whole.item()) > 1e-3
