"""HTTP helpers the serving tests share: JSON posts, Prometheus series, raw requests."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from tests.serving.conftest import TOKEN


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
