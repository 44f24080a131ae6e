"""Finding the pipeline files of a dags folder and which version of each pipeline is active.

Used by the DAG loader (``train_platform.compiler.loader``) and by ``tp pipeline list`` /
``activate``, so the command line and Airflow see the same pipelines. Airflow-free:
``.airflowignore`` is read here with Airflow's own rules (``glob``: gitignore-style
patterns, the default; ``regexp``: one regular expression a line), see ``discover``.

- Pipeline files are ``*.yaml``, ``*.yml`` and ``*.json`` that mention ``train-platform/``
  (other YAML, say another tool's config, is left alone).
- A file that cannot be read, parsed or validated is kept with its issues, never dropped,
  so the loader can turn it into a placeholder DAG that shows them.
- ``scan_folder(..., names=..., paths=...)`` parses and validates only the files that can
  define those pipelines (the loader uses it when Airflow starts a task and names its DAG),
  and each chosen pipeline keeps all of its versions. Which pipeline a file declares comes
  from a name index that full scans write under ``TP_HOME/pipelines/`` (keyed by each
  file's size, mtime, ctime and inode), so an unchanged file is not even read; a file the
  index does not vouch for is read and searched for the names.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pathspec.patterns.gitignore.spec import GitIgnoreSpecPattern

from train_platform.exceptions import PipelineSpecError, SpecIssue
from train_platform.settings import Settings, get_settings
from train_platform.spec import versions
from train_platform.spec.models import Metadata, PipelineSpec, version_key
from train_platform.spec.validate import validate_document
from train_platform.spec.yaml_source import SourceDocument, parse_text

log = logging.getLogger(__name__)

PIPELINE_SUFFIXES = (".yaml", ".yml", ".json")
IGNORE_FILE = ".airflowignore"
_MARKER = "train-platform/"
# Escapes that let a quoted YAML or JSON string spell a name without its literal text:
# \xXX, \uXXXX, \UXXXXXXXX, and a backslash that joins two lines.
_HIDING_ESCAPE = re.compile(r"\\(?:[xuU]|\r?\n)")


@dataclass
class PipelineFile:
    path: Path
    spec: PipelineSpec | None = None
    # The parsed file (also of a file that failed validation), for the line numbers of
    # errors found later and for the name and version a broken file declares.
    document: SourceDocument | None = None
    issues: list[SpecIssue] = field(default_factory=list)
    # The file's text as read, shown in the DAG's docs.
    text: str = ""

    @property
    def declared_name(self) -> str | None:
        """``metadata.name`` as the file writes it, valid file or not; None when the file
        has no readable name."""
        if self.spec is not None:
            return self.spec.name
        value = _metadata(self.document).get("name")
        return value if isinstance(value, str) and _is_name(value) else None

    @property
    def declared_version(self) -> str | None:
        """``metadata.version`` as the file writes it, when it is a semantic version."""
        if self.spec is not None:
            return self.spec.version
        value = _metadata(self.document).get("version")
        return value if isinstance(value, str) and version_key(value) != (-1,) else None


def _metadata(document: SourceDocument | None) -> dict[str, Any]:
    data = document.data if document is not None else None
    metadata = data.get("metadata") if isinstance(data, dict) else None
    return metadata if isinstance(metadata, dict) else {}


def _is_name(value: str) -> bool:
    try:
        Metadata.model_validate({"name": value, "version": "0.0.0"})
    except ValueError:
        return False
    return True


@dataclass
class FolderScan:
    """Every pipeline file of a folder (or the candidates of a partial scan), and which
    version of each pipeline is active."""

    files: list[PipelineFile]
    active: dict[str, str]
    # Pins written by `tp pipeline activate`, by pipeline name.
    pins: dict[str, str] = field(default_factory=dict)
    # False when only the files that can define some pipelines were parsed.
    complete: bool = True
    # How many pipeline files the folder holds (``files`` may be fewer in a partial scan).
    found: int = 0

    def valid(self) -> list[PipelineFile]:
        return [f for f in self.files if f.spec is not None and not f.issues]

    def broken(self) -> list[PipelineFile]:
        return [f for f in self.files if f.issues]

    def versions_of(self, name: str) -> dict[str, PipelineFile]:
        return {f.spec.version: f for f in self.valid() if f.spec.name == name}

    def choose_active(self, folder: Path | None = None) -> None:
        """(Re)compute ``active`` from the valid files and the pins; the loader calls it
        again when Airflow refuses a version, so the next best version takes over."""
        by_name: dict[str, list[str]] = {}
        for f in self.valid():
            by_name.setdefault(f.spec.name, []).append(f.spec.version)
        self.active = {}
        for name, found in by_name.items():
            pinned = self.pins.get(name)
            self.active[name] = versions.choose_active(found, pinned)
            if pinned and pinned not in found:
                where = f" in {folder}" if folder else ""
                log.warning("pipeline %s is pinned to version %s, which is not a valid version%s; using %s",
                            name, pinned, where, self.active[name])


@dataclass(frozen=True)
class _Rule:
    """One line of an ignore file. ``base`` is set for glob patterns anchored to the ignore
    file's folder (a ``/`` at the start or in the middle, as in gitignore)."""

    pattern: GitIgnoreSpecPattern | re.Pattern
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
        rules.append(_Rule(GitIgnoreSpecPattern(line), base=ignore_file.parent if anchored else None,
                           dir_only=bare != bare.rstrip("/")))
    return rules


