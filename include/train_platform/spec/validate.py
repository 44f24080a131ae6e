"""Turning a parsed pipeline file into a ``PipelineSpec``, or into every problem it has.

Field-level problems come from the pydantic models; whole-pipeline problems (task types,
duplicate names, unknown or cyclic dependencies, parameter types, mounts) are checked here on
the raw data, so a file with several mistakes reports all of them in one pass.
"""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from train_platform.spec.task_types import TASK_TYPES, known_types
from train_platform.exceptions import PipelineSpecError, SpecIssue
from train_platform.spec.models import ParameterSchema, PipelineSpec
from train_platform.spec.yaml_source import FieldPath, SourceDocument, read_file

_SCHEMA_KEYS = set(ParameterSchema.model_fields)
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
}


def load_pipeline(path: str | Path) -> PipelineSpec:
    """Read and validate one pipeline file; raise PipelineSpecError listing every problem."""
    return validate_document(read_file(path))


def validate_document(doc: SourceDocument) -> PipelineSpec:
    issues: list[SpecIssue] = []
    spec: PipelineSpec | None = None
    try:
        spec = PipelineSpec.model_validate(doc.data)
    except ValidationError as exc:
        issues.extend(_pydantic_issues(doc, exc))
    issues.extend(_pipeline_issues(doc))
    if issues:
        # One problem can be seen by both passes (say, a missing task name); report it once.
        unique = list(dict.fromkeys(issues))
        unique.sort(key=lambda issue: issue.line)
        raise PipelineSpecError(unique)
    assert spec is not None  # no issues means pydantic accepted the document
    return spec


# --- field-level problems -------------------------------------------------------------


