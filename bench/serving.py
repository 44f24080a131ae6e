"""Serving throughput and latency: our BentoML service against a plain FastAPI endpoint.

Usage: python bench/serving.py [--seconds S] [--rounds R] [--checkpoint DIR]

Trains a classifier with ``python -m ml.train`` on aeon BasicMotions (6 channels x 100
steps, 4 classes; the default model) unless ``--checkpoint`` is given, registers it in a
throw-away TP_HOME and starts, on loopback only:

- ours: ``tp model serve`` (ml/service.py: adaptive batching, cache, metrics, auth off);
- plain: the same checkpoint behind a FastAPI ``POST /predict`` that calls
  ``ml.predict.predict(checkpoint, [sample])`` once per request (what a user would write).

For 1, 16 and 64 concurrent clients each variant gets ``--seconds`` of closed-loop load
(every client sends its next request when the last one answered), in ``--rounds``
interleaved rounds; the median-throughput round of each is reported (all are kept). Each
request is a real
test-split sample with a per-request offset so no two inputs are equal: the cache never
hits. Then one client repeats one input against ours: ``cache_hit``. Every run stops by
itself; both servers are stopped at the end. Results: bench/results/serving.json as
``{"runs": [{"variant", "clients", "requests", "throughput_rps", "p50_ms", "p99_ms"}]}``.

For context the same load also goes to ``FloorService`` below, a BentoML service that
answers a constant without any model: the most any BentoML endpoint can do on this machine
(saved apart, as ``floor_runs``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import bentoml
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "serving.json"
CLIENTS = (1, 16, 64)


# ---------------------------------------------------------------- the endpoints compared

def _serving_workers() -> int:
    from ml.serving.config import ServingConfig

    return ServingConfig.workers_from_env()


@bentoml.service(name="bench-floor", workers=_serving_workers(), traffic={"timeout": 30, "max_concurrency": 2048},
                 logging={"access": {"enabled": False}})
class FloorService:
    """Same request shape and server settings (worker count included) as ours, no model:
    BentoML's own cost."""

    @bentoml.api(route="/predict")
    async def predict(self, sensor: list[Any], key: str | None = None) -> dict[str, Any]:
        return {"label": "constant", "confidence": 1.0}


def plain_app(checkpoint_dir: str):
    from fastapi import FastAPI

    from ml.checkpoint import load_checkpoint
    from ml.predict import predict

    checkpoint = load_checkpoint(checkpoint_dir)
    app = FastAPI()

    @app.post("/predict")
    def predict_one(sample: dict) -> dict:
        return predict(checkpoint, [sample])[0]

    return app


def run_plain(port: int, checkpoint_dir: str) -> None:
    import uvicorn

    uvicorn.run(plain_app(checkpoint_dir), host="127.0.0.1", port=port, log_level="warning", access_log=False)


# ---------------------------------------------------------------- load generation

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, timeout: float = 120.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not become ready in {timeout:.0f} s")


async def closed_loop(url: str, bodies, clients: int, seconds: float) -> tuple[list[float], int]:
    """``clients`` workers send requests back to back for ``seconds``; returns the latency
    of every answered request and the number of failed ones. ``bodies`` is a list (cycled)
    or a ``FreshBodies`` (never repeats)."""
    import aiohttp

    latencies: list[float] = []
    failures = 0
    stop_at = time.perf_counter() + seconds
    counter = 0
    next_body = bodies.next if isinstance(bodies, FreshBodies) else (lambda: bodies[counter % len(bodies)])

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal failures, counter
        while time.perf_counter() < stop_at:
            body = next_body()
            counter += 1
            started = time.perf_counter()
            async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
                await resp.read()
                if resp.status != 200:
                    failures += 1
                    continue
            latencies.append(time.perf_counter() - started)

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        await asyncio.gather(*(worker(session) for _ in range(clients)))
    return latencies, failures


def summarise(variant: str, clients: int, seconds: float, latencies: list[float], failures: int) -> dict:
    ms = np.asarray(latencies) * 1000.0
    return {
        "variant": variant, "clients": clients, "requests": int(len(ms)), "failed": failures,
        "seconds": seconds, "throughput_rps": round(len(ms) / seconds, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2),
    }


