"""Inference input: ``validate_sample`` checks a JSON-like sample once into a
``ValidatedSample``; ``predict_validated`` predicts those without checking them again."""

from __future__ import annotations

import numpy as np
import pytest

from ml.checkpoint import load_checkpoint
from ml.data import SeriesData
from ml.exceptions import InvalidInputError
from ml.predict import ValidatedSample, predict, predict_validated, validate_sample
from ml.training_run import TrainRequest, run
from tests.ml.conftest import TINY_MODEL, sine_classes, tiny_config


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    X, y = sine_classes(3)
    out = tmp_path_factory.mktemp("classifier")
    run(TrainRequest(mode="initial", task="classification", data=SeriesData("m", X, [str(i) for i in range(9)], y),
                     out=out, cfg=tiny_config(epochs=1), write_plot=False))
    return load_checkpoint(out), X


@pytest.fixture(scope="module")
def forecaster(tmp_path_factory):
    t = np.arange(200, dtype=np.float32)[:, None]
    series = np.concatenate([np.sin(t / 5), np.cos(t / 7)], axis=1).astype(np.float32)
    out = tmp_path_factory.mktemp("forecaster")
    run(TrainRequest(mode="initial", task="forecasting", data=SeriesData("f", [series], ["s"]), out=out,
                     cfg=tiny_config(epochs=1), write_plot=False))
    return load_checkpoint(out), series


def test_a_validated_sample_holds_the_checked_arrays(classifier):
    ckpt, X = classifier
    raw = {"sensor": [[int(a), int(b)] for a, b in X[0] * 10], "timestamps": list(range(40)), "text": "ok",
           "image": np.ones((8, 8)).tolist(), "audio": [0.1] * 64, "id": "s-1"}
    sample = validate_sample(ckpt, raw)
    assert isinstance(sample, ValidatedSample)
    assert sample.sensor.dtype == np.float32 and sample.sensor.shape == (40, 2)
    assert sample.timestamps.dtype == np.float64 and sample.timestamps.shape == (40,)
    assert sample.text.dtype == np.int64 and sample.text.tolist() == [ord("o") + 1, ord("k") + 1]
    assert sample.image.shape == (1, 8, 8)  # a lone frame gets its frame axis
    assert sample.audio.dtype == np.float32 and sample.audio.shape == (64,)
    arrays = sample.arrays()
    assert sorted(arrays) == ["audio", "image", "sensor", "text", "timestamps"]
    assert all(arrays[name] is getattr(sample, name) for name in arrays)  # the arrays, not copies
    with pytest.raises(AttributeError):
        sample.sensor = np.zeros((1, 2), dtype=np.float32)  # frozen: what was checked stays as checked
    assert sorted(validate_sample(ckpt, {"sensor": X[1].tolist()}).arrays()) == ["sensor"]
    token_ids = validate_sample(ckpt, {"sensor": X[1].tolist(), "text": [5, 6, 7]}).text
    assert token_ids.dtype == np.int64 and token_ids.tolist() == [5, 6, 7]


def test_predict_validated_answers_what_predict_answers(classifier):
    ckpt, X = classifier
    raw = [{"sensor": X[i].tolist()} for i in range(0, 9, 2)] + [{"sensor": X[1].tolist(), "text": "a note"}]
    expected = predict(ckpt, raw)
    assert predict_validated(ckpt, [validate_sample(ckpt, s) for s in raw]) == expected
    assert [r["label"] for r in expected] and all(set(r) == {"label", "confidence", "probabilities"} for r in expected)
    assert predict_validated(ckpt, []) == []


def test_predict_validated_refuses_mixed_frame_sizes(classifier):
    ckpt, X = classifier
    samples = [validate_sample(ckpt, {"sensor": X[0].tolist(), "image": np.ones((1, n, n)).tolist()}) for n in (8, 12)]
    with pytest.raises(InvalidInputError, match="frames of one size"):
        predict_validated(ckpt, samples)


def test_forecasting_keeps_the_last_context_steps(forecaster):
    ckpt, series = forecaster
    context = TINY_MODEL["context_len"]
    sample = validate_sample(ckpt, {"sensor": series[:50].tolist(), "timestamps": list(range(50))})
    assert np.array_equal(sample.sensor, series[50 - context : 50])
    assert sample.timestamps.tolist() == list(range(50 - context, 50))
    with pytest.raises(InvalidInputError, match=f"forecasting needs at least {context}"):
        validate_sample(ckpt, {"sensor": series[: context - 1].tolist()})
    [answer] = predict_validated(ckpt, [sample])
    assert np.asarray(answer["forecast"]).shape == (TINY_MODEL["horizon"], 2)
    assert answer == predict(ckpt, [{"sensor": series[:50].tolist(), "timestamps": list(range(50))}])[0]
