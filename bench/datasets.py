"""Benchmark of versioned datasets on the embedded shape (SQLite catalog, local warehouse).

Measures, on this machine:
* branch creation on tables of 10k and 1M samples (metadata only: should not grow with size);
* appending 1k samples to a 1M-sample table;
* reading a snapshot (rows/s) against reading the same rows from one plain Parquet file with
  pyarrow;
* 8 writer processes committing to one branch: commits/s and lost races (retries).

Writes bench/results/datasets.json. Usage: python bench/datasets.py [--writers 8] [--commits 25]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "datasets.json"
WORKER = ROOT / "tests" / "datasets" / "_worker.py"
# Small sensor windows (16 steps x 2 channels) keep a 1M-sample table within a few hundred MB.
STEPS, CHANNELS = 16, 2


def synthetic(n: int, prefix: str, seed: int):  # type: ignore[no-untyped-def]
    """``n`` samples in the sample schema, built column-wise (no per-sample Python)."""
    import pyarrow as pa

    from train_platform.datasets.schema import ARROW_SCHEMA, conform

    rng = np.random.default_rng(seed)
    width = STEPS * CHANNELS
    flat = rng.normal(size=n * width).astype(np.float32)
    offsets = pa.array(np.arange(0, (n + 1) * width, width, dtype=np.int64))
    values = pa.LargeListArray.from_arrays(offsets, pa.array(flat)).cast(ARROW_SCHEMA.field("values").type)
    labels = np.array(["idle", "walk", "run", None], dtype=object)[rng.integers(0, 4, n)]
    table = pa.table(
        {
            "sample_id": pa.array([f"{prefix}{i:08d}" for i in range(n)]),
            "values": values,
            "n_channels": pa.array(np.full(n, CHANNELS, dtype=np.int32)),
            "label": pa.array(labels, pa.string()),
            "label_source": pa.array(np.where(labels == None, None, "imported"), pa.string()),  # noqa: E711
            "status": pa.array(np.where(labels == None, "raw", "confirmed")),  # noqa: E711
            "batch_id": pa.array(np.full(n, "b0")),
        }
    )
    return conform(table)


def timed(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    """Median wall time of ``repeat`` calls."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--commits", type=int, default=25, help="commits per writer (as in the 8 x 25 test)")
    parser.add_argument("--big", type=int, default=1_000_000)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="tp-bench-datasets-"))
    os.environ["TP_HOME"] = str(home)
    for var in ("TP_CATALOG_URL", "TP_WAREHOUSE", "TP_S3_ENDPOINT", "TP_REDIS_URL"):
        os.environ.pop(var, None)
    os.environ["TP_USER"] = "bench"
    from train_platform.settings import reload_settings

    settings = reload_settings()
    import pyarrow.parquet as pq

    from train_platform.datasets import create_dataset

    result: dict[str, object] = {"machine": f"{platform.node()} {os.cpu_count()} cpus", "shape": "sqlite catalog + local warehouse"}

    print("building tables ...", flush=True)
    small = create_dataset("bench_10k", user="bench", source=synthetic(10_000, "s", 1), settings=settings)
    started = time.perf_counter()
    big = create_dataset("bench_1m", user="bench", source=synthetic(args.big, "b", 2), settings=settings)
    result["import_1m_s"] = round(time.perf_counter() - started, 3)

    counter = iter(range(10_000))
    result["branch_10k_s"] = round(timed(lambda: small.branch(f"br{next(counter)}"), 7), 4)
    result["branch_1m_s"] = round(timed(lambda: big.branch(f"br{next(counter)}"), 7), 4)
    result["branch_ratio"] = round(result["branch_1m_s"] / result["branch_10k_s"], 3)  # type: ignore[operator]
    print(f"branch 10k {result['branch_10k_s']} s, 1M {result['branch_1m_s']} s", flush=True)

    batches = iter(range(100))
    result["append_1k_s"] = round(timed(lambda: big.append(synthetic(1000, f"a{next(batches):02d}-", 3), branch="main"), 3), 4)
    print(f"append 1k to 1M: {result['append_1k_s']} s", flush=True)

    # Read the same rows both ways, alternating, best of 5 each: the page cache is warm for
    # both and a burst of load from other processes on this shared machine hits both alike.
    snapshot_id, table = big.read_with_snapshot("main")
    rows = table.num_rows
    parquet_path = home / "plain.parquet"
    pq.write_table(table, parquet_path, compression="zstd")
    del table
    read_times, parquet_times = [], []
    for _ in range(5):
        read_times.append(timed(lambda: big.read(snapshot_id), 1))
        parquet_times.append(timed(lambda: pq.read_table(parquet_path), 1))
    read_s, parquet_s = min(read_times), min(parquet_times)
    result["read_rows"] = rows
    result["read_rows_per_s"] = round(rows / read_s)
    result["parquet_rows_per_s"] = round(rows / parquet_s)
    result["read_ratio"] = round(parquet_s / read_s, 3)
    print(f"read {rows} rows: iceberg {result['read_rows_per_s']}/s, parquet {result['parquet_rows_per_s']}/s", flush=True)

    writers_ds = create_dataset("bench_writers", user="bench", settings=settings)
    writers_ds.branch("ingest")
    start_file = home / "go"
    env = {**os.environ, "TP_USER": "bench", "TP_START_FILE": str(start_file)}
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), "append", "bench_writers", "ingest", str(w), str(args.commits)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(args.writers)
    ]
    for proc in procs:  # every writer has imported everything and waits at the start line
        if proc.stdout.readline().strip() != "READY":
            raise SystemExit(f"writer failed to start: {proc.stderr.read()}")
    started = time.perf_counter()
    start_file.touch()
    retries = 0
    for proc in procs:
        out, err = proc.communicate(timeout=900)
        if proc.returncode != 0:
            raise SystemExit(f"writer failed: {err}")
        retries += json.loads(out.strip().splitlines()[-1])["retries"]
    elapsed = time.perf_counter() - started
    commits = args.writers * args.commits
    present = writers_ds.read("ingest").num_rows
    if present != commits:
        raise SystemExit(f"lost rows: {present} of {commits}")
    result.update(
        writers=args.writers,
        writer_commits=commits,
        writer_wall_s=round(elapsed, 2),
        writer_commits_per_s=round(commits / elapsed, 3),
        writer_retries=retries,
        writer_note="all writers start committing together after their imports; one sample per commit",
    )
    print(f"{args.writers} writers x {args.commits}: {result['writer_commits_per_s']} commits/s, {retries} retries", flush=True)

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
