"""Errors of the platform core. Sub-packages (datasets, registry) subclass
``TrainPlatformError`` in their own ``exceptions.py``; the CLI prints any of them as one
line and exits with the class's ``exit_code``."""

from __future__ import annotations

from dataclasses import dataclass


class TrainPlatformError(Exception):
    """Base of every error the platform raises on purpose."""

    exit_code = 1


@dataclass(frozen=True)
class SpecIssue:
    """One problem in a pipeline file, located as precisely as the file allows."""

    file: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.path or '<root>'}: {self.message}"


class PipelineSpecError(TrainPlatformError):
    """A pipeline file is invalid. ``issues`` lists every problem found, not just the first."""

    def __init__(self, issues: list[SpecIssue]):
        self.issues = list(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))


class PipelineNotFoundError(TrainPlatformError):
    """No pipeline (or no such version of it) in the dags folder."""


class TaskExecutionError(TrainPlatformError):
    """A task's command failed (non-zero exit, timeout, missing input)."""
