"""The typed pipeline spec, ``apiVersion: train-platform/v1``, ``kind: Pipeline``.

These models only describe shape and field-level rules; checks that need the whole pipeline
(task types, the dependency graph, parameter types) live in ``validate.py``.
"""

from __future__ import annotations

import re
import shlex
from datetime import date, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from train_platform.spec.durations import parse_duration
from train_platform.spec.quantities import parse_cpu, parse_gpu, parse_memory

API_VERSION = "train-platform/v1"
KIND = "Pipeline"

# Semantic versioning 2.0.0, as written in metadata.version ("1.0.0", "2.1.0-rc.1").
_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
# Names become Airflow dag/task ids: Airflow accepts word characters of any script, '.' and
# '-' (its KEY_REGEX); Kubernetes names and labels are derived from them (compiler/pods.py).
_NAME = re.compile(r"^[^\W_][\w.-]{0,199}$")

Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


class _Strict(BaseModel):
    # Unknown fields are errors (with a did-you-mean hint), never silently ignored.
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


def _split(value: list[str] | str | None) -> list[str] | None:
    if value is None:
        return None
    return shlex.split(value) if isinstance(value, str) else [str(part) for part in value]


def _check_name(value: str, what: str) -> str:
    if not _NAME.match(value):
        raise ValueError(
            f"{what} {value!r} may only contain letters (any script), digits, '-', '_' and '.', "
            "start with a letter or digit, and be at most 200 characters"
        )
    return value


class Metadata(_Strict):
    name: str
    version: str
    description: str = ""
    # Shown as the DAG owner in the Airflow UI.
    owner: str = "train-platform"
    tags: list[str] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_name(value, "pipeline name")

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError(f"version must be a quoted semantic version string like \"1.0.0\", got {value!r}")
        if not _SEMVER.match(value):
            raise ValueError(f"version {value!r} is not a semantic version (MAJOR.MINOR.PATCH, e.g. \"1.0.0\")")
        return value


class Resources(_Strict):
    cpu: str | None = None
    memory: str | None = None
    gpu: int = 0

    @field_validator("cpu", mode="before")
    @classmethod
    def _cpu(cls, value: Any) -> str | None:
        return None if value is None else parse_cpu(value)

    @field_validator("memory", mode="before")
    @classmethod
    def _memory(cls, value: Any) -> str | None:
        return None if value is None else parse_memory(value)

    @field_validator("gpu", mode="before")
    @classmethod
    def _gpu(cls, value: Any) -> int:
        return 0 if value is None else parse_gpu(value)


class TaskInput(_Strict):
    name: str
    # A path inside the task's container, or a ref (tp://dataset@branch, model:NAME:ALIAS|vN, s3://...).
    source: str


class TaskOutput(_Strict):
    name: str
    destination: str


class TaskSpec(_Strict):
    name: str
    type: str
    image: str | None = None
    # Overrides the task type's default command; strings are split like a shell would.
    command: list[str] | str | None = None
    args: list[str] | str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    resources: Resources = Field(default_factory=Resources)
    inputs: list[TaskInput] = Field(default_factory=list)
    outputs: list[TaskOutput] = Field(default_factory=list)
    depends_on: list[str] = Field(default_factory=list)
    mounts: list[str | dict[str, Any]] | str | None = None
    retries: int | None = Field(default=None, ge=0, le=100)
    retry_delay: Duration | None = None
    timeout: Duration | None = None
    priority: int | None = None
    pool: str | None = None
    executor: Literal["local", "kubernetes"] | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_name(value, "task name")

    def argv(self) -> list[str] | None:
        """``command`` then ``args`` as one argument list (strings split like a shell would);
        None when the task relies on its type's default command."""
        command = _split(self.command)
        if command is None:
            return _split(self.args)
        return command + (_split(self.args) or [])

    @field_validator("env", mode="before")
    @classmethod
    def _env(cls, value: Any) -> Any:
        # YAML reads `DEBUG: 1` as an int; environment variables are strings.
        if isinstance(value, dict):
            return {k: v if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v)
                    for k, v in value.items()}
        return value


class Dependency(_Strict):
    from_: str = Field(alias="from")
    to: str


class ParameterSchema(_Strict):
    """The explicit form of a parameter; the short form is just its default value."""

    type: Literal["string", "integer", "number", "boolean", "array", "object"] | None = None
    default: Any = None
    description: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    enum: list[Any] | None = None


class AssetSchedule(_Strict):
    # Run when any of these assets (URIs) is updated by another DAG.
    assets: list[str] = Field(min_length=1)


class DefaultArgs(_Strict):
    owner: str | None = None
    retries: int | None = Field(default=None, ge=0, le=100)
    retry_delay: Duration | None = None
    timeout: Duration | None = None
    pool: str | None = None
    priority: int | None = None
    depends_on_past: bool | None = None
    email: list[str] | str | None = None
    email_on_failure: bool | None = None
    executor: Literal["local", "kubernetes"] | None = None


class Notify(_Strict):
    # The Airflow connection holding the webhook that failed runs, tasks and gates are posted
    # to (train_platform.compiler.notify); without that connection nothing is posted.
    conn_id: str = Field(default="tp_notify", pattern=r"^[A-Za-z0-9_.-]{1,250}$")


class PipelineBody(_Strict):
    tasks: list[TaskSpec] = Field(min_length=1)
    dependencies: list[Dependency] = Field(default_factory=list)
    parameters: dict[str, Any] = Field(default_factory=dict)
    schedule: str | AssetSchedule | None = None
    # A fixed default keeps DAG parsing deterministic; no backfill unless catchup is asked for.
    start_date: date | datetime = date(2026, 1, 1)
    catchup: bool = False
    max_active_runs: int = Field(default=1, ge=1)
    default_args: DefaultArgs = Field(default_factory=DefaultArgs)
    mounts: list[str | dict[str, Any]] | str | None = None
    notify: Notify = Field(default_factory=Notify)


class PipelineSpec(_Strict):
    api_version: str = Field(alias="apiVersion")
    kind: str
    metadata: Metadata
    spec: PipelineBody

    @field_validator("api_version")
    @classmethod
    def _api_version(cls, value: str) -> str:
        if value != API_VERSION:
            raise ValueError(f"apiVersion must be {API_VERSION!r}, got {value!r}")
        return value

    @field_validator("kind")
    @classmethod
    def _kind(cls, value: str) -> str:
        if value != KIND:
            raise ValueError(f"kind must be {KIND!r}, got {value!r}")
        return value


    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def version(self) -> str:
        return self.metadata.version

    def upstream_of(self) -> dict[str, list[str]]:
        """Task name -> names of its direct upstream tasks, in file order, without repeats."""
        upstream: dict[str, list[str]] = {task.name: [] for task in self.spec.tasks}
        for task in self.spec.tasks:
            for dep in task.depends_on:
                if dep not in upstream[task.name]:
                    upstream[task.name].append(dep)
        for dep in self.spec.dependencies:
            if dep.from_ not in upstream[dep.to]:
                upstream[dep.to].append(dep.from_)
        return upstream


def version_key(version: str) -> tuple:
    """Sort key implementing semver precedence (a pre-release sorts before its release)."""
    match = _SEMVER.match(version)
    if not match:
        return (-1,)
    major, minor, patch, pre = int(match[1]), int(match[2]), int(match[3]), match[4]
    if pre is None:
        return (major, minor, patch, 1, ())
    parts = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))
    return (major, minor, patch, 0, parts)
