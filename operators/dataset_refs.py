"""What the dataset-annotating operators (``sampling``, ``prelabel``) share: reading their
dataset input and the branch an output ref names. No operator lives here."""

from __future__ import annotations

from typing import Mapping


def dataset_input(task_id: str, task_type: str, inputs: Mapping[str, str]) -> str:
    """The ``data`` input (the first input when none is named so), a ``tp://NAME@REF`` ref."""
    if not inputs:
        raise ValueError(f"{task_id}: {task_type} needs a `data` input (a dataset ref tp://NAME@REF)")
    data = inputs.get("data") or next(iter(inputs.values()))
    if not data.startswith("tp://"):
        raise ValueError(f"{task_id}: {task_type}'s `data` input must be a dataset ref tp://NAME@REF, got {data!r}")
    return data


def branch_output(task_id: str, data: str, output: str) -> str:
    """The branch of an output ref ``tp://NAME@BRANCH``, which must name the input's dataset."""
    name = data.removeprefix("tp://").partition("@")[0]
    out_name, sep, branch = output.removeprefix("tp://").partition("@")
    if not output.startswith("tp://") or not sep or not branch or out_name != name:
        raise ValueError(f"{task_id}: the output must be a branch of the same dataset, tp://{name}@BRANCH, got {output!r}")
    return branch
