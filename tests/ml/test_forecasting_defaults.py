"""Forecasting defaults for data nobody tuned them on: the season is read from the training
series, the model starts as the seasonal-naive forecast, short series get a shorter context,
and an open epoch count is chosen on the end of the training series before the run trains on
all of it (and an interrupted run resumes with that count, without choosing again)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ml.training_run as training_run
from ml.checkpoint import load_checkpoint
from ml.data import SeriesData
from ml.exceptions import DataError
from ml.model import ModelConfig, TimeSeriesTransformer
from ml.seasonality import detect_period
from ml.training_run import TrainRequest, run
from tests.ml.conftest import TINY_MODEL, tiny_config

SMALL = {k: v for k, v in TINY_MODEL.items() if k not in ("context_len", "horizon")}


def _seasonal(n: int, period: int, seed: int = 0, trend: float = 0.0) -> np.ndarray:
    t = np.arange(n)
    rng = np.random.default_rng(seed)
    x = np.sin(2 * np.pi * t / period) + trend * t + 0.1 * rng.standard_normal(n)
    return x.astype(np.float32)[:, None]


def _data(x: np.ndarray) -> SeriesData:
    return SeriesData(ref="synthetic", series=[x], ids=["s"])


def test_the_season_is_the_shortest_strong_autocorrelation_peak():
    assert detect_period([_seasonal(120, 7, trend=0.05)], 36) == 7  # a trend does not hide it
    assert detect_period([_seasonal(200, 10)], 36) == 10  # not 20 or 30, its multiples
    noise = np.random.default_rng(1).standard_normal((200, 1))
    assert detect_period([noise], 36) == 1  # nothing repeats: the last value
    assert detect_period([_seasonal(5, 2)], 36) == 1  # too short to show two periods


def test_a_cycle_of_a_fractional_period_is_not_read_as_its_double():
    # The lynx trappings' ~9.6-year cycle: on its first 70 years the autocorrelation peak at
    # 19 beats those at 9 and 10 by more than the harmonic tolerance.
    from ml.data import load_ref

    lynx = np.asarray(load_ref("aeon:Lynx:train").series[0], dtype=np.float64)
    found = {n: detect_period([lynx[:n]], 36) for n in (70, 74, 86)}
    assert all(p in (9, 10) for p in found.values()), found


def test_a_model_with_a_season_starts_as_the_seasonal_naive_forecast():
    cfg = ModelConfig(**SMALL, context_len=16, horizon=9, forecast_season=7, n_channels=2)
    model = TimeSeriesTransformer(cfg).eval()
    x = torch.randn(3, 16, 2) * 5 + 3
    with torch.no_grad():
        out, _ = model({"sensor": x}, "forecasting")
    h = torch.arange(9)
    expected = x[:, 16 - 7 + h % 7]
    torch.testing.assert_close(out["forecast"], expected, rtol=1e-4, atol=1e-4)


def test_a_short_series_gets_a_shorter_context_unless_one_is_set(tmp_path):
    x = _seasonal(29, 4)
    model = {**SMALL, "horizon": 6}
    result = run(TrainRequest(mode="initial", task="forecasting", data=_data(x), out=tmp_path / "auto",
                              cfg=tiny_config(epochs=2, model=model), write_plot=False))
    ckpt = load_checkpoint(result.checkpoint)
    assert ckpt.config.context_len == 12  # half of what 29 steps leave after a 6-step horizon
    assert ckpt.config.forecast_season == 4
    assert result.metrics["n_train"] == 29 - 12 - 6 + 1
    with pytest.raises(DataError, match="has 29 steps; forecasting needs at least context 36 \\+ horizon 6"):
        run(TrainRequest(mode="initial", task="forecasting", data=_data(x), out=tmp_path / "set",
                         cfg=tiny_config(epochs=2, model={**model, "context_len": 36}), write_plot=False))
    assert not (tmp_path / "set").exists()


def test_open_epochs_are_chosen_on_the_series_end_then_all_of_it_is_trained_on(tmp_path):
    x = _seasonal(160, 6, seed=2)
    cfg = tiny_config(epochs=None, val_fraction=0.1, model={**SMALL, "horizon": 4}, time_budget_s=0)
    result = run(TrainRequest(mode="initial", task="forecasting", data=_data(x), out=tmp_path / "m", cfg=cfg,
                              write_plot=False))
    ckpt = load_checkpoint(result.checkpoint)
    chosen = ckpt.meta["epoch_selection"]
    context = ckpt.config.context_len
    assert context == 36 and ckpt.config.forecast_season == 6
    # 2 x horizon - 1 = 7 held-out steps give 4 validation windows; 16 steps, 10%, give more.
    assert chosen["n_val"] == 16 - 4 + 1
    assert chosen["n_train"] == (160 - 16) - context - 4 + 1
    assert chosen["epochs_tried"] == 100 and 0 <= chosen["epochs"] <= 100
    assert chosen["val_loss"] <= chosen["val_loss_at_start"]
    # The final run: every window of the whole series, for the chosen count.
    assert result.metrics["n_train"] == 160 - context - 4 + 1 and result.metrics["n_val"] == 0
    assert result.metrics["epochs"] == chosen["epochs"]


def test_an_interrupted_run_resumes_with_the_epoch_count_it_chose(tmp_path, monkeypatch):
    x = _seasonal(160, 6, seed=3)
    cfg = tiny_config(epochs=None, val_fraction=0.1, model={**SMALL, "horizon": 4}, time_budget_s=0)
    request = TrainRequest(mode="initial", task="forecasting", data=_data(x), out=tmp_path / "m", cfg=cfg,
                           write_plot=False, resume=True)
    chosen = {"epochs": 3, "val_loss": 0.5, "val_loss_at_start": 0.9, "epochs_tried": 100, "n_val": 13,
              "n_train": 105}
    monkeypatch.setattr(training_run, "_select_forecast_epochs", lambda *a, **k: dict(chosen))
    real_save = training_run.atomic_torch_save

    def save_then_die(path, state):
        real_save(path, state)
        if state.get("epoch") == 1:
            raise KeyboardInterrupt("killed after epoch 1")

    monkeypatch.setattr(training_run, "atomic_torch_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run(request)
    monkeypatch.setattr(training_run, "atomic_torch_save", real_save)

    def must_not_choose_again(*a, **k):
        raise AssertionError("the retry chose the epoch count again")

    monkeypatch.setattr(training_run, "_select_forecast_epochs", must_not_choose_again)
    result = run(request)
    assert result.resumed_from_epoch == 1
    ckpt = load_checkpoint(result.checkpoint)
    assert result.metrics["epochs"] == 3 and ckpt.meta["epoch_selection"] == chosen
