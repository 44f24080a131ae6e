"""`make demo`: the continual-learning loop closing by itself, through a running Airflow.

Everything runs on the embedded default: Airflow as `airflow standalone` runs it (scheduler,
DAG processor, triggerer and API server, LocalExecutor, SQLite), the platform's catalog and
registry in SQLite, datasets and models in local folders, tasks as local processes. The only
stand-in is object storage: moto's S3 server plays MinIO (no MinIO server can be installed
here), reached through the Airflow connection `aws_default` like a real one. Nobody runs
`airflow dags test`: the scheduler starts every run, on a trigger, a schedule or an asset event.

1. The pipelines in the dags folder are validated; the intake bucket is created.
2. A versioned dataset of sensor recordings (aeon's BasicMotions) holds two labelled
   activities; a second dataset holds held-out recordings of them.
3. Airflow starts; `sensor-continual-learning` is triggered once: initial training ->
   evaluation -> gate -> production v1 -> Bento. The inference endpoint starts serving v1.
4. Two rounds of new data. In each, recordings of a new activity are dropped into the intake
   bucket. The always-running `sensor-intake-review` pipeline picks them up (a deferred task
   that polls the bucket), imports them as unlabelled samples, pre-labels them with the
   production model, checks the pre-labels, samples the ones worth a person's time, and
   waits for review. A scripted reviewer, clearly a simulation, knows the true activities
   and confirms or corrects each sample through the review page's API; an approval in
   Required Actions merges the labels into main. The merge's asset event starts
   `sensor-continual-learning` (incremental: replay + EWC + distillation from production),
   whose gate passes the candidate into an A/B phase. Traffic with confirmed labels goes to
   the endpoint; `daily-deployment` is triggered and promotes the candidate; the endpoint
   then answers with the new version, with no restart.
5. For each round: accuracy on the old and the new activities, forgetting, and the training
   time of the incremental run against a full retrain from scratch on the same data (the
   same training code, `python -m ml.train --mode full`, run right after it). An HTML report
   with plots is written; `report: PATH` is the last line printed.

`KEEP=1 make demo` leaves Airflow and the endpoint running at the end and prints the URL and
the login; `ROUNDS=1 make demo` stops after the first round of new data. Run from the project root with the project's virtualenv (`make demo` does both).
"""

from __future__ import annotations

import json
import os
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from demo_report import write_report  # noqa: E402  (a sibling file of this script)

BIN = Path(sys.executable).parent
AIRFLOW, TP = str(BIN / "airflow"), str(BIN / "tp")
AIRFLOW_ENV = ROOT / "scripts" / "airflow-env.sh"
MODEL = "sensor-classifier"
DATASET, TEST_DATASET = "sensors", "sensors_test"
TRAINING, INTAKE, DEPLOYMENT = "sensor-continual-learning", "sensor-intake-review", "daily-deployment"
TOKEN = "demo-token"
REVIEWER = "reviewer"  # the simulated reviewer's Airflow login (role user) and dataset writer
BUCKET, PREFIX = "tp-intake", "sensors/incoming/"
S3_LOGIN, S3_SECRET = "demo-access-key", "demo-secret-key"
# Requests, each with its confirmed label, per arm of an A/B phase before the deployment step
# judges it: a p95 latency from fewer is the third-slowest request, noise on a busy machine.
PER_ARM = 100


def step(title: str) -> None:
    print(f"\n=== {title}", flush=True)


def say(text: str) -> None:
    print(text, flush=True)


def run(argv: list[str], env: dict[str, str], *, show: bool = True) -> subprocess.CompletedProcess:
    say("$ " + " ".join(argv))
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def call(url: str, body: dict | None, token: str | None, method: str | None = None) -> tuple[int, dict | str, float]:
    request = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None,
                                     method=method,
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {token}"} if token else {})})
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            payload, status = response.read().decode(), response.status
    except urllib.error.HTTPError as exc:
        payload, status = exc.read().decode(), exc.code
    elapsed = (time.perf_counter() - started) * 1000
    try:
        return status, json.loads(payload), elapsed
    except json.JSONDecodeError:
        return status, payload, elapsed


