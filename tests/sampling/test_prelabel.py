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

pytestmark = [pytest.mark.parametrize("backend", ["local"], indirect=True), pytest.mark.long(minutes=2)]


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
        # The model's runners-up (three by default), most probable first, as its own answer has them.
        runners_up = sorted(((p, lab) for lab, p in answers[i]["probabilities"].items() if lab != row["label"]),
                            key=lambda pair: -pair[0])[:3]
        assert [a["label"] for a in row["alternatives"]] == [lab for _, lab in runners_up]
        assert [a["probability"] for a in row["alternatives"]] == pytest.approx([p for p, _ in runners_up], abs=1e-6)
    for i in people:
        assert not rows[i]["alternatives"]
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


def test_the_number_of_alternatives_is_chosen_and_zero_stores_none(pool):
    two = pool.json("dataset", "prelabel", f"{pool.name}@main", "--model", pool.model, "--alternatives", "2",
                    "--to", "pre/two")
    none = pool.json("dataset", "prelabel", f"{pool.name}@main", "--model", pool.model, "--alternatives", "0",
                     "--to", "pre/none")
    assert two["prelabelled"] == none["prelabelled"] == 40
    rows_two, rows_none = pool.rows("pre/two"), pool.rows("pre/none")
    for i, row in rows_two.items():
        probabilities = [a["probability"] for a in row["alternatives"]]
        assert len(probabilities) == 2 and probabilities == sorted(probabilities, reverse=True)
        assert row["label"] not in {a["label"] for a in row["alternatives"]}
        assert probabilities[0] <= row["confidence"]
        assert rows_none[i]["alternatives"] is None and rows_none[i]["label"] == row["label"]
    run = pool.tp("dataset", "prelabel", f"{pool.name}@main", "--model", pool.model, "--alternatives", "-1")
    assert run.returncode == 2 and "--alternatives must be 0 or more, got -1" in run.stderr


def test_a_dataset_made_before_alternatives_existed_keeps_working(pool):
    """A table whose schema predates the ``alternatives`` column (as datasets created by an
    earlier version have it): opening it adds the column by Iceberg schema evolution, its
    old snapshots still read, pre-labels with alternatives land on a branch, and merging
    that branch into main, where a person labelled a sample meanwhile, keeps both."""
    from pyiceberg.schema import Schema

    from train_platform.datasets import build_samples, open_dataset
    from train_platform.datasets import schema as sample_schema
    from train_platform.datasets.access import AccessStore
    from train_platform.datasets.catalog import get_catalog, identifier
    from train_platform.datasets.commits import TABLE_PROPERTIES
    from train_platform.settings import get_settings

    settings = get_settings()
    name = f"{pool.name}_old"
    old_schema = Schema(*[f for f in sample_schema.SAMPLE_SCHEMA.fields if f.name != "alternatives"],
                        identifier_field_ids=[1])
    table = get_catalog(settings).create_table(identifier(name), schema=old_schema, properties=TABLE_PROPERTIES)
    AccessStore(settings.catalog_uri).set_role(name, OWNER, "owner", granted_by=OWNER)
    data = open_dataset(pool.name, user=OWNER).read("main")
    table.append(data.drop_columns(["alternatives"]), snapshot_properties={"tp.user": OWNER}, branch="main")
    old_head = table.refresh().current_snapshot().snapshot_id
    assert "alternatives" not in table.schema().column_names

    dataset = open_dataset(name, user=OWNER)
    assert "alternatives" in get_catalog(settings).load_table(identifier(name)).schema().column_names
    assert dataset.read_with_snapshot(old_head, columns=("sample_id", "alternatives"))[1].column("alternatives").null_count == 40
    out = pool.json("dataset", "prelabel", f"{name}@main", "--model", pool.model, "--to", "pre/old")
    assert out["prelabelled"] == 40
    dataset.import_(build_samples(["late-000"], [np.ones((8, 1))]), "main")
    dataset.label({"late-000": "low"}, "main")
    merged = dataset.merge("pre/old")
    assert (merged.added, merged.changed, merged.removed) == (0, 40, 0)
    rows = {r["sample_id"]: r for r in dataset.read("main").to_pylist()}
    assert (rows["late-000"]["label"], rows["late-000"]["status"]) == ("low", "confirmed")
    assert not rows["late-000"]["alternatives"]
    assert all(len(rows[i]["alternatives"]) == 3 and rows[i]["status"] == "pending" for i in pool.ids)