def _ignored(path: Path, rules: list[_Rule], syntax: str) -> bool:
    if not rules:
        return False
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
    return [Path(name) for name in _discover(Path(folder), syntax)]


def _discover(folder: Path, syntax: str | None) -> list[str]:
    """``discover`` as path strings: a task start walks every file of the folder, and
    building a ``Path`` for each costs more than the rest of its look at a known file."""
    syntax = (syntax or os.environ.get("AIRFLOW__CORE__DAG_IGNORE_FILE_SYNTAX") or "glob").lower()
    if syntax not in ("glob", "regexp"):
        raise ValueError(f"unsupported dag_ignore_file_syntax {syntax!r} (glob or regexp)")
    found: list[str] = []
    # the folder itself counts as walked, so a link back to it is a loop too
    rules_by_dir: dict[Path, list[_Rule]] = {Path(folder).resolve(): []}
    for root_name, dirs, files in os.walk(folder, followlinks=True):
        root = Path(root_name)
        rules = list(rules_by_dir.get(root.resolve(), []))
        if (root / IGNORE_FILE).is_file():
            rules += _compile_rules(root / IGNORE_FILE, folder, syntax)
        dirs[:] = sorted(d for d in dirs if not _ignored(root / d, rules, syntax))
        looping = []
        for name in dirs:
            resolved = (root / name).resolve()
            if resolved in rules_by_dir:
                # A symlink back up the tree: walking it would never end. Skipped with an
                # error instead of failing the whole dags folder (Airflow raises here).
                log.error("not following %s: a symlink loop (%s is already being walked)", root / name, resolved)
                looping.append(name)
                continue
            rules_by_dir[resolved] = rules
        if looping:
            dirs[:] = [d for d in dirs if d not in looping]
        for name in files:
            if name.endswith(PIPELINE_SUFFIXES) and not (rules and _ignored(root / name, rules, syntax)):
                found.append(os.path.join(root_name, name))
    return sorted(found, key=lambda name: name.split(os.sep))  # the order of Path objects


def _read(path: Path) -> tuple[PipelineFile | None, list[int] | None]:
    """The file with its text (with an issue when it cannot be read; None when it is not a
    pipeline of ours, no ``train-platform/`` in it), and the stat signature of what was read."""
    try:
        with open(path, "rb") as handle:  # faster than read_text, which matters at task start
            signature = _signature(os.fstat(handle.fileno()))
            data = handle.read()
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return PipelineFile(path, issues=[SpecIssue(str(path), 1, "", f"cannot read the file: {exc}")]), None
    if _MARKER not in text:
        return None, signature
    return PipelineFile(path, text=text), signature


def _validate(f: PipelineFile) -> None:
    if f.issues:  # unreadable
        return
    try:
        f.document = parse_text(f.text, str(f.path))
        f.spec = validate_document(f.document)
    except PipelineSpecError as exc:
        f.issues = list(exc.issues)


def _is_name_char(char: str) -> bool:
    """A character a pipeline name can hold (``models._NAME``: ``\\w``, ``.`` and ``-``)."""
    return char.isalnum() or char in "_.-"


def may_define(names: Iterable[str]) -> Callable[[str], bool]:
    """A test on a file's text: can the file declare one of ``names``? Yes when a name is in
    it as a whole word (not inside a longer name), or when the file uses an escape that
    could spell a name without its letters."""
    names = sorted({n for n in names if n}, key=len, reverse=True)

    def test(text: str) -> bool:
        for name in names:
            start = text.find(name)
            while start != -1:
                end = start + len(name)
                if not (start and _is_name_char(text[start - 1])) and not (
                        end < len(text) and _is_name_char(text[end])):
                    return True
                start = text.find(name, start + 1)
        return "\\" in text and _HIDING_ESCAPE.search(text) is not None

    return test