def wait_for(what: str, probe, timeout: float, every: float = 2.0, alive=None):
    """``probe()``'s first truthy answer, polled every ``every`` s; fails after ``timeout`` s,
    or at once when ``alive()`` says a process it depends on has died."""
    deadline = time.monotonic() + timeout
    while True:
        answer = probe()
        if answer:
            return answer
        if alive is not None:
            alive()
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


class Service:
    """A background process in its own process group, with its output in a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path):
        self.name, self.argv, self.env, self.log_path = name, argv, env, log_path
        self.process: subprocess.Popen | None = None

    def start(self) -> Service:
        say(f"$ {' '.join(self.argv)}   (in the background; log: {self.log_path})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(self.argv, env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        return self

    def alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise SystemExit(f"{self.name} exited ({self.process.returncode}): {self.log_path.read_text()[-3000:]}")

    def stop(self, first_signal: int = signal.SIGTERM) -> None:
        """``first_signal`` to the process (its own handlers stop its children), then the
        whole group is killed if it has not ended within 60 s."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(first_signal)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=30)


class Airflow(Service):
    """`airflow standalone` on a free loopback port, and its REST API as the demo's users."""

    def __init__(self, env: dict[str, str], log_path: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**env, "AIRFLOW__API__PORT": str(self.port), "AIRFLOW__API__BASE_URL": self.url,
               "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
               "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"admin:admin,{REVIEWER}:user",
               "PATH": f"{BIN}:{env.get('PATH', '')}", "PYTHONUNBUFFERED": "1"}
        # The scheduler's and the triggerer's log servers (8793 and 8794 by default) on free
        # ports, so that the demo runs beside a `make airflow` of the same machine.
        for setting in ("AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT", "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"):
            env[setting] = env.get(setting) or str(free_port())
        super().__init__("airflow standalone", [AIRFLOW, "standalone"], env, log_path)
        self.passwords_file = Path(env["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json.generated"
        self._tokens: dict[str, str] = {}

    def start(self) -> Airflow:
        super().start()

        def healthy() -> bool:
            try:
                return call(self.url + "/api/v2/monitor/health", None, None)[0] == 200
            except OSError:
                return False

        wait_for("the Airflow API server", healthy, 300, alive=self.alive)
        return self

    def stop(self, first_signal: int = signal.SIGINT) -> None:
        super().stop(first_signal)  # standalone stops its components on SIGINT

    def password(self, user: str) -> str:
        return json.loads(self.passwords_file.read_text())[user]

    def api(self, method: str, path: str, body: dict | None = None, user: str = "admin",
            ok: tuple[int, ...] = (200,)) -> dict:
        if user not in self._tokens:
            status, answer, _ = call(self.url + "/auth/token", {"username": user, "password": self.password(user)}, None)
            if status not in (200, 201) or not isinstance(answer, dict):
                raise SystemExit(f"logging in to Airflow as {user} failed: {status} {answer}")
            self._tokens[user] = answer["access_token"]
        status, answer, _ = call(self.url + path, body, self._tokens[user], method)
        if status not in ok or not isinstance(answer, dict):
            raise SystemExit(f"{method} {path}: {status} {str(answer)[:800]}")
        return answer

    # ----- runs ---------------------------------------------------------------------------
    def runs(self, dag_id: str) -> list[dict]:
        return self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns?order_by=-run_after&limit=20")["dag_runs"]

    def trigger(self, dag_id: str, conf: dict) -> str:
        run_id = self.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf})["dag_run_id"]
        say(f"POST /api/v2/dags/{dag_id}/dagRuns conf={json.dumps(conf)} -> run {run_id}")
        return run_id

    def unpause(self, dag_id: str) -> None:
        self.api("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
        say(f"PATCH /api/v2/dags/{dag_id} is_paused=false")

    def run_state(self, dag_id: str, run_id: str) -> dict:
        return self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        return self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}"
                               "/taskInstances")["task_instances"]

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 900) -> dict:
        """Waits for the run to end, printing each task as it finishes; fails unless it succeeded."""
        seen: set[str] = set()

        def ended() -> dict | None:
            for ti in sorted(self.task_instances(dag_id, run_id), key=lambda t: t.get("end_date") or ""):
                if ti["state"] in ("success", "failed", "skipped", "upstream_failed") and ti["task_id"] not in seen:
                    seen.add(ti["task_id"])
                    took = f" in {ti['duration']:.0f} s" if ti.get("duration") else ""
                    say(f"  {dag_id}.{ti['task_id']}: {ti['state']}{took}")
            state = self.run_state(dag_id, run_id)
            return state if state["state"] in ("success", "failed") else None

        state = wait_for(f"run {run_id} of {dag_id}", ended, timeout, every=3, alive=self.alive)
        if state["state"] != "success":
            failed = [ti["task_id"] for ti in self.task_instances(dag_id, run_id) if ti["state"] == "failed"]
            raise SystemExit(f"run {run_id} of {dag_id} ended {state['state']} (failed: {', '.join(failed)}); "
                             f"its task logs are in the UI and under {self.env['AIRFLOW_HOME']}/logs")
        return state

    def task_logs_in_ui(self, dag_id: str, run_id: str) -> dict[str, int]:
        """Log lines per task of the run's last try, from the endpoint the UI's log view calls."""
        found = {}
        quoted = urllib.parse.quote(run_id, safe="")
        for ti in self.task_instances(dag_id, run_id):
            if ti["try_number"]:
                content = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quoted}/taskInstances/{ti['task_id']}"
                                          f"/logs/{ti['try_number']}")["content"]
                found[ti["task_id"]] = sum(1 for line in content if line.get("timestamp"))
        return found


