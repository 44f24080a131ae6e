"""Task type -> the operator that runs it.

This table is the only way a pipeline's ``type:`` reaches Python code: a YAML file can pick
a type by name (the vocabulary lives in ``train_platform.spec.task_types``) but can never
name an import path, so a pipeline cannot make the DAG processor import arbitrary code.
Operator modules are imported lazily, when the first task of that type is compiled.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import import_module

from train_platform.spec.task_types import TASK_TYPES

# "module:Class" under the project's `operators` package; never taken from user input.
OPERATORS: dict[str, str] = {
    "command": "operators.command:CommandOperator",
    "data_processing": "operators.data_processing:DataProcessingOperator",
    "training": "operators.training:TrainingOperator",
    "evaluation": "operators.evaluation:EvaluationOperator",
    "deployment": "operators.deployment:DeploymentOperator",
    "packaging": "operators.packaging:PackagingOperator",
    "batch_inference": "operators.batch_inference:BatchInferenceOperator",
    "sampling": "operators.sampling:SamplingOperator",
    "prelabel": "operators.prelabel:PrelabelOperator",
    "annotation_check": "operators.annotation_check:AnnotationCheckOperator",
    "review": "operators.review:ReviewOperator",
    "intake": "operators.intake:IntakeOperator",
}

if set(OPERATORS) != set(TASK_TYPES):  # a type added to the spec without an operator, or the reverse
    raise RuntimeError(f"task types without an operator or operators without a type: "
                       f"{sorted(set(OPERATORS) ^ set(TASK_TYPES))}")


def operator_name(type_name: str) -> str:
    """The class name of the operator of ``type_name`` (for `tp pipeline compile`)."""
    return OPERATORS[type_name].rsplit(":", 1)[1]


@lru_cache(maxsize=None)
def operator_class(type_name: str) -> type:
    module_name, class_name = OPERATORS[type_name].split(":")
    return getattr(import_module(module_name), class_name)
