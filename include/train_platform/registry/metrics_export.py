"""Pipeline metrics for Prometheus: what a finished task, run, training, evaluation and
deployment step measured.

Pipeline tasks are short-lived processes that Prometheus cannot scrape, so their figures are
handed over the way Prometheus documents for batch jobs:

- ``TP_PUSHGATEWAY_URL`` set (``http://pushgateway:9091``, credentials allowed in the URL):
  each group is PUT to the Pushgateway under ``/metrics/job/<job>/pipeline/<p>[/task/<t>]``,
  replacing the group's previous figures.
- else ``TP_METRICS_TEXTFILE_DIR`` set: each group is written (atomically: a temporary file
  renamed into place) to ``<dir>/<job>__<pipeline>[__<task>].prom`` for node-exporter's
  textfile collector (``--collector.textfile.directory``).
- neither: nothing is exported.

Three groups, so that one kind of push never wipes another's figures:

| job | grouping | pushed when | series |
|---|---|---|---|
| ``tp_task_status`` | pipeline, task | a task ends (success, failure, skip) | duration, failed, finish time |
| ``tp_task_result`` | pipeline, task | a training, evaluation or deployment task ends with results | samples/s, accuracy, forgetting, gate verdict |
| ``tp_pipeline_run`` | pipeline | a DAG run ends | run duration, failed, finish time |

Every series carries ``pipeline`` (and ``task`` where it has one) as labels of its own, so
the figures read the same through the Pushgateway and through the textfile collector.
``METRICS`` lists every name with its labels: the Helm chart's alert rules are checked
against it. This module reads only the files the tasks wrote (``metrics.json`` of
``ml.train`` and ``ml.evaluate``, ``deployment.json`` of ``tp model deploy``); it imports
neither Airflow nor ``ml``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from train_platform.settings import redact

log = logging.getLogger(__name__)

STATUS_JOB = "tp_task_status"
RESULT_JOB = "tp_task_result"
RUN_JOB = "tp_pipeline_run"

# name -> (help, label names). Gauges all: a push replaces the group's previous values.
METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "tp_task_duration_seconds": ("Wall time of the task's last finished try", ("pipeline", "task")),
    "tp_task_failed": ("1 when the task's last finished try failed, 0 when it succeeded or was skipped",
                       ("pipeline", "task")),
    "tp_task_last_finished_timestamp_seconds": ("Unix time the task's last try finished", ("pipeline", "task")),
    "tp_pipeline_run_duration_seconds": ("Wall time of the pipeline's last finished run", ("pipeline",)),
    "tp_pipeline_run_failed": ("1 when the pipeline's last finished run failed, 0 when it succeeded",
                               ("pipeline",)),
    "tp_pipeline_run_last_finished_timestamp_seconds": ("Unix time the pipeline's last run finished",
                                                        ("pipeline",)),
    "tp_training_seconds": ("Training time of the task's last run (this process's share when resumed)",
                            ("pipeline", "task", "mode")),
    "tp_training_samples": ("Training samples processed by the task's last run", ("pipeline", "task", "mode")),
    "tp_training_samples_per_second": ("Training samples processed per second by the task's last run",
                                       ("pipeline", "task", "mode")),
    "tp_training_epochs": ("Epochs the task's last training run completed", ("pipeline", "task", "mode")),
    "tp_evaluation_metric": ("Headline metric of the candidate in the task's last evaluation (accuracy, "
                             "macro_f1, mae, rmse, ...)", ("pipeline", "task", "metric")),
    "tp_evaluation_baseline_metric": ("The same metric of the baseline (production) on the same data",
                                      ("pipeline", "task", "metric")),
    "tp_evaluation_forgetting": ("Accuracy on the classes the baseline knew: baseline's minus the candidate's "
                                 "(positive = forgotten)", ("pipeline", "task")),
    "tp_gate_passed": ("1 when the candidate of the task's last deployment step passed its evaluation gate, "
                       "0 when it failed", ("pipeline", "task", "model")),
    "tp_deployment_candidate_version": ("Registry version the task's last deployment step acted on",
                                        ("pipeline", "task", "model")),
}
# Headline numbers of an evaluation that become tp_evaluation_metric series (ml.evaluate's keys).
EVALUATION_METRICS = ("accuracy", "macro_f1", "mae", "rmse", "mape", "smape", "naive_mae", "mase",
                      "precision", "recall", "f1", "auc")


@dataclass(frozen=True)
class MetricsExportConfig:
    """Where pipeline metrics go (see the module docstring); read from the environment."""

    pushgateway_url: str | None = None
    textfile_dir: Path | None = None
    # Seconds a push may take; a slow gateway must not hold a task's finish.
    timeout: float = 10.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "MetricsExportConfig":
        env = os.environ if env is None else env
        url = (env.get("TP_PUSHGATEWAY_URL") or "").strip() or None
        if url is not None and not re.match(r"^https?://[^/\s]+", url):
            raise ValueError(f"TP_PUSHGATEWAY_URL {redact(url)!r} must be an http:// or https:// URL")
        folder = (env.get("TP_METRICS_TEXTFILE_DIR") or "").strip()
        if folder and not Path(folder).is_absolute():
            raise ValueError(f"TP_METRICS_TEXTFILE_DIR {folder!r} must be an absolute path")
        timeout = float(env.get("TP_PUSHGATEWAY_TIMEOUT") or cls.timeout)
        return cls(url, Path(folder) if folder else None, timeout)

    @property
    def enabled(self) -> bool:
        return self.pushgateway_url is not None or self.textfile_dir is not None


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def task_status(pipeline: str, task: str, *, failed: bool, duration: float | None,
                finished_at: float | None = None) -> list[Sample]:
    labels = {"pipeline": pipeline, "task": task}
    samples = [Sample("tp_task_failed", labels, 1.0 if failed else 0.0),
               Sample("tp_task_last_finished_timestamp_seconds", labels, finished_at or time.time())]
    if duration is not None:
        samples.append(Sample("tp_task_duration_seconds", labels, max(0.0, duration)))
    return samples


def run_status(pipeline: str, *, failed: bool, duration: float | None, finished_at: float | None = None) -> list[Sample]:
    labels = {"pipeline": pipeline}
    samples = [Sample("tp_pipeline_run_failed", labels, 1.0 if failed else 0.0),
               Sample("tp_pipeline_run_last_finished_timestamp_seconds", labels, finished_at or time.time())]
    if duration is not None:
        samples.append(Sample("tp_pipeline_run_duration_seconds", labels, max(0.0, duration)))
    return samples


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        log.info("no %s: the task's results are not visible here, none exported", path)
        return None
    except (OSError, json.JSONDecodeError) as exc:
        log.warning("cannot read %s (%s): the task's results are not exported", path, exc)
        return None
    return data if isinstance(data, dict) else None


def _first_folder(outputs: Mapping[str, str]) -> Path | None:
    for location in outputs.values():
        if location.startswith("/"):
            return Path(location)
    return None


def training_results(pipeline: str, task: str, outputs: Mapping[str, str]) -> list[Sample]:
    """From the ``metrics.json`` ``ml.train`` writes next to the checkpoint (first output)."""
    folder = _first_folder(outputs)
    data = None if folder is None else _read_json(folder / "metrics.json")
    if data is None:
        return []
    labels = {"pipeline": pipeline, "task": task, "mode": str(data.get("mode") or "unknown")}
    samples: list[Sample] = []
    seconds = _finite(data.get("train_seconds_this_process"))
    processed = _finite(data.get("samples_processed"))
    epochs = _finite(data.get("epochs"))
    if seconds is not None:
        samples.append(Sample("tp_training_seconds", labels, seconds))
    if processed is not None:
        samples.append(Sample("tp_training_samples", labels, processed))
        if seconds:
            samples.append(Sample("tp_training_samples_per_second", labels, processed / seconds))
    if epochs is not None:
        samples.append(Sample("tp_training_epochs", labels, epochs))
    return samples


def forgetting(evaluation: Mapping[str, Any]) -> float | None:
    """Accuracy on the classes the baseline knew, baseline's minus the candidate's, from an
    evaluation with a baseline (``ml.evaluate --baseline``); None when it cannot be told."""
    baseline = evaluation.get("baseline")
    if evaluation.get("task") != "classification" or not isinstance(baseline, Mapping):
        return None
    known = [str(label) for label in baseline.get("labels") or []]
    rows, base_rows = evaluation.get("per_class"), baseline.get("per_class")
    if not known or not isinstance(rows, Mapping) or not isinstance(base_rows, Mapping):
        return None

    def accuracy(per_class: Mapping[str, Any]) -> float | None:
        n = sum(int((per_class.get(label) or {}).get("n") or 0) for label in known)
        correct = sum(int((per_class.get(label) or {}).get("correct") or 0) for label in known)
        return correct / n if n else None

    candidate, base = accuracy(rows), accuracy(base_rows)
    return None if candidate is None or base is None else base - candidate


def evaluation_results(pipeline: str, task: str, outputs: Mapping[str, str]) -> list[Sample]:
    """From the ``metrics.json`` ``ml.evaluate`` writes into the first output folder."""
    folder = _first_folder(outputs)
    data = None if folder is None else _read_json(folder / "metrics.json")
    if data is None:
        return []
    samples: list[Sample] = []
    baseline = data.get("baseline") if isinstance(data.get("baseline"), Mapping) else {}
    for metric in EVALUATION_METRICS:
        labels = {"pipeline": pipeline, "task": task, "metric": metric}
        if (value := _finite(data.get(metric))) is not None:
            samples.append(Sample("tp_evaluation_metric", labels, value))
        if (value := _finite(baseline.get(metric))) is not None:
            samples.append(Sample("tp_evaluation_baseline_metric", labels, value))
    if (forgot := forgetting(data)) is not None:
        samples.append(Sample("tp_evaluation_forgetting", {"pipeline": pipeline, "task": task}, forgot))
    return samples


def read_deployment(outputs: Mapping[str, str]) -> dict[str, Any] | None:
    """The ``deployment.json`` ``tp model deploy --out`` wrote into the first output folder."""
    folder = _first_folder(outputs)
    return None if folder is None else _read_json(folder / "deployment.json")


def deployment_results(pipeline: str, task: str, inputs: Mapping[str, str],
                       outputs: Mapping[str, str]) -> list[Sample]:
    """The gate verdict and the version a deployment step acted on. The gate passed when the
    step had an evaluation and did not end ``gate_failed`` (``run_deploy_command`` goes on
    only past a passed gate); without an evaluation no verdict is exported."""
    record = read_deployment(outputs)
    if record is None or not record.get("model"):
        return []
    labels = {"pipeline": pipeline, "task": task, "model": str(record["model"])}
    samples: list[Sample] = []
    if record.get("action") == "gate_failed":
        samples.append(Sample("tp_gate_passed", labels, 0.0))
    elif inputs.get("evaluation") and inputs.get("model"):
        samples.append(Sample("tp_gate_passed", labels, 1.0))
    if (version := _finite(record.get("version"))) is not None:
        samples.append(Sample("tp_deployment_candidate_version", labels, version))
    return samples


def task_results(task_type: str, pipeline: str, task: str, inputs: Mapping[str, str],
                 outputs: Mapping[str, str]) -> list[Sample]:
    """What a finished task of ``task_type`` measured; empty for other types."""
    if task_type == "training":
        return training_results(pipeline, task, outputs)
    if task_type == "evaluation":
        return evaluation_results(pipeline, task, outputs)
    if task_type == "deployment":
        return deployment_results(pipeline, task, inputs, outputs)
    return []


def _registry(samples: list[Sample]):
    from prometheus_client import CollectorRegistry, Gauge

    registry = CollectorRegistry()
    gauges: dict[str, Any] = {}
    for sample in samples:
        doc, labelnames = METRICS[sample.name]
        if set(sample.labels) != set(labelnames):
            raise ValueError(f"{sample.name} takes labels {labelnames}, got {sorted(sample.labels)}")
        gauge = gauges.get(sample.name)
        if gauge is None:
            gauge = gauges[sample.name] = Gauge(sample.name, doc, labelnames, registry=registry)
        gauge.labels(**sample.labels).set(sample.value)
    return registry


def _file_part(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", value) or "_"


def _gateway_and_handler(url: str):
    """The gateway URL without credentials, and the handler that sends them (Basic auth)."""
    from urllib.parse import unquote, urlsplit, urlunsplit

    from prometheus_client.exposition import basic_auth_handler, default_handler

    parts = urlsplit(url)
    if parts.username is None:
        return url, default_handler
    netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
    user, password = unquote(parts.username), unquote(parts.password or "")

    def handler(url, method, timeout, headers, data):
        return basic_auth_handler(url, method, timeout, headers, data, user, password)

    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)), handler


def export(job: str, grouping: Mapping[str, str], samples: list[Sample],
           config: MetricsExportConfig | None = None) -> str | None:
    """Hands ``samples`` over as the group ``job`` + ``grouping``: the Pushgateway URL or the
    textfile written, None when nothing was exported. A gateway that cannot be reached is
    logged, not raised: a task's figures never fail the task."""
    config = config or MetricsExportConfig.from_env()
    if not samples or not config.enabled:
        return None
    registry = _registry(samples)
    if config.pushgateway_url is not None:
        from prometheus_client import push_to_gateway

        gateway, handler = _gateway_and_handler(config.pushgateway_url)
        try:
            push_to_gateway(gateway, job=job, registry=registry, grouping_key=dict(grouping),
                            timeout=config.timeout, handler=handler)
        except OSError as exc:  # URLError, connection refused, timeouts
            log.warning("pushing %s %s to %s failed: %s", job, dict(grouping), redact(config.pushgateway_url),
                        redact(exc))
            return None
        log.info("pushed %d %s series %s to %s", len(samples), job, dict(grouping), redact(config.pushgateway_url))
        return redact(config.pushgateway_url)
    from prometheus_client import write_to_textfile

    assert config.textfile_dir is not None
    config.textfile_dir.mkdir(parents=True, exist_ok=True)
    name = "__".join([job, *(_file_part(grouping[key]) for key in sorted(grouping))]) + ".prom"
    path = config.textfile_dir / name
    write_to_textfile(str(path), registry)  # a temporary file renamed into place
    log.info("wrote %d %s series to %s", len(samples), job, path)
    return str(path)
