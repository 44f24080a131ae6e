"""What a pipeline's DAG says about itself in Airflow's UI: its description and its docs.

Airflow-free (the loader and ``build_dag`` call it with plain values).

- **description** (the DAG list's tooltip and the Details tab): the first sentence of the
  pipeline's description, at most ``DESCRIPTION_LIMIT`` characters with the version.
  Airflow 3.3 sets no limit of its own (``dag.description`` is a ``Text`` column), so the
  limit is ours: a summary that reads whole in a tooltip. A sentence that is longer is cut
  at a clause or word boundary and ends with "…", never inside a word. A pipeline without
  a description gets a summary made of its tasks and schedule.
- **doc_md** (the DAG's "Docs" button): the full description, what this version is
  (active, pinned, inactive), its file, schedule and tasks, every parameter with its
  description, the version history of the pipeline in the folder (every version with its
  dag_id, state and file, broken files included), and the file's YAML source, last.

Airflow 3.3's UI renders doc_md with react-markdown and GitHub-flavoured Markdown (tables,
fenced code with syntax highlighting) and ``skipHtml``: raw HTML such as ``<details>`` is
dropped, not rendered, so nothing here relies on HTML. The docs only show when the Docs
button is pressed, and the source comes last, after everything a reader wants first.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from train_platform.compiler.plan import constraints_label

DESCRIPTION_LIMIT = 200
_ELLIPSIS = "…"
# A sentence ends at . ! or ? (and closing quotes or brackets) followed by white space and
# a word that starts like a sentence (not "e.g. x" or "v1.2"), or at 。！？ of CJK text.
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*(?=\s+[^\W_a-z]|\s+[\"'(\[`*])|[。！？]")
_CLAUSE_BREAK = re.compile(r"[,;:]\s+|\s+[-–—]\s+")


@dataclass(frozen=True)
class VersionRow:
    """One file of a pipeline in the dags folder, as the version history shows it."""

    version: str | None  # None when a broken file declares no readable version
    dag_id: str
    state: str  # "active", "active (pinned)", "inactive", "invalid"
    file: str
    errors: int = 0


def _plain(text: str) -> str:
    """A paragraph's text without Markdown line breaks, heading marks or emphasis marks."""
    lines = [re.sub(r"^\s{0,3}(#+|[-*+>]|\d+[.)])\s+", "", line) for line in text.splitlines()]
    return re.sub(r"\s+", " ", " ".join(lines)).strip()


def first_sentence(text: str) -> str:
    """The first sentence of the first paragraph of ``text`` (lines joined)."""
    for paragraph in re.split(r"\n\s*\n", text.strip()):
        plain = _plain(paragraph)
        if plain:
            end = _SENTENCE_END.search(plain)
            return plain[:end.end()] if end else plain
    return ""


def shorten(text: str, limit: int) -> str:
    """``text`` if it fits in ``limit`` characters, else its longest prefix ending at a
    clause break (when that keeps at least half) or a word break, followed by "…". A text
    whose first word alone is longer than ``limit`` gives "" (the caller says something
    else rather than cut a word)."""
    text = text.strip()
    if len(text) <= limit:
        return text
    room = limit - len(_ELLIPSIS)
    clauses = [m.start() for m in _CLAUSE_BREAK.finditer(text) if m.start() <= room]
    if clauses and clauses[-1] >= room // 2:
        return text[:clauses[-1]].rstrip() + _ELLIPSIS
    words = [m.start() for m in re.finditer(r"\s+", text) if m.start() <= room]
    if not words:
        return ""
    return text[:words[-1]].rstrip(" ,;:-–—") + _ELLIPSIS


def summary(description: str, fallback: str, suffix: str = "", limit: int = DESCRIPTION_LIMIT) -> str:
    """The DAG description: the first sentence of ``description`` (else ``fallback``),
    shortened so that it and ``suffix`` fit in ``limit`` characters."""
    room = limit - len(suffix)
    text = shorten(first_sentence(description), room) or shorten(fallback, room)
    return f"{text}{suffix}" if text else suffix.strip()


def generated_summary(tasks: list[str], schedule: Any, active: bool) -> str:
    """What a pipeline without a description is: its tasks and when it runs."""
    count = f"{len(tasks)} task{'s' if len(tasks) != 1 else ''}"
    listed = ", ".join(tasks)
    return f"{count} ({listed}), {schedule_text(schedule, active)}"


def schedule_text(schedule: Any, active: bool) -> str:
    if not active:
        return "not scheduled (an inactive version; trigger it by hand)"
    if schedule is None:
        return "triggered by hand"
    if isinstance(schedule, dict):
        return "runs when " + ", ".join(schedule["assets"]) + " is updated"
    return f"runs on the schedule {schedule}"


