"""Notifications of failed runs, failed tasks and failed evaluation gates, posted to a webhook.

``WebhookNotifier`` is an Airflow notifier (``airflow.sdk.BaseNotifier``). The compiler sets
it as every DAG's ``on_failure_callback`` (a failed run), every task's
``on_failure_callback`` (a task that failed its last try) and the ``on_skipped_callback`` of
``deployment`` tasks (the candidate failed its evaluation gate: the task exits
``GATE_FAILED_EXIT_CODE`` and ends skipped, see ``operators/deployment.py``).

Where it posts comes from an Airflow connection, ``tp_notify`` unless the pipeline's
``spec.notify.conn_id`` names another:

- ``host`` holding a whole URL: posted to as it is
  (``{"conn_type": "http", "host": "https://hooks.example.com/services/T0/B0"}``);
- else ``<conn_type>://<host>[:<port>]/<path>``, the path from ``extra.endpoint`` or the
  connection's ``schema`` (where the URI form ``http://host:8080/hooks/tp`` puts it);
  ``conn_type`` ``https`` gives https, anything else http;
- a password without a login is sent as ``Authorization: Bearer <password>``, login and
  password as Basic auth; ``extra.headers`` (an object) adds headers, ``extra.timeout``
  sets the seconds a post may take (10).

Without the connection nothing is posted and the task log says so. The body is one JSON
object: ``event`` (``task_failed``, ``run_failed``, ``gate_failed``), ``text`` (one line, the
field Slack- and Mattermost-style webhooks show), ``dag_id``, ``run_id``, ``task_id``,
``try_number``, ``logical_date``, ``reason``, ``log_url``, ``pipeline``,
``pipeline_version`` and, for ``gate_failed``, ``gate``: the model, the version and the
gate's reasons and figures from the ``deployment.json`` the task wrote.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

from airflow.sdk import BaseNotifier

from train_platform.settings import redact

DEFAULT_CONN_ID = "tp_notify"
EVENTS = ("task_failed", "run_failed", "gate_failed")
Event = Literal["task_failed", "run_failed", "gate_failed"]


class NotificationError(RuntimeError):
    """The webhook refused the notification or could not be reached."""


@dataclass(frozen=True)
class Webhook:
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float = 10.0


def webhook_from_connection(conn: Any) -> Webhook:
    """The URL, headers and timeout a connection describes (see the module docstring)."""
    extra = conn.extra_dejson if isinstance(getattr(conn, "extra_dejson", None), dict) else {}
    host = (conn.host or "").strip()
    if not host:
        raise NotificationError(f"connection {conn.conn_id!r} has no host: give it the webhook's URL")
    if "://" in host:
        url = host
    else:
        scheme = "https" if (conn.conn_type or "").lower() == "https" else "http"
        path = str(extra.get("endpoint") or conn.schema or "").lstrip("/")
        url = f"{scheme}://{host}" + (f":{conn.port}" if conn.port else "") + f"/{path}"
    headers = {"Content-Type": "application/json"}
    extra_headers = extra.get("headers") or {}
    if not isinstance(extra_headers, dict):
        raise NotificationError(f"connection {conn.conn_id!r}: extra.headers must be an object of name -> value")
    headers.update({str(k): str(v) for k, v in extra_headers.items()})
    if conn.password and conn.login:
        token = base64.b64encode(f"{conn.login}:{conn.password}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    elif conn.password:
        headers["Authorization"] = f"Bearer {conn.password}"
    return Webhook(url, headers, float(extra.get("timeout") or 10.0))


def _iso(value: Any) -> str | None:
    return value.isoformat() if hasattr(value, "isoformat") else (None if value is None else str(value))


def build_payload(event: Event, context: Mapping[str, Any], *, pipeline: str = "",
                  pipeline_version: str = "") -> dict[str, Any]:
    """The JSON body for ``event`` from an Airflow callback context."""
    ti = context.get("ti") or context.get("task_instance")
    dag = context.get("dag")
    dag_run = context.get("dag_run")
    dag_id = getattr(dag, "dag_id", None) or getattr(ti, "dag_id", None)
    run_id = context.get("run_id") or getattr(dag_run, "run_id", None)
    task_id = getattr(ti, "task_id", None)
    try:
        log_url = getattr(ti, "log_url", None) if ti is not None else None
    except Exception:  # the URL needs the API server's base URL; a notification goes out without it
        log_url = None
    payload: dict[str, Any] = {
        "event": event, "dag_id": dag_id, "run_id": run_id, "task_id": task_id,
        "try_number": getattr(ti, "try_number", None),
        "logical_date": _iso(context.get("logical_date") or getattr(dag_run, "logical_date", None)),
        "pipeline": pipeline or None, "pipeline_version": pipeline_version or None, "log_url": log_url,
    }
    if event == "task_failed":
        exception = context.get("exception")
        reason = redact(f"{type(exception).__name__}: {exception}") if exception is not None else "the task failed"
        text = f"task {task_id} of {dag_id} failed in run {run_id} (try {payload['try_number']}): {reason}"
    elif event == "run_failed":
        reason = str(context.get("reason") or "the run failed")
        text = f"run {run_id} of {dag_id} failed ({reason}" + (f"; last task: {task_id})" if task_id else ")")
    else:
        from train_platform.registry.metrics_export import read_deployment

        task = context.get("task")
        record = read_deployment(getattr(task, "resolved_outputs", None) or {}) or {}
        reasons = [str(r) for r in record.get("reasons") or []] if record.get("action") == "gate_failed" else []
        payload["gate"] = {"model": record.get("model"), "version": record.get("version"), "reasons": reasons,
                           "figures": record.get("figures") or {}}
        model = record.get("model") or "the candidate"
        version = f" v{record['version']}" if record.get("version") is not None else ""
        reason = "; ".join(reasons) if reasons else (
            "the deployment task wrote no deployment.json; `tp model history` shows the gate's reasons")
        text = (f"{model}{version} failed its evaluation gate in run {run_id} of {dag_id}: {reason}; "
                "nothing deployed")
    payload["reason"] = reason
    payload["text"] = f"train-platform: {text}"
    return payload


def post(webhook: Webhook, payload: Mapping[str, Any]) -> int:
    """POSTs ``payload`` as JSON; the HTTP status. Raises ``NotificationError`` naming the
    URL (credentials redacted) when the webhook answers an error or cannot be reached."""
    body = json.dumps(payload, default=str).encode()
    request = urllib.request.Request(webhook.url, data=body, headers=webhook.headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=webhook.timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        raise NotificationError(f"webhook {redact(webhook.url)} answered {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise NotificationError(f"webhook {redact(webhook.url)} cannot be reached: {redact(exc)}") from None


class WebhookNotifier(BaseNotifier):
    """Posts a failed run, a failed task or a failed evaluation gate to the webhook of the
    Airflow connection ``conn_id`` (see the module docstring for the connection and the body).

    :param event: what the callback it is set on reports: ``task_failed``, ``run_failed`` or
        ``gate_failed``.
    :param conn_id: the Airflow connection holding the webhook. (templated)
    :param pipeline: the pipeline's name, put in the body.
    :param pipeline_version: its version, put in the body.
    """

    template_fields = ("conn_id",)

    def __init__(self, event: Event, *, conn_id: str = DEFAULT_CONN_ID, pipeline: str = "",
                 pipeline_version: str = "") -> None:
        super().__init__()
        if event not in EVENTS:
            raise ValueError(f"notification event must be one of {EVENTS}, got {event!r}")
        self.event = event
        self.conn_id = conn_id
        self.pipeline = pipeline
        self.pipeline_version = pipeline_version

    def __repr__(self) -> str:
        return f"WebhookNotifier({self.event!r}, conn_id={self.conn_id!r})"

    def render_template_fields(self, context, jinja_env=None) -> None:
        # `airflow dags test` runs DAG callbacks with the scheduler's serialized DAG in the
        # context, which has no template environment; the DAG processor passes the real DAG.
        dag = context.get("dag")
        if jinja_env is None and not hasattr(dag, "get_template_env"):
            jinja_env = self.get_template_env()
        super().render_template_fields(context, jinja_env)

    def webhook(self) -> Webhook | None:
        from airflow.sdk import BaseHook
        from airflow.sdk.exceptions import AirflowNotFoundException

        try:
            conn = BaseHook.get_connection(self.conn_id)
        except AirflowNotFoundException:
            self.log.warning("no Airflow connection %r: the %s notification is not sent (add the connection "
                             "with the webhook's URL to send them)", self.conn_id, self.event)
            return None
        return webhook_from_connection(conn)

    def notify(self, context) -> None:
        webhook = self.webhook()
        if webhook is None:
            return
        payload = build_payload(self.event, context, pipeline=self.pipeline, pipeline_version=self.pipeline_version)
        status = post(webhook, payload)
        self.log.info("%s notification sent to connection %r (HTTP %d)", self.event, self.conn_id, status)
