"""``tp dataset prelabel``: a model's labels as pending pre-labels that never replace a
person's, accepted pre-labels told apart by their source, training reading them only when
a run opts in, and bad input refused with exit 2 and nothing written."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.registry.models import TINY_CONFIG
from tests.sampling.conftest import OWNER, ROOT

pytestmark = pytest.mark.parametrize("backend", ["local"], indirect=True)


def model_answers(checkpoints, pool) -> dict[str, dict]:
    from ml.checkpoint import load_checkpoint
    from ml.predict import predict

    data = np.load(checkpoints["test_data"])
    answers = predict(load_checkpoint(checkpoints["good"]), [{"sensor": x} for x in data["X"]])
    return dict(zip(pool.ids, answers))


def median_confidence(answers: dict[str, dict], exclude=()) -> str:
    """The median confidence of the model's answers, as the text --accept-above takes."""
    return repr(float(np.median([a["confidence"] for i, a in answers.items() if i not in exclude])))


def test_prelabels_never_replace_a_persons_label(pool, checkpoints):
    answers = model_answers(checkpoints, pool)
    wrong = {"low": "high", "high": "low", "rising": "falling", "falling": "rising"}
    # A person's confirmed label (one the model disagrees with), a person's label still
    # pending, and an imported ground-truth label.
    assert pool.tp("dataset", "label", f"{pool.name}@main", f"rec-000={wrong[answers['rec-000']['label']]}").returncode == 0
    assert pool.tp("dataset", "grant", pool.name, "bob", "writer").returncode == 0
    assert pool.tp("dataset", "label", f"{pool.name}@main", f"rec-001={wrong[answers['rec-001']['label']]}",
                   "--status", "pending", user="bob").returncode == 0
    assert pool.tp("dataset", "label", f"{pool.name}@main", "rec-002=rising", "--source", "imported").returncode == 0
    people = {i: r for i, r in pool.rows().items() if i in ("rec-000", "rec-001", "rec-002")}

    # A threshold that splits the model's confidences on the other samples.
    threshold = median_confidence(answers, exclude=people)
    out = pool.json("dataset", "prelabel", f"{pool.name}@main", "--model", pool.model, "--accept-above", threshold)
    rows = pool.rows()
    assert {i: rows[i] for i in people} == people
    confident = {i for i, a in answers.items() if a["confidence"] >= float(threshold)}
    assert 0 < len(confident - set(people)) < 37  # the threshold splits the others
    for i, row in rows.items():
        if i in people:
            continue
        assert row["label"] == answers[i]["label"]
        assert row["confidence"] == pytest.approx(answers[i]["confidence"], abs=1e-6)
        assert row["status"] == "pending"
        assert row["label_source"] == ("model-accepted" if i in confident else "model")
        assert row["annotator"] == OWNER
    assert (out["prelabelled"], out["accepted"], out["kept_person_labels"], out["branch"]) == (
        37, len(confident - set(people)), 3, "main")
    assert out["model"] == "model:clf:v1" and out["committed"] is True

    # A second run finds nothing to change and commits nothing.
    head = out["branch_snapshot_id"]
    again = pool.json("dataset", "prelabel", f"{pool.name}@main", "--model", pool.model, "--accept-above", threshold)
    assert (again["prelabelled"], again["unchanged"], again["committed"], again["branch_snapshot_id"]) == (0, 37, False, head)

    # After a person confirms a pre-label, a later run leaves it alone too.
    assert pool.tp("dataset", "label", f"{pool.name}@main", "rec-010=rising").returncode == 0
    third = pool.json("dataset", "prelabel", f"{pool.name}@main", "--model", pool.model)
    assert pool.rows()["rec-010"]["label"] == "rising" and pool.rows()["rec-010"]["label_source"] == "human"
    assert third["kept_person_labels"] == 4 and third["accepted"] == 0
    assert {r["label_source"] for i, r in pool.rows().items() if i not in people and i != "rec-010"} == {"model"}


def test_a_label_a_person_commits_meanwhile_wins(pool):
    """The pre-labels were computed before a person labelled one of their samples: the
    commit leaves that sample out instead of replacing the person's label."""
    from train_platform.cli.dataset_sampling import _commit
    from train_platform.datasets import open_dataset
    from train_platform.datasets.exceptions import ProtectedSamplesError
    from train_platform.datasets.schema import is_person_annotation

    dataset = open_dataset(pool.name, user=OWNER)
    updates = [{"sample_id": i, "label": "low", "label_source": "model", "confidence": 0.6, "status": "pending"}
               for i in ("rec-005", "rec-006", "rec-007")]
    open_dataset(pool.name, user=OWNER).label({"rec-006": "high"}, "main")  # a person, meanwhile
    before = dataset.resolve("main").snapshot_id

    # The dataset refuses the whole commit when a protected sample is in it ...
    with pytest.raises(ProtectedSamplesError, match="rec-006"):
        dataset.annotate(updates, "main", refuse_if=is_person_annotation)
    assert dataset.resolve("main").snapshot_id == before
    # ... and the pre-label step then writes the others.
    sid, refused = _commit(dataset, "main", None, updates, is_person_annotation, operation="prelabel", message="t")
    rows = pool.rows()
    assert refused == ["rec-006"] and sid == dataset.resolve("main").snapshot_id
    assert (rows["rec-006"]["label"], rows["rec-006"]["label_source"], rows["rec-006"]["status"]) == ("high", "human", "confirmed")
    assert [(rows[i]["label"], rows[i]["label_source"]) for i in ("rec-005", "rec-007")] == [("low", "model")] * 2


