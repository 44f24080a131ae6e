"""Task type ``sampling``: choose the samples a person labels next with ``tp dataset sample``."""

from __future__ import annotations

from typing import Any, Mapping

from operators.container_command import ContainerCommandOperator
from operators.dataset_refs import branch_output, dataset_input

# Parameters passed on as flags of `tp dataset sample` when a pipeline sets them.
_FLAGS = {"budget": "--budget", "threshold": "--threshold", "min_per_class": "--min-per-class", "seed": "--seed",
          "mc_samples": "--mc-samples"}


class SamplingOperator(ContainerCommandOperator):
    """Ranks the unconfirmed samples of a dataset snapshot by an active-learning strategy,
    selects a budget of them and marks them pending on a review branch.

    Input ``data`` (the first input when not named so): a dataset ref ``tp://NAME@REF``.
    Input ``model``: a model reference ``model:NAME:ALIAS|vN`` whose scores rank the
    samples (not needed for ``random``). Output ``review`` (the first output when not named
    so), when given: a dataset ref ``tp://NAME@BRANCH`` of the same dataset, the branch the
    selected samples are marked on (created from main when missing). Parameters:
    ``strategy`` (default ``diverse``), ``budget``, ``threshold`` (``below_confidence``),
    ``min_per_class``, ``seed``, ``mc_samples`` (``bald``), ``include_confirmed``.
    """

    task_type = "sampling"
    ui_color = "#e6f5e8"

    def default_command(self, inputs: Mapping[str, str], outputs: Mapping[str, str],
                        params: Mapping[str, Any]) -> list[str]:
        from train_platform.sampling import STRATEGIES

        data = dataset_input(self.task_id, "sampling", inputs)
        strategy = str(params.get("strategy") or "diverse")
        if strategy not in STRATEGIES:
            raise ValueError(f"{self.task_id}: unknown sampling strategy {strategy!r}; known: {', '.join(STRATEGIES)}")
        command = ["python", "-m", "train_platform.cli", "dataset", "sample", data.removeprefix("tp://"),
                   "--strategy", strategy, "--json"]
        if inputs.get("model"):
            command += ["--model", inputs["model"]]
        for name, flag in _FLAGS.items():
            if params.get(name) is not None:
                command += [flag, str(params[name])]
        if params.get("include_confirmed"):
            command.append("--include-confirmed")
        if outputs:
            command += ["--to", branch_output(self.task_id, data, outputs.get("review") or next(iter(outputs.values())))]
        return command

