"""A real ``airflow api-server`` for the review page's tests: its own AIRFLOW_HOME (SQLite)
and TP_HOME, this project's plugins folder, SimpleAuthManager users from
``AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS`` with their passwords in a passwords file, on a
free loopback port. Stopped (its whole process group) when the test session ends."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# Airflow roles of SimpleAuthManager; the dataset roles are granted per dataset by the tests.
USERS = {"alice": "admin", "bob": "user", "carol": "viewer"}
_SCALE_SETTINGS = ("TP_CATALOG_URL", "TP_WAREHOUSE", "TP_S3_ENDPOINT", "TP_REDIS_URL", "TP_DATABASE_URL")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class AirflowServer:
    root: Path
    env: dict[str, str] = field(default_factory=dict)
    # Settings of this server on top of the embedded defaults (an s3:// warehouse, say).
    extra_env: dict[str, str] = field(default_factory=dict)
    passwords: dict[str, str] = field(default_factory=dict)
    url: str = ""
    process: subprocess.Popen | None = None
    _tokens: dict[str, str] = field(default_factory=dict)

    def start(self, timeout: float = 240.0) -> "AirflowServer":
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        dags = self.root / "dags"
        dags.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / "dags" / "train_platform_pipelines.py", dags)
        self.passwords = {user: secrets.token_urlsafe(12) for user in USERS}
        password_file = self.root / "passwords.json"
        password_file.write_text(json.dumps(self.passwords))
        env = {k: v for k, v in os.environ.items() if k not in _SCALE_SETTINGS and not k.startswith("AIRFLOW__")}
        env.update({
            "AIRFLOW_HOME": str(self.root / "airflow"), "TP_HOME": str(self.root / "tp"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags), "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CORE__PARALLELISM": "2",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{r}" for u, r in USERS.items()),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(password_file),
            "AIRFLOW__API__HOST": "127.0.0.1", "AIRFLOW__API__PORT": str(port), "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
        })
        env.update(self.extra_env)
        self.env = env
        subprocess.run([str(BIN / "airflow"), "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
        log = open(self.root / "api-server.log", "w")
        self.process = subprocess.Popen([str(BIN / "airflow"), "api-server"], env=env, cwd=self.root, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the API server exited: {self.log()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/api/v2/monitor/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(1)
        self.stop()
        raise RuntimeError(f"the API server did not answer in {timeout:.0f} s: {self.log()[-3000:]}")

    def log(self) -> str:
        path = self.root / "api-server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    @property
    def settings(self):
        """The platform settings the server's process reads (its TP_HOME)."""
        from train_platform.settings import Settings

        return Settings.from_env({**self.env})

    def token(self, user: str) -> str:
        """A JWT for ``user`` from Airflow's own login endpoint."""
        if user not in self._tokens:
            answer = httpx.post(f"{self.url}/auth/token", json={"username": user, "password": self.passwords[user]},
                                timeout=30)
            answer.raise_for_status()
            self._tokens[user] = answer.json()["access_token"]
        return self._tokens[user]

    def client(self, user: str | None) -> httpx.Client:
        """An HTTP client that authenticates as ``user`` with a bearer token (none: anonymous)."""
        headers = {"Authorization": f"Bearer {self.token(user)}"} if user else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, follow_redirects=False)