def _model_at(path: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model that describes the mapping at ``path`` (None if not a model)."""
    model: type[BaseModel] | None = PipelineSpec
    for part in path:
        if isinstance(part, int) or model is None:
            continue
        field = next((f for name, f in model.model_fields.items() if part in (name, f.alias)), None)
        model = _first_model(field.annotation) if field else None
    return model


def _first_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if isinstance(annotation, (types.UnionType, typing._GenericAlias)) or typing.get_origin(annotation):
        for arg in typing.get_args(annotation):
            found = _first_model(arg)
            if found:
                return found
    return None


def _pydantic_issues(doc: SourceDocument, exc: ValidationError) -> list[SpecIssue]:
    issues = []
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        # pydantic adds the union member it tried (e.g. 'str', 'AssetSchedule') to the loc.
        loc = tuple(p for p in loc if not (isinstance(p, str) and (p[:1].isupper() or p in ("str", "list[str]"))))
        kind = error["type"]
        if kind == "extra_forbidden":
            field = loc[-1]
            model = _model_at(loc[:-1])
            allowed = sorted(f.alias or name for name, f in model.model_fields.items()) if model else []
            hint = difflib.get_close_matches(str(field), allowed, n=1)
            message = f"unknown field {field!r}"
            message += f"; did you mean {hint[0]!r}?" if hint else f"; known fields: {', '.join(allowed)}"
        elif kind == "missing":
            message = "required field is missing"
        else:
            message = error["msg"].removeprefix("Value error, ")
            if kind.endswith("_type") or kind.endswith("_parsing"):
                message += f" (got {error.get('input')!r})"
        issues.append(doc.issue(loc, message))
    return issues


# --- whole-pipeline problems ----------------------------------------------------------


def _pipeline_issues(doc: SourceDocument) -> list[SpecIssue]:
    body = doc.data.get("spec")
    if not isinstance(body, dict):
        return []
    issues: list[SpecIssue] = []
    tasks = body.get("tasks") if isinstance(body.get("tasks"), list) else []
    names: dict[str, int] = {}
    for index, task in enumerate(tasks):
        if not isinstance(task, dict):
            continue
        path: FieldPath = ("spec", "tasks", index)
        name = task.get("name")
        if isinstance(name, str):
            if name in names:
                issues.append(doc.issue(path + ("name",), f"duplicate task name {name!r} (first used by spec.tasks[{names[name]}])"))
            else:
                names[name] = index
        type_name = task.get("type")
        if isinstance(type_name, str):
            task_type = TASK_TYPES.get(type_name)
            if task_type is None:
                hint = difflib.get_close_matches(type_name, known_types(), n=1)
                message = f"unknown task type {type_name!r}"
                message += f"; did you mean {hint[0]!r}?" if hint else ""
                issues.append(doc.issue(path + ("type",), f"{message} (known types: {', '.join(known_types())})"))
            elif task_type.requires_command and not task.get("command"):
                issues.append(doc.issue(path, f"a task of type {type_name!r} needs a `command`"))
        issues.extend(_mount_issues(doc, task.get("mounts"), path + ("mounts",)))
    issues.extend(_mount_issues(doc, body.get("mounts"), ("spec", "mounts")))

    edges = _edges(doc, body, tasks, names, issues)
    cycle = _find_cycle(list(names), edges)
    if cycle:
        first = names[cycle[0]]
        issues.append(doc.issue(("spec", "tasks", first), "dependency cycle: " + " -> ".join(cycle)))
    if isinstance(body.get("parameters"), dict):
        issues.extend(_parameter_issues(doc, body["parameters"]))
    if isinstance(body.get("schedule"), str):
        issues.extend(_schedule_issues(doc, body["schedule"]))
    return issues


# Airflow's schedule presets (airflow.utils.dates.cron_presets, plus @once and @continuous).
SCHEDULE_PRESETS = ("@once", "@continuous", "@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly")


def _schedule_issues(doc: SourceDocument, schedule: str) -> list[SpecIssue]:
    path: FieldPath = ("spec", "schedule")
    if schedule.startswith("@"):
        if schedule not in SCHEDULE_PRESETS:
            return [doc.issue(path, f"unknown schedule preset {schedule!r} (known: {', '.join(SCHEDULE_PRESETS)})")]
        return []
    from croniter import croniter  # what Airflow validates cron expressions with

    if len(schedule.split()) != 5 or not croniter.is_valid(schedule):
        return [doc.issue(path, f"{schedule!r} is not a cron expression (five fields: minute hour day month weekday)")]
    return []


def _edges(doc, body, tasks, names, issues) -> dict[str, list[str]]:
    """Upstream -> downstream edges from `dependencies` and `depends_on`, reporting unknown names."""
    edges: dict[str, list[str]] = {name: [] for name in names}

    def add(upstream: Any, downstream: Any, from_path: FieldPath, to_path: FieldPath) -> None:
        for end, path in ((upstream, from_path), (downstream, to_path)):
            if isinstance(end, str) and end not in names:
                hint = difflib.get_close_matches(end, list(names), n=1)
                suffix = f"; did you mean {hint[0]!r}?" if hint else ""
                issues.append(doc.issue(path, f"dependency on unknown task {end!r}{suffix}"))
        if upstream in names and downstream in names:
            edges[upstream].append(downstream)

    for index, dep in enumerate(body.get("dependencies") or []):
        if isinstance(dep, dict):
            path: FieldPath = ("spec", "dependencies", index)
            add(dep.get("from"), dep.get("to"), path + ("from",), path + ("to",))
    for index, task in enumerate(tasks):
        if isinstance(task, dict) and isinstance(task.get("depends_on"), list):
            for j, upstream in enumerate(task["depends_on"]):
                path = ("spec", "tasks", index, "depends_on", j)
                add(upstream, task.get("name"), path, path)
    return edges


def _find_cycle(nodes: list[str], edges: dict[str, list[str]]) -> list[str] | None:
    """A cycle as a list of names that starts and ends on the same task, or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in edges.get(node, []):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in nodes:
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def _mount_issues(doc: SourceDocument, value: Any, path: FieldPath) -> list[SpecIssue]:
    if value in (None, [], ""):
        return []
    try:
        from train_platform.storage import MountError, parse_mounts
    except ImportError:  # storage mounts not part of this build
        return [doc.issue(path, "storage mounts are not supported by this installation")]
    try:
        parse_mounts(value)
    except MountError as exc:
        return [doc.issue(path, str(exc))]
    return []


def is_parameter_schema(value: Any) -> bool:
    """The explicit form is a mapping of schema keys that names at least a type or a default."""
    return isinstance(value, dict) and bool(value) and set(value) <= _SCHEMA_KEYS and bool({"type", "default"} & set(value))


def infer_type(value: Any) -> str | None:
    if isinstance(value, bool):
        return "boolean"
    for name in ("integer", "number", "string", "array", "object"):
        if isinstance(value, _JSON_TYPES[name]):
            return name
    return None


def _parameter_issues(doc: SourceDocument, parameters: dict[str, Any]) -> list[SpecIssue]:
    issues = []
    for name, value in parameters.items():
        path: FieldPath = ("spec", "parameters", name)
        if not isinstance(name, str) or not name.isidentifier():
            issues.append(doc.issue(path, f"parameter name {name!r} must be a valid identifier (letters, digits, _)"))
            continue
        if not is_parameter_schema(value):
            continue
        declared = value.get("type")
        if declared is not None and declared not in _JSON_TYPES:
            issues.append(doc.issue(path + ("type",), f"unknown parameter type {declared!r} (known: {', '.join(_JSON_TYPES)})"))
            continue
        default = value.get("default")
        if declared and default is not None:
            ok = isinstance(default, _JSON_TYPES[declared]) and not (declared in ("integer", "number") and isinstance(default, bool))
            if not ok:
                issues.append(doc.issue(path + ("default",), f"default {default!r} is not of the declared type {declared!r}"))
                continue
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            if value.get("minimum") is not None and default < value["minimum"]:
                issues.append(doc.issue(path + ("default",), f"default {default} is below the minimum {value['minimum']}"))
            if value.get("maximum") is not None and default > value["maximum"]:
                issues.append(doc.issue(path + ("default",), f"default {default} is above the maximum {value['maximum']}"))
        if value.get("enum") is not None and default is not None and default not in value["enum"]:
            issues.append(doc.issue(path + ("default",), f"default {default!r} is not one of {value['enum']}"))
    return issues
