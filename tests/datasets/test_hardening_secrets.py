"""No password, key or token reaches a message, a log line or tp's output: real failing
connections (Redis with a password on a closed port, PostgreSQL refusing the user, an S3
endpoint that is down) through the real ``tp`` command at DEBUG level."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from train_platform.settings import RedactingFormatter, Settings, redact

TP = Path(sys.executable).with_name("tp")
PASSWORD = "Hunter2-pw-0f9c1e"
ACCESS_KEY = "AKIAHARDENINGTEST01"
TOKEN = "tok-7d1b9a4e5c"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tp(*args: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("TP_CATALOG", "TP_REDIS", "TP_WAREHOUSE", "TP_S3", "TP_DATABASE"))}
    return subprocess.run([str(TP), "-v", *args], capture_output=True, text=True, env={**full, **env}, timeout=timeout)


def _assert_no_secret(done: subprocess.CompletedProcess, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in done.stdout and secret not in done.stderr, done.stderr[-3000:]


@pytest.fixture
def dataset_with_branch(tp_home, ds_name):
    from train_platform.datasets import create_dataset

    dataset = create_dataset(ds_name, user="alice")
    dataset.branch("fix")
    return dataset


@pytest.mark.parametrize("userinfo", [f":{PASSWORD}", f"tp:{PASSWORD}"])
def test_redis_url_password_is_not_in_the_lock_error(dataset_with_branch, tp_home, userinfo):
    url = f"redis://{userinfo}@127.0.0.1:{_closed_port()}/0"
    done = _tp("dataset", "merge", dataset_with_branch.name, "fix", "--as", "alice",
               env={"TP_HOME": str(tp_home), "TP_REDIS_URL": url})
    assert done.returncode == 4, done.stderr
    assert "Redis at redis://" in done.stderr and ":***@127.0.0.1" in done.stderr  # still says which server
    _assert_no_secret(done, PASSWORD)


@pytest.mark.services
@pytest.mark.parametrize("where", ["TP_CATALOG_URL", "TP_DATABASE_URL"])
@pytest.mark.parametrize("failure", ["unknown role", "closed port"])
def test_postgresql_url_password_is_not_in_the_error(postgres_url, tp_home, where, failure):
    from sqlalchemy.engine import make_url

    real = make_url(postgres_url)
    port = real.port if failure == "unknown role" else _closed_port()
    url = real.set(username="tp_no_such_role", password=PASSWORD, port=port).render_as_string(hide_password=False)
    assert PASSWORD in url
    command = ("dataset", "list") if where == "TP_CATALOG_URL" else ("model", "list", "anything")
    done = _tp(*command, env={"TP_HOME": str(tp_home), where: url})
    assert done.returncode != 0
    assert ("tp_no_such_role" in done.stderr) if failure == "unknown role" else ("connect" in done.stderr.lower())
    _assert_no_secret(done, PASSWORD)


@pytest.mark.slow
def test_s3_keys_are_not_in_the_error(tp_home, ds_name):
    env = {"TP_HOME": str(tp_home), "TP_WAREHOUSE": f"s3://tp-nowhere/{ds_name}",
           "TP_S3_ENDPOINT": f"http://127.0.0.1:{_closed_port()}", "AWS_ACCESS_KEY_ID": ACCESS_KEY,
           "AWS_SECRET_ACCESS_KEY": PASSWORD, "AWS_REGION": "us-east-1"}
    done = _tp("dataset", "import", ds_name, "--from", "aeon:GunPoint:train", "--as", "alice", env=env)
    assert done.returncode != 0
    _assert_no_secret(done, PASSWORD)


def test_settings_repr_and_log_lines_hide_secrets(tmp_path, monkeypatch):
    env = {"TP_HOME": str(tmp_path), "TP_REDIS_URL": f"redis://:{PASSWORD}@redis:6379/0",
           "TP_CATALOG_URL": f"postgresql+psycopg2://tp:{PASSWORD}@db/catalog",
           "TP_API_TOKENS": f"ci:predict={TOKEN}", "AWS_SECRET_ACCESS_KEY": "aws-secret-value-1"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env(env)
    shown = repr(settings)
    assert PASSWORD not in shown and TOKEN not in shown
    assert "redis://:***@redis:6379/0" in shown and "postgresql+psycopg2://tp:***@db/catalog" in shown
    # A log line carrying any of them, with its traceback, through the formatter tp uses.
    formatter = RedactingFormatter("%(message)s")
    try:
        raise RuntimeError(f"cannot reach {settings.redis_url} with {settings.api_tokens[0]}")
    except RuntimeError:
        record = logging.LogRecord("t", logging.ERROR, __file__, 1, "failed: %s key=%s", (settings.catalog_url, "aws-secret-value-1"), sys.exc_info())
    line = formatter.format(record)
    for secret in (PASSWORD, TOKEN, "aws-secret-value-1"):
        assert secret not in line
    assert "RuntimeError: cannot reach redis://:***@redis:6379/0 with ***" in line
    # Password-less URLs and ordinary text are left alone.
    assert redact("sqlite:///srv/tp/catalog.db and redis://redis:6379/0", env={}) == "sqlite:///srv/tp/catalog.db and redis://redis:6379/0"