# --- Markdown ------------------------------------------------------------------------


def code(text: str) -> str:
    """``text`` as an inline code span, whatever backticks it holds."""
    text = str(text)
    run = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * (run + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text.strip() else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def cell(text: str) -> str:
    """Text safe inside a table cell: pipes escaped, on one line."""
    return re.sub(r"\s*\n\s*", " ", str(text)).replace("|", "\\|")


def fenced(text: str, language: str) -> str:
    """A fenced code block holding ``text`` exactly, whatever fences the text contains."""
    run = max((len(m) for m in re.findall(r"^\s*(`{3,}|~{3,})", text, flags=re.M)), default=0)
    fence = "`" * max(3, run + 1)
    body = text if text.endswith("\n") else text + "\n"
    return f"{fence}{language}\n{body}{fence}"


def language_of(file: str) -> str:
    return "json" if file.lower().endswith(".json") else "yaml"


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def versions_section(name: str, rows: list[VersionRow], this_dag_id: str) -> list[str]:
    lines = [f"## Versions of {code(name)} in the dags folder", "",
             "| version | DAG | state | file |", "|---|---|---|---|"]
    for row in rows:
        version = cell(row.version or "?")
        if row.dag_id == this_dag_id:
            version = f"**{version}** (this DAG)"
        state = f"invalid: {row.errors} error{'s' if row.errors != 1 else ''}" if row.state == "invalid" else row.state
        lines.append(f"| {version} | {cell(code(row.dag_id))} | {state} | {cell(code(row.file))} |")
    lines += ["", f"The active version gets the DAG id {code(name)} and the schedule; the others are "
              "unscheduled and paused. Roll back with "
              f"{code(f'tp pipeline activate {name} VERSION')}; {code('--latest')} removes the pin.", ""]
    return lines


def pipeline_doc_md(*, name: str, version: str, dag_id: str, description: str, state: str, file: str,
                    text: str | None, owner: str, schedule: Any, active: bool, tasks: list[tuple[str, str, list[str]]],
                    params: dict[str, dict[str, Any]], versions: list[VersionRow]) -> str:
    """The docs of a pipeline version's DAG. ``tasks`` is ``(name, type, upstream)`` each;
    ``params`` what ``plan.params_of`` gives; ``versions`` every file of the pipeline."""
    lines = [f"# {name} {version}", ""]
    if description.strip():
        lines += [description.strip(), ""]
    else:
        lines += [generated_summary([t[0] for t in tasks], schedule, active) + ".", ""]
    lines += ["| | |", "|---|---|",
              f"| version | {cell(code(version))}: {state} |",
              f"| file | {cell(code(file))} |",
              f"| owner | {cell(owner)} |",
              f"| schedule | {cell(schedule_text(schedule, active))} |",
              "| tasks | " + cell(", ".join(
                  f"{code(t)} ({kind}" + (f", after {', '.join(code(u) for u in up)})" if up else ")")
                  for t, kind, up in tasks)) + " |", ""]
    if params:
        lines += ["## Parameters", "", "Set them in the trigger form; commands read them as "
                  f"{code('{{ params.NAME }}')}.", "",
                  "| parameter | type | default | description |", "|---|---|---|---|"]
        for param, schema in params.items():
            default = code(_json(schema["default"])) if schema.get("default") is not None else "none"
            lines.append(f"| {cell(code(param))} | {cell(constraints_label(schema))} | {cell(default)} | "
                         f"{cell(schema.get('description', ''))} |")
        lines.append("")
    lines += versions_section(name, versions, dag_id)
    lines += source_section(file, text)
    return "\n".join(lines).rstrip() + "\n"


def source_section(file: str, text: str | None) -> list[str]:
    if text is None:
        return []
    return [f"## Source of {code(file)}", "", fenced(text, language_of(file)), ""]


def placeholder_doc_md(*, file: str, errors: list[str], text: str | None, name: str | None,
                       versions: list[VersionRow], dag_id: str) -> str:
    """The docs of a broken file's placeholder DAG: the errors, the pipeline's other
    versions when the file names one, and the source as it is now."""
    lines = [f"# Invalid pipeline file {code(file)}", "",
             "This file did not compile, so its pipeline is not scheduled. Fix these errors "
             "(the next parse of the dags folder picks the fix up):", "",
             *[f"- {code(line)}" for line in errors], ""]
    if name and versions:
        lines += versions_section(name, versions, dag_id)
    lines += source_section(file, text)
    return "\n".join(lines).rstrip() + "\n"