# ----- data ----------------------------------------------------------------------------------
@dataclass
class Data:
    """BasicMotions (accelerometer + gyroscope, 6 channels, four activities): seven recordings
    of each of the first two are labelled from the start; each round brings, unlabelled, the
    ten recordings of a new activity and three more of a known one."""

    folder: Path
    classes: list[str] = field(default_factory=list)
    truth: dict[str, str] = field(default_factory=dict)  # sample id -> true activity (the reviewer's knowledge)

    def write(self) -> None:
        import numpy as np

        from ml.data import load_ref

        train, test = load_ref("aeon:BasicMotions:train"), load_ref("aeon:BasicMotions:test")
        self.classes = sorted(set(train.labels))

        def save(name: str, data, keep: list[str], *, labels: bool, skip: list[int] = (),
                 extra: list[int] = ()) -> Path:
            index = [i for i, label in enumerate(data.labels) if label in keep and i not in skip] + list(extra)
            ids = [f"{name}-{data.ids[i]}" for i in index]
            arrays = {"X": np.stack([data.series[i] for i in index]), "ids": np.array(ids)}
            if labels:
                arrays["y"] = np.array([data.labels[i] for i in index])
            self.truth.update({sid: data.labels[i] for sid, i in zip(ids, index)})
            np.savez(self.folder / f"{name}.npz", **arrays)
            return self.folder / f"{name}.npz"

        first = self.classes[:2]
        held_back = {c: [i for i, label in enumerate(train.labels) if label == c][-3:] for c in first}
        save("initial", train, first, labels=True, skip=held_back[first[0]] + held_back[first[1]])
        save("test-initial", test, first, labels=True)
        for r, new in enumerate(self.classes[2:], start=1):
            # the new activity, and three more recordings of a known one
            save(f"round{r}", train, [new], labels=False, extra=held_back[first[r - 1]])
            save(f"test-round{r}", test, [new], labels=True)
        save("traffic", test, self.classes, labels=True)

    def new_class(self, round_no: int) -> str:
        return self.classes[1 + round_no]


# ----- the figures of a round ------------------------------------------------------------------
def run_output(env: dict[str, str], claim: str, run_id: str) -> dict:
    """``metrics.json`` that a task of the training pipeline's run ``run_id`` wrote under
    /mnt/user/<claim>/MODEL/RUN_ID, a claim of the chart (`user-results`: the evaluation,
    the candidate's figures and, under ``baseline``, production's on the same data;
    `user-models`: ml.train's own figures). The embedded shape keeps claims under
    TP_HOME/mounts/pvc/."""
    found = list((Path(env["TP_HOME"]) / "mounts").glob(f"*/user-{claim}/{MODEL}/{run_id}/metrics.json"))
    if len(found) != 1:
        raise SystemExit(f"expected one user-{claim} output of run {run_id} under {env['TP_HOME']}/mounts, found {found}")
    return json.loads(found[0].read_text())


