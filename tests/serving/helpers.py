"""Helpers the serving tests share: JSON posts, Prometheus series, raw requests, concurrent
requests, and the capture dataset and its intake branch."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.error
import urllib.request
from urllib.parse import urlsplit

import numpy as np

from tests.serving.conftest import TOKEN

# The dataset the capturing server of test_capture.py captures into.
DATASET = "served_intake"


def post(url: str, body, token: str | None = TOKEN, raw: bool = False) -> tuple[int, dict, dict]:
    data = body if raw else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.loads(resp.read()), dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}"), dict(err.headers)


def series(url: str, name: str) -> list[str]:
    """The exposition lines of a Prometheus series, for assertion messages."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
        return [line for line in resp.read().decode().splitlines() if line.startswith(name)]


def metric(url: str, name: str, **labels: str) -> float:
    """Sum of a Prometheus series over every label set containing ``labels``."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def raw_http(url: str, head: bytes, body_parts: list[bytes] = (), timeout: float = 20.0) -> tuple[int, dict]:
    """Sends a request head and body parts over a plain socket and reads the answer; the
    server may answer, and close, before the parts are all sent."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(head)
        try:
            for part in body_parts:
                sock.sendall(part)
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered and closed early: what is being tested
        received = b""
        while b"\r\n\r\n" not in received or len(received) < _expected_length(received):
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    status_line, _, rest = received.partition(b"\r\n")
    _, _, body = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), json.loads(body or b"{}")


def _expected_length(received: bytes) -> int:
    head, sep, _ = received.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(head) + len(sep) + int(value)
    return 0


def request_head(url: str, extra: str) -> bytes:
    host = urlsplit(url).netloc
    return (f"POST /predict HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: application/json\r\n{extra}\r\n").encode()


async def _concurrent(url: str, bodies: list[dict], concurrency: int, fresh_connections: bool = False,
                      token: str = TOKEN):
    """Posts every body, ``concurrency`` at a time; a new connection per request with
    ``fresh_connections`` (so the kernel spreads them over the worker processes)."""
    import aiohttp

    sem = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(force_close=fresh_connections, limit=concurrency)
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}, connector=connector) as session:
        async def one(body: dict) -> tuple[int, dict]:
            async with sem, session.post(url, json=body) as resp:
                return resp.status, await resp.json(content_type=None)

        return await asyncio.gather(*(one(b) for b in bodies))


def concurrent(url: str, bodies: list[dict], concurrency: int = 32, fresh_connections: bool = False,
               token: str = TOKEN):
    return asyncio.run(_concurrent(url, bodies, concurrency, fresh_connections, token))


def create_target(home, name: str = DATASET) -> None:
    """The capture dataset, with two recordings on main, created in ``home`` by this OS user
    (the user the service acts as)."""
    from train_platform.datasets.dataset import create_dataset
    from train_platform.datasets.schema import build_samples
    from train_platform.settings import Settings

    rows = build_samples(["seed-0", "seed-1"], [np.zeros((24, 3)), np.ones((24, 3))], labels=["low", "high"])
    create_dataset(name, source=rows, settings=Settings.from_env({"TP_HOME": str(home)}))


def intake_rows(home, name: str = DATASET) -> dict[str, dict]:
    """The served samples on ``name@intake``, read through the dataset API, by id."""
    from train_platform.datasets.dataset import open_dataset
    from train_platform.datasets.schema import series_of
    from train_platform.settings import Settings

    dataset = open_dataset(name, settings=Settings.from_env({"TP_HOME": str(home)}))
    if "intake" not in dataset.refs():
        return {}
    table = dataset.read("intake")
    rows = {}
    for row, series in zip(table.to_pylist(), series_of(table)):
        if row["sample_id"].startswith("served-"):
            rows[row["sample_id"]] = {**row, "series": series}
    return rows
