"""Small real models for the registry and serving tests, trained once per test session by
``python -m ml.train`` on a synthetic 3-channel set (four shapes of signal) that a tiny
transformer learns in a few epochs.

``good`` learns the true labels; ``bad`` is trained the same way on labels rotated by one
class, so on true labels it is nearly always wrong: a real, worse candidate.
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT_PIPELINE = Path(__file__).resolve().parents[2] / "dags" / "pipelines" / "daily-deployment.yaml"
CLASSES = ["low", "high", "rising", "falling"]
STEPS, CHANNELS = 24, 3
# Tiny on purpose: trains in seconds on two busy cores and still separates the classes.
# Transformer only (no random-convolution ridge head): the registry, serving and sampling
# tests read what the Transformer gives (its pooled embeddings, MC-dropout passes, and
# confidences below 1 on this easy data), and tests/ml covers the ridge head.
TINY_CONFIG = {"model": {"d_model": 16, "n_layers": 1, "n_heads": 2, "d_ff": 32, "max_len": 64, "random_features": 0},
               "plugins": [], "lr": 0.01, "batch_size": 16}


def synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.array(CLASSES)[rng.integers(0, len(CLASSES), n)]
    x = rng.normal(0, 0.3, (n, STEPS, CHANNELS)).astype(np.float32)
    ramp = np.linspace(-1, 1, STEPS, dtype=np.float32)[:, None]
    for i, label in enumerate(labels):
        x[i] += {"low": -1.0, "high": 1.0}.get(label, 0.0)
        x[i] += {"rising": 2 * ramp, "falling": -2 * ramp}.get(label, 0.0)
    return x, labels


def write_data(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    x, y = synthetic(80, seed=0)
    rotated = {a: b for a, b in zip(CLASSES, CLASSES[1:] + CLASSES[:1])}
    files = {"train": folder / "train.npz", "rotated": folder / "rotated.npz", "test": folder / "test.npz"}
    np.savez(files["train"], X=x, y=y)
    np.savez(files["rotated"], X=x, y=np.array([rotated[v] for v in y]))
    xt, yt = synthetic(40, seed=1)
    np.savez(files["test"], X=xt, y=yt)
    return files


def _train(data: Path, out: Path, epochs: int, config: Path) -> Path:
    if (out / "checkpoint.json").exists():
        return out
    subprocess.run([sys.executable, "-m", "ml.train", "--mode", "initial", "--task", "classification",
                    "--data", str(data), "--epochs", str(epochs), "--config", str(config), "--out", str(out)],
                   check=True, capture_output=True, timeout=600)
    return out


def trained_models(base: Path) -> dict[str, Path]:
    """{"good", "bad", "test_data"}; trains on the first call of the session only.
    ``TP_TEST_MODEL_CACHE`` names a folder that keeps them between sessions (local runs)."""
    import os

    base = Path(os.environ.get("TP_TEST_MODEL_CACHE") or base)
    files = write_data(base / "data")
    config = base / "tiny.json"
    config.write_text(json.dumps(TINY_CONFIG))
    # Both trainings at once: the machine has two cores.
    with ThreadPoolExecutor(2) as pool:
        good = pool.submit(_train, files["train"], base / "good", 8, config)
        bad = pool.submit(_train, files["rotated"], base / "bad", 8, config)
        return {"good": good.result(), "bad": bad.result(), "test_data": files["test"]}
