"""``python -m ml.serving.batch_inference --out FILE.npz``: class probabilities, pooled
embeddings and MC-dropout probabilities of a data set, checked against the model itself."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import torch

from ml.checkpoint import load_checkpoint
from ml.predict import predict


def scores(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ml.serving.batch_inference", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_npz_holds_probabilities_embeddings_and_mc_passes(checkpoints, tmp_path):
    out = tmp_path / "scores.npz"
    run = scores("--checkpoint", str(checkpoints["good"]), "--data", str(checkpoints["test_data"]), "--out", str(out),
                 "--mc-samples", "6", "--seed", "3")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["mc_samples"] == 6
    arrays = np.load(out, allow_pickle=False)
    data = np.load(checkpoints["test_data"])
    ckpt = load_checkpoint(checkpoints["good"])
    n, k, d = len(data["X"]), len(ckpt.labels), ckpt.config.d_model
    assert arrays["sample_ids"].tolist() == [str(i) for i in range(n)]
    assert arrays["classes"].tolist() == ckpt.labels
    assert arrays["probabilities"].shape == (n, k)
    assert arrays["embeddings"].shape == (n, d)
    assert arrays["mc_probabilities"].shape == (6, n, k)
    assert int(arrays["model_version"]) == -1

    # Probabilities are the served model's: the same as ml.predict gives.
    expected = predict(ckpt, [{"sensor": x} for x in data["X"]])
    want = np.array([[e["probabilities"][c] for c in ckpt.labels] for e in expected])
    np.testing.assert_allclose(arrays["probabilities"], want, atol=1e-5)

    # Embeddings are the pooled representation the classification head reads: the head
    # turns them into exactly those probabilities.
    with torch.inference_mode():
        head = torch.softmax(ckpt.model.classifier(torch.from_numpy(arrays["embeddings"])), -1).numpy()
    np.testing.assert_allclose(head, arrays["probabilities"], atol=1e-5)
    assert np.abs(arrays["embeddings"]).sum(1).min() > 0

    # MC passes run with dropout on: each differs from the dropout-off pass and from the
    # others, each is a distribution, and their mean stays near the deterministic one.
    mc = arrays["mc_probabilities"]
    np.testing.assert_allclose(mc.sum(-1), 1.0, atol=1e-5)
    assert not np.allclose(mc[0], arrays["probabilities"], atol=1e-4)
    assert not np.allclose(mc[0], mc[1], atol=1e-4)
    assert np.abs(mc.mean(0) - arrays["probabilities"]).mean() < 0.05

    # Seeded: a second run gives the same MC passes; another seed gives others.
    again, other = tmp_path / "again.npz", tmp_path / "other.npz"
    assert scores("--checkpoint", str(checkpoints["good"]), "--data", str(checkpoints["test_data"]), "--out", str(again),
                  "--mc-samples", "6", "--seed", "3").returncode == 0
    assert scores("--checkpoint", str(checkpoints["good"]), "--data", str(checkpoints["test_data"]), "--out", str(other),
                  "--mc-samples", "6", "--seed", "4").returncode == 0
    np.testing.assert_array_equal(np.load(again)["mc_probabilities"], mc)
    assert not np.allclose(np.load(other)["mc_probabilities"], mc, atol=1e-4)


def test_npz_from_a_registered_version_and_refusals(checkpoints, tmp_path, tp_home):
    from train_platform.registry import ModelRegistry
    from train_platform.settings import get_settings

    registry = ModelRegistry(get_settings())
    registry.register("scorer", checkpoints["good"])
    out = tmp_path / "scores.npz"
    run = scores("--model", "model:scorer:v1", "--data", str(checkpoints["test_data"]), "--out", str(out))
    assert run.returncode == 0, run.stderr
    arrays = np.load(out)
    assert (str(arrays["model"]), int(arrays["model_version"])) == ("scorer", 1)
    assert "mc_probabilities" not in arrays.files

    jsonl = tmp_path / "p.jsonl"
    refused = scores("--model", "model:scorer:v1", "--data", str(checkpoints["test_data"]), "--out", str(jsonl),
                     "--mc-samples", "4")
    assert refused.returncode == 2
    assert "--mc-samples needs an .npz output" in refused.stderr
    assert not jsonl.exists()
