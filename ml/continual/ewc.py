"""Online EWC: a quadratic penalty that holds each weight near its value after the previous
experience, in proportion to its (diagonal, empirical) Fisher importance."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from ml.config import EWCConfig
from ml.continual.base import Plugin

log = logging.getLogger(__name__)

STATE_FILE = "ewc.pt"


def _overlap(t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The leading block of ``t`` with ``shape``: a classifier that grew keeps its old rows first."""
    return t[tuple(slice(0, s) for s in shape)]


class EWCPlugin(Plugin):
    name = "ewc"

    def __init__(self, cfg: EWCConfig, seed: int = 0):
        self.cfg = cfg
        self.seed = seed
        self.fisher: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}

    def penalty(self, model: torch.nn.Module) -> torch.Tensor:
        """lam/2 * sum F (w - w*)^2 over the weights that existed at the anchor."""
        dev = next(model.parameters()).device
        total = torch.zeros((), device=dev)
        for name, p in model.named_parameters():
            f = self.fisher.get(name)
            if f is None:
                continue
            if any(a > b for a, b in zip(f.shape, p.shape)) or f.dim() != p.dim():
                continue  # a shrunk parameter cannot be anchored
            diff = _overlap(p, f.shape) - self.anchor[name].to(dev)
            total = total + (f.to(dev) * diff.pow(2)).sum()
        return 0.5 * self.cfg.lam * total

    def before_backward(self, trainer, inputs, outputs, n_new):
        if not self.fisher:
            return None
        return self.penalty(trainer.model)

    def after_training_exp(self, trainer, examples):
        model = trainer.model
        rng = np.random.default_rng(self.seed)
        idx = rng.permutation(len(examples))[: self.cfg.max_samples]
        new = {n: torch.zeros_like(p) for n, p in model.named_parameters() if p.requires_grad}
        was_training = model.training
        model.eval()  # no dropout noise in the importance estimate
        for i in idx:
            model.zero_grad(set_to_none=True)
            loss = trainer.loss_on([examples[int(i)]])
            loss.backward()
            for n, p in model.named_parameters():
                if p.grad is not None:
                    new[n] += p.grad.detach().pow(2)
        model.zero_grad(set_to_none=True)
        model.train(was_training)
        trainer.samples_processed += len(idx)
        for n in new:
            new[n] /= max(1, len(idx))
            old = self.fisher.get(n)
            if old is not None and old.dim() == new[n].dim() and all(a <= b for a, b in zip(old.shape, new[n].shape)):
                _overlap(new[n], old.shape).add_(self.cfg.decay * old.to(new[n].device))
            if new[n].any():  # weights no example reached (unused modalities) cost nothing to hold
                self.fisher[n] = new[n].detach().cpu()
        self.anchor = {n: p.detach().cpu().clone() for n, p in model.named_parameters() if n in self.fisher}
        log.info("EWC importances from %d samples over %d tensors", len(idx), len(self.fisher))

    def save(self, directory: Path) -> None:
        from ml.checkpoint import atomic_torch_save

        atomic_torch_save(directory / STATE_FILE, {"fisher": self.fisher, "anchor": self.anchor})

    def load(self, directory: Path) -> None:
        path = directory / STATE_FILE
        if path.exists():
            state = torch.load(path, map_location="cpu", weights_only=True)
            self.fisher, self.anchor = dict(state["fisher"]), dict(state["anchor"])
