"""Failure notifications and pipeline metrics, from real DAG runs.

A local HTTP server stands for both the webhook (POST) and a Pushgateway (PUT); the DAG
runs are real `airflow dags test` runs of compiled pipelines, so the callbacks the compiler
sets run where Airflow runs them (the task's process, the run's end)."""

from __future__ import annotations

import base64
import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.pipelines.helpers import airflow_project, dags_test, write


class Receiver:
    """Records every request: (method, path, headers, body)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.requests.append((self.command, self.path, dict(self.headers), body))
                self.send_response(200)
                self.end_headers()

            do_POST = do_PUT = _record

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def posts(self) -> list[dict]:
        return [json.loads(body) for method, _, _, body in self.requests if method == "POST"]

    def puts(self) -> dict[str, dict[str, float]]:
        """Pushgateway path -> {series: value} of every PUT."""
        pushed = {}
        for method, path, _, body in self.requests:
            if method == "PUT":
                pushed[path] = _series(body.decode())
        return pushed

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _series(text: str) -> dict[str, float]:
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}"] = sample.value
    return values


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


FAILING = """
apiVersion: train-platform/v1
kind: Pipeline
metadata: {name: failing, version: "1.2.0"}
spec:
  default_args: {retries: 0}
  tasks:
    - name: ok
      type: command
      command: ["python", "-c", "print('fine')"]
    - name: boom
      type: command
      depends_on: [ok]
      command: ["python", "-c", "import sys; print('about to fail'); sys.exit(3)"]
"""


def test_a_failed_run_posts_the_task_and_the_run_to_the_connection_webhook(tmp_path, receiver):
    """The default connection tp_notify, in Airflow's URI form; metrics as textfiles."""
    pipeline = write(tmp_path / "src" / "failing.yaml", FAILING)
    env = airflow_project(tmp_path / "project", [pipeline])
    metrics_dir = tmp_path / "textfiles"
    env.update({"AIRFLOW_CONN_TP_NOTIFY": f"http://127.0.0.1:{receiver.port}/hooks/tp",
                "TP_METRICS_TEXTFILE_DIR": str(metrics_dir)})
    env.pop("TP_PUSHGATEWAY_URL", None)

    run = dags_test(env, "failing", {})
    log = run.stdout + run.stderr
    assert "state=failed" in log, log[-4000:]

    assert {path for _, path, _, _ in receiver.requests} == {"/hooks/tp"}
    by_event = {post["event"]: post for post in receiver.posts()}
    assert sorted(by_event) == ["run_failed", "task_failed"], receiver.posts()
    task = by_event["task_failed"]
    assert (task["dag_id"], task["task_id"], task["try_number"]) == ("failing", "boom", 1)
    assert task["pipeline"] == "failing" and task["pipeline_version"] == "1.2.0"
    assert "command exited with code 3" in task["reason"]
    assert task["text"].startswith("train-platform: task boom of failing failed in run ")
    run_failed = by_event["run_failed"]
    assert run_failed["run_id"] == task["run_id"] and run_failed["run_id"]
    assert run_failed["dag_id"] == "failing" and run_failed["reason"]
    headers = next(h for m, _, h, _ in receiver.requests if m == "POST")
    assert headers["Content-Type"] == "application/json" and "Authorization" not in headers

    files = {path.name: _series(path.read_text()) for path in metrics_dir.glob("*.prom")}
    assert set(files) == {"tp_task_status__failing__ok.prom", "tp_task_status__failing__boom.prom",
                          "tp_pipeline_run__failing.prom"}
    boom = files["tp_task_status__failing__boom.prom"]
    assert boom["tp_task_failed{pipeline=failing,task=boom}"] == 1
    assert boom["tp_task_duration_seconds{pipeline=failing,task=boom}"] > 0
    assert files["tp_task_status__failing__ok.prom"]["tp_task_failed{pipeline=failing,task=ok}"] == 0
    assert files["tp_pipeline_run__failing.prom"]["tp_pipeline_run_failed{pipeline=failing}"] == 1
    # Written atomically: no temporary file left beside them.
    assert sorted(p.name for p in metrics_dir.iterdir()) == sorted(files)


