"""`make airflow` as the README gives it, from a plain shell (no .venv/bin on PATH): the UI comes
up, says where it is and where the login is, runs a pipeline with the embedded shape's
settings of scripts/airflow-env.sh, and Ctrl-C leaves nothing running.

AIRFLOW_HOME and TP_HOME are temporary (the Makefile takes them from the environment), and the
port and the log servers' ports are free ones, so a developer's own `make airflow` is untouched."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV_SCRIPT = ROOT / "scripts" / "airflow-env.sh"
PLAIN_PATH = "/usr/local/bin:/usr/bin:/bin"
CPUS = len(os.sched_getaffinity(0))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def plain_env(**extra: str) -> dict[str, str]:
    """A user's plain shell: this environment without the virtualenv on PATH and without the
    Airflow, platform and Python settings the test session made; then ``extra``."""
    session_own = ("AIRFLOW", "TP_", "VIRTUAL_ENV", "PYTHON", "PYTEST")
    env = {k: v for k, v in os.environ.items() if not k.startswith(session_own)}
    return {**env, "PATH": PLAIN_PATH, **extra}


def sourced(**env: str) -> dict[str, str]:
    """The variables scripts/airflow-env.sh leaves in a clean bash, given ``env``."""
    out = subprocess.run(["bash", "-c", f'source "{ENV_SCRIPT}" && env -0'], env=plain_env(**env),
                         capture_output=True, check=True).stdout.decode()
    return dict(item.split("=", 1) for item in out.split("\0") if "=" in item)


def readme_commands() -> list[str]:
    """The shell commands of the README's code blocks (comments dropped)."""
    text = (ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", text, flags=re.S):
        commands += [line.split("#", 1)[0].strip() for line in block.splitlines() if line.startswith("make ")]
    return commands


# ---- scripts/airflow-env.sh, sourced by `make airflow` and scripts/demo.py ----

def test_the_settings_fit_the_machine_and_stay_on_loopback(tmp_path):
    env = sourced(AIRFLOW_HOME=str(tmp_path / "airflow"))
    assert env["AIRFLOW__CORE__PARALLELISM"] == str(CPUS)
    assert env["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert env["AIRFLOW__API__BASE_URL"] == "http://127.0.0.1:8080"
    secret = tmp_path / "airflow" / "jwt_secret"
    assert env["AIRFLOW__API_AUTH__JWT_SECRET_CMD"] == f"cat '{secret}'"
    assert secret.stat().st_mode & 0o777 == 0o600
    assert len(secret.read_bytes()) >= 64  # HS512 wants a 64-byte key
    assert "AIRFLOW__API_AUTH__JWT_SECRET" not in env
    # a second start keeps the key (tokens signed before stay valid)
    before = secret.read_bytes()
    sourced(AIRFLOW_HOME=str(tmp_path / "airflow"))
    assert secret.read_bytes() == before


def test_the_environment_wins_and_the_url_follows_host_and_port(tmp_path):
    home = str(tmp_path / "airflow")
    env = sourced(AIRFLOW_HOME=home, AIRFLOW__CORE__PARALLELISM="5", AIRFLOW__API__PORT="18123")
    assert env["AIRFLOW__CORE__PARALLELISM"] == "5"
    assert env["AIRFLOW__API__BASE_URL"] == "http://127.0.0.1:18123"
    assert sourced(AIRFLOW_HOME=home, AIRFLOW__API__HOST="0.0.0.0")["AIRFLOW__API__BASE_URL"] == "http://127.0.0.1:8080"
    assert sourced(AIRFLOW_HOME=home, AIRFLOW__API__HOST="::1")["AIRFLOW__API__BASE_URL"] == "http://[::1]:8080"
    assert "AIRFLOW__API_AUTH__JWT_SECRET_CMD" not in sourced(AIRFLOW_HOME=home, AIRFLOW__API_AUTH__JWT_SECRET="x" * 64)


# ---- `make airflow` itself ----

class Output:
    """The merged stdout/stderr of a process, collected by a thread, also written to a file."""

    def __init__(self, process: subprocess.Popen, path: Path):
        self.lines: list[str] = []
        self.path = path
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen) -> None:
        with open(self.path, "w") as file:
            for line in process.stdout:
                self.lines.append(line.rstrip("\n"))
                file.write(line)
                file.flush()

    def text(self) -> str:
        return "\n".join(self.lines)

    def tail(self, n: int = 60) -> str:
        return "\n".join(self.lines[-n:])


def http(method: str, url: str, body: dict | None = None, token: str | None = None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    request = urllib.request.Request(url, method=method, headers=headers,
                                     data=json.dumps(body).encode() if body is not None else None)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, {"error": exc.read().decode()[:500]}


def session_processes(sid: int) -> dict[int, str]:
    """The live processes of session ``sid`` (zombies, already dead, left out), with their command lines."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) != sid or (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except (ProcessLookupError, PermissionError, FileNotFoundError):
            continue
    return found


def signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def wait_for(what: str, check, timeout: float, process: subprocess.Popen, output: Output, every: float = 2):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if process.poll() is not None:
            pytest.fail(f"make airflow exited ({process.returncode}) before {what}:\n{output.tail()}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} after {timeout:.0f} s:\n{output.tail()}")
        time.sleep(every)


@pytest.mark.slow
def test_make_airflow_serves_the_ui_runs_a_pipeline_and_stops_clean(tmp_path):
    assert "make airflow" in readme_commands()
    assert {c for c in readme_commands() if c.startswith("make airflow")} == {"make airflow"}, \
        "every `make airflow` command of the README is this test's"
    port = free_port()
    home = tmp_path / "airflow"
    env = plain_env(AIRFLOW_HOME=str(home), TP_HOME=str(tmp_path / "tp"), PORT=str(port),
                    AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(free_port()),
                    AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT=str(free_port()))
    assert ".venv" not in env["PATH"]
    url = f"http://127.0.0.1:{port}"
    passwords = home / "simple_auth_manager_passwords.json.generated"
    process = subprocess.Popen(["bash", "-c", "make airflow"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    output = Output(process, tmp_path / "make-airflow.log")
    try:
        # The URL and the login come first (after `make install`, a no-op once installed) ...
        banner = f"make airflow | Airflow UI: {url}"
        login = f"make airflow | login: user admin, password in {passwords}"
        wait_for("URL banner", lambda: banner in output.lines, 600, process, output, every=1)
        assert any(line.startswith(login) for line in output.lines), output.tail()
        started = time.monotonic()

        def healthy():
            try:
                status, health = http("GET", url + "/api/v2/monitor/health")
            except OSError:
                return None
            ok = status == 200 and all(health.get(part, {}).get("status") == "healthy"
                                       for part in ("metadatabase", "scheduler"))
            return health if ok else None

        wait_for("healthy metadatabase and scheduler", healthy, 180, process, output)
        print(f"healthy {time.monotonic() - started:.0f} s after the banner")
        # ... and again once the UI answers, when start-up output has scrolled them away
        wait_for("second banner", lambda: output.lines.count(banner) == 2, 30, process, output, every=1)

        # the login hint is true: that file holds the admin password the API accepts
        status, answer = http("POST", url + "/auth/token",
                              {"username": "admin", "password": json.loads(passwords.read_text())["admin"]})
        assert status == 201 and answer.get("access_token"), (status, answer)
        token = answer["access_token"]

        # one LocalExecutor worker per CPU (Airflow's default is 32)
        workers = [c for c in session_processes(process.pid).values() if c.startswith("airflow worker -- LocalExecutor")]
        assert len(workers) == CPUS, workers

        # tasks reach the execution API on this port (not Airflow's default 8080); their logs are in the UI
        dag = "example-command-pipeline"
        wait_for(f"DAG {dag} parsed", lambda: http("GET", f"{url}/api/v2/dags/{dag}", token=token)[0] == 200,
                 180, process, output)
        assert http("PATCH", f"{url}/api/v2/dags/{dag}", {"is_paused": False}, token)[0] == 200
        status, run = http("POST", f"{url}/api/v2/dags/{dag}/dagRuns", {"logical_date": None, "conf": {"samples": 23}},
                           token)
        assert status == 200, run
        run_url = f"{url}/api/v2/dags/{dag}/dagRuns/{urllib.request.quote(run['dag_run_id'], safe='')}"

        def finished():
            state = http("GET", run_url, token=token)[1].get("state")
            return state if state in ("success", "failed") else None

        triggered = time.monotonic()
        state = wait_for("finished run", finished, 300, process, output)
        print(f"run {state} {time.monotonic() - triggered:.0f} s after the trigger")
        assert state == "success", output.tail(200)
        status, log = http("GET", f"{run_url}/taskInstances/generate/logs/1", token=token)
        assert status == 200 and any("generated 23 readings" in str(line.get("event")) for line in log["content"]), log

        # no warning that only makes sense in production
        text = output.text()
        assert "looks like production" not in text  # SimpleAuthManager on a non-loopback host
        assert "InsecureKeyLengthWarning" not in text  # a JWT key below 64 bytes
    finally:
        # Ctrl-C, as a user stops it: SIGINT to the whole foreground process group
        signal_group(process.pid, signal.SIGINT)
        interrupted = time.monotonic()
        deadline = interrupted + 90
        while session_processes(process.pid) and time.monotonic() < deadline:
            time.sleep(1)
            process.poll()
        left = session_processes(process.pid)
        print(f"{len(left)} processes left {time.monotonic() - interrupted:.0f} s after Ctrl-C")
        if left:
            signal_group(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    assert not left, f"still running 90 s after Ctrl-C: {left}\n{output.tail()}"
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0, "the API server's port is still open"
