"""Every kind of validation error, through `tp pipeline validate`, with its line."""

from __future__ import annotations

import pytest

from tests.pipelines.helpers import EXAMPLE, write
from train_platform.cli import main


def validate(capsys, path) -> tuple[int, list[str]]:
    code = main(["pipeline", "validate", str(path)])
    out = capsys.readouterr().out
    return code, [line for line in out.splitlines() if line]


HEADER = """
apiVersion: train-platform/v1
kind: Pipeline
metadata:
  name: p
  version: "1.0.0"
spec:
"""

CASES = {
    "unknown field with hint": (
        HEADER + "  tasks:\n    - name: a\n      type: command\n      command: [echo]\n      imagee: x\n",
        11, "spec.tasks[0].imagee", "unknown field 'imagee'; did you mean 'image'?"),
    "cycle": (
        HEADER + "  tasks:\n    - name: a\n      type: command\n      command: [echo]\n      depends_on: [b]\n"
                 "    - name: b\n      type: command\n      command: [echo]\n      depends_on: [a]\n",
        8, "spec.tasks[0]", "dependency cycle: a -> b -> a"),
    "unknown dependency": (
        HEADER + "  tasks:\n    - name: a\n      type: command\n      command: [echo]\n"
                 "  dependencies:\n    - from: a\n      to: nope\n",
        13, "spec.dependencies[0].to", "dependency on unknown task 'nope'"),
    "duplicate task": (
        HEADER + "  tasks:\n    - name: a\n      type: command\n      command: [echo]\n"
                 "    - name: a\n      type: command\n      command: [echo]\n",
        11, "spec.tasks[1].name", "duplicate task name 'a'"),
    "unknown type lists known": (
        HEADER + "  tasks:\n    - name: a\n      type: trainng\n",
        9, "spec.tasks[0].type", "unknown task type 'trainng'; did you mean 'training'? (known types: annotation_check, batch_inference,"),
    "bad cpu": (
        HEADER + "  tasks:\n    - name: a\n      type: training\n      resources:\n        cpu: two\n",
        11, "spec.tasks[0].resources.cpu", "cpu must be a quantity"),
    "negative gpu": (
        HEADER + "  tasks:\n    - name: a\n      type: training\n      resources:\n        gpu: -1\n",
        11, "spec.tasks[0].resources.gpu", "gpu must be a whole number of GPUs"),
    "bad memory": (
        HEADER + "  tasks:\n    - name: a\n      type: training\n      resources:\n        memory: lots\n",
        11, "spec.tasks[0].resources.memory", "memory must be a quantity"),
    "wrong apiVersion": (
        HEADER.replace("train-platform/v1", "train-platform/v9") + "  tasks:\n    - name: a\n      type: training\n",
        1, "apiVersion", "apiVersion must be 'train-platform/v1'"),
    "wrong kind": (
        HEADER.replace("kind: Pipeline", "kind: Workflow") + "  tasks:\n    - name: a\n      type: training\n",
        2, "kind", "kind must be 'Pipeline'"),
    "parameter of the wrong type": (
        HEADER + "  tasks:\n    - name: a\n      type: training\n  parameters:\n    epochs:\n      type: integer\n      default: many\n",
        13, "spec.parameters.epochs.default", "default 'many' is not of the declared type 'integer'"),
    "parameter below minimum": (
        HEADER + "  tasks:\n    - name: a\n      type: training\n  parameters:\n    epochs: {type: integer, default: 0, minimum: 1}\n",
        11, "spec.parameters.epochs.default", "below the minimum"),
    "unquoted version": (
        HEADER.replace('"1.0.0"', "1.0") + "  tasks:\n    - name: a\n      type: training\n",
        5, "metadata.version", "semantic version"),
    "object-constructing tag": (
        "apiVersion: !!python/object/apply:os.system ['true']\n",
        1, "<root>", "YAML tag not allowed"),
    "empty file": ("\n\n", 1, "<root>", "the file is empty"),
    "list instead of mapping": ("- a\n- b\n", 1, "<root>", "expected a mapping at the top of the file, got list"),
    "missing tasks": (HEADER + "  parameters: {}\n", 7, "spec.tasks", "required field is missing"),
    "command type without command": (HEADER + "  tasks:\n    - name: a\n      type: command\n",
                                     8, "spec.tasks[0]", "needs a `command`"),
    "bad cron": (HEADER + "  schedule: \"61 * * * *\"\n  tasks:\n    - name: a\n      type: training\n",
                 7, "spec.schedule", "is not a cron expression"),
    "unknown preset": (HEADER + "  schedule: \"@fortnightly\"\n  tasks:\n    - name: a\n      type: training\n",
                       7, "spec.schedule", "unknown schedule preset '@fortnightly'"),
    "bad schedule type": (HEADER + "  schedule: 5\n  tasks:\n    - name: a\n      type: training\n",
                          7, "spec.schedule", "valid string"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_error_names_file_line_field_and_problem(tmp_path, capsys, case):
    text, line, field, message = CASES[case]
    path = write(tmp_path / "p.yaml", text)
    code, lines = validate(capsys, path)
    assert code == 1
    expected_prefix = f"{path}:{line}: {field}: "
    matching = [entry for entry in lines if entry.startswith(expected_prefix)]
    assert matching, f"no error at {expected_prefix!r} in {lines}"
    assert any(message in entry for entry in matching), matching


def test_all_errors_of_a_file_are_reported_at_once(tmp_path, capsys):
    path = write(tmp_path / "p.yaml", HEADER + "  tasks:\n    - name: a\n      type: comand\n      resources: {cpu: two}\n"
                 "    - name: a\n      type: command\n      command: [echo]\n")
    code, lines = validate(capsys, path)
    assert code == 1
    assert len(lines) == 3
    assert all(line.startswith(f"{path}:") for line in lines)


def test_the_example_is_valid_and_exit_code_is_zero(capsys):
    assert main(["pipeline", "validate", str(EXAMPLE)]) == 0
    assert capsys.readouterr().out == ""


def test_several_files_one_bad_exits_one(tmp_path, capsys):
    bad = write(tmp_path / "bad.yaml", "- a\n")
    code, lines = validate(capsys, bad)
    assert code == 1
    assert main(["pipeline", "validate", str(EXAMPLE), str(bad)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [f"{bad}:1: <root>: expected a mapping at the top of the file, got list"]


def test_json_pipelines_are_validated_with_lines(tmp_path, capsys):
    path = write(tmp_path / "p.json", """
    {
      "apiVersion": "train-platform/v1",
      "kind": "Pipeline",
      "metadata": {"name": "j", "version": "1.0.0"},
      "spec": {
        "tasks": [
          {"name": "a", "type": "command", "command": ["echo"], "retries": -1}
        ]
      }
    }
    """)
    code, lines = validate(capsys, path)
    assert code == 1
    assert lines[0].startswith(f"{path}:7: spec.tasks[0].retries: ")


def test_validate_never_prints_a_traceback(tmp_path, capfd):
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00garbage")
    assert main(["pipeline", "validate", str(path)]) == 1
    captured = capfd.readouterr()
    assert "Traceback" not in captured.out + captured.err
    assert "not UTF-8" in captured.out
