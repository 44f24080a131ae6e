"""Task type ``intake``: new recordings dropped into object storage become unlabelled samples
of a dataset's intake branch.

The task waits for objects under ``s3://BUCKET/PREFIX`` through an Airflow connection of the
amazon provider (``S3Hook``; parameter ``aws_conn_id``, default ``aws_default``; the
connection's ``endpoint_url`` extra points it at MinIO). While nothing new is there it
defers, like a deferrable sensor, on the standard provider's ``TimeDeltaTrigger``: it holds
no worker slot between looks (every ``intake_poke_interval`` seconds, default 60) and
fails when the task's ``timeout`` passes with nothing new (without one it waits on). The
amazon provider's own deferrable ``S3KeySensor`` trigger needs ``aiobotocore``, which the
pinned stack does not install.

New objects (keys ending ``.npz``, ``.csv``, ``.parquet`` or ``.pq``, the formats ``tp
dataset import --from`` reads; other keys are logged and left alone) are downloaded into
the task's folder under ``TP_HOME/runs`` and imported with ``tp storage intake
NAME@BRANCH`` as the pipeline's owner: unlabelled (status ``raw``), one commit per object
recording its URI and ETag, the branch created from main when missing (a file without
``ids`` gets the sample ids ``STEM-NNNNNN`` from its name). Then each imported
object is moved under the processed prefix (parameter ``intake_processed_prefix``,
default ``processed/``: ``incoming/a.npz`` becomes ``processed/incoming/a.npz``), whose keys
are never looked at again. A retry never imports an object twice: one imported before a
failed move is recognised by its recorded URI and ETag and only moved. An object that
cannot be imported (not a readable recording, sample ids the branch already holds) stays
where it is and fails the task, named, after the others are imported and moved.

Input ``objects`` (the first input when not named so): ``s3://BUCKET/PREFIX``. Output
``data`` (the first output): ``tp://NAME@BRANCH`` (``tp://NAME`` means ``@intake``). The
task runs in the worker, which holds the connection: ``executor: kubernetes`` is refused.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from operators.container_command import ContainerCommandOperator, _safe

if TYPE_CHECKING:
    from airflow.sdk import Context

SUFFIXES = (".npz", ".csv", ".parquet", ".pq")
DEFAULT_CONN_ID = "aws_default"
DEFAULT_POKE_S = 60.0
DEFAULT_PROCESSED = "processed/"
_SOURCE = re.compile(r"^s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/(.*))?$")
_TARGET = re.compile(r"^tp://([a-z][a-z0-9_]{0,62})(?:@([A-Za-z0-9][A-Za-z0-9._/-]{0,127}))?$")


def parse_source(task_id: str, location: str) -> tuple[str, str]:
    """``(bucket, prefix)`` of ``s3://BUCKET/PREFIX``."""
    match = _SOURCE.match(location or "")
    if not match:
        raise ValueError(f"{task_id}: intake's `objects` input must be s3://BUCKET/PREFIX, got {location!r}")
    return match[1], match[2] or ""


def parse_target(task_id: str, location: str) -> tuple[str, str]:
    """``(dataset, branch)`` of ``tp://NAME@BRANCH`` (branch ``intake`` when not given)."""
    match = _TARGET.match(location or "")
    if not match:
        raise ValueError(f"{task_id}: intake's `data` output must be a dataset branch tp://NAME@BRANCH, got {location!r}")
    return match[1], match[2] or "intake"


