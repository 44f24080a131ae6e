"""``tp dataset sample`` on a real dataset with a registered model, through the real CLI in
a subprocess: the JSON it prints, the review branch it leaves, bad input refused with exit
2 and nothing written, a run killed half-way leaving the dataset as it was, no torch in the
CLI's own process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.sampling.conftest import OWNER, ROOT

# The embedded shape, except the first test, which also runs on PostgreSQL, Redis and S3.
LOCAL = pytest.mark.parametrize("backend", ["local"], indirect=True)


def state(pool) -> tuple:
    """Every ref of the dataset and its head: a write of any kind changes it."""
    from train_platform.datasets import open_dataset

    dataset = open_dataset(pool.name, user=OWNER)
    return tuple(sorted((name, ref["snapshot_id"]) for name, ref in dataset.refs().items()))


def test_selection_json_and_the_review_branch(pool, checkpoints):
    from ml.checkpoint import load_checkpoint
    from ml.predict import predict

    # Two samples are confirmed already: they are no candidates.
    assert pool.tp("dataset", "label", f"{pool.name}@main", "rec-000=low", "rec-001=high").returncode == 0
    out = pool.json("dataset", "sample", pool.name, "--strategy", "margin", "--budget", "5", "--model", pool.model,
                    "--to", "review/r1")
    assert {"strategy", "budget", "selected"} <= set(out)
    assert (out["strategy"], out["budget"], out["pool"], out["model"]) == ("margin", 5, 38, "model:clf:v1")
    assert [set(s) for s in out["selected"]] == [{"sample_id", "score"}] * 5
    chosen = [s["sample_id"] for s in out["selected"]]
    assert not {"rec-000", "rec-001"} & set(chosen)

    # The ranking is the model's: the five smallest margins among the candidates, best first.
    data = np.load(checkpoints["test_data"])
    answers = predict(load_checkpoint(checkpoints["good"]), [{"sensor": x} for x in data["X"]])
    margins = {}
    for i, answer in enumerate(answers):
        top = sorted(answer["probabilities"].values(), reverse=True)
        margins[pool.ids[i]] = 1 - (top[0] - top[1])
    expected = sorted((i for i in pool.ids if i not in ("rec-000", "rec-001")), key=lambda i: -margins[i])[:5]
    assert chosen == expected
    assert [s["score"] for s in out["selected"]] == pytest.approx([margins[i] for i in expected], abs=1e-5)

    # The review branch is main plus the selected samples awaiting review.
    assert out["to"]["branch"] == "review/r1" and out["to"]["marked"] == 5
    review, main = pool.rows("review/r1"), pool.rows("main")
    assert {i for i, r in review.items() if r["status"] == "pending"} == set(chosen)
    assert all(review[i]["annotator"] == OWNER for i in chosen)
    assert {i: r for i, r in review.items() if i not in chosen} == {i: r for i, r in main.items() if i not in chosen}
    assert all(r["status"] != "pending" for r in main.values())
    assert out["to"]["snapshot_id"] == dict(state(pool))["review/r1"]


@LOCAL
def test_every_strategy_through_the_cli(pool):
    for strategy, extra in (("random", []), ("least_confidence", ["--budget", "4"]), ("entropy", ["--budget", "4"]),
                            ("bald", ["--budget", "4", "--mc-samples", "5"]), ("diverse", ["--budget", "4"]),
                            ("below_confidence", ["--threshold", "0.99"])):
        args = ["dataset", "sample", pool.name, "--strategy", strategy, *extra]
        if strategy == "random":
            args += ["--budget", "4"]
        else:
            args += ["--model", pool.model]
        out = pool.json(*args)
        ids = [s["sample_id"] for s in out["selected"]]
        assert len(ids) == len(set(ids)) and set(ids) <= set(pool.ids), strategy
        if strategy != "below_confidence":
            assert len(ids) == 4, strategy
        assert out["to"] is None
    # Nothing was written by selections without --to.
    assert [name for name, _ in state(pool)] == ["main"]


@LOCAL
def test_min_per_class_and_the_pre_label_travelling_to_the_review_branch(pool):
    pre = pool.json("dataset", "prelabel", f"{pool.name}@main", "--model", pool.model, "--to", "prelabels/r1")
    assert pre["prelabelled"] == 40
    out = pool.json("dataset", "sample", f"{pool.name}@prelabels/r1", "--strategy", "entropy", "--budget", "8",
                    "--min-per-class", "2", "--model", pool.model, "--to", "review/r1")
    prelabels = pool.rows("prelabels/r1")
    chosen = [s["sample_id"] for s in out["selected"]]
    predicted = [prelabels[i]["label"] for i in chosen]
    assert all(predicted.count(c) >= 2 for c in ("low", "high", "rising", "falling")), predicted
    review = pool.rows("review/r1")
    # Selected samples carry their pre-label, pending; the others stay raw as on main.
    for i, row in review.items():
        if i in chosen:
            assert (row["label"], row["label_source"], row["status"]) == (prelabels[i]["label"], "model", "pending")
            assert row["confidence"] == pytest.approx(prelabels[i]["confidence"])
        else:
            assert (row["label"], row["status"]) == (None, "raw")


@LOCAL
@pytest.mark.parametrize("args, message", [
    (["--strategy", "smart", "--budget", "3"], "unknown sampling strategy 'smart'; known: random, least_confidence"),
    (["--strategy", "margin", "--budget", "41", "--model", "model:clf:v1"],
     "--budget 41 is larger than the pool of 40 candidate sample(s)"),
    (["--strategy", "margin", "--budget", "3", "--model", "model:nosuch:production"], "model:nosuch:production"),
    (["--strategy", "margin", "--budget", "3", "--model", "model:clf:v7"], "model:clf:v7: model 'clf' has no version 7"),
    (["--strategy", "margin", "--budget", "3"], "strategy margin ranks by a model's scores: give --model"),
    (["--strategy", "below_confidence", "--model", "model:clf:v1"], "below_confidence needs --threshold"),
    (["--strategy", "margin", "--budget", "3", "--model", "model:clf:v1", "--to", "bad..name"], "'bad..name'"),
])
def test_bad_input_exits_2_naming_it_and_writes_nothing(pool, args, message):
    before = state(pool)
    run = pool.tp("dataset", "sample", pool.name, *args, *([] if "--to" in args else ["--to", "review/x"]))
    assert run.returncode == 2, run.stderr
    assert message in run.stderr
    assert len([line for line in run.stderr.splitlines() if line.startswith("tp: error:")]) == 1
    assert "Traceback" not in run.stderr
    assert state(pool) == before


@LOCAL
def test_a_missing_dataset_or_a_ref_that_resolves_to_nothing_exits_2(pool):
    before = state(pool)
    for target, message in ((f"nosuch_{pool.name}", f"no dataset named 'nosuch_{pool.name}'"),
                            (f"{pool.name}@nosuch", "no branch, tag or snapshot 'nosuch'"),
                            (f"{pool.name}@1234567", "no branch, tag or snapshot '1234567'")):
        run = pool.tp("dataset", "sample", target, "--strategy", "random", "--budget", "2", "--to", "review/x")
        assert run.returncode == 2, (target, run.stderr)
        assert message in run.stderr
    assert state(pool) == before
    # A ref that holds no samples (the snapshot a dataset is created with).
    from train_platform.datasets import open_dataset

    first = open_dataset(pool.name, user=OWNER).log("main")[-1].snapshot_id
    run = pool.tp("dataset", "sample", f"{pool.name}@{first}", "--strategy", "random", "--budget", "2")
    assert run.returncode == 2 and f"{pool.name}@{first} (snapshot {first}) holds no samples" in run.stderr, run.stderr
    # A dataset whose samples are all confirmed has no candidates.
    labels = [f"{i}={pool.truth[i]}" for i in pool.ids]
    assert pool.tp("dataset", "label", f"{pool.name}@main", *labels).returncode == 0
    before = state(pool)
    run = pool.tp("dataset", "sample", pool.name, "--strategy", "random", "--budget", "2", "--to", "review/x")
    assert (run.returncode, "every sample is confirmed, no candidate samples" in run.stderr) == (2, True), run.stderr
    assert state(pool) == before
    # ... unless confirmed samples are asked for.
    out = pool.json("dataset", "sample", pool.name, "--strategy", "random", "--budget", "2", "--include-confirmed")
    assert len(out["selected"]) == 2


def scorer_running(pid: int) -> bool:
    children = subprocess.run(["pgrep", "-P", str(pid), "-f", "ml.serving.batch_inference"], capture_output=True, text=True)
    return bool(children.stdout.split())


@LOCAL
def test_a_run_killed_while_scoring_leaves_the_dataset_as_it_was(pool):
    before = state(pool)
    rows = pool.rows()
    proc = subprocess.Popen(
        [sys.executable, "-m", "train_platform.cli", "dataset", "sample", pool.name, "--strategy", "bald",
         "--budget", "5", "--mc-samples", "400", "--model", pool.model, "--to", "review/killed"],
        cwd=ROOT, env={**os.environ, "TP_USER": OWNER}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        # Wait until the scorer (the CLI's child) has run for a second, then kill the whole
        # process group while it still runs: its 400 MC-dropout passes take far longer.
        deadline = time.monotonic() + 120
        while not scorer_running(proc.pid):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the scorer never started"
            time.sleep(0.2)
        time.sleep(1)
        assert scorer_running(proc.pid)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert state(pool) == before
    assert pool.rows() == rows


@LOCAL
def test_the_cli_process_imports_no_torch(pool, tmp_path):
    report = tmp_path / "loaded.json"
    wrapper = (
        "import json, runpy, sys\n"
        "report, sys.argv = sys.argv[1], ['tp', *sys.argv[2:]]\n"
        "code = 0\n"
        "try:\n"
        "    runpy.run_module('train_platform.cli', run_name='__main__', alter_sys=True)\n"
        "except SystemExit as done:\n"
        "    code = done.code\n"
        "json.dump(sorted({n.split('.')[0] for n in sys.modules} & {'torch', 'ml', 'airflow', 'skactiveml'}), open(report, 'w'))\n"
        "sys.exit(code)\n"
    )
    run = subprocess.run([sys.executable, "-c", wrapper, str(report), "dataset", "sample", pool.name, "--strategy",
                          "diverse", "--budget", "3", "--model", pool.model, "--json"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "TP_USER": OWNER})
    assert run.returncode == 0, run.stderr
    assert len(json.loads(run.stdout)["selected"]) == 3
    assert json.loads(report.read_text()) == []


@LOCAL
def test_new_recordings_on_an_intake_branch_reach_the_review_branch_alone(pool, tmp_path):
    """The closed loop's shape: main holds the first 20 recordings (two of them confirmed),
    the other 20 arrive on ``intake``; sampling the pre-labels of ``intake`` for a review
    branch made from main copies only the selected new recordings onto it, pending with
    their pre-label, and samples a person confirmed on main are no candidates."""
    from train_platform.datasets import open_dataset

    dataset = open_dataset(pool.name, user=OWNER)
    dataset.branch("intake")
    late = pool.ids[20:]
    dataset.delete(late, "main", message="keep the first 20 on main")
    assert pool.tp("dataset", "label", f"{pool.name}@main", "rec-000=low", "rec-001=high").returncode == 0
    pre = pool.json("dataset", "prelabel", f"{pool.name}@intake", "--model", pool.model, "--to", "prelabels/r1")
    assert pre["prelabelled"] == 40
    out = pool.json("dataset", "sample", f"{pool.name}@prelabels/r1", "--strategy", "entropy", "--budget", "38",
                    "--model", pool.model, "--to", "review/r1")
    chosen = {s["sample_id"] for s in out["selected"]}
    assert out["pool"] == 38 and not {"rec-000", "rec-001"} & chosen
    review, main, prelabels = pool.rows("review/r1"), pool.rows("main"), pool.rows("prelabels/r1")
    new = chosen & set(late)
    assert out["to"]["copied"] == len(new) == 20 and out["to"]["marked"] == 38
    assert set(review) == set(main) | new
    for i in chosen:
        assert (review[i]["status"], review[i]["label"], review[i]["label_source"]) == (
            "pending", prelabels[i]["label"], "model")
    assert (review["rec-000"]["status"], review["rec-000"]["label"]) == ("confirmed", "low")
    assert set(pool.rows("main")) == set(pool.ids[:20])  # main is untouched until the review merges
