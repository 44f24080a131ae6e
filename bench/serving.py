"""Serving throughput and latency: our BentoML service against a plain FastAPI endpoint,
like for like.

Usage: python bench/serving.py [--seconds S] [--rounds R] [--checkpoint DIR] [--client wrk|python]

Trains a classifier with ``python -m ml.train`` on aeon BasicMotions (6 channels x 100
steps, 4 classes; the default model) unless ``--checkpoint`` is given, registers it in a
throw-away TP_HOME and starts, on loopback only:

- ``ours``: ``tp model serve`` (ml/service.py: adaptive batching, cache, metrics, auth off)
  with ``TP_SERVE_WORKERS`` worker processes (default 2) of ``TP_SERVE_TORCH_THREADS``
  torch threads (default 1);
- ``plain``: the same checkpoint behind a FastAPI ``POST /predict`` that calls
  ``ml.predict.predict(checkpoint, [sample])`` once per request (what a user would write),
  one request's forward pass at a time per worker (a lock: FastAPI's thread pool would
  otherwise run dozens at once and thrash), under uvicorn with the same worker count, the same torch threads per worker and the same
  garbage-collector settings as ours, access log off like ours;
- ``ours_1w`` and ``plain_1w``: both again with one worker process each;
- ``bentoml_floor``: ``FloorService`` below, a BentoML service with ours' worker count that
  answers a constant without any model: the most any BentoML endpoint can serve on this
  machine (saved apart, as ``floor_runs``).

Every worker process of every server has loaded its model before any load is sent. For 1,
16 and 64 concurrent clients each variant gets ``--seconds`` of closed-loop load (every
client sends its next request when the last one answered), in ``--rounds`` interleaved
rounds; the median-throughput round of each is reported (all are kept). Each request is a
real test-split sample with a per-request offset so no two bodies of a run are equal: no
cache ever answers. Then one client repeats one input against ours: ``cache_hit``. Every
run stops by itself; all servers are stopped at the end. Results:
bench/results/serving.json: ``runs`` (``variant``, ``clients``, ``requests``,
``throughput_rps``, ``p50_ms``, ``p99_ms``, ...), ``config`` (how each side ran: workers,
torch threads, batching, cache, model), ``targets``, ``comparisons`` and the load average
before and after.

Targets (2 cores): ours at 64 clients >= 2x plain's throughput with p99 <= 100 ms, and at
one client a p50 no worse than 1.2x plain's; cache hits p50 <= 2 ms.

Load generator (``--client``): ``wrk`` (the default when the ``wrk`` binary is on PATH) or
``python`` (aiohttp, in this process). The generator runs on the same cores as the servers,
so its own CPU cost lowers every variant's throughput and lengthens its tails; wrk is C and
costs far less than the asyncio client. Every variant of one run uses the same generator,
and the saved JSON says which (``generator``). With wrk a Lua script, written into the
run's temp folder, builds each request from the same test samples and the same never-repeat
scheme as ``FreshBodies`` (plus the run and wrk-thread number), so no request hits a cache;
``cache_hit`` sends one fixed body. Any response that is not 2xx counts as failed.
``p50_ms``/``p99_ms`` are those of the requests sent, for both generators: wrk's
coordinated-omission correction is undone (see ``uncorrected_histogram``); its corrected
figures are kept as ``p50_ms_wrk_corrected``/``p99_ms_wrk_corrected``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import bentoml
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "serving.json"
CLIENTS = (1, 16, 64)
# The garbage-collector settings ml/service.py applies after loading; plain gets the same.
GC_THRESHOLDS = (50_000, 20, 50)


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


def plain_app():
    """The plain endpoint, one per uvicorn worker process (``uvicorn --factory``): the
    checkpoint from ``TP_BENCH_CHECKPOINT``, torch threads from ``TP_BENCH_TORCH_THREADS``."""
    import torch
    from fastapi import FastAPI

    from ml.checkpoint import load_checkpoint
    from ml.predict import predict

    torch.set_num_threads(int(os.environ["TP_BENCH_TORCH_THREADS"]))
    checkpoint = load_checkpoint(os.environ["TP_BENCH_CHECKPOINT"])
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    app = FastAPI()
    # One forward pass at a time per worker. A sync handler runs in FastAPI's thread pool (40
    # threads): unguarded, that many requests ran the model at once on 2 cores, and plain's
    # throughput fell from 129 req/s at 1 client to 54 at 16 (measured), which flattered ours.
    model_lock = threading.Lock()

    @app.post("/predict")
    def predict_one(sample: dict) -> dict:
        with model_lock:
            return predict(checkpoint, [sample])[0]

    @app.get("/worker")
    def worker() -> dict:
        return {"pid": os.getpid(), "torch_threads": torch.get_num_threads()}

    return app


def start_plain(port: int, checkpoint: Path, workers: int, torch_threads: int, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "serving:plain_app", "--app-dir", str(ROOT / "bench"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers), "--log-level", "warning",
         "--no-access-log"],
        env={**env, "TP_BENCH_CHECKPOINT": str(checkpoint), "TP_BENCH_TORCH_THREADS": str(torch_threads),
             "PYTHONPATH": str(ROOT)},
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


# ---------------------------------------------------------------- load generation

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, timeout: float = 180.0) -> None:
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


def wait_workers(probe, workers: int, what: str, timeout: float = 180.0) -> set:
    """Until ``probe()`` (the worker ids it can see) has named ``workers`` of them: every
    worker process has loaded the model before any load is measured."""
    deadline = time.monotonic() + timeout
    seen: set = set()
    while time.monotonic() < deadline:
        try:
            seen |= probe()
        except OSError:
            pass
        if len(seen) >= workers:
            return seen
        time.sleep(0.1)
    raise RuntimeError(f"{what}: {len(seen)} of {workers} workers ready after {timeout:.0f} s")


def plain_workers(base: str) -> set:
    """The pid of whichever plain worker answers a fresh connection."""
    import urllib.request

    with urllib.request.urlopen(f"{base}/worker", timeout=2) as resp:
        return {json.loads(resp.read())["pid"]}


def ours_workers(base: str) -> set:
    """The pids of ours' workers that report the version they serve (``tp_served_version``)."""
    import re
    import urllib.request

    with urllib.request.urlopen(f"{base}/metrics", timeout=2) as resp:
        text = resp.read().decode()
    return {match.group(1) for line in text.splitlines()
            if line.startswith("tp_served_version{") and 'role="production"' in line
            and (match := re.search(r'pid="([^"]+)"', line))}


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
        self.series = list(data.series)
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