class IntakeOperator(ContainerCommandOperator):
    """Waits for new objects under ``s3://BUCKET/PREFIX`` and imports them into
    ``tp://NAME@BRANCH`` as unlabelled samples, each object once (see the module's
    docstring)."""

    task_type = "intake"
    ui_color = "#e6f5ee"

    def __init__(self, *, runner: str = "local", command: Sequence[str] | None = None, **kwargs: Any) -> None:
        task_id = kwargs.get("task_id", "intake")
        if runner != "local":
            raise ValueError(f"{task_id}: intake runs in the worker, which holds the connection; remove `executor: {runner}`")
        if command:
            raise ValueError(f"{task_id}: an intake task runs no command of its own; remove `command`/`args`")
        super().__init__(runner=runner, command=None, **kwargs)
        if not self.inputs:
            raise ValueError(f"{task_id}: intake needs an `objects` input, s3://BUCKET/PREFIX")
        if not self.outputs:
            raise ValueError(f"{task_id}: intake needs a `data` output, the dataset branch tp://NAME@BRANCH")
        source, target = self._source_location(), self._target_location()
        if "{{" not in source:
            parse_source(self.task_id, source)
        if "{{" not in target:
            parse_target(self.task_id, target)

    def _source_location(self) -> str:
        return self.inputs.get("objects") or next(iter(self.inputs.values()))

    def _target_location(self) -> str:
        return self.outputs.get("data") or next(iter(self.outputs.values()))

    def default_command(self, inputs: Mapping[str, str], outputs: Mapping[str, str],
                        params: Mapping[str, Any]) -> list[str]:
        """The import command, without its ``--object`` arguments."""
        name, branch = parse_target(self.task_id, outputs.get("data") or next(iter(outputs.values())))
        return ["python", "-m", "train_platform.cli", "storage", "intake", f"{name}@{branch}", "--json"]

    # ----- waiting ------------------------------------------------------------------------
    def execute(self, context: Context) -> dict[str, Any]:
        return self._look(context, None)

    def resume(self, context: Context, event: Any = None, waiting_since: str | None = None) -> dict[str, Any]:
        return self._look(context, waiting_since)

    def _look(self, context: Context, waiting_since: str | None) -> dict[str, Any]:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook
        from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger

        from train_platform.exceptions import TaskExecutionError

        params = dict(context.get("params") or {})
        bucket, prefix = parse_source(self.task_id, self.resolved_inputs.get("objects") or next(iter(self.resolved_inputs.values())))
        processed = str(params.get("intake_processed_prefix") or DEFAULT_PROCESSED)
        poke = float(params.get("intake_poke_interval") or DEFAULT_POKE_S)
        hook = S3Hook(aws_conn_id=str(params.get("aws_conn_id") or DEFAULT_CONN_ID))
        found = self._new_objects(hook, bucket, prefix, processed)
        now = datetime.now(timezone.utc)
        since = datetime.fromisoformat(waiting_since) if waiting_since else now
        where = f"s3://{bucket}/{prefix}"
        if not found:
            if self.execution_timeout is not None and now - since >= self.execution_timeout:
                raise TaskExecutionError(f"{self.task_id}: no new object under {where} within {self.execution_timeout}")
            wait = timedelta(seconds=poke)
            if self.execution_timeout is not None:
                wait = min(wait, since + self.execution_timeout - now)
            self.log.info("no new object under %s; looking again in %.0f s", where, wait.total_seconds())
            self.defer(trigger=TimeDeltaTrigger(wait), method_name="resume", kwargs={"waiting_since": since.isoformat()})
        self.log.info("%d new object(s) under %s", len(found), where)
        return self._import(context, hook, bucket, found, processed)

    def _new_objects(self, hook: Any, bucket: str, prefix: str, processed: str) -> list[dict[str, Any]]:
        found = []
        for item in hook.get_file_metadata(prefix, bucket):
            key = item["Key"]
            if key.endswith("/") or key.startswith(processed):
                continue
            if not key.lower().endswith(SUFFIXES):
                self.log.warning("s3://%s/%s is not a recording intake reads (%s); left alone", bucket, key, ", ".join(SUFFIXES))
                continue
            found.append({"key": key, "etag": str(item.get("ETag", "")).strip('"')})
        return sorted(found, key=lambda o: o["key"])

    # ----- importing ----------------------------------------------------------------------
    def _import(self, context: Context, hook: Any, bucket: str, found: list[dict[str, Any]],
                processed: str) -> dict[str, Any]:
        from train_platform.exceptions import TaskExecutionError
        from train_platform.execution.local import LocalProcess
        from train_platform.settings import get_settings

        run_id = context["run_id"]
        try_number = getattr(context.get("ti"), "try_number", 1)
        workdir = get_settings().runs_dir / _safe(self.dag_id) / _safe(run_id) / self.task_id / f"try-{try_number}"
        folder = workdir / "objects"
        folder.mkdir(parents=True, exist_ok=True)
        command = self.default_command(self.resolved_inputs, self.resolved_outputs, {})
        for index, item in enumerate(found):
            # Each in a folder of its own, under its own name: a file without ``ids`` gets the
            # sample ids STEM-NNNNNN from it, as with `tp dataset import --from`.
            local = folder / f"{index:05d}" / Path(item["key"]).name
            local.parent.mkdir(exist_ok=True)
            downloaded = hook.download_file(item["key"], bucket, str(folder), preserve_file_name=True,
                                            use_autogenerated_subdir=True)
            Path(downloaded).replace(local)
            command += ["--object", f"s3://{bucket}/{item['key']}", item["etag"] or "-", str(local)]
        report = workdir / "intake.json"
        report.unlink(missing_ok=True)
        command += ["--report", str(report)]
        env = {**self.env, "TP_USER": self.owner, "TP_PIPELINE": self.pipeline,
               "TP_PIPELINE_VERSION": self.pipeline_version, "TP_RUN_ID": run_id, "TP_TASK_ID": self.task_id}
        failure = None
        try:
            LocalProcess(command, env=env, cwd=workdir, log=self.log,
                         timeout=self.execution_timeout.total_seconds() if self.execution_timeout else None).run()
        except TaskExecutionError as exc:
            failure = exc
        if not report.exists():
            raise TaskExecutionError(f"{self.task_id}: importing the new objects failed: {failure}") from None
        result = json.loads(report.read_text())
        moved = []
        for item in result["objects"]:
            if item["status"] in ("imported", "already-imported"):
                key = item["object"].removeprefix(f"s3://{bucket}/")
                hook.copy_object(key, processed + key, bucket, bucket)
                hook.delete_objects(bucket, [key])
                moved.append(item["object"])
        self.log.info("imported %d sample(s) into %s@%s; moved %d object(s) under s3://%s/%s",
                      result["imported"], result["dataset"], result["branch"], len(moved), bucket, processed)
        failed = [f"{o['object']}: {o.get('error')}" for o in result["objects"] if o["status"] == "failed"]
        if failed:
            raise TaskExecutionError(f"{self.task_id}: {len(failed)} object(s) could not be imported and stay where "
                                     f"they are: " + "; ".join(failed))
        return {"pipeline_version": self.pipeline_version, "outputs": self.resolved_outputs,
                "dataset": f"tp://{result['dataset']}@{result['branch']}", "samples": result["imported"],
                "objects": [{k: o[k] for k in ("object", "etag", "status", "samples")} for o in result["objects"]]}