def per_class(metrics: dict) -> dict[str, float]:
    return {name: float(c["accuracy"]) for name, c in (metrics.get("per_class") or {}).items()}


def mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def full_retrain(env: dict[str, str], work: Path, round_no: int, epochs: int) -> dict:
    """The same training code from scratch on all confirmed labels of main, then evaluated on
    the same held-out data: what a full retrain would have cost and scored."""
    out = work / f"full-retrain-{round_no}"
    argv = [sys.executable, "-m", "ml.train", "--mode", "full", "--task", "classification",
            "--data", f"tp://{DATASET}@main", "--epochs", str(epochs), "--out", str(out)]
    env = {**env, "TP_USER": "platform-team"}  # as the training task acts: as the pipeline's owner
    started = time.monotonic()
    run(argv, env, show=False)
    seconds = time.monotonic() - started
    run([sys.executable, "-m", "ml.evaluate", "--checkpoint", str(out), "--data", f"tp://{TEST_DATASET}@main",
         "--out", str(out / "eval.json")], env, show=False)
    metrics = json.loads((out / "eval.json").read_text())
    trained = json.loads((out / "metrics.json").read_text())
    return {"seconds": trained["train_seconds_this_process"], "process_seconds": seconds,
            "samples": trained["samples_processed"] + trained.get("forward_only_samples", 0),
            "accuracy": metrics.get("accuracy"), "per_class": per_class(metrics)}


# ----- the simulated reviewer ----------------------------------------------------------------
def simulated_review(airflow: Airflow, branch: str, truth: dict[str, str]) -> dict[str, int]:
    """A scripted reviewer (a simulation of a person): reads the review page's data, accepts
    every pre-label that matches the true activity and corrects the others, then submits."""
    path = f"/train-platform/api/datasets/{DATASET}/review?" + urllib.parse.urlencode({"branch": branch, "limit": 200})
    state = airflow.api("GET", path, user=REVIEWER)
    decisions, counts = [], {"accepted": 0, "corrected": 0}
    for sample in state["samples"]:
        true = truth[sample["sample_id"]]
        if sample["model_label"] == true:
            decisions.append({"sample_id": sample["sample_id"], "action": "accept"})
            counts["accepted"] += 1
        else:
            decisions.append({"sample_id": sample["sample_id"], "action": "correct", "label": true})
            counts["corrected"] += 1
    airflow.api("POST", f"/train-platform/api/datasets/{DATASET}/review", user=REVIEWER, body={
        "branch": branch, "review_snapshot": state["review_snapshot"], "branch_snapshot": state["branch_snapshot"],
        "decisions": decisions})
    say(f"[simulated reviewer] {REVIEWER} on {airflow.url}/train-platform/review?dataset={DATASET}&branch={branch}: "
        f"{counts['accepted']} pre-label(s) accepted, {counts['corrected']} corrected, of {state['total']} sample(s) "
        f"to review")
    return counts


def waiting_review(airflow: Airflow, run_id: str) -> dict:
    """The review step's Required Action once the task has parked in awaiting input."""
    quoted = urllib.parse.quote(run_id, safe="")

    def parked() -> dict | None:
        details = airflow.api("GET", f"/api/v2/dags/{INTAKE}/dagRuns/{quoted}/hitlDetails?response_received=false")
        tasks = airflow.task_instances(INTAKE, run_id)
        review = next((t for t in tasks if t["task_id"] == "review"), None)
        failed = [t["task_id"] for t in tasks if t["state"] in ("failed", "upstream_failed")]
        if failed:
            raise SystemExit(f"run {run_id} of {INTAKE}: task(s) {', '.join(failed)} failed; see their logs in the UI")
        if details["hitl_details"] and review and review["state"] in ("deferred", "awaiting_input"):
            return details["hitl_details"][0]
        return None

    return wait_for(f"the review step of {INTAKE} run {run_id}", parked, 600, every=3, alive=airflow.alive)


