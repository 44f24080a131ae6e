"""The one trainer. It owns the loop (shuffle, batch, forward, backward, step) and calls the
plugins' hooks; it knows nothing about any particular continual-learning method.

Every epoch reseeds torch from (seed, epoch), so the work of an epoch depends only on the
weights and optimizer state at its start: that is what makes ``--resume`` after a kill end
bit-for-bit where an uninterrupted run ends (on CPU).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from typing import Callable

import numpy as np
import torch

from ml.collate import collate
from ml.config import TrainConfig
from ml.continual.base import Plugin
from ml.model import TimeSeriesTransformer
from ml.normalization import Normalization

log = logging.getLogger(__name__)


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def set_determinism(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    if not torch.cuda.is_available():
        torch.use_deterministic_algorithms(True, warn_only=True)


class Trainer:
    def __init__(self, model: TimeSeriesTransformer, task: str, cfg: TrainConfig, *,
                 norm: Normalization, plugins: list[Plugin] | None = None,
                 label_index: dict[str, int] | None = None, target_norm: Normalization | None = None,
                 previous_model: TimeSeriesTransformer | None = None, device: torch.device | None = None):
        self.device = device or pick_device()
        self.model = model.to(self.device)
        self.task = task
        self.cfg = cfg
        self.norm = norm
        self.target_norm = target_norm
        self.label_index = label_index
        self.plugins = list(plugins or [])
        self.previous_model = None
        if previous_model is not None:
            self.previous_model = copy.deepcopy(previous_model).to(self.device).eval()
            for p in self.previous_model.parameters():
                p.requires_grad_(False)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.global_step = 0
        self.samples_processed = 0  # forward+backward sample passes: the compute measure
        self.forward_only_samples = 0  # teacher passes (LwF), reported separately
        self.history: list[dict] = []
        self.planned_epochs: int | None = None  # set by the time budget after the first epoch
        self.best: dict | None = None  # {"score", "epoch", "model"} of the best validated epoch
        self._feature_cache: dict[int, tuple[dict, torch.Tensor]] = {}  # id(example) -> features
        self._ridge_cache: dict[int, tuple[dict, torch.Tensor]] = {}  # id(example) -> ridge output

    # ---- helpers ---------------------------------------------------------------------------
    def autocast(self):
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def batch(self, examples: list[dict]):
        inputs, targets = collate(examples, self.task, self.norm, label_index=self.label_index,
                                  target_norm=self.target_norm, device=self.device)
        head = self.model.ridge_head(self.task) if self.task in ("classification", "regression") else None
        if head is not None:
            inputs["random_features"] = self.random_features(examples)
            if bool(head.fitted):
                inputs["ridge_out"] = self._ridge_outputs(examples, head, inputs["random_features"])
        return inputs, targets

    @torch.no_grad()
    def random_features(self, examples: list[dict]) -> torch.Tensor:
        """The fixed random-convolution features of each example, computed once per run:
        they depend only on the series (not on the padding beside it, nor on any weight),
        and recomputing them every step would cost more than the Transformer's step. Keyed by
        the example object, which the training lists hold for the whole run."""
        missing = [ex for ex in examples if id(ex) not in self._feature_cache]
        for s in range(0, len(missing), 64):
            chunk = missing[s : s + 64]
            inputs, _ = collate(chunk, self.task, self.norm, device=self.device)
            feats = self.model.random_features(inputs["sensor"].float(), inputs["sensor_mask"].bool())
            for ex, f in zip(chunk, feats):
                self._feature_cache[id(ex)] = (ex, f)  # the example is kept, so its id is never reused
        return torch.stack([self._feature_cache[id(ex)][1] for ex in examples])

    def remember_ridge_outputs(self, examples: list[dict], outputs: torch.Tensor) -> None:
        """What the ridge head says of each of ``examples`` without having seen it (its
        leave-one-out predictions): the Transformer's head is trained to add to these, so it
        learns from the ridge head's real errors, not from its fit of the training rows."""
        for ex, out in zip(examples, outputs):
            self._ridge_cache[id(ex)] = (ex, out)

    def forget_features(self) -> None:
        self._feature_cache.clear()
        self._ridge_cache.clear()

    def _ridge_outputs(self, examples, head, feats) -> torch.Tensor:
        out = head(feats)
        for row, ex in enumerate(examples):
            known = self._ridge_cache.get(id(ex))
            if known is not None:
                out[row] = known[1]
        return out

    def _forward(self, inputs: dict, targets):
        ridge_out = inputs.pop("ridge_out", None)  # a teacher model (LwF) never sees this model's
        return self.model(inputs, self.task, targets, ridge_out=ridge_out)

    def loss_on(self, examples: list[dict]) -> torch.Tensor:
        inputs, targets = self.batch(examples)
        with self.autocast():
            _, loss = self._forward(inputs, targets)
        return loss

    def _lr(self, step: int, total: int) -> float:
        warm = max(1, int(total * self.cfg.warmup_fraction))
        if step < warm:
            return self.cfg.lr * (step + 1) / warm
        progress = (step - warm) / max(1, total - warm)
        return self.cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))

    # ---- state for resume ------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "global_step": self.global_step,
            "samples_processed": self.samples_processed,
            "forward_only_samples": self.forward_only_samples,
            "history": self.history,
            "planned_epochs": self.planned_epochs,
            "best": self.best,
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.global_step = int(state["global_step"])
        self.samples_processed = int(state["samples_processed"])
        self.forward_only_samples = int(state["forward_only_samples"])
        self.history = list(state["history"])
        self.planned_epochs = state.get("planned_epochs")
        self.best = state.get("best")

    # ---- the loop --------------------------------------------------------------------------
    def fit(self, train: list[dict], val: list[dict] | None, epochs: int, *, start_epoch: int = 0,
            on_epoch_end: Callable[[int, "Trainer"], None] | None = None,
            time_budget_s: float | None = None, schedule_epochs: int | None = None) -> list[dict]:
        """Trains ``epochs`` epochs, fewer when they would not fit in ``time_budget_s``
        (default: the config's; the caller passes what is left of the run's budget).
        ``schedule_epochs``: the learning rate follows the warm-up and decay of a run of that
        many epochs, stopped after ``epochs`` (the first epochs of a longer run)."""
        budget = self.cfg.time_budget_s if time_budget_s is None else time_budget_s
        bs = self.cfg.batch_size
        steps_per_epoch = math.ceil(len(train) / bs)
        if self.planned_epochs is not None:  # resumed after the budget shortened the run
            epochs = min(epochs, self.planned_epochs)
        total_steps = steps_per_epoch * max(epochs, schedule_epochs or 0)
        for p in self.plugins:
            p.before_training_exp(self, train)
        t_start = time.monotonic()
        steps_this_run = 0
        epoch = start_epoch
        while epoch < epochs:
            torch.manual_seed(self.cfg.seed * 100_003 + epoch)  # dropout stream of this epoch
            gen = torch.Generator().manual_seed(self.cfg.seed * 100_003 + epoch)
            order = torch.randperm(len(train), generator=gen).tolist()
            self.model.train()
            losses, n_seen, t_epoch = [], 0, time.monotonic()
            for s in range(steps_per_epoch):
                batch = [train[i] for i in order[s * bs : (s + 1) * bs]]
                n_new = len(batch)
                for p in self.plugins:
                    batch = p.augment_batch(self, batch, gen)
                for group in self.optimizer.param_groups:
                    group["lr"] = self._lr(self.global_step, total_steps)
                inputs, targets = self.batch(batch)
                with self.autocast():
                    outputs, loss = self._forward(inputs, targets)
                    for p in self.plugins:
                        extra = p.before_backward(self, inputs, outputs, n_new)
                        if extra is not None:
                            loss = loss + extra
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if self.cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
                self.optimizer.step()
                self.global_step += 1
                steps_this_run += 1
                self.samples_processed += len(batch)
                n_seen += len(batch)
                losses.append(float(loss.detach()))
                if self.cfg.log_every and self.global_step % self.cfg.log_every == 0:
                    elapsed = time.monotonic() - t_start
                    remaining = (epochs - epoch) * steps_per_epoch - (s + 1)
                    eta = elapsed / steps_this_run * remaining
                    log.info("epoch %d/%d step %d/%d loss %.4f samples/s %.0f ETA %s", epoch + 1, epochs,
                             s + 1, steps_per_epoch, losses[-1], n_seen / max(1e-9, time.monotonic() - t_epoch),
                             _fmt_seconds(eta))
            record = {"epoch": epoch + 1, "step": self.global_step, "train_loss": float(np.mean(losses)),
                      "lr": self.optimizer.param_groups[0]["lr"],
                      "samples_per_s": n_seen / max(1e-9, time.monotonic() - t_epoch),
                      "samples_processed": self.samples_processed}
            if val:
                record.update(self.validate(val))
                record["n_val"] = len(val)
            self.history.append(record)
            elapsed = time.monotonic() - t_start
            eta = elapsed / max(1, epoch + 1 - start_epoch) * (epochs - epoch - 1)
            log.info("epoch %d/%d done: %s ETA %s", epoch + 1, epochs,
                     " ".join(f"{k} {v:.4g}" for k, v in record.items() if k not in ("epoch", "step")),
                     _fmt_seconds(eta))
            self._track_best(epoch + 1, record)
            if start_epoch == 0 and budget > 0:
                # Re-planned after every epoch from the mean epoch time so far (the first
                # epoch alone is a noisy estimate on a shared machine); only ever shortens.
                per_epoch = (time.monotonic() - t_start) / (epoch + 1)
                fit_in = max(epoch + 1, int(budget / max(1e-9, per_epoch)))
                if fit_in < epochs:
                    log.info("time budget %.0fs: %d of %d epochs fit", budget, fit_in, epochs)
                    epochs = fit_in
                    total_steps = steps_per_epoch * max(epochs, schedule_epochs or 0)
                self.planned_epochs = epochs
            epoch += 1
            if on_epoch_end is not None:
                on_epoch_end(epoch, self)
        self.epochs_run = epochs
        if self.cfg.restore_best and self.best is not None and self.best["epoch"] != epochs:
            log.info("restoring the weights of epoch %d (best on validation)", self.best["epoch"])
            self.model.load_state_dict(self.best["model"])
        return self.history

    def _track_best(self, epoch: int, record: dict) -> None:
        # Classification and regression only: forecasting and anomaly validation data is the
        # end of the same series (and, for anomalies, the threshold's calibration data).
        if not self.cfg.restore_best or "val_loss" not in record or self.task not in ("classification", "regression") \
                or record.get("n_val", 0) < self.cfg.restore_best_min_val:
            return
        score = [-record.get("val_accuracy", 0.0), record["val_loss"]]
        if self.best is None or score < self.best["score"]:
            self.best = {"score": score, "epoch": epoch,
                         "model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}}

    def finish(self, train: list[dict]) -> None:
        """End of an experience: plugins update their state (memory, importances)."""
        for p in self.plugins:
            p.after_training_exp(self, train)

    @torch.no_grad()
    def validate(self, val: list[dict]) -> dict:
        self.model.eval()
        total, n, correct = 0.0, 0, 0
        for s in range(0, len(val), 128):
            chunk = val[s : s + 128]
            inputs, targets = self.batch(chunk)
            with self.autocast():
                outputs, loss = self._forward(inputs, targets)
            total += float(loss) * len(chunk)
            n += len(chunk)
            if self.task == "classification":
                correct += int((outputs["logits"].argmax(-1) == targets).sum())
        out = {"val_loss": total / max(1, n)}
        if self.task == "classification":
            out["val_accuracy"] = correct / max(1, n)
        self.model.train()
        return out


def _fmt_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 60}m{s % 60:02d}s"
