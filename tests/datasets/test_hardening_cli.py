"""``tp dataset show --limit N`` reads only what it prints (bytes read measured by the
kernel, /proc/self/io); every ``tp`` command that prints much exits 0 with nothing on
stderr when its reader goes away (``| head -1`` through a real shell)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.pipelines.helpers import minimal, write
from train_platform.cli import main
from train_platform.settings import Settings, os_user, reload_settings

TP = Path(sys.executable).with_name("tp")
PIPE_BUFFER = 64 * 1024


def _bytes_read() -> int:
    with open("/proc/self/io", encoding="ascii") as handle:
        return int(next(line for line in handle if line.startswith("rchar:")).split()[1])


def test_show_limit_reads_only_the_rows_it_prints(tp_home, ds_name, capsys):
    from train_platform.datasets import build_samples, create_dataset

    dataset = create_dataset(ds_name, user="alice")
    rng = np.random.default_rng(0)
    files = 10
    for f in range(files):  # one data file per append, about 1 MB each (random floats do not compress)
        ids = [f"f{f:02d}-{i:03d}" for i in range(60)]
        dataset.append(build_samples(ids, list(rng.normal(size=(60, 2000, 2)).astype(np.float32))), branch="main")
    data_bytes = sum(t.file.file_size_in_bytes for t in dataset._fresh().scan().plan_files())
    assert data_bytes > files * 900_000

    def show(*extra: str) -> tuple[int, str]:
        capsys.readouterr()
        before = _bytes_read()
        assert main(["dataset", "show", ds_name, "--as", "alice", *extra]) == 0
        return _bytes_read() - before, capsys.readouterr().out

    show("--limit", "5")  # first call: imports and caches
    limited, out = show("--limit", "5")
    everything, _ = show("--limit", "0")
    lines = out.splitlines()
    assert lines[0].endswith(f"{files * 60} samples") and len(lines) == 1 + 5 + 1
    assert lines[-1] == f"... {files * 60 - 5} more (--limit 0 for all)"
    assert everything > data_bytes  # reading it all reads every data file
    assert limited < 2.5 * data_bytes / files  # one data file, plus metadata and manifests
    code_json = main(["dataset", "show", ds_name, "--as", "alice", "--limit", "7", "--json"])
    shown = json.loads(capsys.readouterr().out)
    assert code_json == 0 and shown["samples"] == files * 60 and len(shown["rows"]) == 7
    assert all(r["shape"] == [2000, 2] for r in shown["rows"])


def test_show_limit_spanning_files_and_a_negative_limit(tp_home, ds_name, capsys):
    from train_platform.datasets import build_samples, create_dataset

    dataset = create_dataset(ds_name, user="alice")
    for f in range(3):
        dataset.append(build_samples([f"f{f}-{i}" for i in range(4)], [np.ones((3, 1))] * 4), branch="main")
    rows = dataset.read("main", limit=10)
    assert rows.num_rows == 10 and len(set(rows.column("sample_id").to_pylist())) == 10
    assert dataset.read("main", limit=100).num_rows == 12
    capsys.readouterr()
    assert main(["dataset", "show", ds_name, "--as", "alice", "--limit", "-1"]) == 2
    assert "--limit -1" in capsys.readouterr().err


# ----- | head -1 ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def big_outputs(tmp_path_factory):
    """A TP_HOME whose datasets, model and dags folder make every listed command print
    well over a pipe buffer."""
    from train_platform.datasets import build_samples, create_dataset
    from train_platform.registry import ModelRegistry

    home = tmp_path_factory.mktemp("pipes") / "home"
    settings = Settings.from_env({"TP_HOME": str(home)})
    me = os_user()
    n = 3000
    long_ids = [f"sample-with-a-rather-long-identifier-{i:06d}" for i in range(n)]
    dataset = create_dataset("pipes", user=me, settings=settings)
    dataset.append(build_samples(long_ids, [np.ones((4, 1))] * n), branch="main")
    dataset.branch("more")
    dataset.append(build_samples([f"{i}-more" for i in long_ids], [np.ones((4, 1))] * n), branch="more")
    dataset.branch("logged")
    for i in range(50):
        dataset.append(build_samples([f"log-{i}"], [np.ones((4, 1))]), branch="logged", message=f"commit {i} " + "x" * 3000)
    for i in range(20):
        dataset.grant(f"reader-with-a-long-name-{i:04d}", "reader")
    # A long audit log, written the way operations write theirs but in one transaction.
    access = dataset._access
    with access.engine.begin() as conn:
        for i in range(2000):
            access.record_in(conn, "pipes", me, "label", ref=f"user/annotator-{i:04d}", snapshot_id=10**18 + i, detail={"samples": 1})
    checkpoint = tmp_path_factory.mktemp("checkpoint")
    (checkpoint / "weights.pt").write_bytes(b"not loaded by the registry")
    (checkpoint / "checkpoint.json").write_text(json.dumps(
        {"task": "classification", "model_config": {}, "normalization": {}, "weights": "weights.pt", "labels": ["a", "b"]}))
    registry = ModelRegistry(settings)
    for version in range(24):
        registry.register("pipes-model", checkpoint, metrics={f"metric_number_{k:03d}": k / 7 for k in range(300)})
    dags = home.parent / "dags"
    for i in range(900):
        write(dags / f"p{i:04d}.yaml", minimal(f"pipeline-with-a-long-name-number-{i:04d}"))
    return {"TP_HOME": str(home), "dags": str(dags)}


COMMANDS = [
    "dataset show pipes --limit 0",
    "dataset show pipes --limit 0 --json",
    "dataset diff pipes main more",
    "dataset diff pipes main more --json",
    "dataset log pipes@logged",
    "dataset log pipes@logged --json",
    "dataset audit pipes",
    "dataset audit pipes --json",
    "model list pipes-model",
    "model list pipes-model --json",
    "pipeline list --dags-folder {dags}",
    "pipeline list --dags-folder {dags} --json",
]


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS)
def test_tp_exits_0_quietly_when_head_closes_the_pipe(big_outputs, command, monkeypatch, capsys):
    args = command.format(**big_outputs)
    # The command really prints more than a pipe holds, so tp is still writing when head exits.
    monkeypatch.setenv("TP_HOME", big_outputs["TP_HOME"])
    reload_settings()
    try:
        capsys.readouterr()
        assert main(args.split()) == 0
        assert len(capsys.readouterr().out.encode()) > PIPE_BUFFER + 32 * 1024
    finally:
        monkeypatch.undo()
        reload_settings()
    env = {**os.environ, "TP_HOME": big_outputs["TP_HOME"]}
    done = subprocess.run(["bash", "-c", f"set -o pipefail; {TP} {args} | head -1; echo \"tp exit ${{PIPESTATUS[0]}}\" >&2"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.stderr == "tp exit 0\n", done.stderr[-2000:]
    assert done.returncode == 0
    assert len(done.stdout.splitlines()) == 1
