"""`make demo`: the platform's main job end to end on the embedded default.

SQLite for Airflow, the catalog and the registry; local folders; local processes. Every step
says what it did:

1. validate and compile the pipelines in the dags folder;
2. run the example command pipeline through Airflow (outputs feed inputs, a trigger param);
3. create a versioned dataset of sensor recordings (aeon's BasicMotions) holding the first
   two activities;
4. run `sensor-continual-learning` through Airflow: train from scratch, evaluate on held-out
   recordings of the two activities, pass the evaluation gate (an absolute floor: no
   production yet), register and deploy version 1 to production, package it as a Bento;
5. a labeller adds two new activities on her own branch, which is merged into main;
6. run the pipeline again: incremental training from production (replay + EWC + LwF),
   evaluation of the candidate and of production on the same held-out recordings of all four
   activities, the gate (no worse than production, no forgetting of the old activities),
   version 2 starts an A/B phase against version 1, packaging;
7. start the inference endpoint and call it: a prediction, a cache hit, a refused input;
8. show the registry's history.

Airflow runs with the embedded shape's settings of scripts/airflow-env.sh, the same as
`make airflow`. Each pipeline run is `airflow dags test --use-executor`: the LocalExecutor runs
every task under Airflow's task supervisor, which writes the task's log where the API server
reads it (`[logging] base_log_folder`), so `make airflow` shows the logs of these runs. A plain
`airflow dags test` runs tasks inside its own process and writes their logs to its stdout only:
the UI then has nothing to show ("Log file not found"). The tasks report to an
`airflow api-server` the demo starts on a free loopback port for its runs.

Run from the project root with the project's virtualenv (`make demo` does both).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
AIRFLOW, TP = str(BIN / "airflow"), str(BIN / "tp")
AIRFLOW_ENV = ROOT / "scripts" / "airflow-env.sh"
# The first line of a log record: "2026-01-02T03:04:05.678Z [info     ] ..." (Airflow's own) or
# "2026-01-02 03:04:05.678+00:00 [info     ] ..." (a task's, relayed by its supervisor).
LOG_RECORD = re.compile(r"\d{4}-\d\d-\d\d[T ][\d:.]+(?:Z|[+-]\d\d:\d\d) \[")
MODEL = "sensor-classifier"
TOKEN = "demo-token"


def step(title: str) -> None:
    print(f"\n=== {title}", flush=True)


def run(argv: list[str], env: dict[str, str], *, show: bool = True) -> subprocess.CompletedProcess:
    print("$ " + " ".join(argv), flush=True)
    result = subprocess.run(argv, env=env, cwd=ROOT, text=True, capture_output=True)
    if show or result.returncode:
        sys.stdout.write(result.stdout)
    if result.returncode:
        sys.stdout.write(result.stderr[-4000:])
        raise SystemExit(f"demo step failed: {' '.join(argv)} (exit {result.returncode})")
    return result


def airflow_env(base: dict[str, str]) -> dict[str, str]:
    """``base`` with the embedded shape's Airflow settings: scripts/airflow-env.sh sourced by bash
    (the file `make airflow` sources too); a variable already in ``base`` wins."""
    result = subprocess.run(["bash", "-c", 'source "$1" && env -0', "airflow-env", str(AIRFLOW_ENV)],
                            env=base, cwd=ROOT, capture_output=True)
    if result.returncode:
        raise SystemExit(f"{AIRFLOW_ENV} failed (exit {result.returncode}): {result.stderr.decode()[-2000:]}")
    shell_own = {"_", "SHLVL", "PWD", "OLDPWD"}
    settings = dict(item.split("=", 1) for item in result.stdout.decode().split("\0") if "=" in item)
    return {**base, **{k: v for k, v in settings.items() if k not in shell_own}}


class ApiServer:
    """`airflow api-server` on a free loopback port for the demo's runs: the execution API the
    tasks of `airflow dags test --use-executor` report to, and the REST API whose log endpoint
    is the one the UI reads task logs from. ``env`` is the environment to run Airflow commands in."""

    def __init__(self, env: dict[str, str], log_path: Path, timeout: float = 180):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**env, "AIRFLOW__API__HOST": "127.0.0.1", "AIRFLOW__API__PORT": str(self.port),
                    "AIRFLOW__API__BASE_URL": self.url,
                    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/"}
        self.log_path, self.timeout = log_path, timeout
        self.process: subprocess.Popen | None = None
        self._token: str | None = None

    def __enter__(self) -> ApiServer:
        print(f"$ airflow api-server --port {self.port}   (log: {self.log_path})", flush=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen([AIRFLOW, "api-server"], env=self.env, cwd=ROOT, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + self.timeout
            while True:
                if self.process.poll() is not None:
                    raise SystemExit(f"the API server exited: {self.log_path.read_text()[-3000:]}")
                try:
                    if call(self.url + "/api/v2/monitor/health", None, None)[0] == 200:
                        return self
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit(f"the API server did not answer in {self.timeout:.0f} s (log: {self.log_path})")
                time.sleep(1)
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def get(self, path: str) -> dict:
        """GET a REST API path as the admin user, the login `make airflow` prints."""
        if self._token is None:
            passwords = Path(self.env["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json.generated"
            status, answer, _ = call(self.url + "/auth/token",
                                     {"username": "admin", "password": json.loads(passwords.read_text())["admin"]},
                                     None)
            if status not in (200, 201) or not isinstance(answer, dict):
                raise SystemExit(f"logging in to the API server as admin failed: {status} {answer}")
            self._token = answer["access_token"]
        status, answer, _ = call(self.url + path, None, self._token)
        if status != 200 or not isinstance(answer, dict):
            raise SystemExit(f"GET {path}: {status} {str(answer)[:500]}")
        return answer

    def latest_run_id(self, dag_id: str) -> str:
        runs = self.get(f"/api/v2/dags/{dag_id}/dagRuns?order_by=-run_after&limit=1")["dag_runs"]
        if not runs:
            raise SystemExit(f"the API server knows no run of {dag_id}")
        return runs[0]["dag_run_id"]

    def task_logs(self, dag_id: str, run_id: str) -> dict[str, list[dict] | str]:
        """Each task instance's log lines of its last try, from the endpoint the UI's log view calls
        (`GET .../taskInstances/{task_id}/logs/{try_number}`), the source header left out; for a
        task that never ran (skipped or upstream failed before a first try), its state instead."""
        quoted = urllib.parse.quote(run_id, safe="")
        logs: dict[str, list[dict] | str] = {}
        for ti in self.get(f"/api/v2/dags/{dag_id}/dagRuns/{quoted}/taskInstances")["task_instances"]:
            if ti["try_number"] == 0:
                logs[ti["task_id"]] = str(ti["state"])
                continue
            content = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{quoted}/taskInstances/{ti['task_id']}"
                               f"/logs/{ti['try_number']}")["content"]
            logs[ti["task_id"]] = [line for line in content if line.get("timestamp")]
        return logs


def run_dag(dag_id: str, conf: dict, api: ApiServer, needles: tuple[str, ...]) -> str:
    """`airflow dags test --use-executor`: one real DAG run whose tasks the LocalExecutor runs under
    Airflow's task supervisor, reporting to ``api``; then checks that the API server, and so the UI,
    has every task's log. Returns the command's output."""
    print("$ airflow dags test " + dag_id + " --use-executor -c '" + json.dumps(conf) + "'", flush=True)
    result = subprocess.run([AIRFLOW, "dags", "test", dag_id, "--use-executor", "-c", json.dumps(conf)],
                            env=api.env, cwd=ROOT, text=True, capture_output=True)
    log = result.stdout + result.stderr
    for line in log.splitlines():
        if not LOG_RECORD.match(line):
            continue  # a continuation line of a multi-line record, such as a command's source
        if "running: " in line and "running: " not in needles:
            continue
        epoch = re.search(r"epoch (\d+)/(\d+) (done|step)", line)
        if epoch and (epoch[3] == "step" or epoch[1] not in ("1", epoch[2])):
            continue  # first and last epoch only
        if any(needle in line for needle in needles):
            text = line.split("[info     ] ", 1)[-1]
            print("  " + text.split(" [airflow.task")[0][:220])
    if result.returncode or "state=success" not in log:
        errors = [line for line in log.splitlines() if "rror" in line and "Traceback" not in line]
        print("\n".join(errors[-10:]))
        raise SystemExit(f"the run of {dag_id} did not succeed (full log: airflow dags test {dag_id})")
    run_id = api.latest_run_id(dag_id)
    logs = api.task_logs(dag_id, run_id)
    missing = sorted(task for task, lines in logs.items() if lines == [])
    if missing:
        raise SystemExit(f"the API server has no log for task(s) {', '.join(missing)} of {dag_id} run {run_id}")
    print(f"  run of {dag_id}: success; task logs in the UI: " + ", ".join(
        f"{task} ({len(lines)} lines)" if isinstance(lines, list) else f"{task} (did not run: {lines})"
        for task, lines in sorted(logs.items())))
    return log


def write_batches(folder: Path) -> tuple[Path, Path, Path, Path, Path]:
    """BasicMotions (accelerometer + gyroscope, 6 channels): the first two activities are the
    initial data, the other two arrive later as new labels. Held-out recordings come the
    same way (test1: the first two activities, test2: the later two), so each run is
    evaluated on the activities known by then; test.npz (all four) is what the endpoint is
    called with."""
    import numpy as np

    from ml.data import load_ref

    train, test = load_ref("aeon:BasicMotions:train"), load_ref("aeon:BasicMotions:test")
    classes = sorted(set(train.labels))
    first, later = classes[:2], classes[2:]

    def save(path: Path, data, keep: list[str]) -> Path:
        index = [i for i, label in enumerate(data.labels) if label in keep]
        np.savez(path, X=np.stack([data.series[i] for i in index]), y=np.array([data.labels[i] for i in index]),
                 ids=np.array([f"{path.stem}-{data.ids[i]}" for i in index]))
        return path

    print(f"activities {first} first, {later} later")
    return (save(folder / "batch1.npz", train, first), save(folder / "batch2.npz", train, later),
            save(folder / "test1.npz", test, first), save(folder / "test2.npz", test, later),
            save(folder / "test.npz", test, classes))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def call(url: str, body: dict | None, token: str | None) -> tuple[int, dict | str, float]:
    request = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {token}"} if token else {})})
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            payload = response.read().decode()
            status = response.status
    except urllib.error.HTTPError as exc:
        payload, status = exc.read().decode(), exc.code
    elapsed = (time.perf_counter() - started) * 1000
    try:
        return status, json.loads(payload), elapsed
    except json.JSONDecodeError:
        return status, payload, elapsed


def serve_and_call(env: dict[str, str], test_file: Path) -> None:
    import numpy as np

    port = free_port()
    log_path = Path(env["TP_HOME"]) / "demo-serve.log"
    print(f"$ tp model serve {MODEL} --port {port}   (log: {log_path})")
    with open(log_path, "w") as log:
        server = subprocess.Popen([TP, "model", "serve", MODEL, "--port", str(port)], env=env, cwd=ROOT,
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise SystemExit(f"the server exited: {log_path.read_text()[-3000:]}")
            try:
                if call(base + "/readyz", None, None)[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(1)
        else:
            raise SystemExit("the server did not become ready in 180 s")
        with np.load(test_file) as archive:
            sample, truth = archive["X"][0].tolist(), str(archive["y"][0])
        body = {"sensor": sample, "key": "device-17"}
        status, answer, ms = call(base + "/predict", body, TOKEN)
        print(f"POST /predict (true activity {truth!r}) -> {status} in {ms:.0f} ms: {json.dumps(answer)[:300]}")
        status, answer, ms = call(base + "/predict", body, TOKEN)
        hits = [line for line in call(base + "/metrics", None, TOKEN)[1].splitlines()
                if line.startswith("tp_cache_lookups_total") and 'result="hit"' in line]
        print(f"the same request again -> {status} in {ms:.1f} ms; cache counter: {', '.join(hits)}")
        status, answer, _ = call(base + "/predict", {"sensor": [[1.0, 2.0]]}, TOKEN)
        print(f"a sample with 2 channels instead of 6 -> {status}: {answer}")
        status, _, _ = call(base + "/predict", body, None)
        print(f"no bearer token -> {status}")
        # The A/B phase pins its two versions; ending it early and promoting v2 by hand is
        # what an operator does when the candidate is clearly better.
        run([TP, "model", "experiment", "clear", MODEL], env)
        run([TP, "model", "promote", MODEL, "2"], env)
        time.sleep(3)  # the service polls the registry's aliases every 2 s; no restart
        status, answer, ms = call(base + "/predict", body, TOKEN)
        print(f"POST /predict after the promotion -> {status}: {json.dumps(answer)[:300]}")
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
        print("server stopped")


def main() -> int:
    started = time.monotonic()
    # A demo starts from a clean slate: its own TP_HOME content and Airflow metadata. The
    # settings are read again afterwards: airflow-env.sh keeps a key under AIRFLOW_HOME.
    homes = airflow_env({**os.environ})
    for folder in (homes["TP_HOME"], homes["AIRFLOW_HOME"]):
        shutil.rmtree(folder, ignore_errors=True)
    env = airflow_env({**os.environ, "AIRFLOW_HOME": homes["AIRFLOW_HOME"], "TP_HOME": homes["TP_HOME"]})
    env["TP_API_TOKENS"] = f"demo-client:predict+feedback={TOKEN}"
    os.environ.update(env)

    step("1. Validate and compile the pipelines in the dags folder")
    files = sorted(str(p) for p in (ROOT / "dags" / "pipelines").glob("*.y*ml"))
    run([TP, "pipeline", "validate", *files], env)
    print(f"{len(files)} pipeline files are valid")
    run([TP, "pipeline", "compile", str(ROOT / "dags" / "pipelines" / "sensor-continual-learning.yaml")], env)
    run([AIRFLOW, "db", "migrate"], env, show=False)
    print(f"Airflow metadata database ready under {env['AIRFLOW_HOME']}")
    with ApiServer(env, Path(env["AIRFLOW_HOME"]) / "demo-api-server.log") as api:
        work = pipeline_runs(env, api)
    print("API server stopped")

    step("7. The inference endpoint (BentoML): production v1 with v2 in an A/B phase, then v2 promoted")
    serve_and_call(env, work / "test.npz")

    step("8. The registry remembers every step")
    run([TP, "model", "list", MODEL], env)
    run([TP, "model", "history", MODEL], env)
    shutil.rmtree(work, ignore_errors=True)
    passwords = Path(env["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json.generated"
    print(f"\ndemo finished in {time.monotonic() - started:.0f} s. Run `make airflow` to see the DAGs, "
          f"their runs and their task logs in the Airflow UI (user admin, password in {passwords}).")
    return 0


def pipeline_runs(env: dict[str, str], api: ApiServer) -> Path:
    """Steps 2 to 6, the runs through Airflow; returns the folder of the test recordings."""
    step("2. The example command pipeline through Airflow, with samples=300 given at trigger time")
    run_dag("example-command-pipeline", {"samples": 300}, api, ("generated ", "smoothed ", "summary: "))

    step("3. A versioned dataset of sensor recordings with the first two activities")
    work = Path(tempfile.mkdtemp(prefix="tp-demo-"))
    batch1, batch2, test1, test2, _ = write_batches(work)
    run([TP, "dataset", "import", "sensors", "--from", str(batch1), "--as", "platform-team",
         "-m", "initial labelled recordings"], env)
    run([TP, "dataset", "grant", "sensors", "alice", "writer", "--as", "platform-team"], env)
    run([TP, "dataset", "import", "sensors_test", "--from", str(test1), "--as", "platform-team",
         "-m", "held-out recordings of the first two activities"], env)

    needles = ("running: ", "epoch ", '{"accuracy"', '"action"', "built Bento", "base model", "evaluation gate")
    conf = {"epochs": 20, "test_data": "tp://sensors_test@main", "model_name": MODEL}
    step("4. sensor-continual-learning, first run: initial training -> evaluation -> production -> Bento")
    run_dag("sensor-continual-learning", conf, api, needles)

    step("5. New labels: alice adds two new activities on her own branch; it is merged into main")
    run([TP, "dataset", "branch", "sensors", "user/alice", "--as", "alice"], env)
    run([TP, "dataset", "import", "sensors@user/alice", "--from", str(batch2), "--as", "alice",
         "-m", "recordings of two more activities"], env)
    diff = run([TP, "dataset", "diff", "sensors", "main", "user/alice", "--as", "alice", "--json"], env, show=False)
    changes = json.loads(diff.stdout)
    print(f"diff main..user/alice: {len(changes['added'])} added, {len(changes['changed'])} changed, "
          f"{len(changes['removed'])} removed")
    run([TP, "dataset", "merge", "sensors", "user/alice", "--as", "platform-team"], env)
    run([TP, "dataset", "log", "sensors@main", "--as", "platform-team"], env)
    run([TP, "dataset", "import", "sensors_test", "--from", str(test2), "--as", "platform-team",
         "-m", "held-out recordings of the two new activities"], env)

    step("6. Second run: incremental training from production (replay + EWC + distillation)")
    run_dag("sensor-continual-learning", conf, api, needles)
    return work


if __name__ == "__main__":
    sys.exit(main())
