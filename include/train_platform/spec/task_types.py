"""The task types a pipeline may name in ``type:``: the vocabulary of the spec.

Which operator runs each type is the compiler's business (``train_platform.compiler.
operator_map``); the spec only knows the names, what each type does, and whether a task of
that type must bring its own ``command``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TaskType:
    name: str
    description: str
    # False when the type has a default command, so a task may leave `command` out.
    requires_command: bool = False


TASK_TYPES: dict[str, TaskType] = {
    task_type.name: task_type
    for task_type in (
        TaskType("command", "run `command`/`args` in `image`", requires_command=True),
        TaskType("data_processing", "merge and check raw sensor files into one training-ready file"),
        TaskType("training", "initial, incremental or full training with `python -m ml.train`"),
        TaskType("evaluation", "metrics of a checkpoint on a test set with `python -m ml.evaluate`"),
        TaskType("deployment", "scheduled A/B deployment with promotion or rollback"),
        TaskType("packaging", "build a BentoML Bento for a registered model version"),
        TaskType("batch_inference", "score a dataset ref with a model version and write the predictions"),
        TaskType("sampling", "select the samples a person labels next by an active-learning strategy (`tp dataset sample`)"),
        TaskType("prelabel", "write a model's labels as pending pre-labels, never over a person's (`tp dataset prelabel`)"),
        TaskType("annotation_check", "check a dataset ref's annotations (`tp dataset check`); fails below the minimum score"),
        TaskType("review", "wait for people to review pre-labels on the review page; on approval merge their branches into main"),
        TaskType("intake", "wait for new recordings under s3://BUCKET/PREFIX (an Airflow connection) and import them, each once, as unlabelled samples of tp://NAME@intake"),
    )
}


def known_types() -> list[str]:
    return sorted(TASK_TYPES)
