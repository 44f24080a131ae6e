"""Prometheus metrics of the inference service, served by BentoML at ``/metrics``.

Defined through ``bentoml.metrics`` so they join BentoML's multiprocess registry. The
request series carry the model version, which is what A/B comparisons and rollbacks look
at; the gauges say what each worker holds (cache size) and routes to (versions).
"""

from __future__ import annotations

from typing import Any

import bentoml

REQUESTS = bentoml.metrics.Counter(
    name="tp_predict_requests_total",
    documentation="Prediction requests by model version and outcome "
                  "(ok, bad_input, unauthorized, forbidden, overloaded, error)",
    labelnames=["model", "version", "outcome"],
)
LATENCY = bentoml.metrics.Histogram(
    name="tp_predict_latency_seconds",
    documentation="Time from request to answer, per model version (cache hits included)",
    labelnames=["model", "version"],
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5),
)
BATCH_SIZE = bentoml.metrics.Histogram(
    name="tp_batch_size",
    documentation="Samples per model forward pass (adaptive batching)",
    labelnames=["model", "version"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
CACHE = bentoml.metrics.Counter(
    name="tp_cache_lookups_total",
    documentation="Prediction cache lookups by result (hit, miss)",
    labelnames=["model", "version", "result"],
)
CONFIDENCE = bentoml.metrics.Histogram(
    name="tp_prediction_confidence",
    documentation="Confidence (top class probability) of classification answers",
    labelnames=["model", "version"],
    buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0),
)
DRIFT = bentoml.metrics.Gauge(
    name="tp_input_drift_psi",
    documentation="Population stability index of served inputs vs the training data, per channel",
    labelnames=["model", "version", "channel"],
    multiprocess_mode="mostrecent",
)
CONFIRMED = bentoml.metrics.Counter(
    name="tp_confirmed_predictions_total",
    documentation="Predictions later confirmed by a human label, by correctness",
    labelnames=["model", "version", "correct"],
)
FEEDBACK = bentoml.metrics.Counter(
    name="tp_feedback_total",
    documentation="Confirmed labels sent to /feedback by outcome: counted (the first for its "
                  "prediction), duplicate (the same label again), conflict (another label), "
                  "unknown (no recent prediction with that key)",
    labelnames=["model", "outcome"],
)
CACHE_ENTRIES = bentoml.metrics.Gauge(
    name="tp_cache_local_entries",
    documentation="Entries of the in-process prediction cache, summed over live workers, as of "
                  "their last stats flush (0 with Redis)",
    labelnames=["model"],
    multiprocess_mode="livesum",
)
CACHE_BYTES = bentoml.metrics.Gauge(
    name="tp_cache_local_bytes",
    documentation="Bytes held by the in-process prediction cache, summed over live workers, as of "
                  "their last stats flush (0 with Redis)",
    labelnames=["model"],
    multiprocess_mode="livesum",
)
SERVED_VERSION = bentoml.metrics.Gauge(
    name="tp_served_version",
    documentation="Version each live worker routes to, by role: production, and candidate "
                  "(0 when no A/B experiment runs); one series per worker process (pid label)",
    labelnames=["model", "role"],
    multiprocess_mode="liveall",
)

CAPTURED = bentoml.metrics.Counter(
    name="tp_capture_samples_total",
    documentation="Keyed predictions captured for the intake branch (TP_SERVE_CAPTURE_RATE) by "
                  "outcome: spooled (written to the worker's spool), failed (could not be spooled), "
                  "imported (committed to the branch by this worker's flush), duplicate (a sample "
                  "the branch or the import already held: a replayed key)",
    labelnames=["model", "outcome"],
)
CAPTURE_FLUSH = bentoml.metrics.Histogram(
    name="tp_capture_flush_seconds",
    documentation="Time of one import of the capture spool into the intake branch, off the "
                  "request path (a thread of the worker)",
    labelnames=["model"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)

_children: dict[tuple, Any] = {}


def child(metric: Any, **labels: str) -> Any:
    """``metric.labels(**labels)``, kept: the request path asks for the same few series on
    every request, and prometheus_client checks and converts the label values each time."""
    key = (id(metric), *labels.items())
    found = _children.get(key)
    if found is None:
        found = _children[key] = metric.labels(**labels)
    return found
