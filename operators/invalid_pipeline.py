"""The task of a placeholder DAG that stands for a pipeline file that failed to compile.

Airflow 3.3 cannot report an error for one pipeline without dropping every other DAG of the
same loader file (apache/airflow#53971), so each broken file becomes a small paused DAG
tagged ``invalid-pipeline`` whose docs list the errors, and whose only task fails with them.
"""

from __future__ import annotations

from typing import Any, Sequence

from airflow.sdk import BaseOperator

from train_platform.exceptions import TrainPlatformError


class InvalidPipelineError(TrainPlatformError):
    """Raised when someone runs the placeholder of a broken pipeline file."""


class InvalidPipelineOperator(BaseOperator):
    """Fails with the errors of the pipeline file it stands for.

    :param file: the pipeline file.
    :param errors: one ``FILE:LINE: field.path: message`` line per problem.
    """

    template_fields: Sequence[str] = ()
    ui_color = "#fbe3e3"

    def __init__(self, *, file: str, errors: Sequence[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.file = file
        self.errors = list(errors)

    def execute(self, context: Any) -> None:
        for line in self.errors:
            self.log.error("%s", line)
        raise InvalidPipelineError(f"pipeline file {self.file} is invalid:\n" + "\n".join(self.errors))
