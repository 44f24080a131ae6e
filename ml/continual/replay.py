"""Replay: a bounded, class-balanced reservoir of past examples mixed into every batch."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from ml.config import ReplayConfig
from ml.continual.base import Plugin

log = logging.getLogger(__name__)

STATE_FILE = "replay.pt"
_ALL = "__all__"  # the single bucket of tasks without classes


def _key(example: dict) -> str:
    return str(example.get("label", _ALL))


def _to_state(example: dict) -> dict:
    """An example as tensors/str so the memory loads with ``torch.load(weights_only=True)``."""
    out = {}
    for k, v in example.items():
        if isinstance(v, str):
            out[k] = v
        elif v is not None:
            out[k] = torch.tensor(np.array(v))  # a copy: the source array may be read-only
    return out


def _from_state(state: dict) -> dict:
    return {k: (v if isinstance(v, str) else v.numpy()) for k, v in state.items()}


class ReplayPlugin(Plugin):
    name = "replay"

    def __init__(self, cfg: ReplayConfig, seed: int = 0):
        self.cfg = cfg
        self.seed = seed
        self.buckets: dict[str, list[dict]] = {}
        self.seen: dict[str, int] = {}  # examples offered per bucket, for reservoir sampling

    def __len__(self) -> int:
        return sum(len(b) for b in self.buckets.values())

    @property
    def memory(self) -> list[dict]:
        return [ex for k in sorted(self.buckets) for ex in self.buckets[k]]

    def add(self, examples: list[dict]) -> None:
        """Reservoir-sample ``examples`` into per-class buckets of equal quota. The quota is
        the capacity split over every class seen so far, so old classes shrink (randomly,
        since reservoir contents are a uniform sample) when new ones arrive."""
        keys = set(self.buckets) | {_key(ex) for ex in examples}
        quota = self.cfg.memory_size // max(1, len(keys))
        total_seen = sum(self.seen.values())
        rng = np.random.default_rng([self.seed, total_seen])  # deterministic without saved RNG state
        for ex in examples:
            k = _key(ex)
            bucket = self.buckets.setdefault(k, [])
            self.seen[k] = self.seen.get(k, 0) + 1
            kept = {name: ex[name] for name in ex if name != "id"}
            if len(bucket) < quota:
                bucket.append(kept)
            else:
                j = int(rng.integers(self.seen[k]))
                if j < quota:
                    bucket[j] = kept
        for k in self.buckets:
            del self.buckets[k][quota:]
        log.info("replay memory: %d examples in %d buckets (quota %d)", len(self), len(self.buckets), quota)

    def augment_batch(self, trainer, batch, generator):
        memory = self.memory
        n = min(len(memory), int(round(self.cfg.batch_fraction * len(batch))))
        if n == 0:
            return batch
        idx = torch.randperm(len(memory), generator=generator)[:n].tolist()
        return batch + [memory[i] for i in idx]

    def after_training_exp(self, trainer, examples):
        self.add(examples)

    def save(self, directory: Path) -> None:
        from ml.checkpoint import atomic_torch_save

        state = {"buckets": {k: [_to_state(ex) for ex in b] for k, b in self.buckets.items()},
                 "seen": dict(self.seen), "memory_size": self.cfg.memory_size}
        atomic_torch_save(directory / STATE_FILE, state)

    def load(self, directory: Path) -> None:
        path = directory / STATE_FILE
        if not path.exists():
            return
        state = torch.load(path, map_location="cpu", weights_only=True)
        self.buckets = {k: [_from_state(s) for s in b] for k, b in state["buckets"].items()}
        self.seen = {k: int(v) for k, v in state["seen"].items()}
        if len(self) > self.cfg.memory_size:  # the configured capacity may have shrunk
            self.add([])