def scan_folder(folder: str | Path, settings: Settings | None = None, *,
                ignore_syntax: str | None = None, names: Iterable[str] | None = None,
                paths: Callable[[Path], bool] | None = None) -> FolderScan:
    """Read, parse and validate the pipeline files of ``folder`` and choose active versions.

    With ``names`` and/or ``paths`` (a test on a file's path) the scan is partial: it
    validates the files ``paths`` accepts, and the files that declare one of ``names`` or
    the name a file accepted by ``paths`` declares; every version of each of those
    pipelines is among them (the active choice and duplicate versions come out as in a
    full scan). A file the name index vouches for is skipped unread when it declares
    another pipeline; any other file is read and searched for the names (``may_define``)
    before it is parsed. ``complete`` is False on the result. A full scan brings the name
    index up to date."""
    settings = settings or get_settings()
    folder = Path(folder)
    index = _NameIndex(settings, folder)
    complete = names is None and paths is None
    if complete:
        files, signatures = [], {}
        for path in discover(folder, ignore_syntax):
            f, signature = _read(path)
            if f is not None:
                files.append(f)
                _validate(f)
            if signature is not None:
                signatures[path] = (signature, f)
        index.update(signatures)
        found = len(files)
    else:
        files, found = _partial(folder, ignore_syntax, set(names or ()), paths, index)
    _flag_duplicates(files)
    scan = FolderScan(files=files, active={}, pins=versions.read_pins(settings), complete=complete, found=found)
    scan.choose_active(folder)
    return scan


def _partial(folder: Path, ignore_syntax: str | None, wanted: set[str], paths: Callable[[Path], bool] | None,
             index: _NameIndex) -> tuple[list[PipelineFile], int]:
    """The files of a partial scan, and how many pipeline files the folder holds."""
    chosen: list[PipelineFile] = []
    rest: list[str] = []
    found = 0
    for name in _discover(folder, ignore_syntax):
        if paths is not None and paths(Path(name)):
            f, _ = _read(Path(name))
            if f is not None:
                found += 1
                _validate(f)
                chosen.append(f)
                if f.declared_name:
                    wanted.add(f.declared_name)
        else:
            rest.append(name)
    mentions = may_define(wanted)
    for name in rest:
        known = index.lookup(name)
        if known is not None:
            ours, declared = known
            found += ours
            if not ours or declared not in wanted:
                continue
        f, _ = _read(Path(name))
        if f is None:
            continue
        if known is None:
            found += 1
            if f.issues or not mentions(f.text):
                continue
        _validate(f)
        if f.declared_name in wanted:
            chosen.append(f)
    return sorted(chosen, key=lambda f: f.path.parts), found


def _signature(stat: os.stat_result) -> list[int]:
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]


class _NameIndex:
    """Which pipeline each file of one dags folder declares (None: no readable name), or
    that a file is not a pipeline of ours, with the stat signature of the content it was
    read from. A partial scan trusts an entry whose signature still matches and whose file
    had not changed for ``_SETTLED_NS`` when the index was written (a coarse timestamp can
    miss a change made in the same tick); anything else is read again."""

    _FORMAT = 1
    _SETTLED_NS = 2_000_000_000

    def __init__(self, settings: Settings, folder: Path):
        self.folder = str(folder.resolve())
        digest = hashlib.sha256(self.folder.encode()).hexdigest()[:16]
        self.path = settings.pipeline_state_dir / "name-index" / f"{digest}.json"
        self._entries: dict[str, list] | None = None
        self._written_ns = 0

    def _load(self) -> dict[str, list]:
        if self._entries is None:
            self._entries = {}
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
                if data.get("format") == self._FORMAT and data.get("folder") == self.folder:
                    self._entries, self._written_ns = dict(data["files"]), int(data["written_ns"])
            except FileNotFoundError:
                pass
            except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
                log.debug("ignoring the pipeline name index %s: %s", self.path, exc)
        return self._entries

    def lookup(self, name: str) -> tuple[bool, str | None] | None:
        """(is a pipeline of ours, the name it declares) for the file at path ``name``, or
        None when the index does not vouch for it."""
        entry = self._load().get(name)
        if not isinstance(entry, list) or len(entry) != 6:
            return None
        try:
            signature = _signature(os.stat(name))
        except OSError:
            return None
        if entry[:4] != signature or max(signature[1], signature[2]) >= self._written_ns - self._SETTLED_NS:
            return None
        return bool(entry[5]), entry[4]

    def update(self, read: dict[Path, tuple[list[int], PipelineFile | None]]) -> None:
        """Record what a full scan read; written only when it differs from the index on
        disk or settles entries that were too recent to trust. Best effort: an index that
        cannot be written only makes task starts read more files."""
        entries = {str(path): [*signature, f.declared_name if f else None, f is not None]
                   for path, (signature, f) in read.items()}
        old = self._load()
        unsettled = any(max(e[1], e[2]) >= self._written_ns - self._SETTLED_NS for e in entries.values())
        if entries == old and not unsettled:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".names-")
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump({"format": self._FORMAT, "folder": self.folder, "written_ns": time.time_ns(),
                           "files": entries}, handle, ensure_ascii=False)
            os.replace(tmp, self.path)
        except OSError as exc:
            log.debug("cannot write the pipeline name index %s: %s", self.path, exc)


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
