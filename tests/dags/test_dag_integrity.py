"""DagBag integrity over every pipeline shipped in dags/: no import errors, no invalid
placeholders, tags, an owner, retries on every task."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.pipelines.helpers import ROOT
from train_platform.compiler.loader import INVALID_TAG

PIPELINES = sorted((ROOT / "dags").rglob("*.y*ml"))


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


def test_the_dags_folder_imports_without_errors(dagbag):
    assert dagbag.import_errors == {}
    invalid = [dag_id for dag_id, dag in dagbag.dags.items() if INVALID_TAG in dag.tags]
    assert invalid == []


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.name)
def test_each_shipped_pipeline_has_tags_owner_and_retries(dagbag, path: Path):
    from train_platform.spec.validate import load_pipeline

    spec = load_pipeline(path)
    dag = dagbag.dags[spec.name]
    assert "train-platform" in dag.tags and f"version:{spec.version}" in dag.tags
    assert dag.owner
    assert dag.doc_md and spec.version in dag.doc_md
    for task in dag.tasks:
        assert task.retries >= 1, f"{task.task_id} has no retries"


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.name)
def test_each_shipped_pipeline_reads_well_in_the_ui(dagbag, path: Path):
    from train_platform.compiler.docs import DESCRIPTION_LIMIT
    from train_platform.spec.validate import load_pipeline

    spec = load_pipeline(path)
    dag = dagbag.dags[spec.name]
    assert len(dag.description) <= DESCRIPTION_LIMIT and dag.description.endswith(f"(v{spec.version})")
    assert "…" not in dag.description, "the first sentence of the description should fit"
    assert path.read_text() in dag.doc_md  # the YAML source, whole
    for name in dag.params:
        assert dag.params.get_param(name).description, f"parameter {name} has no description"