# ----- the endpoint ----------------------------------------------------------------------------
class Endpoint(Service):
    def __init__(self, env: dict[str, str], log_path: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__("the inference endpoint", [TP, "model", "serve", MODEL, "--port", str(self.port)], env, log_path)

    def start(self) -> Endpoint:
        super().start()
        wait_for("the inference endpoint", lambda: self._ready(), 240, every=1, alive=self.alive)
        return self

    def _ready(self) -> bool:
        try:
            return call(self.url + "/readyz", None, None)[0] == 200
        except OSError:
            return False

    def predict(self, sample: list, key: str) -> dict:
        status, answer, _ = call(self.url + "/predict", {"sensor": sample, "key": key}, TOKEN)
        if status != 200 or not isinstance(answer, dict):
            raise SystemExit(f"POST /predict -> {status}: {str(answer)[:500]}")
        return answer

    def traffic(self, traffic_file: Path, round_no: int, per_arm: int) -> dict[int, dict[str, int]]:
        """Keyed predictions of held-out recordings, each followed by its confirmed label
        (POST /feedback), until each arm of the A/B split has answered ``per_arm`` of them."""
        import numpy as np

        with np.load(traffic_file) as archive:
            samples, labels = archive["X"], [str(y) for y in archive["y"]]
        arms: dict[int, dict[str, int]] = {}
        rng = np.random.default_rng(round_no)

        def one(i: int) -> tuple[int, bool]:
            key = f"round{round_no}-device-{i}"
            # A held-out recording with a little sensor noise: live readings never repeat
            # exactly, so every answer is the model's, none the cache's.
            sample = samples[i % len(samples)]
            answer = self.predict((sample + rng.normal(0, 0.01, sample.shape)).tolist(), key)
            truth = labels[i % len(samples)]
            status, body, _ = call(self.url + "/feedback", {"key": key, "label": truth}, TOKEN)
            if status != 200:
                raise SystemExit(f"POST /feedback -> {status}: {str(body)[:300]}")
            return int(answer["model_version"]), answer["label"] == truth

        sent = 0
        with ThreadPoolExecutor(max_workers=4) as pool:
            while len(arms) < 2 or min(a["requests"] for a in arms.values()) < per_arm:
                if sent >= 5000:
                    raise SystemExit(f"after {sent} requests an arm still has fewer than {per_arm}: {arms}")
                for version, right in pool.map(one, range(sent, sent + 100)):
                    arm = arms.setdefault(version, {"requests": 0, "correct": 0})
                    arm["requests"] += 1
                    arm["correct"] += int(right)
                sent += 100
        return arms


# ----- the demo --------------------------------------------------------------------------------
def main() -> int:
    started = time.monotonic()
    keep = os.environ.get("KEEP", "") not in ("", "0")
    if os.environ.get("ROUNDS", "2") not in ("1", "2"):
        raise SystemExit(f"ROUNDS={os.environ['ROUNDS']!r}: the demo has one or two rounds of new data (ROUNDS=1 or 2)")
    # A demo starts from a clean slate: its own TP_HOME content and Airflow metadata. The
    # settings are read again afterwards: airflow-env.sh keeps a key under AIRFLOW_HOME.
    homes = airflow_env({**os.environ})
    for folder in (homes["TP_HOME"], homes["AIRFLOW_HOME"]):
        shutil.rmtree(folder, ignore_errors=True)
    env = airflow_env({**os.environ, "AIRFLOW_HOME": homes["AIRFLOW_HOME"], "TP_HOME": homes["TP_HOME"]})
    env["TP_API_TOKENS"] = f"demo-client:predict+feedback={TOKEN}"
    work = Path(tempfile.mkdtemp(prefix="tp-demo-"))
    services: list[Service] = []
    try:
        rounds, airflow, endpoint = demo(env, work, services)
    except BaseException:
        for service in reversed(services):
            service.stop()
        raise
    report = write_report(Path(env["TP_HOME"]) / "demo-report.html", rounds)
    step("Summary")
    for r in rounds:
        say(summary_line(r))
    say(f"\ndemo finished in {time.monotonic() - started:.0f} s")
    if keep:
        say(f"KEEP=1: Airflow is still running at {airflow.url} (user admin, password "
            f"{airflow.password('admin')}; the simulated reviewer is user {REVIEWER}, password "
            f"{airflow.password(REVIEWER)}). The endpoint is at {endpoint.url} (bearer token {TOKEN}). "
            f"Stop them with: kill -INT {airflow.process.pid}; kill " +
            " ".join(str(s.process.pid) for s in services if s is not airflow))
    else:
        for service in reversed(services):
            service.stop()
        say("Airflow and the endpoint stopped. `make airflow` shows these runs and their task logs in the UI "
            f"(user admin, password in {airflow.passwords_file}).")
    shutil.rmtree(work, ignore_errors=True)
    say(f"report: {report}")
    return 0


def summary_line(r: dict) -> str:
    if r["round"] == 0:
        return f"round 0 (initial, v{r['version']}): accuracy {r['accuracy']:.3f} on {', '.join(r['classes'])}"
    return (f"round {r['round']} (v{r['version']}, new activity {r['new_class']!r}): accuracy on old activities "
            f"{r['old_before']:.3f} -> {r['old_after']:.3f} (forgetting {r['forgetting']:+.3f}), on the new one "
            f"{r['new_after']:.3f}; training {r['incremental_seconds']:.1f} s incremental vs "
            f"{r['full_seconds']:.1f} s full retrain (accuracy {r['full_accuracy']:.3f})")


def demo(env: dict[str, str], work: Path, services: list[Service]) -> tuple[list[dict], Airflow, Endpoint]:
    home = Path(env["TP_HOME"])
    step("1. The pipelines in the dags folder; object storage (moto's S3 server standing in for MinIO)")
    files = sorted(str(p) for p in (ROOT / "dags" / "pipelines").glob("*.y*ml"))
    run([TP, "pipeline", "validate", *files], env)
    s3_port = free_port()
    s3 = Service("moto's S3 server", [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(s3_port)], env,
                 home / "demo-s3.log").start()
    services.append(s3)
    s3_url = f"http://127.0.0.1:{s3_port}"
    wait_for("the S3 endpoint", lambda: _answers(s3_url), 60, every=0.5, alive=s3.alive)
    s3_env = {**env, "TP_S3_ENDPOINT": s3_url, "AWS_ACCESS_KEY_ID": S3_LOGIN, "AWS_SECRET_ACCESS_KEY": S3_SECRET}
    run([TP, "storage", "init"], s3_env)
    # The intake task reaches the bucket through this Airflow connection, as it would MinIO.
    env["AIRFLOW_CONN_AWS_DEFAULT"] = json.dumps({"conn_type": "aws", "login": S3_LOGIN, "password": S3_SECRET,
                                                  "extra": {"endpoint_url": s3_url, "region_name": "us-east-1"}})
    say(f"Airflow connection aws_default -> {s3_url} (set as AIRFLOW_CONN_AWS_DEFAULT)")

    step("2. A versioned dataset with two labelled activities, and held-out recordings of them")
    data = Data(work)
    data.write()
    say(f"activities {data.classes[:2]} labelled now; {data.classes[2:]} arrive later, one per round, unlabelled")
    run([TP, "dataset", "import", DATASET, "--from", str(work / "initial.npz"), "--as", "platform-team",
         "-m", "initial labelled recordings"], env)
    run([TP, "dataset", "grant", DATASET, REVIEWER, "writer", "--as", "platform-team"], env)
    run([TP, "dataset", "import", TEST_DATASET, "--from", str(work / "test-initial.npz"), "--as", "platform-team",
         "-m", "held-out recordings of the first two activities"], env)

    step("3. Airflow (airflow standalone: scheduler, DAG processor, triggerer, API server); round 0 trains v1")
    airflow = Airflow(env, home / "demo-airflow.log").start()
    services.append(airflow)
    say(f"Airflow UI: {airflow.url} (user admin, password in {airflow.passwords_file})")
    wait_for("the DAG processor to parse the pipelines",
             lambda: all(_dag_known(airflow, d) for d in (TRAINING, INTAKE, DEPLOYMENT)), 300, alive=airflow.alive)
    airflow.unpause(TRAINING)
    run_id = airflow.trigger(TRAINING, {})
    airflow.wait_run(TRAINING, run_id)
    check_logs(airflow, TRAINING, run_id)
    v1 = run_output(env, "results", run_id)
    rounds = [{"round": 0, "version": 1, "classes": data.classes[:2], "accuracy": v1["accuracy"],
               "per_class": per_class(v1)}]
    say(f"v1: accuracy {v1['accuracy']:.3f} on held-out {data.classes[:2]}")
    endpoint = Endpoint(env, home / "demo-serve.log").start()
    services.append(endpoint)
    sample, sample_id = _first_sample(work)
    answer = endpoint.predict(sample, "device-17")
    truth = data.truth[sample_id]
    say(f"endpoint {endpoint.url}: POST /predict (true activity {truth!r}) -> {answer['label']!r} "
        f"from v{answer['model_version']}")
    airflow.unpause(DEPLOYMENT)
    airflow.unpause(INTAKE)
    say(f"{INTAKE} runs continuously: its intake task waits (deferred) for recordings under s3://{BUCKET}/{PREFIX}")

    for round_no in range(1, int(env.get("ROUNDS") or 2) + 1):
        rounds.append(one_round(round_no, env, s3_env, work, data, airflow, endpoint))
    return rounds, airflow, endpoint


def one_round(round_no: int, env: dict[str, str], s3_env: dict[str, str], work: Path, data: Data,
              airflow: Airflow, endpoint: Endpoint) -> dict:
    new = data.new_class(round_no)
    step(f"Round {round_no}: recordings of a new activity, {new!r}, arrive")
    run([TP, "dataset", "import", TEST_DATASET, "--from", str(work / f"test-round{round_no}.npz"),
         "--as", "platform-team", "-m", f"held-out recordings of {new}"], env)
    intake_runs_before = {r["dag_run_id"] for r in airflow.runs(INTAKE) if r["state"] == "success"}
    training_runs_before = {r["dag_run_id"] for r in airflow.runs(TRAINING)}
    upload(s3_env, work / f"round{round_no}.npz", f"{PREFIX}round{round_no}.npz")
    intake_run = wait_for(f"a running {INTAKE} run", lambda: next(
        (r["dag_run_id"] for r in airflow.runs(INTAKE) if r["state"] == "running"
         and r["dag_run_id"] not in intake_runs_before), None), 120, alive=airflow.alive)
    detail = waiting_review(airflow, intake_run)
    branch = detail["subject"].split("@", 1)[1]
    say(f"Required Action: {detail['subject']!r}")
    counts = simulated_review(airflow, branch, data.truth)
    quoted = urllib.parse.quote(intake_run, safe="")
    airflow.api("PATCH", f"/api/v2/dags/{INTAKE}/dagRuns/{quoted}/taskInstances/review/-1/hitlDetails",
                {"chosen_options": ["Approve"]})
    say("Required Action answered by admin: Approve")
    airflow.wait_run(INTAKE, intake_run)
    check_logs(airflow, INTAKE, intake_run)
    training_run = wait_for(f"the asset event to start {TRAINING}", lambda: next(
        (r for r in airflow.runs(TRAINING) if r["dag_run_id"] not in training_runs_before), None), 180,
        alive=airflow.alive)
    say(f"{TRAINING} run {training_run['dag_run_id']} started by {training_run['run_type']} "
        f"(no trigger, no button)")
    airflow.wait_run(TRAINING, training_run["dag_run_id"])
    check_logs(airflow, TRAINING, training_run["dag_run_id"])
    version = round_no + 1
    figures = run_output(env, "results", training_run["dag_run_id"])
    train_ti = next(t for t in airflow.task_instances(TRAINING, training_run["dag_run_id"]) if t["task_id"] == "train")
    trained = run_output(env, "models", training_run["dag_run_id"])
    say(f"full retrain for comparison: the same training code from scratch on the same data")
    full = full_retrain(env, work, round_no, epochs=30)

    # The A/B phase: traffic with confirmed labels, then the deployment step decides.
    arms = endpoint.traffic(work / "traffic.npz", round_no, per_arm=PER_ARM)
    say("A/B traffic with confirmed labels: " + ", ".join(
        f"v{v} answered {a['requests']} ({a['correct'] / a['requests']:.0%} right)" for v, a in sorted(arms.items())))
    wait_for("the endpoint's live figures of both arms in the registry", lambda: flushed(env, PER_ARM), 60,
             alive=endpoint.alive)
    # The policy's own defaults want 300 requests per arm and a p95 within 1.25x production's;
    # the demo's short A/B phase on a 2-core machine that also runs Airflow gets 100 per arm and
    # 1.5x (a busy machine's p95 over 100 requests is noisy).
    deploy_run = airflow.trigger(DEPLOYMENT, {"min_requests": PER_ARM, "min_labelled": PER_ARM,
                                              "max_latency_ratio": 1.5})
    airflow.wait_run(DEPLOYMENT, deploy_run)
    answer = wait_for(f"the endpoint to answer with v{version}", lambda: (
        lambda a: a if int(a["model_version"]) == version else None)(endpoint.predict(
            _first_sample(work)[0], f"round{round_no}-after")), 60, alive=endpoint.alive)
    say(f"endpoint now answers from v{answer['model_version']} (production), no restart")

    cand, prod = per_class(figures), per_class(figures.get("baseline") or {})
    old = data.classes[:1 + round_no]
    result = {
        "round": round_no, "version": version, "new_class": new, "old_classes": old,
        "reviewed": counts, "intake_run": intake_run, "training_run": training_run["dag_run_id"],
        "run_type": training_run["run_type"], "accuracy": figures["accuracy"],
        "production_accuracy": (figures.get("baseline") or {}).get("accuracy"),
        "old_before": mean([prod[c] for c in old if c in prod]) or 0.0,
        "old_after": mean([cand[c] for c in old if c in cand]) or 0.0,
        "new_after": cand.get(new, 0.0), "per_class": cand, "production_per_class": prod,
        "incremental_seconds": trained["train_seconds_this_process"], "incremental_task_seconds": train_ti["duration"],
        "incremental_samples": trained["samples_processed"] + trained.get("forward_only_samples", 0),
        "full_seconds": full["seconds"], "full_process_seconds": full["process_seconds"],
        "full_samples": full["samples"],
        "full_accuracy": full["accuracy"], "full_per_class": full["per_class"],
        "arms": {str(k): v for k, v in arms.items()},
    }
    result["forgetting"] = result["old_before"] - result["old_after"]
    say(summary_line(result))
    return result


def flushed(env: dict[str, str], per_arm: int) -> bool:
    """Whether the registry holds ``per_arm`` requests of each arm of the running A/B phase
    (the endpoint's workers flush their figures every few seconds)."""
    from train_platform.registry import ModelRegistry
    from train_platform.settings import Settings

    registry = ModelRegistry(Settings.from_env(env))
    experiment = registry.active_experiment(MODEL)
    if experiment is None:
        raise SystemExit(f"{MODEL} has no A/B phase running: the training run's deploy task did not start one")
    return all(registry.live_stats(MODEL, v, since=experiment.started_at).requests >= per_arm
               for v in (experiment.candidate_version, experiment.control_version))


def _first_sample(work: Path) -> tuple[list, str]:
    """The first held-out recording the endpoint is called with, and its sample id."""
    import numpy as np

    with np.load(work / "traffic.npz") as archive:
        return archive["X"][0].tolist(), str(archive["ids"][0])


def upload(s3_env: dict[str, str], path: Path, key: str) -> None:
    from minio import Minio

    url = urllib.parse.urlparse(s3_env["TP_S3_ENDPOINT"])
    client = Minio(url.netloc, access_key=S3_LOGIN, secret_key=S3_SECRET, secure=False)
    client.fput_object(BUCKET, key, str(path))
    say(f"new recordings uploaded: s3://{BUCKET}/{key} ({path.stat().st_size} bytes, no labels)")


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2).close()
        return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def _dag_known(airflow: Airflow, dag_id: str) -> bool:
    """Whether the DAG processor has parsed ``dag_id`` (the REST API knows it)."""
    return airflow.api("GET", f"/api/v2/dags/{dag_id}", ok=(200, 404)).get("dag_id") == dag_id


def check_logs(airflow: Airflow, dag_id: str, run_id: str) -> None:
    """Every task that ran has its log where the UI's log view reads it."""
    found = airflow.task_logs_in_ui(dag_id, run_id)
    missing = sorted(task for task, lines in found.items() if not lines)
    if missing:
        raise SystemExit(f"the UI has no log for task(s) {', '.join(missing)} of {dag_id} run {run_id}")
    say(f"  task logs in the UI: " + ", ".join(f"{t} ({n} lines)" for t, n in sorted(found.items())))


if __name__ == "__main__":
    sys.exit(main())
