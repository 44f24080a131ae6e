"""A training run killed with SIGKILL at each point of its final writes, or while it
replaces an earlier run in the same folder, never leaves a folder that passes for a finished
checkpoint it is not; the retry with ``--resume`` (what an Airflow retry runs) finishes the
run, with the weights an uninterrupted run gets.

The runs are the real ``python -m ml.train``, stopped at one point of their code by
``tests/_faults.py`` and killed there. "Passes for a finished checkpoint" is judged by the
registry's own check (``read_checkpoint_info``: complete, every recorded hash right).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests._faults import Point, kill_at
from tests.ml.conftest import ROOT, run_ml, sine_classes, write_npz

pytestmark = pytest.mark.slow

EPOCHS = 3
# Another run into the same folder: another seed, no continual-learning plugins.
TODAY = ["--seed", "7", "--set", json.dumps({"plugins": []})]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The data, a config, and one uninterrupted run to compare with."""
    base = tmp_path_factory.mktemp("crash")
    X, y = sine_classes(12, ragged=True)
    data = write_npz(base / "sines.npz", X, y)
    config = base / "tiny.json"
    config.write_text(json.dumps({"batch_size": 16, "log_every": 0, "val_fraction": 0.0, "time_budget_s": 0,
                                  "model": {"d_model": 16, "n_layers": 1, "n_heads": 2, "d_ff": 32, "max_len": 128}}))
    args = ["ml.train", "--mode", "initial", "--task", "classification", "--data", str(data),
            "--epochs", str(EPOCHS), "--config", str(config)]
    straight, today = base / "straight", base / "today"
    done = run_ml(*args, "--out", str(straight))
    assert done.returncode == 0, done.stderr
    done = run_ml(*args, *TODAY, "--out", str(today))
    assert done.returncode == 0, done.stderr
    return {"args": args, "straight": straight, "today": today}


def _weights(folder: Path) -> dict:
    return torch.load(folder / "model.pt", weights_only=True)


def _same_weights(a: Path, b: Path) -> bool:
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def _finished(folder: Path) -> bool:
    """Whether the registry would take the folder as a finished checkpoint."""
    from train_platform.registry import CheckpointInvalidError, read_checkpoint_info

    try:
        read_checkpoint_info(folder)
    except CheckpointInvalidError:
        return False
    return True


def _kill(point: Point, args: list[str], tmp_path: Path) -> None:
    kill_at(point, ["-m", *args], tmp_path / "marker", env={"TP_TORCH_THREADS": "1"}, cwd=ROOT)


CASES = {
    # The epochs done, the plugin state saved; metrics.json about to be written.
    "before-metrics": (Point("ml.training_run:atomic_write_json", "before", 1), False),
    # The final weights and optimizer state renamed into place, the finished
    # checkpoint.json not yet: the folder still holds the last epoch's snapshot.
    "final-weights-no-metadata": (Point("ml.checkpoint:atomic_write_json", "before", EPOCHS + 1), False),
    # Everything written; resume.pt not yet removed.
    "before-cleanup": (Point("ml.training_run:save_checkpoint", "after", EPOCHS + 1), True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_run_killed_in_its_final_writes_is_finished_by_the_retry(setup, case, tmp_path):
    point, finished = CASES[case]
    out = tmp_path / "out"
    args = [*setup["args"], "--out", str(out)]
    _kill(point, args, tmp_path)
    assert _finished(out) is finished
    meta = json.loads((out / "checkpoint.json").read_text())
    assert meta["complete"] is finished
    assert (out / "resume.pt").exists()
    if finished:
        assert (out / "metrics.json").is_file() and (out / "training_curve.png").is_file()

    retry = run_ml(*args, "--resume")
    assert retry.returncode == 0, retry.stderr
    if finished:
        assert "already holds this finished run" in retry.stderr
    assert _finished(out)
    assert not (out / "resume.pt").exists()
    assert _same_weights(out, setup["straight"])
    history = json.loads((out / "metrics.json").read_text())["history"]
    straight = json.loads((setup["straight"] / "metrics.json").read_text())["history"]
    assert [h["train_loss"] for h in history] == [h["train_loss"] for h in straight]


def test_a_run_killed_while_replacing_an_earlier_run_never_leaves_the_earlier_one(setup, tmp_path):
    """A daily pipeline writes into the same folder every day. Yesterday's finished run is
    there; today's is killed in its first snapshot, its weights renamed over yesterday's and
    its checkpoint.json not written. The folder must not pass for a finished checkpoint
    (above all not yesterday's metadata over today's weights), and the retry must train
    today's run, not return yesterday's."""
    import shutil

    out = tmp_path / "out"
    shutil.copytree(setup["straight"], out)  # yesterday's run, finished
    assert (out / "plugins" / "replay.pt").is_file()
    today = [*setup["args"], *TODAY, "--out", str(out)]
    _kill(Point("ml.checkpoint:atomic_write_json", "before", 1), today, tmp_path)
    assert not (out / "checkpoint.json").exists()  # the first thing the new run removed
    assert not _finished(out)

    retry = run_ml(*today, "--resume")
    assert retry.returncode == 0, retry.stderr
    assert _finished(out)
    meta = json.loads((out / "checkpoint.json").read_text())
    assert meta["seed"] == 7 and meta["plugins"] == []
    assert not (out / "plugins" / "replay.pt").exists()  # yesterday's plugin state is gone
    assert _same_weights(out, setup["today"]) and not _same_weights(out, setup["straight"])
