"""Reading a pipeline file safely, remembering the line of every value.

Pipeline files are YAML or JSON (JSON is read by the same YAML parser, which accepts it).
Only the safe loader is used: tags that try to construct Python objects are refused with
the line they are on. Alongside the data we keep ``lines``, a map from a field path such as
``("spec", "tasks", 1, "resources", "gpu")`` to the 1-based line it sits on, so every later
error can point at its line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

try:  # libyaml is 5-10x faster; the pure-Python loader is a correct fallback
    _Loader = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - depends on how PyYAML was built
    _Loader = yaml.SafeLoader

from train_platform.exceptions import PipelineSpecError, SpecIssue

FieldPath = tuple[str | int, ...]


@dataclass
class SourceDocument:
    """A parsed pipeline file: its data and where each field came from."""

    file: str
    data: Any
    lines: dict[FieldPath, int] = field(default_factory=dict)

    def line_of(self, path: FieldPath) -> int:
        """Line of ``path``, or of its nearest ancestor that has one (1 for the document)."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:end]))
            if line is not None:
                return line
        return 1

    def issue(self, path: FieldPath, message: str) -> SpecIssue:
        return SpecIssue(self.file, self.line_of(path), format_path(path), message)


def format_path(path: FieldPath) -> str:
    """``("spec", "tasks", 1, "name")`` -> ``spec.tasks[1].name``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _record_lines(node: yaml.Node, data: Any, path: FieldPath, lines: dict[FieldPath, int]) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode) and isinstance(data, dict):
        for key_node, value_node in node.value:
            key = key_node.value
            if key in data:
                _record_lines(value_node, data[key], path + (key,), lines)
    elif isinstance(node, yaml.SequenceNode) and isinstance(data, list):
        for index, (item_node, item) in enumerate(zip(node.value, data)):
            _record_lines(item_node, item, path + (index,), lines)


def parse_text(text: str, file: str) -> SourceDocument:
    """Parse one YAML/JSON document. Raises PipelineSpecError (never a yaml traceback)."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise PipelineSpecError([SpecIssue(file, 1, "", "the file is empty; expected a pipeline mapping")])
        data = loader.construct_document(node)
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise PipelineSpecError(
            [SpecIssue(file, line, "", f"YAML tag not allowed ({exc.problem}); only plain YAML values are accepted")]
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        problem = getattr(exc, "problem", None) or str(exc)
        raise PipelineSpecError([SpecIssue(file, line, "", f"not valid YAML/JSON: {problem}")]) from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise PipelineSpecError(
            [SpecIssue(file, node.start_mark.line + 1, "", f"expected a mapping at the top of the file, got {kind}")]
        )
    lines: dict[FieldPath, int] = {}
    _record_lines(node, data, (), lines)
    return SourceDocument(file=file, data=data, lines=lines)


def read_file(path: str | Path) -> SourceDocument:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise PipelineSpecError([SpecIssue(str(path), 1, "", "the file is not UTF-8 text")]) from None
    except OSError as exc:
        raise PipelineSpecError([SpecIssue(str(path), 1, "", f"cannot read the file: {exc.strerror}")]) from None
    if not text.strip():
        raise PipelineSpecError([SpecIssue(str(path), 1, "", "the file is empty; expected a pipeline mapping")])
    return parse_text(text, str(path))
