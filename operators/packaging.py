"""Task type ``packaging``: a Bento for a model version with ``tp model package``."""

from __future__ import annotations

from typing import Any, Mapping

from operators.container_command import ContainerCommandOperator


class PackagingOperator(ContainerCommandOperator):
    """Builds the Bento (the inference service, pinned packages, the model) of one
    registered version and records its tag in the registry.

    Model: the ``model_name`` parameter (else the pipeline's name) and ``model_version``
    (a number, an alias such as ``candidate``, or ``latest``, the default); an input named
    ``model`` holding a model reference (``model:NAME:ALIAS`` or ``model:NAME:vN``)
    overrides both.
    """

    task_type = "packaging"
    ui_color = "#eef2e0"

    def default_command(self, inputs: Mapping[str, str], outputs: Mapping[str, str],
                        params: Mapping[str, Any]) -> list[str]:
        from train_platform.registry.refs import ModelRef

        if inputs.get("model"):
            ref = ModelRef.parse(inputs["model"])
        else:
            ref = ModelRef.of(str(params.get("model_name") or self.pipeline), params.get("model_version") or "latest")
        return ["python", "-m", "train_platform.cli", "model", "package", ref.name, ref.selector]
