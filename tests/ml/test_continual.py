"""The continual-learning plugins in isolation: EWC penalty, replay memory, distillation."""

from __future__ import annotations

import numpy as np
import torch

from ml.config import EWCConfig, ReplayConfig, TrainConfig
from ml.continual.ewc import EWCPlugin
from ml.continual.lwf import distillation_loss
from ml.continual.replay import ReplayPlugin
from ml.continual.trainer import Trainer
from ml.model import ModelConfig, TimeSeriesTransformer
from ml.normalization import Normalization
from tests.ml.conftest import sine_classes


def _trainer():
    torch.manual_seed(0)
    model = TimeSeriesTransformer(ModelConfig(n_channels=2, d_model=16, n_layers=1, n_heads=2, d_ff=32, n_classes=3))
    X, y = sine_classes(4)
    examples = [{"sensor": x, "label": lab} for x, lab in zip(X, y)]
    trainer = Trainer(model, "classification", TrainConfig(), norm=Normalization.fit(X),
                      label_index={"c0": 0, "c1": 1, "c2": 2}, device=torch.device("cpu"))
    return trainer, examples


def test_ewc_penalty_zero_at_anchor_and_grows_away():
    trainer, examples = _trainer()
    ewc = EWCPlugin(EWCConfig(lam=10.0))
    ewc.after_training_exp(trainer, examples)
    assert ewc.fisher and all((f >= 0).all() for f in ewc.fisher.values())
    assert float(ewc.penalty(trainer.model).detach()) == 0.0
    penalties = []
    for scale in (0.01, 0.1, 1.0):
        moved = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
        with torch.no_grad():
            for n, p in trainer.model.named_parameters():
                p.add_(scale * torch.ones_like(p))
        penalties.append(float(ewc.penalty(trainer.model).detach()))
        with torch.no_grad():
            for n, p in trainer.model.named_parameters():
                p.copy_(moved[n])
    assert 0 < penalties[0] < penalties[1] < penalties[2]
    # Quadratic: ten times the distance, a hundred times the penalty.
    np.testing.assert_allclose(penalties[1] / penalties[0], 100.0, rtol=1e-3)


def test_ewc_penalty_survives_head_expansion(tmp_path):
    trainer, examples = _trainer()
    ewc = EWCPlugin(EWCConfig(lam=10.0))
    ewc.after_training_exp(trainer, examples)
    ewc.save(tmp_path)
    loaded = EWCPlugin(EWCConfig(lam=10.0))
    loaded.load(tmp_path)
    trainer.model.expand_classes(2)  # new rows are free; old rows stay anchored
    assert float(loaded.penalty(trainer.model).detach()) == 0.0
    with torch.no_grad():
        trainer.model.classifier.linear.weight[3:] += 5.0
    assert float(loaded.penalty(trainer.model).detach()) == 0.0
    with torch.no_grad():
        trainer.model.classifier.linear.weight[:3] += 0.5
    assert float(loaded.penalty(trainer.model).detach()) > 0.0


def test_replay_memory_class_balanced_bounded_and_saved(tmp_path):
    replay = ReplayPlugin(ReplayConfig(memory_size=12), seed=0)
    X, y = sine_classes(30, n_classes=2)
    replay.add([{"sensor": x, "label": lab, "id": str(i)} for i, (x, lab) in enumerate(zip(X, y))])
    counts = {k: len(v) for k, v in replay.buckets.items()}
    assert counts == {"c0": 6, "c1": 6}
    X2, y2 = sine_classes(50, n_classes=3, seed=1)
    new = [{"sensor": x, "label": lab.replace("c", "n")} for x, lab in zip(X2, y2)]
    replay.add(new)
    counts = {k: len(v) for k, v in replay.buckets.items()}
    assert len(replay) <= 12 and set(counts.values()) == {2}, counts
    # Reservoir sampling: the kept examples of a class come from all over its stream.
    replay.save(tmp_path)
    again = ReplayPlugin(ReplayConfig(memory_size=12), seed=0)
    again.load(tmp_path)
    assert {k: len(v) for k, v in again.buckets.items()} == counts
    for k in counts:
        for a, b in zip(replay.buckets[k], again.buckets[k]):
            np.testing.assert_array_equal(a["sensor"], b["sensor"])
            assert a["label"] == b["label"]
    # Batches get memory samples mixed in, up to batch_fraction of the batch.
    batch = new[:4]
    mixed = replay.augment_batch(None, batch, torch.Generator().manual_seed(0))
    assert len(mixed) == 8 and mixed[:4] == batch


def test_replay_reservoir_keeps_a_uniform_sample():
    replay = ReplayPlugin(ReplayConfig(memory_size=50), seed=3)
    stream = [{"sensor": np.full((2, 1), i, dtype=np.float32), "label": "a"} for i in range(1000)]
    for start in range(0, 1000, 100):
        replay.add(stream[start : start + 100])
    kept = sorted(int(ex["sensor"][0, 0]) for ex in replay.buckets["a"])
    assert len(kept) == 50
    assert np.mean(kept) > 300 and max(kept) > 800  # not just the first examples seen


def test_distillation_zero_when_student_equals_teacher():
    logits = torch.randn(8, 5)
    assert float(distillation_loss(logits, logits.clone(), temperature=2.0)) < 1e-6
    assert float(distillation_loss(logits + torch.randn(8, 5), logits, temperature=2.0)) > 1e-3


def test_fit_plans_its_epochs_within_the_budget_it_is_given():
    """training_run passes what is left of the run's budget after the ridge head's fit: the
    budget given to fit overrides the config's (50 s, far more than these epochs take)."""
    trainer, examples = _trainer()
    trainer.fit(examples, None, 4, time_budget_s=1e-6)
    assert trainer.epochs_run == 1 and trainer.planned_epochs == 1
    trainer, examples = _trainer()
    trainer.fit(examples, None, 4)
    assert trainer.epochs_run == 4
