"""DAG parse time of N dag-factory pipelines equivalent to one of ours.

Usage: python bench/dagfactory_parse.py N [--pipeline FILE] [--folder DIR]

Runs in the benchmark venv (``.venv-bench``, made by ``make bench`` from
requirements-bench.txt), never in the product venv: it needs ``dag-factory`` beside
Airflow and the Kubernetes provider, and imports nothing of train-platform.

``FILE`` (default: the example incremental-learning pipeline) is translated into the
dag-factory YAML that builds the same DAG shape: one ``KubernetesPodOperator`` per task with
its image, a command for its type, its cpu/memory as requests and limits and its GPUs as an
``nvidia.com/gpu`` limit, the pipeline's dependencies and its parameters as DAG params.
N copies (``pipeline_0`` ...) are written into ``DIR`` (a temporary folder by default) with
a loader file calling ``dagfactory.load_yaml_dags``, and ``DagBag`` is timed over that
loader. The last line of stdout is JSON: ``{"n", "seconds", "ms_per_pipeline"}``. Exits
non-zero when the bag does not hold exactly N DAGs or has import errors.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger("dagfactory_parse")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "dags" / "pipelines" / "incremental-learning-pipeline.yaml"
POD_OPERATOR = "airflow.providers.cncf.kubernetes.operators.pod.KubernetesPodOperator"
RESOURCES_TYPE = "kubernetes.client.models.V1ResourceRequirements"
# What the platform's operators run for each task type (see operators/).
COMMANDS = {
    "data_processing": ["python", "-m", "ml.prepare"],
    "training": ["python", "-m", "ml.train"],
    "evaluation": ["python", "-m", "ml.evaluate"],
    "deployment": ["python", "-m", "train_platform.cli", "model", "deploy"],
    "packaging": ["python", "-m", "train_platform.cli", "model", "package"],
    "batch_inference": ["python", "-m", "ml.serving.batch_inference"],
}


def _argv(value: Any) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def _task(task: dict[str, Any], upstream: list[str]) -> dict[str, Any]:
    resources = task.get("resources") or {}
    requests = {key: str(resources[key]) for key in ("cpu", "memory") if resources.get(key)}
    limits = dict(requests)
    if int(resources.get("gpu") or 0):
        limits["nvidia.com/gpu"] = str(resources["gpu"])
    command = (_argv(task.get("command")) or COMMANDS.get(task["type"], ["true"])) + _argv(task.get("args"))
    config: dict[str, Any] = {
        "operator": POD_OPERATOR,
        "name": task["name"],
        "image": task["image"],
        "cmds": command[:1],
        "arguments": command[1:],
        "container_resources": {"__type__": RESOURCES_TYPE, "requests": requests, "limits": limits},
    }
    if upstream:
        config["dependencies"] = upstream
    return config


def dagfactory_config(spec: dict[str, Any], dag_id: str) -> dict[str, Any]:
    """The dag-factory document (one DAG, ``dag_id``) for a train-platform pipeline spec."""
    body = spec["spec"]
    upstream: dict[str, list[str]] = {}
    for edge in body.get("dependencies") or []:
        upstream.setdefault(edge["to"], []).append(edge["from"])
    for task in body["tasks"]:
        upstream.setdefault(task["name"], []).extend(task.get("depends_on") or [])
    dag: dict[str, Any] = {
        # A cron or preset schedule carries over; an asset schedule has no dag-factory twin here.
        "schedule": body.get("schedule") if isinstance(body.get("schedule"), str) else None,
        "catchup": False,
        "default_args": {"start_date": "2026-01-01"},
        "tasks": {task["name"]: _task(task, upstream[task["name"]]) for task in body["tasks"]},
    }
    if body.get("parameters"):
        dag["params"] = dict(body["parameters"])
    return {dag_id: dag}


def write_pipelines(spec: dict[str, Any], n: int, folder: Path) -> Path:
    """Write ``n`` dag-factory pipelines and their loader into ``folder``; returns the loader."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"pipeline_{i}.yml").write_text(yaml.safe_dump(dagfactory_config(spec, f"pipeline_{i}"), sort_keys=False))
    loader = folder / "load_pipelines.py"
    # Mentions "airflow" and "dag", as Airflow's safe mode wants of a DAG file.
    loader.write_text(
        "# airflow dag loader for the parse benchmark\n"
        "from dagfactory import load_yaml_dags\n\n"
        f"load_yaml_dags(globals_dict=globals(), dags_folder={str(folder)!r})\n"
    )
    return loader


def time_parse(loader: Path, n: int) -> float:
    """Seconds for ``DagBag`` over ``loader``; ``SystemExit`` unless it holds exactly n DAGs."""
    os.environ.setdefault("AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT", "600")
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    from airflow.dag_processing.dagbag import DagBag

    start = time.perf_counter()
    bag = DagBag(dag_folder=str(loader))
    elapsed = time.perf_counter() - start
    if len(bag.dags) != n or bag.import_errors:
        raise SystemExit(f"dag-factory: expected {n} DAGs, got {len(bag.dags)}; import errors: {bag.import_errors}")
    return elapsed


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int, help="number of pipelines")
    parser.add_argument("--pipeline", type=Path, default=EXAMPLE, help="train-platform pipeline to translate")
    parser.add_argument("--folder", type=Path, help="where to write the dag-factory files (default: a temporary folder)")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("N must be at least 1")
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    spec = yaml.safe_load(args.pipeline.read_text())
    with tempfile.TemporaryDirectory(prefix="tp-dagfactory-") as tmp:
        loader = write_pipelines(spec, args.n, args.folder or Path(tmp))
        seconds = time_parse(loader, args.n)
    log.info("dag-factory: %d pipelines parsed in %.2f s (%.1f ms/pipeline)", args.n, seconds, 1000 * seconds / args.n)
    print(json.dumps({"n": args.n, "seconds": round(seconds, 4), "ms_per_pipeline": round(1000 * seconds / args.n, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
