"""The task types a pipeline may use, and the operator that runs each.

This table is the only way a pipeline's ``type:`` reaches Python code: a YAML file can pick
a type by name but can never name an import path, so a pipeline cannot make the DAG
processor import arbitrary code. Operator modules are imported lazily, when the first task
of that type is compiled.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import import_module


@dataclass(frozen=True)
class TaskType:
    name: str
    # "module:Class" under the project's `operators` package; never taken from user input.
    operator: str
    description: str
    # False when the type has a default command, so a task may leave `command` out.
    requires_command: bool = False

    @property
    def operator_name(self) -> str:
        return self.operator.rsplit(":", 1)[1]


TASK_TYPES: dict[str, TaskType] = {
    task_type.name: task_type
    for task_type in (
        TaskType("command", "operators.command:CommandOperator",
                 "run `command`/`args` in `image`", requires_command=True),
        TaskType("data_processing", "operators.data_processing:DataProcessingOperator",
                 "merge and check raw sensor files into one training-ready file"),
        TaskType("training", "operators.training:TrainingOperator",
                 "initial, incremental or full training with `python -m ml.train`"),
        TaskType("evaluation", "operators.evaluation:EvaluationOperator",
                 "metrics of a checkpoint on a test set with `python -m ml.evaluate`"),
        TaskType("deployment", "operators.deployment:DeploymentOperator",
                 "scheduled A/B deployment with promotion or rollback"),
        TaskType("packaging", "operators.packaging:PackagingOperator",
                 "build a BentoML Bento for a registered model version"),
        TaskType("batch_inference", "operators.batch_inference:BatchInferenceOperator",
                 "score a dataset ref with a model version and write the predictions"),
    )
}


def known_types() -> list[str]:
    return sorted(TASK_TYPES)


@lru_cache(maxsize=None)
def operator_class(type_name: str) -> type:
    module_name, class_name = TASK_TYPES[type_name].operator.split(":")
    return getattr(import_module(module_name), class_name)
