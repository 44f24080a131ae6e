"""Tiny models and synthetic data for the ml tests. One torch thread: the suite shares two
cores with other processes, where more threads only oversubscribe them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]

torch.set_num_threads(1)

TINY_MODEL = {"d_model": 16, "n_layers": 1, "n_heads": 2, "d_ff": 32, "max_len": 128,
              "context_len": 16, "horizon": 4, "dropout": 0.0}


def tiny_config(**overrides):
    from ml.config import TrainConfig

    base = {"epochs": 3, "batch_size": 16, "log_every": 0, "val_fraction": 0.0, "model": dict(TINY_MODEL),
            "anomaly_window": 32, "anomaly_stride": 8, "anomaly_smoothing": 1}
    base.update(overrides)
    return TrainConfig.from_dict(base)


def sine_classes(n_per_class: int, n_classes: int = 3, t: int = 40, c: int = 2, seed: int = 0,
                 ragged: bool = False):
    """Class k is a sine with 2(k+1) periods per t steps (phase-shifted per channel) plus noise."""
    rng = np.random.default_rng(seed)
    X, y = [], []
    for k in range(n_classes):
        for _ in range(n_per_class):
            length = int(rng.integers(t // 2, t + 1)) if ragged else t
            tt = np.arange(length)[:, None]
            phase = rng.uniform(0, 2 * np.pi)
            x = np.sin(2 * np.pi * 2 * (k + 1) * tt / t + phase + np.arange(c)) + 0.1 * rng.standard_normal((length, c))
            X.append(x.astype(np.float32))
            y.append(f"c{k}")
    return X, y


def write_npz(path: Path, X: list[np.ndarray], y=None, **extra) -> Path:
    t = max(len(x) for x in X)
    arr = np.zeros((len(X), t, X[0].shape[1]), dtype=np.float32)
    for i, x in enumerate(X):
        arr[i, : len(x)] = x
    data = {"X": arr, "lengths": np.asarray([len(x) for x in X])}
    if y is not None:
        data["y"] = np.asarray(y)
    data.update(extra)
    np.savez(path, **data)
    return path


def run_ml(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "TP_TORCH_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def sine_npz(tmp_path) -> Path:
    X, y = sine_classes(12, ragged=True)
    return write_npz(tmp_path / "sines.npz", X, y)


@pytest.fixture
def tiny_config_file(tmp_path) -> Path:
    import json

    path = tmp_path / "tiny.json"
    path.write_text(json.dumps({"batch_size": 16, "log_every": 2, "val_fraction": 0.0, "model": TINY_MODEL,
                                "anomaly_window": 32, "anomaly_smoothing": 1}))
    return path
