"""Task start time with 1 and with 500 pipelines in the dags folder.

Usage: python bench/task_start.py [--reps R] [N ...]      (default: 5 repetitions, N = 1 500)

For each N, a temporary dags folder holds our loader file and N copies of the example
command pipeline (``pipeline-0`` ... ``pipeline-{N-1}``, three tasks each); the task started
is ``generate`` of the middle pipeline. Three figures, each R times, each in a fresh process,
the sizes taking turns in every repetition, median kept:

- ``task_parse_ms``: the DAG-file parse Airflow's task runner does when a task starts
  (``airflow.sdk.execution_time.task_runner.parse``): ``BundleDagBag`` over the loader file
  with ``safe_mode=False, load_op_links=False``, inside the parsing context naming the task's
  dag_id and task_id, timed around the ``BundleDagBag`` call as Airflow times its own
  ``dag_file_parse_ms``. Includes importing the platform's modules, as a fresh worker does.
  ``task_parse_without_full_gc_ms`` leaves out the full (generation-2) garbage collections
  that ran inside that window: the heap Airflow's imports leave is due for one, and which
  allocation sets it off (the folder walk, or the task's own first steps a moment later)
  decides whether the parse pays for it. ``allocations_until_next_full_gc_runs`` shows
  when the next one comes after the parse as code goes on allocating small objects (-1:
  not within 200 000): a task that did not pay for it during the parse pays right after.
- ``tasks_test_s``: a real ``airflow tasks test pipeline-K generate``, from starting the
  command until the task's own code logs its first line (the operator's "pipeline ...
  version ..., task generate" line), read from its output as it streams.
- ``full_parse_ms`` (reference): the same parse without a parsing context, what the DAG
  processor does and what every task start cost before the loader used the context. It
  runs first in each repetition, as the DAG processor parses a folder before any of its
  tasks starts (and writes the name index a task start reads, under ``TP_HOME``).

Results go to ``bench/results/task_start.json`` with the per-run figures, the medians, the
ratio of N=500 to N=1 (target: within 1.2x), and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "dags" / "pipelines" / "example-command-pipeline.yaml"
LOADER = ROOT / "dags" / "train_platform_pipelines.py"
RESULTS = ROOT / "bench" / "results" / "task_start.json"
BIN = Path(sys.executable).parent
TASK = "generate"
# The operator's first log line when the task's own code starts (operators/container_command.py).
STARTED = re.compile(rf"pipeline pipeline-\d+ version 1\.0\.0, task {TASK} on the local executor")

_PARSE = """
import gc, sys, time
from airflow.dag_processing.dagbag import BundleDagBag
from airflow.sdk.definitions._internal.dag_parsing_context import _airflow_parsing_context_manager
loader, folder, dag_id, task_id = sys.argv[1:5]
full_gc = []  # time spent in full (generation 2) collections during the parse

def on_gc(phase, info, started=[0.0]):
    if info["generation"] == 2:
        if phase == "start":
            started[0] = time.monotonic()
        else:
            full_gc.append(time.monotonic() - started[0])

def bag():
    gc.callbacks.append(on_gc)
    start = time.monotonic()
    bag = BundleDagBag(dag_folder=loader, safe_mode=False, load_op_links=False, bundle_path=folder,
                       bundle_name="dags-folder")
    elapsed = (time.monotonic() - start) * 1000
    gc.callbacks.remove(on_gc)
    return elapsed, bag

if dag_id:
    with _airflow_parsing_context_manager(dag_id=dag_id, task_id=task_id):
        elapsed, bag = bag()
else:
    elapsed, bag = bag()
if bag.import_errors or (dag_id and dag_id not in bag.dags):
    sys.exit(f"parse failed: {sorted(bag.dags)[:5]} {bag.import_errors}")
# How soon the next full collection comes when the task's code goes on allocating.
collections, next_full = len(full_gc), -1
gc.callbacks.append(on_gc)
keep = []
for i in range(1, 200_001):
    keep.append([i])
    if len(full_gc) > collections:
        next_full = i
        break
