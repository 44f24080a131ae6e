"""`python -m ml.prepare`, the data_processing task type's default command."""

from __future__ import annotations

import numpy as np
import pytest

from ml.exceptions import DataError
from ml.prepare import main, prepare


def _npz(path, n: int, t: int, c: int, labels: list[str] | None = None):
    rng = np.random.default_rng(n * 100 + t)
    arrays = {"X": rng.normal(size=(n, t, c)).astype(np.float32)}
    if labels is not None:
        arrays["y"] = np.array(labels)
    np.savez(path, **arrays)
    return path


def test_folders_and_files_are_joined_into_one_checked_file(tmp_path):
    folder = tmp_path / "raw"
    folder.mkdir()
    _npz(folder / "a.npz", 3, 20, 2, ["x", "y", "x"])
    _npz(folder / "b.npz", 2, 30, 2, ["y", "y"])
    single = _npz(tmp_path / "c.npz", 1, 10, 2, ["x"])
    report = prepare([str(folder), str(single)], tmp_path / "out")
    assert report == {"series": 6, "channels": 2, "max_length": 30, "labelled": 6,
                      "inputs": [str(folder), str(single)]}
    with np.load(tmp_path / "out" / "data.npz") as data:
        assert data["X"].shape == (6, 30, 2)
        assert data["lengths"].tolist() == [20, 20, 20, 30, 30, 10]
        assert data["y"].tolist() == ["x", "y", "x", "y", "y", "x"]
        assert len(set(data["ids"].tolist())) == 6
    from ml.data import load_ref

    assert len(load_ref(str(tmp_path / "out" / "data.npz"))) == 6


def test_mismatched_channels_fail_and_write_nothing(tmp_path, capsys):
    a = _npz(tmp_path / "a.npz", 2, 10, 2, ["x", "y"])
    b = _npz(tmp_path / "b.npz", 2, 10, 3, ["x", "y"])
    with pytest.raises(DataError, match="3 channels, the first series has 2"):
        prepare([str(a), str(b)], tmp_path / "out")
    assert not (tmp_path / "out" / "data.npz").exists()
    assert main(["--input", str(a), "--input", str(tmp_path / "missing.npz"), "--out", str(tmp_path / "o2")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_an_empty_folder_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no .npz, .csv or .parquet file"):
        prepare([str(tmp_path / "empty")], tmp_path / "out")
