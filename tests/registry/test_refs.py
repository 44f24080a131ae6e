"""Model references: the grammar ``model:NAME:ALIAS|vN``, its one error for a malformed
reference, and resolving a reference against a real registry."""

from __future__ import annotations

import pytest

from train_platform.registry import (
    AliasNotSetError,
    InvalidModelRefError,
    ModelNotFoundError,
    ModelRef,
    RegistryError,
    VersionNotFoundError,
    resolve,
)
from train_platform.registry.bento_store import model_path


@pytest.mark.parametrize("text, ref", [
    ("model:sensor-classifier:production", ModelRef("sensor-classifier", alias="production")),
    ("model:sensor-classifier:v3", ModelRef("sensor-classifier", version=3)),
    ("model:sensor:latest", ModelRef("sensor", alias="latest")),
    ("model:a.b_c-1:staging-2", ModelRef("a.b_c-1", alias="staging-2")),
])
def test_a_reference_parses_and_prints_back_the_same(text, ref):
    assert ModelRef.parse(text) == ref
    assert str(ref) == text
    assert ModelRef.parse(str(ref)) == ref


def test_parts_of_a_reference():
    ref = ModelRef.parse("model:sensor:v12")
    assert (ref.name, ref.version, ref.alias, ref.selector) == ("sensor", 12, None, "v12")
    alias = ModelRef.parse("model:sensor:candidate")
    assert (alias.version, alias.alias, alias.selector) == (None, "candidate", "candidate")
    assert ModelRef.is_ref("model:sensor:v1") and ModelRef.is_ref("model:anything")
    assert not ModelRef.is_ref("/mnt/models/sensor") and not ModelRef.is_ref(None)


@pytest.mark.parametrize("text, why", [
    ("sensor:production", "it does not start with 'model:'"),
    ("sensor", "it does not start with 'model:'"),
    ("model:sensor", "it has no alias or version after the name"),
    ("model:sensor:", "it has no alias or version after the name"),
    ("model::production", "invalid model name ''"),
    ("model:sensor:v3:extra", "it needs exactly one ':' between the name and the alias or version"),
    ("model:sensor:3", "a version is written v3, not 3"),
    ("model:sensor:v0", "version 0 is not a number from 1 up"),
    ("model:Sensor:production", "invalid model name 'Sensor'"),
    ("model:sensor:Prod", "invalid alias 'Prod'"),
    ("model:sensor:prod uction", "invalid alias 'prod uction'"),
])
def test_a_malformed_reference_gets_one_error_naming_it_and_the_form(text, why):
    with pytest.raises(InvalidModelRefError) as caught:
        ModelRef.parse(text)
    message = str(caught.value)
    assert message.startswith(f"invalid model reference {text!r}: {why}")
    assert message.endswith("expected model:NAME:ALIAS or model:NAME:vN "
                            "(e.g. model:sensor-classifier:production, model:sensor-classifier:v3)")
    assert isinstance(caught.value, RegistryError) and isinstance(caught.value, ValueError)


def test_a_reference_that_is_not_text_is_refused():
    with pytest.raises(InvalidModelRefError, match="invalid model reference 3: it is not a string"):
        ModelRef.parse(3)


def test_constructing_checks_the_parts_too():
    with pytest.raises(InvalidModelRefError, match="names both an alias and a version"):
        ModelRef("sensor", alias="production", version=2)
    with pytest.raises(InvalidModelRefError, match="names neither an alias nor a version"):
        ModelRef("sensor")
    with pytest.raises(InvalidModelRefError, match="version -1 is not a number from 1 up"):
        ModelRef("sensor", version=-1)
    with pytest.raises(InvalidModelRefError, match="version True is not a number"):
        ModelRef("sensor", version=True)
    with pytest.raises(InvalidModelRefError, match="invalid alias 'v7'"):
        ModelRef("sensor", alias="v7")