GATED = """
apiVersion: train-platform/v1
kind: Pipeline
metadata: {name: gated, version: "2.0.0"}
spec:
  notify: {conn_id: ops_webhook}
  default_args: {retries: 0}
  parameters:
    model_name: gated-clf
    gate_floor: 0.9
  tasks:
    - name: evaluate
      type: evaluation
      inputs:
        - {name: model, source: /mnt/in/candidate}
        - {name: test_data, source: /mnt/in/test.npz}
      outputs:
        - {name: evaluation_results, destination: /mnt/out/evaluation}
    - name: deploy
      type: deployment
      depends_on: [evaluate]
      inputs:
        - {name: model, source: /mnt/in/candidate}
        - {name: evaluation, source: /mnt/out/evaluation}
      outputs:
        - {name: deployment_record, destination: /mnt/out/deployment}
    - name: package
      type: packaging
      depends_on: [deploy]
"""


@pytest.mark.slow
def test_a_failed_gate_notifies_with_the_gates_reasons_and_pushes_the_verdict(tmp_path, receiver):
    """A real candidate (trained on rotated labels) evaluated by ml.evaluate and refused by
    tp model deploy's gate: deploy ends skipped, the pipeline's own connection receives the
    gate's reasons, and the Pushgateway receives the evaluation's accuracy and the verdict."""
    from tests.registry.models import trained_models

    models = trained_models(tmp_path / "models")
    pipeline = write(tmp_path / "src" / "gated.yaml", GATED)
    env = airflow_project(tmp_path / "project", [pipeline])
    home = Path(env["TP_HOME"])
    # On the local executor /mnt/in/... lives under TP_HOME/fs (no mount covers it).
    shutil.copytree(models["bad"], home / "fs" / "mnt" / "in" / "candidate")
    shutil.copy(models["test_data"], home / "fs" / "mnt" / "in" / "test.npz")
    env.pop("TP_METRICS_TEXTFILE_DIR", None)
    env.update({
        # JSON form: the whole URL in host, a bearer token as the password.
        "AIRFLOW_CONN_OPS_WEBHOOK": json.dumps({"conn_type": "http", "password": "s3cret-token",
                                                "host": f"http://127.0.0.1:{receiver.port}/gate-hook"}),
        "TP_PUSHGATEWAY_URL": f"http://pusher:pw@127.0.0.1:{receiver.port}",
    })

    run = dags_test(env, "gated", {})
    log = run.stdout + run.stderr
    assert run.returncode == 0 and "state=success" in log, log[-4000:]

    posts = receiver.posts()
    assert [p["event"] for p in posts] == ["gate_failed"], posts
    gate = posts[0]
    assert (gate["dag_id"], gate["task_id"], gate["pipeline"]) == ("gated", "deploy", "gated")
    assert gate["gate"]["model"] == "gated-clf" and gate["gate"]["version"] == 1
    assert any(r.startswith("accuracy ") and "below the floor 90.00%" in r for r in gate["gate"]["reasons"]), gate
    assert gate["reason"] == "; ".join(gate["gate"]["reasons"])
    assert "gated-clf v1 failed its evaluation gate" in gate["text"] and "nothing deployed" in gate["text"]
    post_headers = next(h for m, p, h, _ in receiver.requests if m == "POST")
    assert post_headers["Authorization"] == "Bearer s3cret-token"

    pushed = receiver.puts()
    base = "/metrics/job/{job}/pipeline/gated/task/{task}"
    evaluation = pushed[base.format(job="tp_task_result", task="evaluate")]
    accuracy = evaluation["tp_evaluation_metric{metric=accuracy,pipeline=gated,task=evaluate}"]
    assert 0 <= accuracy < 0.9
    verdict = pushed[base.format(job="tp_task_result", task="deploy")]
    assert verdict == {"tp_gate_passed{model=gated-clf,pipeline=gated,task=deploy}": 0.0,
                       "tp_deployment_candidate_version{model=gated-clf,pipeline=gated,task=deploy}": 1.0}
    # deploy was skipped by its gate, which is not a failure; package was skipped after it
    # and never ran, so nothing reports it.
    assert pushed[base.format(job="tp_task_status", task="deploy")][
        "tp_task_failed{pipeline=gated,task=deploy}"] == 0
    assert base.format(job="tp_task_status", task="package") not in pushed
    assert pushed["/metrics/job/tp_pipeline_run/pipeline/gated"]["tp_pipeline_run_failed{pipeline=gated}"] == 0
    # What a training task's success callback exports, from the metrics.json ml.train wrote.
    from train_platform.registry.metrics_export import training_results

    trained = {sample.name: sample for sample in training_results("p", "train", {"out": str(models["bad"])})}
    assert trained["tp_training_samples_per_second"].value > 0
    assert trained["tp_training_samples_per_second"].labels == {"pipeline": "p", "task": "train", "mode": "initial"}
    assert trained["tp_training_epochs"].value == 8
    # The gateway's credentials travel as Basic auth, not in the URL.
    put_headers = next(h for m, _, h, _ in receiver.requests if m == "PUT")
    assert put_headers["Authorization"] == "Basic " + base64.b64encode(b"pusher:pw").decode()


