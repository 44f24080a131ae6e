"""`make demo`: the platform's main job end to end on the embedded default.

SQLite for Airflow, the catalog and the registry; local folders; local processes. Every step
says what it did:

1. validate and compile the pipelines in the dags folder;
2. run the example command pipeline through Airflow (outputs feed inputs, a trigger param);
3. create a versioned dataset of sensor recordings (aeon's BasicMotions) holding the first
   two activities;
4. run `sensor-continual-learning` through Airflow: train from scratch, evaluate, register
   and deploy version 1 to production, package it as a Bento;
5. a labeller adds two new activities on her own branch, which is merged into main;
6. run the pipeline again: incremental training from production (replay + EWC + LwF),
   evaluation, version 2 starts an A/B phase against version 1, packaging;
7. start the inference endpoint and call it: a prediction, a cache hit, a refused input;
8. show the registry's history.

Run from the project root with the project's virtualenv (`make demo` does both).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
AIRFLOW, TP = str(BIN / "airflow"), str(BIN / "tp")
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


def run_dag(dag_id: str, conf: dict, env: dict[str, str], needles: tuple[str, ...]) -> str:
    """`airflow dags test`: one real DAG run, in-process scheduler, SQLite metadata DB."""
    print("$ airflow dags test " + dag_id + " -c '" + json.dumps(conf) + "'", flush=True)
    result = subprocess.run([AIRFLOW, "dags", "test", dag_id, "-c", json.dumps(conf)], env=env, cwd=ROOT,
                            text=True, capture_output=True)
    log = result.stdout + result.stderr
    for line in log.splitlines():
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
    print(f"  run of {dag_id}: success")
    return log


def write_batches(folder: Path) -> tuple[Path, Path, Path]:
    """BasicMotions (accelerometer + gyroscope, 6 channels): the first two activities are the
    initial data, the other two arrive later as new labels."""
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
    env = {**os.environ}
    env.setdefault("AIRFLOW_HOME", str(ROOT / ".airflow"))
    env.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(ROOT / "dags"))
    env.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    env.setdefault("TP_HOME", str(ROOT / ".tp_home"))
    env["TP_API_TOKENS"] = TOKEN
    started = time.monotonic()
    # A demo starts from a clean slate: its own TP_HOME content and Airflow metadata.
    for folder in (env["TP_HOME"], env["AIRFLOW_HOME"]):
        shutil.rmtree(folder, ignore_errors=True)
    os.environ.update(env)

    step("1. Validate and compile the pipelines in the dags folder")
    files = sorted(str(p) for p in (ROOT / "dags" / "pipelines").glob("*.y*ml"))
    run([TP, "pipeline", "validate", *files], env)
    print(f"{len(files)} pipeline files are valid")
    run([TP, "pipeline", "compile", str(ROOT / "dags" / "pipelines" / "sensor-continual-learning.yaml")], env)
    run([AIRFLOW, "db", "migrate"], env, show=False)
    print(f"Airflow metadata database ready under {env['AIRFLOW_HOME']}")

    step("2. The example command pipeline through Airflow, with samples=300 given at trigger time")
    run_dag("example-command-pipeline", {"samples": 300}, env, ("generated ", "smoothed ", "summary: "))

    step("3. A versioned dataset of sensor recordings with the first two activities")
    work = Path(tempfile.mkdtemp(prefix="tp-demo-"))
    batch1, batch2, test = write_batches(work)
    run([TP, "dataset", "import", "sensors", "--from", str(batch1), "--as", "platform-team",
         "-m", "initial labelled recordings"], env)
    run([TP, "dataset", "grant", "sensors", "alice", "writer", "--as", "platform-team"], env)
    run([TP, "dataset", "import", "sensors_test", "--from", str(test), "--as", "platform-team",
         "-m", "held-out recordings of all four activities"], env)

    needles = ("running: ", "epoch ", '{"accuracy"', '"action"', "built Bento", "base model")
    conf = {"epochs": 20, "test_data": "tp://sensors_test@main", "model_name": MODEL}
    step("4. sensor-continual-learning, first run: initial training -> evaluation -> production -> Bento")
    run_dag("sensor-continual-learning", conf, env, needles)

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

    step("6. Second run: incremental training from production (replay + EWC + distillation)")
    run_dag("sensor-continual-learning", conf, env, needles)

    step("7. The inference endpoint (BentoML): production v1 with v2 in an A/B phase, then v2 promoted")
    serve_and_call(env, test)

    step("8. The registry remembers every step")
    run([TP, "model", "list", MODEL], env)
    run([TP, "model", "history", MODEL], env)
    shutil.rmtree(work, ignore_errors=True)
    print(f"\ndemo finished in {time.monotonic() - started:.0f} s. Run `make airflow` to see the DAGs "
          "and their runs in the Airflow UI.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
