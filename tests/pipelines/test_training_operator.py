"""The training task's default command: mode, base model, parameters."""

from __future__ import annotations

import json

import pytest

from operators.training import TrainingOperator


def _task() -> TrainingOperator:
    return TrainingOperator(task_id="train", pipeline="p", pipeline_version="1.0.0")


def test_first_run_is_initial_and_parameters_travel_inline(tmp_path):
    command = _task().default_command(
        {"training_data": "tp://sensors@main", "base_model": str(tmp_path / "none-yet")},
        {"trained_model": str(tmp_path / "out")},
        {"epochs": 3, "learning_rate": 0.01, "batch_size": 8, "incremental_ratio": 0.1},
    )
    assert command[:4] == ["python", "-m", "ml.train", "--mode"] and command[4] == "initial"
    assert "--init" not in command
    assert command[command.index("--epochs") + 1] == "3"
    assert json.loads(command[command.index("--set") + 1]) == {"lr": 0.01, "batch_size": 8}


def test_an_existing_base_checkpoint_makes_the_run_incremental(tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    (base / "checkpoint.json").write_text("{}")
    command = _task().default_command({"training_data": "d.npz", "base_model": str(base)},
                                      {"m": str(tmp_path / "out")}, {})
    assert command[command.index("--mode") + 1] == "incremental"
    assert command[command.index("--init") + 1] == str(base)
    assert "--set" not in command


def test_an_unknown_registry_ref_trains_from_scratch(tp_home):
    command = _task().default_command({"training_data": "d.npz", "base_model": "model:nothing-here:production"},
                                      {"m": "/tmp/out"}, {})
    assert command[command.index("--mode") + 1] == "initial"


def test_incremental_without_a_base_is_refused(tmp_path):
    with pytest.raises(ValueError, match="mode 'incremental' needs a base model"):
        _task().default_command({"training_data": "d.npz"}, {"m": str(tmp_path)}, {"mode": "incremental"})


def test_a_retry_resumes_from_the_last_epoch_checkpoint(tmp_path):
    task = _task()
    args = ({"training_data": "d.npz"}, {"m": str(tmp_path / "out")}, {})
    assert "--resume" not in task.default_command(*args)
    task.try_number = 2  # what execute() reads from the task instance on an Airflow retry
    assert task.default_command(*args)[-1] == "--resume"