# --- the connection, without a DAG run ------------------------------------------------------


def test_the_webhook_url_comes_from_either_connection_form():
    from airflow.sdk import Connection

    from train_platform.compiler.notify import webhook_from_connection

    uri = Connection.from_uri("http://hooks.internal:8080/notify/tp", conn_id="a")
    assert webhook_from_connection(uri).url == "http://hooks.internal:8080/notify/tp"
    full = Connection(conn_id="b", conn_type="http", host="https://hooks.example.com/services/T0/B0",
                      login="bot", password="pw", extra=json.dumps({"headers": {"X-Team": "ml"}, "timeout": 3}))
    hook = webhook_from_connection(full)
    assert hook.url == "https://hooks.example.com/services/T0/B0" and hook.timeout == 3
    assert hook.headers["Authorization"] == "Basic " + base64.b64encode(b"bot:pw").decode()
    assert hook.headers["X-Team"] == "ml"
    tls = Connection(conn_id="c", conn_type="https", host="hooks.example.com", extra=json.dumps({"endpoint": "/x"}))
    assert webhook_from_connection(tls).url == "https://hooks.example.com/x"


def test_a_connection_without_host_and_a_refusing_webhook_are_named_errors(receiver):
    from airflow.sdk import Connection

    from train_platform.compiler.notify import NotificationError, Webhook, post, webhook_from_connection

    with pytest.raises(NotificationError, match="connection 'empty' has no host"):
        webhook_from_connection(Connection(conn_id="empty", conn_type="http"))
    with pytest.raises(NotificationError, match=r"webhook http://127\.0\.0\.1:1/x cannot be reached"):
        post(Webhook("http://127.0.0.1:1/x", timeout=2), {"event": "task_failed"})
    assert post(Webhook(f"http://127.0.0.1:{receiver.port}/ok"), {"event": "run_failed"}) == 200
    assert receiver.posts() == [{"event": "run_failed"}]


def test_notify_conn_id_is_validated_with_its_path(tmp_path):
    from train_platform.exceptions import PipelineSpecError
    from train_platform.spec.validate import load_pipeline

    path = write(tmp_path / "bad.yaml", FAILING.replace("spec:\n", "spec:\n  notify: {conn_id: 'has space'}\n", 1))
    with pytest.raises(PipelineSpecError) as refused:
        load_pipeline(path)
    assert "spec.notify.conn_id" in str(refused.value)
