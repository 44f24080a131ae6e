"""Each head learns a synthetic problem it should solve; the label can live in the text or
image modality alone."""

from __future__ import annotations

import numpy as np
import pytest

from ml.checkpoint import load_checkpoint
from ml.data import SeriesData
from ml.metrics import evaluate
from ml.predict import predict
from ml.training_run import TrainRequest, run
from tests.ml.conftest import sine_classes, tiny_config

pytestmark = pytest.mark.slow


def _train(tmp_path, task, data, **cfg):
    return load_checkpoint(run(TrainRequest(mode="initial", task=task, data=data, out=tmp_path / task,
                                            cfg=tiny_config(**cfg), write_plot=False)).checkpoint)


def _series(X, y=None, ref="synthetic", **kw):
    return SeriesData(ref=ref, series=X, ids=[str(i) for i in range(len(X))], labels=y, **kw)


def test_classification_learns(tmp_path):
    X, y = sine_classes(20, ragged=True)
    ckpt = _train(tmp_path, "classification", _series(X, y), epochs=15, batch_size=8, lr=5e-3)
    Xt, yt = sine_classes(10, ragged=True, seed=5)
    assert evaluate(ckpt, _series(Xt, yt))["accuracy"] >= 0.9


def test_regression_learns(tmp_path):
    rng = np.random.default_rng(0)

    def make(n):
        amps = rng.uniform(0.5, 2.0, n)
        X = [(a * np.sin(np.linspace(0, 6, 30) + rng.uniform(0, 6)))[:, None].astype(np.float32) for a in amps]
        return X, [repr(float(a)) for a in amps], amps

    X, y, _ = make(120)
    ckpt = _train(tmp_path, "regression", _series(X, y, label_kind="numeric"), epochs=20)
    Xt, yt, amps = make(40)
    mae = evaluate(ckpt, _series(Xt, yt, label_kind="numeric"))["mae"]
    baseline = float(np.abs(amps - amps.mean()).mean())
    assert mae < 0.5 * baseline, (mae, baseline)


def test_forecasting_beats_naive(tmp_path):
    t = np.arange(600)
    x = (np.sin(2 * np.pi * t / 12) + 0.05 * np.random.default_rng(0).standard_normal(600)).astype(np.float32)[:, None]
    ckpt = _train(tmp_path, "forecasting", _series([x[:480]]), epochs=6)
    res = evaluate(ckpt, _series([x], eval_from=480))
    assert res["mae"] < 0.5 * res["naive_mae"], res
    out = predict(ckpt, [{"sensor": x[:100].tolist()}])[0]["forecast"]
    assert np.asarray(out).shape == (4, 1)


def test_anomaly_finds_the_injected_fault(tmp_path):
    rng = np.random.default_rng(0)
    t = np.arange(1600)
    x = (np.sin(2 * np.pi * t / 20) + 0.05 * rng.standard_normal(1600)).astype(np.float32)[:, None]
    train, test = x[:800], x[800:].copy()
    test[500:510, 0] += 2.0  # a level shift for half a period
    labels = np.zeros(800, dtype=np.int64)
    labels[500:510] = 1
    ckpt = _train(tmp_path, "anomaly", _series([train]), epochs=5, val_fraction=0.2, anomaly_stride=4,
                  batch_size=8, lr=1e-2)
    res = evaluate(ckpt, _series([test], point_labels=[labels]))
    assert res["top_score"][0]["top_in_anomaly"], res["top_score"]
    assert res["recall"] == 1.0 and res["f1"] > 0.5, res
    out = predict(ckpt, [{"sensor": test.tolist()}, {"sensor": train[:300].tolist()}])
    assert out[0]["is_anomaly"] and not out[1]["is_anomaly"]
    assert len(out[0]["scores"]) == 800


@pytest.mark.parametrize("modality", ["text", "image"])
def test_label_from_another_modality_only(tmp_path, modality):
    """Sensor data is pure noise; only the text (or image) says the class."""
    rng = np.random.default_rng(1)

    def make(n):
        X, y, extras = [], [], []
        for i in range(n):
            k = i % 2
            X.append(rng.standard_normal((10, 1)).astype(np.float32))
            y.append(["left", "right"][k])
            if modality == "text":
                words = ["a calm reading", "a faulty reading"][k]
                extras.append({"text": f"{rng.integers(100)} {words}"})
            else:
                img = rng.uniform(0, 0.2, (1, 8, 8)).astype(np.float32)
                img[0, :4, :4] += k  # bright top-left quadrant for class 1
                extras.append({"image": img})
        return _series(X, y, extras=extras)

    ckpt = _train(tmp_path, "classification", make(80), epochs=12, lr=3e-3)
    test = make(40)
    assert evaluate(ckpt, test)["accuracy"] >= 0.95
    sample = {"sensor": test.series[1].tolist(), modality: (test.extras[1][modality] if modality == "text"
                                                           else test.extras[1][modality].tolist())}
    assert predict(ckpt, [sample])[0]["label"] == "right"
