"""The ``sampling`` and ``prelabel`` task types: their operators' commands, and the shipped
``dags/pipelines/label-review.yaml`` validated and compiled by ``tp pipeline``, then its
pre-label and sampling tasks run by the platform's compiler and operators on the local
executor against a real dataset and a registered model."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.sampling.conftest import ROOT

PIPELINE = ROOT / "dags" / "pipelines" / "label-review.yaml"


def test_sampling_operator_command():
    from operators.sampling import SamplingOperator

    task = SamplingOperator(task_id="sample", pipeline="p", pipeline_version="1.0.0")
    command = task.default_command(
        {"data": "tp://vib@prelabels/r1", "model": "model:clf:production"}, {"review": "tp://vib@review/r1"},
        {"strategy": "bald", "budget": 20, "min_per_class": 2, "mc_samples": 10, "seed": 3, "include_confirmed": True},
    )
    assert command == ["python", "-m", "train_platform.cli", "dataset", "sample", "vib@prelabels/r1", "--strategy", "bald",
                       "--json", "--model", "model:clf:production", "--budget", "20", "--min-per-class", "2",
                       "--seed", "3", "--mc-samples", "10", "--include-confirmed", "--to", "review/r1"]
    # Defaults: diverse; no output, no review branch.
    assert task.default_command({"data": "tp://vib@main"}, {}, {})[6:9] == ["--strategy", "diverse", "--json"]
    with pytest.raises(ValueError, match="unknown sampling strategy 'smart'"):
        task.default_command({"data": "tp://vib@main"}, {}, {"strategy": "smart"})
    with pytest.raises(ValueError, match="must be a dataset ref tp://NAME@REF, got '/mnt/x'"):
        task.default_command({"data": "/mnt/x"}, {}, {})
    with pytest.raises(ValueError, match="a branch of the same dataset, tp://vib@BRANCH, got 'tp://other@review'"):
        task.default_command({"data": "tp://vib@main"}, {"review": "tp://other@review"}, {})
    with pytest.raises(ValueError, match="needs a `data` input"):
        task.default_command({}, {}, {})


def test_prelabel_operator_command():
    from operators.prelabel import PrelabelOperator

    task = PrelabelOperator(task_id="prelabel", pipeline="sensor-classifier", pipeline_version="1.0.0")
    command = task.default_command({"data": "tp://vib@main", "model": "model:clf:v2"}, {"prelabels": "tp://vib@pre/1"},
                                   {"accept_above": 0.9})
    assert command == ["python", "-m", "train_platform.cli", "dataset", "prelabel", "vib@main", "--model", "model:clf:v2",
                       "--json", "--accept-above", "0.9", "--to", "pre/1"]
    # Without a model input: model_name (else the pipeline's name) at model_version (production).
    assert task.default_command({"data": "tp://vib@main"}, {}, {})[7] == "model:sensor-classifier:production"
    assert task.default_command({"data": "tp://vib@main"}, {}, {"model_name": "m", "model_version": 3})[7] == "model:m:v3"
    assert task.default_command({"data": "tp://vib@main"}, {}, {"alternatives": 5})[-2:] == ["--alternatives", "5"]


def test_the_shipped_pipeline_validates_and_compiles():
    def tp(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "train_platform.cli", "pipeline", *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)

    validated = tp("validate", str(PIPELINE))
    assert validated.returncode == 0, validated.stdout + validated.stderr
    assert "label-review.yaml: ok (label-review 1.0.0, 3 tasks)" in validated.stderr
    compiled = tp("compile", str(PIPELINE), "--json")
    assert compiled.returncode == 0, compiled.stderr
    plan = json.loads(compiled.stdout)
    assert [(t["task_id"], t["type"], t["operator"], t["upstream"]) for t in plan["tasks"]] == [
        ("prelabel", "prelabel", "PrelabelOperator", []),
        ("check", "annotation_check", "AnnotationCheckOperator", ["prelabel"]),
        ("sample", "sampling", "SamplingOperator", ["check"]),
    ]


@pytest.mark.parametrize("backend", ["local"], indirect=True)
def test_the_pipelines_prelabel_and_sampling_tasks_leave_a_review_branch(pool):
    from train_platform.compiler.compiler import build_dag
    from train_platform.datasets import open_dataset
    from train_platform.registry import ModelRegistry
    from train_platform.settings import get_settings
    from train_platform.spec.validate import load_pipeline

    ModelRegistry(get_settings()).promote("clf", 1)
    dataset = open_dataset(pool.name, user="alice")
    dataset.grant("platform-team", "writer")  # the pipeline's owner, as whom its tasks act
    dataset.label({"rec-000": pool.truth["rec-000"]}, "main")
    spec = load_pipeline(PIPELINE)
    dag = build_dag(spec, source=str(PIPELINE), active=True, settings=get_settings())
    params = {**{name: p.value for name, p in dag.params.items()}, "dataset": pool.name, "model_name": "clf",
              "budget": 10, "min_per_class": 1}
    run_id = "manual__2026-01-02T03:04:05.678901+00:00"
    for task_id in ("prelabel", "sample"):  # `check` is the annotation check's own task
        task = dag.get_task(task_id)
        context = {"run_id": run_id, "params": params}
        task.render_template_fields(context)
        task.execute(context)

    branch = "manual__2026-01-02T03-04-05.678901-00-00"
    refs = dataset.refs()
    assert {f"prelabels/{branch}", f"review/{branch}"} <= set(refs)
    prelabels, review, main = pool.rows(f"prelabels/{branch}"), pool.rows(f"review/{branch}"), pool.rows("main")
    assert main["rec-000"]["status"] == "confirmed" and all(r["status"] == "raw" for i, r in main.items() if i != "rec-000")
    assert prelabels["rec-000"] == main["rec-000"]
    assert {r["status"] for i, r in prelabels.items() if i != "rec-000"} == {"pending"}
    assert {r["label_source"] for i, r in prelabels.items() if i != "rec-000"} <= {"model", "model-accepted"}
    pending = {i for i, r in review.items() if r["status"] == "pending"}
    assert len(pending) == 10 and "rec-000" not in pending
    assert len({prelabels[i]["label"] for i in pending}) == 4  # min_per_class 1 over four predicted classes
    assert all(review[i]["label"] == prelabels[i]["label"] for i in pending)
    assert all(review[i] == main[i] for i in review if i not in pending)