class FreshBodies:
    """Request bodies that never repeat within a benchmark process, so no variant is ever
    answered from a cache: real test-split samples, cycled, whose first two values carry a
    sequence number in steps of 1e-4 (at most +1 on two of 600 values)."""

    def __init__(self) -> None:
        from ml.data import load_ref

        data = load_ref("aeon:BasicMotions:test")
        self.templates = []
        for x in data.series:
            rows = x.tolist()
            first, second = rows[0][0], rows[0][1]
            rest = json.dumps(rows)[len(f"[[{json.dumps(first)}, {json.dumps(second)}"):]
            self.templates.append((first, second, rest))
        self.seq = 0

    def next(self) -> bytes:
        first, second, rest = self.templates[self.seq % len(self.templates)]
        n = self.seq // len(self.templates)
        self.seq += 1
        a, b = first + (n % 10_000) * 1e-4, second + (n // 10_000) * 1e-4
        return f'{{"sensor": [[{a!r}, {b!r}{rest}}}'.encode()


# ---------------------------------------------------------------- orchestration

def train_checkpoint(out: Path) -> None:
    subprocess.run([sys.executable, "-m", "ml.train", "--mode", "initial", "--task", "classification",
                    "--data", "aeon:BasicMotions:train", "--epochs", "3", "--out", str(out)],
                   check=True, cwd=ROOT, stdout=subprocess.DEVNULL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="load duration per run (default 6)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported (default 3)")
    parser.add_argument("--checkpoint", type=Path, help="use this checkpoint instead of training one")
    parser.add_argument("--plain-server", nargs=2, metavar=("PORT", "CHECKPOINT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_server:
        run_plain(int(args.plain_server[0]), args.plain_server[1])
        return 0

    work = Path(tempfile.mkdtemp(prefix="tp-bench-serving-"))
    checkpoint = args.checkpoint
    if checkpoint is None:
        checkpoint = work / "checkpoint"
        print("training the benchmark model with ml.train ...", flush=True)
        train_checkpoint(checkpoint)
    env = {**os.environ, "TP_HOME": str(work / "home"), "BENTOML_HOME": str(work / "bentoml"),
           "TP_API_TOKENS": "", "TP_SERVE_MODEL": "bench"}
    for var in ("TP_DATABASE_URL", "TP_REDIS_URL"):
        env.pop(var, None)  # in-process cache and SQLite registry: one self-contained machine
    subprocess.run([str(ROOT / ".venv" / "bin" / "tp"), "model", "register", "bench", "--checkpoint", str(checkpoint)],
                   check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run([str(ROOT / ".venv" / "bin" / "tp"), "model", "promote", "bench", "1"],
                   check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    ours_port, plain_port, floor_port = free_port(), free_port(), free_port()
    servers = {
        "ours": subprocess.Popen([str(ROOT / ".venv" / "bin" / "tp"), "model", "serve", "bench", "--port", str(ours_port)],
                                 env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 start_new_session=True),
        "plain": subprocess.Popen([sys.executable, __file__, "--plain-server", str(plain_port), str(checkpoint)],
                                  env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True),
        "floor": subprocess.Popen([str(ROOT / ".venv" / "bin" / "bentoml"), "serve", "serving:FloorService",
                                   "--port", str(floor_port), "--working-dir", str(ROOT / "bench")],
                                  env=env, cwd=ROOT / "bench", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True),
    }
    runs, floor_runs, all_runs = [], [], []
    try:
        wait_ready(f"http://127.0.0.1:{ours_port}/readyz")
        wait_ready(f"http://127.0.0.1:{plain_port}/docs")
        wait_ready(f"http://127.0.0.1:{floor_port}/readyz")
        bodies = FreshBodies()
        urls = {"ours": f"http://127.0.0.1:{ours_port}/predict", "plain": f"http://127.0.0.1:{plain_port}/predict",
                "floor": f"http://127.0.0.1:{floor_port}/predict"}
        # Rounds interleave the variants, so a change in the machine's other load hits
        # them alike; each (variant, clients) reports its median-throughput round.
        all_runs: list[dict] = []
        for round_ in range(args.rounds):
            for clients in CLIENTS:
                for variant in ("plain", "ours", "floor"):
                    asyncio.run(closed_loop(urls[variant], bodies, clients, 1.0))  # warm-up
                    latencies, failures = asyncio.run(closed_loop(urls[variant], bodies, clients, args.seconds))
                    name = "bentoml_floor" if variant == "floor" else variant
                    run = {**summarise(name, clients, args.seconds, latencies, failures), "round": round_}
                    all_runs.append(run)
                    print(json.dumps(run), flush=True)
            repeated = [bodies.next()]
            asyncio.run(closed_loop(urls["ours"], repeated, 1, 1.0))  # fills the cache entry
            latencies, failures = asyncio.run(closed_loop(urls["ours"], repeated, 1, args.seconds))
            run = {**summarise("cache_hit", 1, args.seconds, latencies, failures), "round": round_}
            all_runs.append(run)
            print(json.dumps(run), flush=True)
        for key in dict.fromkeys((r["variant"], r["clients"]) for r in all_runs):
            rounds = sorted((r for r in all_runs if (r["variant"], r["clients"]) == key),
                            key=lambda r: r["throughput_rps"])
            median = rounds[len(rounds) // 2]
            (floor_runs if key[0] == "bentoml_floor" else runs).append(median)
    finally:
        for proc in servers.values():
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(proc.pid, signal.SIGKILL)

    by = {(r["variant"], r["clients"]): r for r in runs}
    ours64, plain64, hit = by[("ours", 64)], by[("plain", 64)], by[("cache_hit", 1)]
    targets = {
        "throughput_ratio_64": round(ours64["throughput_rps"] / plain64["throughput_rps"], 2),
        "throughput_ratio_64_target": 3.0,
        "p99_ms_64": ours64["p99_ms"], "p99_ms_64_target": 100.0,
        "cache_hit_p50_ms": hit["p50_ms"], "cache_hit_p50_ms_target": 2.0,
    }
    targets["ours_workers"] = _serving_workers()
    targets["met"] = (targets["throughput_ratio_64"] >= 3.0 and ours64["p99_ms"] <= 100.0
                      and hit["p50_ms"] <= 2.0)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "model": "ml.train classification on aeon BasicMotions (6 ch x 100 steps), default ModelConfig",
        "load_average_1_5_15": list(os.getloadavg()),
        "seconds_per_run": args.seconds, "rounds": args.rounds, "runs": runs, "floor_runs": floor_runs,
        "targets": targets, "all_rounds": all_runs,
    }, indent=2) + "\n")
    print(json.dumps(targets))
    print(f"saved {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
