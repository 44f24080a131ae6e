"""The plugin contract. A plugin overrides only the hooks it needs; every hook has a no-op
default. Hooks run in the order the plugins were given."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from ml.continual.trainer import Trainer


class Plugin:
    name = "plugin"

    def before_training_exp(self, trainer: "Trainer", examples: list[dict]) -> None:
        """Called once before the first epoch of an experience (also after a resume)."""

    def augment_batch(self, trainer: "Trainer", batch: list[dict], generator: torch.Generator) -> list[dict]:
        """Return the batch to train on (replay appends memory samples here)."""
        return batch

    def before_backward(self, trainer: "Trainer", inputs: dict, outputs: dict, n_new: int) -> torch.Tensor | None:
        """Return an extra loss term to add before ``backward`` (EWC penalty, distillation).
        ``n_new`` is how many leading rows of the batch are new data (the rest is replay)."""
        return None

    def after_training_exp(self, trainer: "Trainer", examples: list[dict]) -> None:
        """Called once after the last epoch (replay stores samples, EWC computes importances)."""

    def save(self, directory: Path) -> None:
        """Write the plugin's state into ``directory`` (the checkpoint's plugins/ folder)."""

    def load(self, directory: Path) -> None:
        """Read the state written by ``save``; a missing file means a fresh state."""