def test_a_separate_version_argument_reads_numbers_aliases_and_latest():
    assert ModelRef.of("sensor", 3) == ModelRef.of("sensor", "3") == ModelRef.of("sensor", "v3") == ModelRef("sensor", version=3)
    assert ModelRef.of("sensor", "production") == ModelRef("sensor", alias="production")
    assert str(ModelRef.of("sensor", "latest")) == "model:sensor:latest"
    with pytest.raises(InvalidModelRefError, match="version 0 is not a number from 1 up"):
        ModelRef.of("sensor", "0")
    with pytest.raises(InvalidModelRefError, match="None is neither a version nor an alias"):
        ModelRef.of("sensor", None)
    with pytest.raises(InvalidModelRefError, match="invalid model name 'Not Valid'"):
        ModelRef.of("Not Valid", "production")


def test_a_reference_is_frozen_and_hashable():
    ref = ModelRef.parse("model:sensor:v1")
    with pytest.raises(AttributeError):
        ref.version = 2
    assert {ref: 1}[ModelRef("sensor", version=1)] == 1


def test_resolve_gives_the_version_and_its_checkpoint_folder(registry, checkpoints):
    registry.register("sensor", checkpoints["good"])
    registry.register("sensor", checkpoints["bad"])
    registry.promote("sensor", 1)

    production = resolve("model:sensor:production", registry)
    assert production.ref == ModelRef("sensor", alias="production")
    assert production.version.version == 1 and production.version.aliases == ("production",)
    assert production.checkpoint == model_path(registry.settings, "sensor:v1")
    assert (production.checkpoint / "model.pt").read_bytes() == (checkpoints["good"] / "model.pt").read_bytes()
    assert resolve(ModelRef("sensor", version=2), registry).checkpoint == model_path(registry.settings, "sensor:v2")
    assert resolve("model:sensor:latest", registry).version.version == 2
    assert str(registry.get("sensor", 2).ref) == "model:sensor:v2"


def test_resolve_names_the_reference_and_what_is_missing(registry, checkpoints):
    with pytest.raises(ModelNotFoundError, match=r"^model:nope:production: unknown model 'nope'; no model is registered yet$"):
        resolve("model:nope:production", registry)
    registry.register("sensor", checkpoints["good"])
    with pytest.raises(ModelNotFoundError, match=r"^model:nope:v1: unknown model 'nope'; registered models: sensor$"):
        resolve("model:nope:v1", registry)
    with pytest.raises(AliasNotSetError,
                       match=r"^model:sensor:candidate: alias 'candidate' of model 'sensor' points at no version$"):
        resolve("model:sensor:candidate", registry)
    with pytest.raises(VersionNotFoundError, match=r"^model:sensor:v4: model 'sensor' has no version 4; its versions are 1$"):
        resolve("model:sensor:v4", registry)
    with pytest.raises(InvalidModelRefError, match="invalid model reference 'sensor:1'"):
        resolve("sensor:1", registry)


def test_the_training_task_continues_from_the_version_a_reference_names(tp_home, checkpoints):
    from operators.training import TrainingOperator
    from train_platform.registry import ModelRegistry
    from train_platform.settings import get_settings

    registry = ModelRegistry(get_settings())
    registry.register("sensor", checkpoints["good"])
    registry.register("sensor", checkpoints["bad"])
    registry.promote("sensor", 1)
    task = TrainingOperator(task_id="train", pipeline="p", pipeline_version="1.0.0")

    def init_of(base_model: str) -> str:
        command = task.default_command({"training_data": "d.npz", "base_model": base_model}, {"m": "/tmp/out"}, {})
        assert command[command.index("--mode") + 1] == "incremental"
        return command[command.index("--init") + 1]

    assert init_of("model:sensor:production") == str(model_path(registry.settings, "sensor:v1"))
    assert init_of("model:sensor:v2") == str(model_path(registry.settings, "sensor:v2"))
    # No such alias yet: the first run trains from scratch.
    command = task.default_command({"training_data": "d.npz", "base_model": "model:sensor:candidate"}, {"m": "/o"}, {})
    assert command[command.index("--mode") + 1] == "initial"
    # A malformed reference or a missing version is a mistake, not "nothing yet".
    with pytest.raises(InvalidModelRefError, match="a version is written v2, not 2"):
        task.default_command({"training_data": "d.npz", "base_model": "model:sensor:2"}, {"m": "/o"}, {})
    with pytest.raises(VersionNotFoundError, match="^model:sensor:v9: model 'sensor' has no version 9"):
        task.default_command({"training_data": "d.npz", "base_model": "model:sensor:v9"}, {"m": "/o"}, {})