# ---------------------------------------------------------------- wrk load generator

# One Lua state per wrk thread. ``request`` builds a new body per request from the templates
# (first four values of the first row perturbed in steps of 1e-4: two carry the thread's own
# sequence number, one the bench's run number, one the wrk thread number, so no two requests
# of one bench process are equal). ``response`` counts non-2xx answers itself, because wrk's
# own status error counts only codes above 399. ``done`` prints one JSON line for the bench.
_WRK_COMMON = r"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

local threads = {}
local thread_count = 0

function setup(thread)
  thread:set("thread_id", thread_count)
  thread_count = thread_count + 1
  table.insert(threads, thread)
end

non2xx = 0
function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
end

function done(summary, latency, requests)
  -- The histogram as "microseconds count" lines, for the bench to undo wrk's correction.
  if histogram_path ~= "" then
    local out = assert(io.open(histogram_path, "w"))
    for i = 1, #latency do
      local value, count = latency(i)
      out:write(string.format("%d %d\n", value, count))
    end
    out:close()
  end
  local non2xx_total = 0
  for _, thread in ipairs(threads) do
    non2xx_total = non2xx_total + (thread:get("non2xx") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    '\nWRK_JSON {"duration_us": %d, "requests": %d, "non2xx": %d, "connect": %d, "read": %d, ' ..
    '"write": %d, "status": %d, "timeout": %d, "p50_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.duration, summary.requests, non2xx_total, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(99), latency.max))
end
"""

_WRK_FRESH = r"""
local templates = {
%(templates)s
}
local run_id = 0
local seq = 0

function init(args)
  run_id = tonumber(args[1])
end

-- done() runs in the main Lua state, which init() never sees: the path comes in as text.
histogram_path = "%(histogram)s"

function request()
  local t = templates[(seq %% #templates) + 1]
  local n = math.floor(seq / #templates)
  seq = seq + 1
  local a = t[1] + (n %% 10000) * 1e-4
  local b = t[2] + math.floor(n / 10000) * 1e-4
  local c = t[3] + run_id * 1e-4
  local d = t[4] + thread_id * 1e-4
  local body = string.format('{"sensor": [[%%.17g, %%.17g, %%.17g, %%.17g', a, b, c, d) .. t[5] .. "}"
  return wrk.format(nil, nil, nil, body)
end
"""


class WrkClient:
    """Closed-loop load with wrk: ``clients`` connections, each sending its next request
    when the last one answered, like ``closed_loop``."""

    def __init__(self, work: Path, bodies: FreshBodies, threads: int):
        self.binary = shutil.which("wrk")
        if self.binary is None:
            raise RuntimeError("wrk is not on PATH: install it (scripts/install-system.sh) or use --client python")
        self.threads = threads
        self.work = work
        self.runs = 0
        self.version = subprocess.run([self.binary, "-v"], capture_output=True, text=True).stdout.split("\n")[0].split(" Copyright")[0].strip()
        rows = []
        for x in bodies.series:
            values = x.tolist()
            first_row = values[0]
            if len(first_row) < 4:
                raise RuntimeError(f"the wrk script perturbs 4 channels; the benchmark data has {len(first_row)}")
            rest = json.dumps(values)[len("[" + json.dumps(first_row[:4])[:-1]):]
            rows.append("  {%s, %s}," % (", ".join(repr(float(v)) for v in first_row[:4]), _lua_string(rest)))
        self.histogram = work / "wrk_latency.txt"
        if any(c in str(self.histogram) for c in '"\\%\n'):
            raise RuntimeError(f"the temp folder's name cannot go into a Lua string as is: {work}")
        self.fresh_script = work / "wrk_fresh.lua"
        self.fresh_script.write_text(_WRK_COMMON + _WRK_FRESH % {"templates": "\n".join(rows),
                                                                 "histogram": self.histogram})

    def fixed_script(self, body: bytes) -> Path:
        path = self.work / "wrk_fixed.lua"
        path.write_text(f"wrk.body = {_lua_string(body.decode())}\n"
                        f"histogram_path = {_lua_string(str(self.histogram))}\n" + _WRK_COMMON)
        return path

    def run(self, url: str, clients: int, seconds: float, body: bytes | None = None) -> dict:
        """Fresh bodies, or ``body`` on every request; returns wrk's figures."""
        self.runs += 1
        script = self.fresh_script if body is None else self.fixed_script(body)
        threads = min(self.threads, clients)
        cmd = [self.binary, f"-t{threads}", f"-c{clients}", f"-d{seconds:g}s", "--timeout", "30s",
               "-s", str(script), url, "--", str(self.runs)]
        self.histogram.unlink(missing_ok=True)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("WRK_JSON ")), None)
        if proc.returncode != 0 or line is None or not self.histogram.exists():
            raise RuntimeError(f"wrk failed (exit {proc.returncode}): {proc.stdout[-2000:]} {proc.stderr[-2000:]}")
        figures = json.loads(line[len("WRK_JSON "):])
        corrected = [tuple(map(int, ln.split())) for ln in self.histogram.read_text().splitlines()]
        measured = uncorrected_histogram(corrected, figures["duration_us"], figures["requests"], clients)
        recorded = sum(count for _, count in measured)
        # Every answered request is in the histogram unless it passed wrk's timeout.
        if recorded != figures["requests"] - figures["timeout"] and figures["timeout"] == 0:
            raise RuntimeError(f"undoing wrk's latency correction left {recorded} requests, "
                               f"wrk answered {figures['requests']}")
        figures["p50_us_measured"] = histogram_percentile(measured, 50)
        figures["p99_us_measured"] = histogram_percentile(measured, 99)
        return figures


def uncorrected_histogram(corrected: list[tuple[int, int]], runtime_us: int, complete: int,
                          connections: int) -> list[tuple[int, int]]:
    """The latencies wrk measured, from the histogram it hands to ``done()``.

    Before ``done()`` wrk 4.x corrects for coordinated omission (``stats_correct``): with
    ``e = runtime_us // (complete // connections)``, every measured latency ``n`` adds one
    synthetic sample at each ``n - k*e > e``. For a closed loop that turns one 150 ms stall at
    1 client (``e`` ~1 ms) into 150 samples, so the percentiles would no longer be those of
    the requests sent, nor comparable with the Python client's. Going down from the largest
    value, the measured count of bin ``m`` is its count less the measured counts of bins
    ``m + k*e``, i.e. of the bins above with the same remainder modulo ``e``.
    """
    if complete // connections == 0:
        return sorted(corrected)
    e = runtime_us // (complete // connections)
    above: dict[int, int] = {}  # measured count of bins above, per remainder modulo e
    measured = []
    for value, count in sorted(corrected, reverse=True):
        if value > e:
            count -= above.get(value % e, 0)
            if count < 0:
                raise RuntimeError(f"wrk's latency histogram is not what its correction makes (bin {value} us)")
            above[value % e] = above.get(value % e, 0) + count
        if count:
            measured.append((value, count))
    return measured[::-1]


def histogram_percentile(bins: list[tuple[int, int]], p: float) -> int:
    """The smallest value with at least ``p`` % of the samples at or below it (wrk's rule)."""
    total = sum(count for _, count in bins)
    rank = max(1, round(p / 100.0 * total + 0.5))
    seen = 0
    for value, count in sorted(bins):
        seen += count
        if seen >= rank:
            return value
    raise ValueError("empty histogram")


def _lua_string(text: str) -> str:
    # A long bracket needs no escaping as long as its closing form does not occur in the text.
    level = 1
    while f"]{'=' * level}]" in text:
        level += 1
    return f"[{'=' * level}[{text}]{'=' * level}]"


def summarise_wrk(variant: str, clients: int, seconds: float, figures: dict) -> dict:
    failed = (figures["non2xx"] + figures["connect"] + figures["read"] + figures["write"]
              + figures["timeout"])
    answered_ok = figures["requests"] - figures["non2xx"]
    duration = figures["duration_us"] / 1e6
    return {
        "variant": variant, "clients": clients, "requests": int(answered_ok), "failed": int(failed),
        "seconds": round(duration, 3), "throughput_rps": round(answered_ok / duration, 1),
        # Latency of the requests actually sent (wrk's coordinated-omission correction undone,
        # see uncorrected_histogram), like the Python client's. wrk's histogram holds every
        # answered request, failed ones too: with no failures (``failed_requests`` in the
        # saved figures) these are the successful requests' percentiles.
        "p50_ms": round(figures["p50_us_measured"] / 1000.0, 2),
        "p99_ms": round(figures["p99_us_measured"] / 1000.0, 2),
        "max_ms": round(figures["max_us"] / 1000.0, 2),
        # wrk's own figures, corrected as if requests had kept arriving during each stall.
        "p50_ms_wrk_corrected": round(figures["p50_us"] / 1000.0, 2),
        "p99_ms_wrk_corrected": round(figures["p99_us"] / 1000.0, 2),
    }


# ---------------------------------------------------------------- orchestration

def train_checkpoint(out: Path) -> None:
    subprocess.run([sys.executable, "-m", "ml.train", "--mode", "initial", "--task", "classification",
                    "--data", "aeon:BasicMotions:train", "--epochs", "3", "--out", str(out)],
                   check=True, cwd=ROOT, stdout=subprocess.DEVNULL)


def _ours_config(env: dict, workers: int) -> dict:
    """How ours runs with ``env`` and ``workers``, read from the settings it reads itself."""
    from ml.serving.config import ServingConfig

    cfg = ServingConfig.from_env(env)
    return {
        "server": "BentoML (uvicorn workers), ml/service.py via tp model serve", "workers": workers,
        "torch_threads_per_worker": cfg.torch_threads,
        "batching": f"adaptive, in process: up to {cfg.max_batch_size} queued requests per forward pass, "
                    f"refused after {cfg.max_latency_ms} ms in the queue",
        "cache": "in-process LRU (no Redis); bodies never repeat, so every request misses",
        "gc": f"gc.freeze() after loading, thresholds {GC_THRESHOLDS}",
        "access_log": False, "auth": False,
    }


def _plain_config(workers: int, torch_threads: int) -> dict:
    return {
        "server": "FastAPI on uvicorn --workers, a sync handler calling ml.predict.predict(checkpoint, [sample])"
                  " under a per-worker lock (one forward pass at a time per worker, as ours' batch thread)",
        "workers": workers, "torch_threads_per_worker": torch_threads,
        "batching": "none: one forward pass per request",
        "cache": "none",
        "gc": f"gc.freeze() after loading, thresholds {GC_THRESHOLDS}",
        "access_log": False, "auth": False,
    }


def _code_state() -> dict:
    """The commit measured, and the files under ml/ and bench/ that differed from it."""
    def git(*args: str) -> str:
        found = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return found.stdout if found.returncode == 0 else ""

    # Porcelain lines are "XY PATH": the path starts at the fourth character.
    changed = [line[3:] for line in git("status", "--porcelain", "--", "ml", "bench").splitlines() if line]
    return {"commit": git("rev-parse", "HEAD").strip(), "uncommitted_in_ml_and_bench": changed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="load duration per run (default 6)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported (default 3)")
    parser.add_argument("--checkpoint", type=Path, help="use this checkpoint instead of training one")
    parser.add_argument("--client", choices=("wrk", "python"), default="wrk" if shutil.which("wrk") else "python",
                        help="load generator: wrk (default when installed) or the in-process asyncio client")
    parser.add_argument("--wrk-threads", type=int, default=1, choices=(1, 2),
                        help="wrk threads (default 1: ~1k requests/s needs no more, and each thread "
                             "takes CPU from the servers on this 2-core machine)")
    args = parser.parse_args()
    load_before = [round(v, 2) for v in os.getloadavg()]
    print(f"load average before: {load_before}", flush=True)

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
    tp = str(ROOT / ".venv" / "bin" / "tp")
    subprocess.run([tp, "model", "register", "bench", "--checkpoint", str(checkpoint)],
                   check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run([tp, "model", "promote", "bench", "1"],
                   check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    from ml.serving.config import ServingConfig

    workers = _serving_workers()
    torch_threads = ServingConfig.from_env(env).torch_threads
    config = {
        "ours": _ours_config(env, workers), "plain": _plain_config(workers, torch_threads),
        "ours_1w": _ours_config(env, 1), "plain_1w": _plain_config(1, torch_threads),
        "bentoml_floor": {"server": "BentoML, FloorService in bench/serving.py: returns a constant, no model",
                          "workers": workers, "access_log": False},
        "model": "ml.train classification on aeon BasicMotions (6 ch x 100 steps, 4 classes), 3 epochs, "
                 "default ModelConfig; the same checkpoint for ours and plain",
        "model_config": json.loads((checkpoint / "checkpoint.json").read_text())["model_config"],
        "code": _code_state(),
    }
    ports = {name: free_port() for name in ("ours", "plain", "ours_1w", "plain_1w", "floor")}

    def serve_ours(port: int, n: int) -> subprocess.Popen:
        return subprocess.Popen([tp, "model", "serve", "bench", "--port", str(port)],
                                env={**env, "TP_SERVE_WORKERS": str(n)}, cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)

    servers = {
        "ours": serve_ours(ports["ours"], workers),
        "ours_1w": serve_ours(ports["ours_1w"], 1),
        "plain": start_plain(ports["plain"], checkpoint, workers, torch_threads, env),
        "plain_1w": start_plain(ports["plain_1w"], checkpoint, 1, torch_threads, env),
        "floor": subprocess.Popen([str(ROOT / ".venv" / "bin" / "bentoml"), "serve", "serving:FloorService",
                                   "--port", str(ports["floor"]), "--working-dir", str(ROOT / "bench")],
                                  env=env, cwd=ROOT / "bench", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True),
    }
    base = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    runs, floor_runs, all_runs = [], [], []
    try:
        for name, n in (("ours", workers), ("ours_1w", 1)):
            wait_ready(f"{base[name]}/readyz")
            wait_workers(lambda b=base[name]: ours_workers(b), n, name)
        for name, n in (("plain", workers), ("plain_1w", 1)):
            wait_workers(lambda b=base[name]: plain_workers(b), n, name)
        wait_ready(f"{base['floor']}/readyz")
        bodies = FreshBodies()
        wrk = WrkClient(work, bodies, args.wrk_threads) if args.client == "wrk" else None
        generator = wrk.version if wrk else "python asyncio + aiohttp, in the bench process"
        print(f"load generator: {generator}", flush=True)

        def measure(variant: str, url: str, clients: int, seconds: float, body: bytes | None = None) -> dict:
            if wrk is not None:
                return summarise_wrk(variant, clients, seconds, wrk.run(url, clients, seconds, body))
            latencies, failures = asyncio.run(closed_loop(url, bodies if body is None else [body], clients, seconds))
            return summarise(variant, clients, seconds, latencies, failures)

        # Rounds interleave the variants, so a change in the machine's other load hits
        # them alike; each (variant, clients) reports its median-throughput round.
        for round_ in range(args.rounds):
            for clients in CLIENTS:
                for variant in ("plain", "ours", "floor", "plain_1w", "ours_1w"):
                    name = "bentoml_floor" if variant == "floor" else variant
                    url = f"{base[variant]}/predict"
                    measure(name, url, clients, 1.0)  # warm-up
                    run = {**measure(name, url, clients, args.seconds), "round": round_}
                    all_runs.append(run)
                    print(json.dumps(run), flush=True)
            repeated = bodies.next()
            measure("cache_hit", f"{base['ours']}/predict", 1, 1.0, repeated)  # fills the cache entry
            run = {**measure("cache_hit", f"{base['ours']}/predict", 1, args.seconds, repeated), "round": round_}
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
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    load_after = [round(v, 2) for v in os.getloadavg()]

    by = {(r["variant"], r["clients"]): r for r in runs + floor_runs}

    def ratio(a: str, b: str, clients: int, field: str = "throughput_rps") -> float:
        return round(by[(a, clients)][field] / by[(b, clients)][field], 2)

    ours64, hit = by[("ours", 64)], by[("cache_hit", 1)]
    targets = {
        "throughput_ratio_64": ratio("ours", "plain", 64), "throughput_ratio_64_target": 2.0,
        "p99_ms_64": ours64["p99_ms"], "p99_ms_64_target": 100.0,
        "p50_ratio_1": ratio("ours", "plain", 1, "p50_ms"), "p50_ratio_1_target": 1.2,
        "cache_hit_p50_ms": hit["p50_ms"], "cache_hit_p50_ms_target": 2.0,
    }
    targets["met"] = {
        "throughput_ratio_64": targets["throughput_ratio_64"] >= 2.0,
        "p99_ms_64": ours64["p99_ms"] <= 100.0,
        "p50_ratio_1": targets["p50_ratio_1"] <= 1.2,
        "cache_hit_p50_ms": hit["p50_ms"] <= 2.0,
    }
    comparisons = {
        "ours_vs_plain_throughput": {c: ratio("ours", "plain", c) for c in CLIENTS},
        "ours_1w_vs_plain_1w_throughput": {c: ratio("ours_1w", "plain_1w", c) for c in CLIENTS},
        "ours_vs_bentoml_floor_throughput": {c: ratio("ours", "bentoml_floor", c) for c in CLIENTS},
        "ours_vs_plain_p50": {c: ratio("ours", "plain", c, "p50_ms") for c in CLIENTS},
        "ours_1w_vs_plain_1w_p50": {c: ratio("ours_1w", "plain_1w", c, "p50_ms") for c in CLIENTS},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "load_average_1_5_15": {"before": load_before, "after": load_after},
        "config": config,
        "generator": generator, "wrk_threads": args.wrk_threads if wrk else None,
        "failed_requests": sum(r["failed"] for r in all_runs),
        "seconds_per_run": args.seconds, "rounds": args.rounds,
        "targets": targets, "comparisons": comparisons,
        "runs": runs, "floor_runs": floor_runs, "all_rounds": all_runs,
    }, indent=2) + "\n")
    print(json.dumps({"targets": targets, "comparisons": comparisons, "load_average": [load_before, load_after]}))
    print(f"saved {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
