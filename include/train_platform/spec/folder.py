"""Finding the pipeline files of a dags folder and which version of each pipeline is active.

Used by the DAG loader (``train_platform.compiler.loader``) and by ``tp pipeline list`` /
``activate``, so the command line and Airflow see the same pipelines. Airflow-free:
``.airflowignore`` is read here with Airflow's own rules (``glob``: gitignore-style
patterns, the default; ``regexp``: one regular expression a line), see ``discover``.

- Pipeline files are ``*.yaml``, ``*.yml`` and ``*.json`` that mention ``train-platform/``
  (other YAML, say another tool's config, is left alone).
- A file that cannot be read, parsed or validated is kept with its issues, never dropped,
  so the loader can turn it into a placeholder DAG that shows them.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from pathspec.patterns import GitWildMatchPattern

from train_platform.exceptions import PipelineSpecError, SpecIssue
from train_platform.settings import Settings, get_settings
from train_platform.spec import versions
from train_platform.spec.models import PipelineSpec
from train_platform.spec.validate import validate_document
from train_platform.spec.yaml_source import SourceDocument, parse_text

log = logging.getLogger(__name__)

PIPELINE_SUFFIXES = (".yaml", ".yml", ".json")
IGNORE_FILE = ".airflowignore"
_MARKER = "train-platform/"


@dataclass
class PipelineFile:
    path: Path
    spec: PipelineSpec | None = None
    # The parsed file, kept for the line numbers of errors found after validation.
    document: SourceDocument | None = None
    issues: list[SpecIssue] = field(default_factory=list)
    # The file's text as read, shown in the DAG's docs.
    text: str = ""


@dataclass
class FolderScan:
    """Every pipeline file of a folder, and which version of each pipeline is active."""

    files: list[PipelineFile]
    active: dict[str, str]

    def valid(self) -> list[PipelineFile]:
        return [f for f in self.files if f.spec is not None and not f.issues]

    def broken(self) -> list[PipelineFile]:
        return [f for f in self.files if f.issues]

    def versions_of(self, name: str) -> dict[str, PipelineFile]:
        return {f.spec.version: f for f in self.valid() if f.spec.name == name}


@dataclass(frozen=True)
class _Rule:
    """One line of an ignore file. ``base`` is set for glob patterns anchored to the ignore
    file's folder (a ``/`` at the start or in the middle, as in gitignore)."""

    pattern: GitWildMatchPattern | re.Pattern
    base: Path | None
    dir_only: bool = False


def _compile_rules(ignore_file: Path, root: Path, syntax: str) -> list[_Rule]:
    rules: list[_Rule] = []
    for line in ignore_file.read_text(encoding="utf-8", errors="replace").split("\n"):
        line = re.sub(r"\s*#.*", "", line)
        if not line:
            continue
        if syntax == "regexp":
            try:
                rules.append(_Rule(re.compile(line), base=root))
            except re.error as exc:
                log.warning("ignoring invalid pattern %r in %s: %s", line, ignore_file, exc)
            continue
        if line.strip() == "/":
            continue  # matches nothing in gitignore
        anchored = line.startswith("/") or "/" in line.rstrip("/")
        bare = line.lstrip("!").rstrip()
        rules.append(_Rule(GitWildMatchPattern(line), base=ignore_file.parent if anchored else None,
                           dir_only=bare != bare.rstrip("/")))
    return rules


def _ignored(path: Path, rules: list[_Rule], syntax: str) -> bool:
    if syntax == "regexp":
        for rule in rules:
            if rule.pattern.search(str(path.relative_to(rule.base))) is not None:
                return True
        return False
    ignored = False
    is_dir = path.is_dir()
    for rule in rules:  # later lines override earlier ones (negation with `!`)
        if rule.dir_only and not is_dir:
            continue
        relative = (path.relative_to(rule.base) if rule.base else Path(path.name)).as_posix()
        if is_dir:
            relative += "/"
        if rule.pattern.include is not None and rule.pattern.match_file(relative) is not None:
            ignored = rule.pattern.include
    return ignored


def discover(folder: Path, syntax: str | None = None) -> list[Path]:
    """Candidate pipeline files under ``folder``, honouring ``.airflowignore`` files at any
    level the way Airflow's DAG processor does. ``syntax`` is Airflow's
    ``[core] dag_ignore_file_syntax`` (default: ``AIRFLOW__CORE__DAG_IGNORE_FILE_SYNTAX``,
    else ``glob``)."""
    syntax = (syntax or os.environ.get("AIRFLOW__CORE__DAG_IGNORE_FILE_SYNTAX") or "glob").lower()
    if syntax not in ("glob", "regexp"):
        raise ValueError(f"unsupported dag_ignore_file_syntax {syntax!r} (glob or regexp)")
    found: list[Path] = []
    rules_by_dir: dict[Path, list[_Rule]] = {}
    for root_name, dirs, files in os.walk(folder, followlinks=True):
        root = Path(root_name)
        rules = list(rules_by_dir.get(root.resolve(), []))
        if (root / IGNORE_FILE).is_file():
            rules += _compile_rules(root / IGNORE_FILE, folder, syntax)
        dirs[:] = sorted(d for d in dirs if not _ignored(root / d, rules, syntax))
        for name in dirs:
            resolved = (root / name).resolve()
            if resolved in rules_by_dir:
                raise RuntimeError(f"recursive symlink loop in {folder}: {resolved} appears twice")
            rules_by_dir[resolved] = rules
        for name in files:
            if name.endswith(PIPELINE_SUFFIXES) and not _ignored(root / name, rules, syntax):
                found.append(root / name)
    return sorted(found)


def scan_folder(folder: str | Path, settings: Settings | None = None, *,
                ignore_syntax: str | None = None) -> FolderScan:
    settings = settings or get_settings()
    folder = Path(folder)
    files: list[PipelineFile] = []
    for path in discover(folder, ignore_syntax):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            files.append(PipelineFile(path, issues=[SpecIssue(str(path), 1, "", f"cannot read the file: {exc}")]))
            continue
        if _MARKER not in text:
            continue  # not a pipeline of ours
        try:
            document = parse_text(text, str(path))
            spec = validate_document(document)
        except PipelineSpecError as exc:
            files.append(PipelineFile(path, issues=exc.issues, text=text))
            continue
        files.append(PipelineFile(path, spec=spec, document=document, text=text))
    _flag_duplicates(files)
    pins = versions.read_pins(settings)
    active: dict[str, str] = {}
    by_name: dict[str, list[str]] = {}
    for f in files:
        if f.spec is not None and not f.issues:
            by_name.setdefault(f.spec.name, []).append(f.spec.version)
    for name, found in by_name.items():
        active[name] = versions.choose_active(found, pins.get(name))
        if pins.get(name) and pins[name] not in found:
            log.warning("pipeline %s is pinned to version %s, which is not in %s; using %s",
                        name, pins[name], folder, active[name])
    return FolderScan(files=files, active=active)


def _flag_duplicates(files: list[PipelineFile]) -> None:
    seen: dict[tuple[str, str], Path] = {}
    for f in files:
        if f.spec is None:
            continue
        key = (f.spec.name, f.spec.version)
        if key in seen:
            f.issues.append(SpecIssue(str(f.path), 1, "metadata.version",
                                      f"pipeline {key[0]!r} version {key[1]} is already defined in {seen[key]}"))
        else:
            seen[key] = f.path
