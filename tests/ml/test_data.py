"""Data refs: aeon datasets offline, files, platform datasets; bad samples at inference."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml.data import load_ref
from ml.exceptions import DataError, DatasetNotFoundError, InvalidInputError


def test_aeon_refs_load_offline_with_splits():
    train = load_ref("aeon:JapaneseVowels:train")
    test = load_ref("aeon:JapaneseVowels:test")
    assert (len(train), len(test)) == (270, 370)
    assert train.n_channels == 12 and len({len(s) for s in train.series}) > 1  # ragged lengths kept
    assert len(load_ref("aeon:BasicMotions")) == 80
    air_train, air_test = load_ref("aeon:Airline:train"), load_ref("aeon:Airline:test")
    assert len(air_train.series[0]) == 116 and air_test.eval_from == 116 and len(air_test.series[0]) == 144
    kdd = load_ref("aeon:KDD-TSAD_135:test")
    assert kdd.point_labels[0].sum() > 0 and len(kdd.series[0]) == 7501
    with pytest.raises(DatasetNotFoundError, match="not shipped"):
        load_ref("aeon:UCIHAR:train")
    with pytest.raises(DataError, match="split must be"):
        load_ref("aeon:BasicMotions:valid")


def test_file_refs(tmp_path):
    frame = pd.DataFrame({"series_id": ["a"] * 5 + ["b"] * 4, "x": np.arange(9.0), "y": np.ones(9),
                          "label": ["up"] * 5 + ["down"] * 4})
    frame.to_csv(tmp_path / "d.csv", index=False)
    frame.to_parquet(tmp_path / "d.parquet")
    for name in ("d.csv", "d.parquet"):
        data = load_ref(str(tmp_path / name))
        assert data.ids == ["a", "b"] and data.labels == ["up", "down"]
        assert [s.shape for s in data.series] == [(5, 2), (4, 2)]
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        load_ref(str(tmp_path / "missing.csv"))
    with pytest.raises(DataError, match="unknown data ref"):
        load_ref(str(tmp_path / "d.xlsx"))
    pd.DataFrame({"series_id": ["a", "a"], "x": [1.0, 2.0], "label": ["p", "q"]}).to_csv(tmp_path / "two.csv", index=False)
    with pytest.raises(DataError, match="2 different labels"):
        load_ref(str(tmp_path / "two.csv"))


@pytest.mark.slow
def test_platform_dataset_ref_trains(tmp_path, tp_home, monkeypatch):
    """tp://NAME@REF goes through the datasets package's reader (as the acting TP_USER)."""
    from train_platform.datasets.dataset import create_dataset
    from train_platform.settings import reload_settings

    monkeypatch.setenv("TP_USER", "alice")
    reload_settings()

    from ml.training_run import TrainRequest, run
    from tests.ml.conftest import tiny_config

    create_dataset("motions", user="alice", source="aeon:BasicMotions:train")
    data = load_ref("tp://motions@main")
    assert len(data) == 40 and data.n_channels == 6 and None not in data.labels
    result = run(TrainRequest(mode="initial", task="classification", data="tp://motions@main", out=tmp_path / "m",
                              cfg=tiny_config(epochs=1), write_plot=False))
    assert result.labels == ["badminton", "running", "standing", "walking"]
    assert result.metrics["dataset_ref"] == "tp://motions@main"


def test_validate_sample_errors(tmp_path):
    from ml.checkpoint import load_checkpoint
    from ml.data import SeriesData
    from ml.predict import predict, validate_sample
    from ml.training_run import TrainRequest, run
    from tests.ml.conftest import sine_classes, tiny_config

    X, y = sine_classes(3)
    run(TrainRequest(mode="initial", task="classification", data=SeriesData("m", X, [str(i) for i in range(9)], y),
                     out=tmp_path / "c", cfg=tiny_config(epochs=1), write_plot=False))
    ckpt = load_checkpoint(tmp_path / "c")
    ok = {"sensor": X[0].tolist()}
    assert validate_sample(ckpt, ok).sensor.shape == (40, 2)
    cases = [
        ({"sensor": [[1.0, 2.0, 3.0]]}, "3 channels per time step, the model expects 2"),
        ({"sensor": [[1.0, float("nan")]]}, "non-finite value at index [0, 1]"),
        ({"sensor": [[1.0, 2.0]] * 500}, "too long"),
        ({"sensor": [[1.0], [2.0, 3.0]]}, "not a rectangular array"),
        ({"readings": [[1.0, 2.0]]}, "unknown sample fields: readings"),
        ({"sensor": [[1.0, 2.0]], "text": "x" * 300}, "text: 300 tokens is too long"),
        ("not a dict", "must be an object"),
    ]
    for sample, message in cases:
        with pytest.raises(InvalidInputError, match=None) as info:
            validate_sample(ckpt, sample)
        assert message in str(info.value), (message, str(info.value))
    with pytest.raises(InvalidInputError, match="sample 1: sensor"):
        predict(ckpt, [ok, {"sensor": [[1.0, 2.0, 3.0]]}])
