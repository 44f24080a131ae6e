"""The two commands end to end: files written, predict on the result, resume after SIGKILL,
and bad data failing at once with one line and a non-zero exit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from ml import evaluate as evaluate_cmd
from ml import train as train_cmd
from ml._cli import run_cli
from ml.checkpoint import load_checkpoint
from ml.predict import predict
from ml.training_run import TrainRequest, run
from tests.ml.conftest import ROOT, run_ml, sine_classes, tiny_config, write_npz

pytestmark = pytest.mark.slow


def test_train_and_evaluate_commands(tmp_path, sine_npz, tiny_config_file):
    out = tmp_path / "ckpt"
    proc = run_ml("ml.train", "--mode", "initial", "--task", "classification", "--data", str(sine_npz),
                  "--epochs", "2", "--out", str(out), "--config", str(tiny_config_file))
    assert proc.returncode == 0, proc.stderr
    assert "epoch 2/2" in proc.stderr and "samples/s" in proc.stderr and "ETA" in proc.stderr
    for name in ("model.pt", "checkpoint.json", "optimizer.pt", "metrics.json", "training_curve.png",
                 "plugins/replay.pt", "plugins/ewc.pt"):
        assert (out / name).is_file(), name
    assert not (out / "resume.pt").exists()
    meta = json.loads((out / "checkpoint.json").read_text())
    assert meta["task"] == "classification" and meta["labels"] == ["c0", "c1", "c2"] and meta["n_channels"] == 2
    assert meta["complete"] and meta["mode"] == "initial" and meta["epochs"] == 2
    assert len(meta["drift_reference"]["channels"]) == 2
    assert abs(sum(meta["drift_reference"]["channels"][0]["proportions"]) - 1) < 1e-9
    assert (out / "training_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert len(json.loads((out / "metrics.json").read_text())["history"]) == 2

    ckpt = load_checkpoint(out)
    X, _ = sine_classes(2, ragged=True, seed=9)
    res = predict(ckpt, [{"sensor": x.tolist()} for x in X])
    assert len(res) == 6 and all(r["label"] in ckpt.labels for r in res)
    assert all(abs(sum(r["probabilities"].values()) - 1) < 1e-5 for r in res)
    assert predict(ckpt, [{"sensor": X[0].tolist()}]) == predict(ckpt, [{"sensor": X[0].tolist()}])

    report = tmp_path / "eval.json"
    proc = run_ml("ml.evaluate", "--checkpoint", str(out), "--data", str(sine_npz), "--out", str(report))
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads(report.read_text())
    assert {"accuracy", "macro_f1", "confusion"} <= set(metrics)
    assert np.asarray(metrics["confusion"]).sum() == 36


def test_incremental_grows_the_label_set_and_keeps_plugin_state(tmp_path):
    X, y = sine_classes(10)
    first = [i for i, lab in enumerate(y) if lab != "c2"]
    from ml.data import SeriesData

    def data(idx):
        return SeriesData("mem", [X[i] for i in idx], [str(i) for i in idx], [y[i] for i in idx])

    a = run(TrainRequest(mode="initial", task="classification", data=data(first), out=tmp_path / "a",
                         cfg=tiny_config(epochs=2), write_plot=False))
    assert a.labels == ["c0", "c1"]
    b = run(TrainRequest(mode="incremental", task="classification", data=data([i for i in range(30) if y[i] == "c2"]),
                         out=tmp_path / "b", init=tmp_path / "a", cfg=tiny_config(epochs=2), write_plot=False))
    assert b.labels == ["c0", "c1", "c2"]
    replay = torch.load(tmp_path / "b" / "plugins" / "replay.pt", weights_only=True)
    assert set(replay["buckets"]) == {"c0", "c1", "c2"}
    assert b.metrics["forward_only_samples"] > 0  # LwF consulted the previous model


def _fingerprint(path):
    state = torch.load(path / "model.pt", weights_only=True)
    return {k: v.clone() for k, v in state.items()}


def test_resume_after_sigkill_equals_uninterrupted(tmp_path, tiny_config_file):
    X, y = sine_classes(100, ragged=True)
    data = write_npz(tmp_path / "big.npz", X, y)
    epochs = 5
    args = ["ml.train", "--mode", "initial", "--task", "classification", "--data", str(data), "--epochs", str(epochs),
            "--config", str(tiny_config_file)]
    killed = tmp_path / "killed"
    env = {**os.environ, "TP_TORCH_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", *args, "--out", str(killed)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    resume_file = killed / "resume.pt"
    deadline = time.monotonic() + 120
    while not resume_file.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    killed_at = torch.load(resume_file, weights_only=True)["epoch"]
    assert 1 <= killed_at < epochs
    assert not json.loads((killed / "checkpoint.json").read_text())["complete"]

    resumed = run_ml(*args, "--out", str(killed), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"from epoch {killed_at}" in resumed.stderr

    straight = tmp_path / "straight"
    done = run_ml(*args, "--out", str(straight))
    assert done.returncode == 0, done.stderr
    a, b = _fingerprint(killed), _fingerprint(straight)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ha = json.loads((killed / "metrics.json").read_text())["history"]
    hb = json.loads((straight / "metrics.json").read_text())["history"]
    assert [h["train_loss"] for h in ha] == [h["train_loss"] for h in hb]


# ---- bad data -----------------------------------------------------------------------------------
def _cli(main, argv, capsys):
    code = run_cli(main, argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    return code, (lines[0] if lines else err)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "ckpt"
    X, y = sine_classes(6)
    from ml.data import SeriesData

    run(TrainRequest(mode="initial", task="classification", data=SeriesData("mem", X, [str(i) for i in range(18)], y),
                     out=out, cfg=tiny_config(epochs=1), write_plot=False))
    return out


def test_bad_data_errors(tmp_path, capsys, trained):
    X, y = sine_classes(4)
    train = lambda *a: _cli(train_cmd.main, ["--mode", "initial", "--out", str(tmp_path / "o"), *a], capsys)  # noqa: E731

    bad = [x.copy() for x in X]
    bad[5][7, 1] = np.nan
    code, msg = train("--task", "classification", "--data", str(write_npz(tmp_path / "nan.npz", bad, y)))
    assert code == 2 and "non-finite value nan at time step 7, channel 1" in msg and "series '5'" in msg

    empty = tmp_path / "empty.npz"
    np.savez(empty, X=np.zeros((0, 10, 2), dtype=np.float32))
    code, msg = train("--task", "classification", "--data", str(empty))
    assert code == 2 and "empty" in msg

    code, msg = train("--task", "regression", "--data", str(write_npz(tmp_path / "cls.npz", X, y)))
    assert code == 2 and "needs numeric targets" in msg and "'c0'" in msg

    rng = np.random.default_rng(0)
    cont = write_npz(tmp_path / "cont.npz", X, rng.uniform(0, 1, len(X)))
    code, msg = train("--task", "classification", "--data", str(cont))
    assert code == 2 and "continuous" in msg and "use task regression" in msg

    ragged = tmp_path / "ragged.csv"
    ragged.write_text("series_id,a,b,label\n1,0.1,0.2,x\n1,0.3,0.4,x\n2,0.5,oops,y\n")
    code, msg = train("--task", "classification", "--data", str(ragged))
    assert code == 2 and "channel column 'b' is not numeric" in msg

    code, msg = train("--task", "classification", "--data", "aeon:NotADataset")
    assert code == 2 and "not shipped" in msg

    three = write_npz(tmp_path / "three.npz", [np.ones((10, 3), dtype=np.float32)] * 4, ["c0", "c1", "c0", "c1"])
    code, msg = _cli(train_cmd.main, ["--mode", "incremental", "--task", "classification", "--data", str(three),
                                      "--init", str(trained), "--out", str(tmp_path / "o2")], capsys)
    assert code == 2 and "3 channels" in msg and "expects 2" in msg

    code, msg = _cli(evaluate_cmd.main, ["--checkpoint", str(trained), "--data", str(three),
                                         "--out", str(tmp_path / "e.json")], capsys)
    assert code == 2 and "3 channels" in msg

    code, msg = _cli(train_cmd.main, ["--mode", "incremental", "--task", "regression", "--data", str(three),
                                      "--init", str(trained), "--out", str(tmp_path / "o3")], capsys)
    assert code == 2 and "trained for task 'classification'" in msg

    code, msg = _cli(evaluate_cmd.main, ["--checkpoint", str(trained), "--data", str(three), "--task", "anomaly",
                                         "--out", str(tmp_path / "e.json")], capsys)
    assert code == 2 and "trained for task 'classification', not 'anomaly'" in msg

    code, msg = _cli(evaluate_cmd.main, ["--checkpoint", str(tmp_path), "--data", str(three),
                                         "--out", str(tmp_path / "e.json")], capsys)
    assert code == 2 and "is not a checkpoint" in msg
    assert not (tmp_path / "o").exists() and not (tmp_path / "o2").exists()  # nothing half-written


def test_bad_data_from_a_real_process_is_one_line(tmp_path):
    X, y = sine_classes(2)
    bad = [x.copy() for x in X]
    bad[0][0, 0] = np.inf
    proc = run_ml("ml.train", "--mode", "initial", "--task", "classification",
                  "--data", str(write_npz(tmp_path / "inf.npz", bad, y)), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "non-finite value inf" in proc.stderr