print(elapsed, len(bag.dags), sum(full_gc[:collections]) * 1000, next_full)
"""


def _project(tmp: Path, n: int) -> tuple[dict[str, str], Path, str]:
    home = tmp / f"n{n}"
    dags = home / "dags"
    dags.mkdir(parents=True)
    shutil.copy(LOADER, dags / LOADER.name)
    text = EXAMPLE.read_text()
    for i in range(n):
        (dags / "pipelines").mkdir(exist_ok=True)
        (dags / "pipelines" / f"p{i}.yaml").write_text(
            text.replace("name: example-command-pipeline", f"name: pipeline-{i}", 1))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TP_", "_AIRFLOW_PARSING_CONTEXT"))}
    env.update({"AIRFLOW_HOME": str(home / "airflow"), "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "600",
                "TP_HOME": str(home / "tp")})
    subprocess.run([str(BIN / "airflow"), "db", "migrate"], env=env, check=True, capture_output=True)
    return env, dags, f"pipeline-{n // 2}"


def _parse_ms(env: dict[str, str], dags: Path, dag_id: str) -> tuple[float, int, float, int]:
    """(parse ms, DAGs in the bag, ms of full garbage collections during the parse, how many
    more small allocations until the next full collection)."""
    out = subprocess.run([sys.executable, "-c", _PARSE, str(dags / LOADER.name), str(dags), dag_id, TASK],
                         env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"parse failed: {out.stderr[-2000:]}")
    elapsed, count, full_gc, next_full = out.stdout.strip().splitlines()[-1].split()
    return float(elapsed), int(count), float(full_gc), int(next_full)


def _tasks_test_s(env: dict[str, str], dag_id: str) -> float:
    start = time.monotonic()
    proc = subprocess.Popen([str(BIN / "airflow"), "tasks", "test", dag_id, TASK], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    started = None
    tail: list[str] = []
    for line in proc.stdout:
        if started is None and STARTED.search(line):
            started = time.monotonic() - start
        tail = (tail + [line])[-40:]
    if proc.wait() or started is None:
        raise SystemExit(f"airflow tasks test failed (exit {proc.returncode}):\n{''.join(tail)}")
    return started


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("sizes", nargs="*", type=int, default=[1, 500])
    args = parser.parse_args(argv)
    runs = []
    with tempfile.TemporaryDirectory(prefix="tp-task-start-") as tmp_name:
        projects = {n: _project(Path(tmp_name), n) for n in args.sizes}
        figures = {n: {"task_parse": [], "task_parse_gc": [], "next_full_gc": [], "full_parse": [], "tasks_test": [],
                       "dags": set()}
                   for n in args.sizes}
        # Repetitions interleave the sizes (and the three figures), so that the load of a
        # shared machine, which changes over minutes, weighs on every size alike.
        for rep in range(args.reps):
            for n in args.sizes:
                env, dags, dag_id = projects[n]
                got = figures[n]
                # the DAG processor's parse comes first, as it does before any task of a folder runs
                got["full_parse"].append(round(_parse_ms(env, dags, "")[0], 1))
                elapsed, count, full_gc, next_full = _parse_ms(env, dags, dag_id)
                got["next_full_gc"].append(next_full)
                got["task_parse"].append(round(elapsed, 1))
                got["task_parse_gc"].append(round(full_gc, 1))
                got["dags"].add(count)
                got["tasks_test"].append(round(_tasks_test_s(env, dag_id), 3))
                print(f"rep {rep + 1} N={n}: task parse {elapsed:.0f} ms ({full_gc:.0f} ms of it a full GC), "
                      f"tasks test {got['tasks_test'][-1]:.2f} s, "
                      f"full parse {got['full_parse'][-1]:.0f} ms", flush=True)
        for n in args.sizes:
            got, dag_id = figures[n], projects[n][2]
            run = {"n": n, "dag_id": dag_id, "dags_in_task_parse": sorted(got["dags"]),
                   "task_parse_ms": statistics.median(got["task_parse"]),
                   "task_parse_without_full_gc_ms": statistics.median(
                       [t - g for t, g in zip(got["task_parse"], got["task_parse_gc"])]),
                   "tasks_test_s": statistics.median(got["tasks_test"]),
                   "full_parse_ms": statistics.median(got["full_parse"]),
                   "task_parse_ms_runs": got["task_parse"], "task_parse_full_gc_ms_runs": got["task_parse_gc"],
                   "allocations_until_next_full_gc_runs": got["next_full_gc"],
                   "tasks_test_s_runs": got["tasks_test"],
                   "full_parse_ms_runs": got["full_parse"]}
            print(f"N={n}: task parse {run['task_parse_ms']:.0f} ms (DAGs built: {run['dags_in_task_parse']}), "
                  f"`airflow tasks test` to the task's code {run['tasks_test_s']:.2f} s, "
                  f"full parse {run['full_parse_ms']:.0f} ms")
            runs.append(run)
    result: dict = {
        "machine": f"{len(os.sched_getaffinity(0))} CPUs available (nproc), {os.cpu_count()} in the machine",
        "repetitions": args.reps,
        "method": __doc__.split("\n\n", 2)[2].split("\n\nResults go")[0],
        "runs": runs,
    }
    by_n = {run["n"]: run for run in runs}
    if 1 in by_n and 500 in by_n:
        result["ratio_500_to_1"] = {
            key: round(by_n[500][key] / by_n[1][key], 3)
            for key in ("task_parse_ms", "task_parse_without_full_gc_ms", "tasks_test_s", "full_parse_ms")}
        result["target"] = "task start at N=500 within 1.2x of N=1 (task_parse_ms and tasks_test_s)"
        print("ratio N=500 / N=1:", result["ratio_500_to_1"])
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(f"saved {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
