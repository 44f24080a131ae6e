"""The ``review`` task type: it compiles to the standard provider's approval operator without
loading the dataset code, and in a real run it waits under Required Actions, merges the
reviewers' branches on approval (a conflict fails the step and names the samples), and on
rejection stops the run with nothing merged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import urllib.parse
from pathlib import Path

import pytest

from tests.review.airflow_server import BIN, ROOT
from tests.review.conftest import seed_dataset
from train_platform.datasets import open_dataset

P = "/train-platform"


def pipeline(name: str, dataset: str, *, timeout: str | None = None, extra: str = "") -> str:
    return textwrap.dedent(f"""
    apiVersion: train-platform/v1
    kind: Pipeline
    metadata: {{name: {name}, version: "1.0.0", owner: alice}}
    spec:
      default_args: {{retries: 1, retry_delay: 2s}}
      parameters:
        allow_new_classes: false
      tasks:
        - name: review
          type: review
          inputs: [{{name: data, source: "tp://{dataset}@main"}}]
          {f"timeout: {timeout}" if timeout else ""}
        - name: train
          type: command
          command: ["python", "-c", "print('training on the reviewed labels')"]
          depends_on: [review]
    {extra}""").lstrip()


def test_a_review_task_compiles_to_an_approval_step_and_parsing_loads_no_dataset_code(tmp_path):
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "train_platform_pipelines.py").write_text((ROOT / "dags" / "train_platform_pipelines.py").read_text())
    (dags / "good.yaml").write_text(pipeline("good", "vib", timeout="2h"))
    (dags / "bad.yaml").write_text(pipeline("bad", "vib").replace('source: "tp://vib@main"', 'source: "/mnt/data"'))
    probe = textwrap.dedent(f"""
        import json, sys
        from airflow.dag_processing.dagbag import DagBag
        from airflow.providers.standard.operators.hitl import ApprovalOperator
        bag = DagBag(dag_folder={str(dags)!r})
        task = bag.dags["good"].get_task("review")
        print(json.dumps({{
            "errors": list(bag.import_errors), "dags": sorted(bag.dags),
            "approval": isinstance(task, ApprovalOperator), "type": type(task).__name__,
            "timeout": task.response_timeout.total_seconds(), "execution_timeout": task.execution_timeout,
            "subject": task.subject, "options": task.options,
            "bad": (bag.dags["bad"].description or "") + (bag.dags["bad"].doc_md or "") if "bad" in bag.dags else None,
            "heavy": sorted(m for m in sys.modules if m.split(".")[0] in ("pyiceberg", "torch", "bentoml", "great_expectations")),
        }}))
    """)
    env = {**os.environ, "AIRFLOW__CORE__DAGS_FOLDER": str(dags), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    run = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    found = json.loads(run.stdout.strip().splitlines()[-1])
    assert found["errors"] == [] and "good" in found["dags"]
    assert found["approval"] and found["type"] == "ReviewOperator" and found["options"] == ["Approve", "Reject"]
    assert found["timeout"] == 7200 and found["execution_timeout"] is None
    assert found["subject"] == "Review the pre-labels of vib@main"
    assert "must be a dataset branch tp://NAME@BRANCH" in (found["bad"] or "")
    assert found["heavy"] == []


class Run:
    """``airflow dags test --use-executor`` of one pipeline, in the background, against the
    session's API server (same metadata database)."""

    def __init__(self, server, dag_id: str):
        self.server, self.dag_id = server, dag_id
        self.log_path = server.root / f"{dag_id}.log"
        self.process = subprocess.Popen([str(BIN / "airflow"), "dags", "test", dag_id, "--use-executor"],
                                        env=server.env, cwd=server.root, stdout=open(self.log_path, "w"),
                                        stderr=subprocess.STDOUT, start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def waiting(self, times: int = 1, timeout: float = 300) -> dict:
        """The HITL request of the review step once the run waits on it for the ``times``-th
        time. Waiting means the executor has also reported the task's process as done
        (``dags test`` logs the task instance as finished in ``awaiting_input``): a response
        sent before that races Airflow's own handling of the executor's event, which then
        marks the resumed task as changed externally. A person never answers that fast."""
        deadline = time.monotonic() + timeout
        with self.server.client("alice") as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise AssertionError(f"the run ended before waiting: {self.log()[-4000:]}")
                found = client.get(f"/api/v2/dags/{self.dag_id}/dagRuns/~/hitlDetails",
                                   params={"response_received": "false"}).json()["hitl_details"]
                parked = sum(1 for line in self.log().splitlines()
                             if "TaskInstance Finished:" in line and "state=awaiting_input" in line)
                if found and parked >= times:
                    return found[0]
                time.sleep(2)
        raise AssertionError(f"no review request after {timeout:.0f} s: {self.log()[-4000:]}")

    def respond(self, detail: dict, option: str, user: str = "alice") -> None:
        ti = detail["task_instance"]
        run_id = urllib.parse.quote(ti["dag_run_id"], safe="")
        with self.server.client(user) as client:
            answer = client.patch(f"/api/v2/dags/{self.dag_id}/dagRuns/{run_id}/taskInstances/review/-1/hitlDetails",
                                  json={"chosen_options": [option]})
        assert answer.status_code == 200, answer.text

    def finish(self, timeout: float = 300) -> str:
        try:
            self.process.wait(timeout=timeout)
        finally:
            if self.process.poll() is None:
                os.killpg(self.process.pid, 15)
                self.process.wait(timeout=30)
        return self.log()


def review(server, who: str, name: str, decisions: list[dict]) -> None:
    with server.client(who) as client:
        state = client.get(f"{P}/api/datasets/{name}/review").json()
        answer = client.post(f"{P}/api/datasets/{name}/review", json={
            "branch": "main", "review_snapshot": state["review_snapshot"], "branch_snapshot": state["branch_snapshot"],
            "decisions": decisions})
    assert answer.status_code == 200, answer.text


@pytest.mark.slow
def test_approval_merges_the_reviews_and_a_conflict_fails_the_step_until_resolved(airflow_server):
    seeded = seed_dataset(airflow_server.settings)
    p, name = seeded.pending, seeded.name
    dag_id = f"review-{name.replace('_', '-')}"
    (Path(airflow_server.env["AIRFLOW__CORE__DAGS_FOLDER"]) / f"{dag_id}.yaml").write_text(pipeline(dag_id, name))
    run = Run(airflow_server, dag_id)
    detail = run.waiting()
    assert detail["subject"] == f"Review the pre-labels of {name}@main"
    page = f"{airflow_server.url}{P}/review?dataset={name}&branch=main"
    assert f"[Open the review page]({page})" in detail["body"] and "**6 sample(s)**" in detail["body"]
    review(airflow_server, "alice", name, [{"sample_id": p[0], "action": "accept"},
                                           {"sample_id": p[1], "action": "correct", "label": "standing"}])
    review(airflow_server, "bob", name, [{"sample_id": p[1], "action": "accept"}, {"sample_id": p[2], "action": "reject"}])
    main_before = open_dataset(name, user="alice", settings=seeded.settings).resolve("main").snapshot_id
    run.respond(detail, "Approve")
    # The reviewers disagree on p[1]: the step fails naming it, nothing is merged, the page shows it.
    retry = run.waiting(times=2)
    assert f"review conflicts on 1 sample(s): {p[1]}; nothing was merged" in run.log()
    assert open_dataset(name, user="alice", settings=seeded.settings).resolve("main").snapshot_id == main_before
    with airflow_server.client("carol") as client:
        shown = client.get(f"{P}/review", params={"dataset": name}).text
        conflicts = client.get(f"{P}/api/datasets/{name}/review/conflicts").json()
    assert conflicts["request"]["detail"]["previous"]["state"] == "conflict"
    assert list(conflicts["disagreements"]) == [p[1]] and "Reviewers disagree on 1 sample(s)" in shown
    assert "Required Actions" in shown and "<strong>waiting</strong>" in shown
    # bob agrees with alice; the retry's approval merges both branches, then the run goes on.
    review(airflow_server, "bob", name, [{"sample_id": p[1], "action": "correct", "label": "standing"}])
    run.respond(retry, "Approve", user="bob")
    log = run.finish()
    assert "training on the reviewed labels" in log, log[-4000:]
    assert f"merged user/alice (fast-forward)" in log and "merged user/bob" in log
    main = {r["sample_id"]: r for r in open_dataset(name, user="alice", settings=seeded.settings).read("main").to_pylist()}
    assert (main[p[0]]["label"], main[p[0]]["annotator"], main[p[0]]["status"]) == (seeded.model_labels[p[0]], "alice", "confirmed")
    assert (main[p[1]]["label"], main[p[1]]["status"]) == ("standing", "confirmed") and p[2] not in main
    assert main[p[3]]["status"] == "pending"
    merges = [a for a in open_dataset(name, user="alice", settings=seeded.settings).audit() if a.operation == "merge"]
    assert {m.detail["branch"] for m in merges if m.outcome == "ok"} == {"user/alice", "user/bob"}
    with airflow_server.client("alice") as client:
        request = client.get(f"{P}/api/datasets/{name}/review/conflicts").json()["request"]
    assert request["state"] == "merged" and request["detail"]["by"] == "bob"
    # The merge into main is an asset event of tp://NAME@main, which an asset-scheduled
    # pipeline (incremental training) runs on.
    events = asset_events(airflow_server, dag_id)
    assert [e["uri"] for e in events] == [f"tp://{name}@main/"]
    assert events[0]["extra"]["merged"] == ["user/alice", "user/bob"] and events[0]["extra"]["approved_by"] == "bob"


def asset_events(server, dag_id: str) -> list[dict]:
    with server.client("alice") as client:
        answer = client.get("/api/v2/assets/events", params={"source_dag_id": dag_id})
    assert answer.status_code == 200, answer.text
    return answer.json()["asset_events"]


@pytest.mark.slow
def test_rejection_stops_the_run_and_merges_nothing(airflow_server):
    seeded = seed_dataset(airflow_server.settings)
    name = seeded.name
    dag_id = f"review-{name.replace('_', '-')}"
    (Path(airflow_server.env["AIRFLOW__CORE__DAGS_FOLDER"]) / f"{dag_id}.yaml").write_text(pipeline(dag_id, name))
    run = Run(airflow_server, dag_id)
    detail = run.waiting()
    review(airflow_server, "bob", name, [{"sample_id": seeded.pending[0], "action": "accept"}])
    main_before = open_dataset(name, user="alice", settings=seeded.settings).resolve("main").snapshot_id
    run.respond(detail, "Reject")
    log = run.finish()
    assert "training on the reviewed labels" not in log
    assert "rejected by alice: nothing was merged" in log
    ds = open_dataset(name, user="alice", settings=seeded.settings)
    assert ds.resolve("main").snapshot_id == main_before
    assert ds.read("user/bob").to_pylist()  # bob's review stays on his branch
    assert asset_events(airflow_server, dag_id) == []  # nothing merged, no asset event
    with airflow_server.client("alice") as client:
        tis = client.get(f"/api/v2/dags/{dag_id}/dagRuns/~/taskInstances").json()["task_instances"]
        request = client.get(f"{P}/api/datasets/{name}/review/conflicts").json()["request"]
    assert {t["task_id"]: t["state"] for t in tis} == {"review": "success", "train": "skipped"}
    assert request["state"] == "rejected"


def test_a_templated_review_branch_compiles_and_is_checked_once_rendered():
    """A pipeline reviews a branch of its own run (review/{{ run_id }}): the dataset is fixed
    at parse time (the outlet alias names it), the branch is checked when rendered."""
    from operators.review import ReviewOperator

    task = ReviewOperator(task_id="review", inputs={"data": "tp://vib@review/{{ run_id | replace(':', '-') }}"})
    assert task.dataset == "vib" and {"review_ref", "check_input"} <= set(task.template_fields)
    assert [alias.name for alias in task.outlets] == ["tp-merges-vib"]
    task.review_ref = "tp://vib@review/manual__2026-01-02T03-04-05"  # as Airflow renders it
    task._rendered_branch()
    assert task.review_branch == "review/manual__2026-01-02T03-04-05"
    assert task.subject == "Review the pre-labels of vib@review/manual__2026-01-02T03-04-05"
    for rendered in ("tp://vib@review/has space", "tp://other@review/x"):
        task.review_ref = rendered
        with pytest.raises(ValueError, match="rendered to"):
            task._rendered_branch()
    with pytest.raises(ValueError, match="must be a dataset branch"):
        ReviewOperator(task_id="review", inputs={"data": "tp://{{ params.dataset }}@review/x"})
