"""Per-channel normalisation statistics, fitted on the training series and stored in the
checkpoint (``normalization``, and ``target_normalization`` for regression targets)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Normalization:
    mean: np.ndarray  # (C,)
    std: np.ndarray  # (C,)

    @classmethod
    def fit(cls, series: list[np.ndarray]) -> "Normalization":
        allv = np.concatenate(series, axis=0).astype(np.float64)
        std = allv.std(axis=0)
        return cls(allv.mean(axis=0).astype(np.float32), np.where(std < 1e-8, 1.0, std).astype(np.float32))

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "Normalization":
        return cls(np.asarray(d["mean"], dtype=np.float32), np.asarray(d["std"], dtype=np.float32))