def test_prelabels_to_a_new_branch_leave_main_alone(pool):
    main = pool.rows()
    out = pool.json("dataset", "prelabel", pool.name, "--model", pool.model, "--to", "prelabels/a")
    assert out["branch"] == "prelabels/a" and out["prelabelled"] == 40
    assert pool.rows() == main
    assert {r["status"] for r in pool.rows("prelabels/a").values()} == {"pending"}
    # Without @REF or --to they go to the user's own branch, as labels do.
    assert pool.json("dataset", "prelabel", pool.name, "--model", pool.model)["branch"] == "user/alice"


def test_training_reads_accepted_prelabels_only_when_the_run_opts_in(pool, checkpoints, tmp_path, monkeypatch):
    from ml.data import load_ref
    from train_platform.settings import reload_settings

    monkeypatch.setenv("TP_USER", OWNER)  # the reader acts as TP_USER
    reload_settings()

    threshold = median_confidence(model_answers(checkpoints, pool))
    pool.json("dataset", "prelabel", f"{pool.name}@main", "--model", pool.model, "--accept-above", threshold)
    rows = pool.rows()
    accepted = {i for i, r in rows.items() if r["label_source"] == "model-accepted"}
    assert accepted and len(accepted) < len(rows)
    ref = f"tp://{pool.name}@main"
    assert load_ref(ref).labels == [None] * 40
    opted = load_ref(ref, accepted_prelabels=True)
    assert {i for i, label in zip(opted.ids, opted.labels) if label is not None} == accepted
    assert all(label == rows[i]["label"] for i, label in zip(opted.ids, opted.labels) if label is not None)

    def train(config: dict, out: str) -> subprocess.CompletedProcess:
        path = tmp_path / f"{out}.json"
        path.write_text(json.dumps({**TINY_CONFIG, **config}))
        return subprocess.run([sys.executable, "-m", "ml.train", "--mode", "initial", "--task", "classification",
                               "--data", ref, "--epochs", "1", "--config", str(path), "--out", str(tmp_path / out)],
                              cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "TP_USER": OWNER})

    refused = train({}, "plain")
    assert refused.returncode == 2 and "every sample is unlabelled" in refused.stderr
    run = train({"use_accepted_prelabels": True}, "opted")
    assert run.returncode == 0, run.stderr
    meta = json.loads((tmp_path / "opted" / "checkpoint.json").read_text())
    assert meta["train_config"]["use_accepted_prelabels"] is True
    assert set(meta["labels"]) == {rows[i]["label"] for i in accepted}


@pytest.mark.parametrize("args, message", [
    (["--model", "model:nosuch:production"], "model:nosuch:production"),
    (["--model", "model:clf:candidate"], "model:clf:candidate"),
    (["--model", "clf"], "'clf'"),
    (["--model", "model:clf:v1", "--accept-above", "1.5"], "--accept-above must be in (0, 1], got 1.5"),
    (["--model", "model:clf:v1", "--to", "v1"], "'v1' is a tag"),
])
def test_bad_input_exits_2_and_writes_nothing(pool, args, message):
    from train_platform.datasets import open_dataset

    dataset = open_dataset(pool.name, user=OWNER)
    dataset.tag("v1", "main")
    before = sorted((k, v["snapshot_id"]) for k, v in dataset.refs().items())
    run = pool.tp("dataset", "prelabel", f"{pool.name}@main", *args)
    assert run.returncode == 2, run.stderr
    assert message in run.stderr and "Traceback" not in run.stderr
    assert sorted((k, v["snapshot_id"]) for k, v in dataset.refs().items()) == before
    for target, text in ((f"nosuch_{pool.name}", "no dataset named"), (f"{pool.name}@gone", "no branch, tag or snapshot 'gone'")):
        run = pool.tp("dataset", "prelabel", target, "--model", pool.model)
        assert run.returncode == 2 and text in run.stderr, run.stderr
    assert sorted((k, v["snapshot_id"]) for k, v in dataset.refs().items()) == before
