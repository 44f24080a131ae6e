"""What test_names.py and test_folder.py leave out: pipeline and task names in many scripts
(accepted exactly when Airflow accepts them, with pods Kubernetes accepts), and the kinds of
damaged pins file not covered there (empty, unreadable, partly valid, a missing version)."""

from __future__ import annotations

import json
import re

import pytest

from tests.pipelines.helpers import minimal, write
from train_platform.compiler.compiler import build_dag
from train_platform.compiler.pods import label_value, pod_name
from train_platform.exceptions import PipelineSpecError
from train_platform.settings import get_settings
from train_platform.spec.folder import scan_folder
from train_platform.spec.validate import load_pipeline

DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

# name -> whether Airflow's own key rule accepts it (checked against validate_key below).
NAMES = {
    "датчик-обучение": True,       # Cyrillic
    "センサー学習": True,            # Japanese (katakana and kanji)
    "센서-학습": True,               # Korean
    "تدريب_المستشعر": True,         # Arabic
    "αισθητήρας.v2": True,          # Greek
    "Ünïcödé-Sensor": True,          # Latin with diacritics, upper case
    "传感器_Sensor.v2": True,        # mixed scripts
    "٣-arabic-digits": True,         # non-ASCII digits first
    "प्रशिक्षण": False,               # Devanagari: its vowel signs are not word characters
    "传感器 训练": False,             # a space
    "emoji-🚀": False,
}


@pytest.mark.parametrize("name", sorted(NAMES))
def test_a_name_is_accepted_exactly_when_airflow_accepts_it(tmp_path, tp_home, kubeconfig, name):
    import kubernetes_validate
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from airflow.sdk.definitions._internal.node import validate_key
    from kubernetes.client import ApiClient

    try:
        validate_key(name)
        airflow_accepts = True
    except ValueError:
        airflow_accepts = False
    assert airflow_accepts is NAMES[name]
    text = f"""
apiVersion: train-platform/v1
kind: Pipeline
metadata: {{name: "{name}", version: "1.0.0", owner: team}}
spec:
  tasks:
    - {{name: "{name}", type: command, command: [echo, hi], executor: kubernetes, image: busybox}}
    - {{name: "{name}-2", type: command, command: [echo, hi], executor: kubernetes, image: busybox, depends_on: ["{name}"]}}
"""
    path = write(tmp_path / "p.yaml", text)
    if not airflow_accepts:
        with pytest.raises(PipelineSpecError, match="may only contain letters"):
            load_pipeline(path)
        return
    dag = build_dag(load_pipeline(path), source=str(path), active=True, settings=get_settings())
    dag.validate()
    assert dag.dag_id == name and {t.task_id for t in dag.tasks} == {name, f"{name}-2"}
    pod_names = set()
    for task in dag.tasks:
        pod = KubernetesPodOperator(**task.pod_operator_kwargs(["echo", "hi"], {})).build_pod_request_obj()
        manifest = ApiClient().sanitize_for_serialization(pod)
        kubernetes_validate.validate(manifest, "1.30", strict=True)
        assert DNS_1123.match(manifest["metadata"]["name"]) and len(manifest["metadata"]["name"]) <= 63
        for value in manifest["metadata"]["labels"].values():
            assert LABEL_VALUE.match(value) and len(value) <= 63, value
        pod_names.add(task.pod_operator_kwargs(["echo"], {})["name"])
    assert len(pod_names) == 2


def test_names_that_differ_only_outside_ascii_get_different_pod_names_and_labels():
    names = ["传感器", "传感噐", "датчик", "датчиk", "Ünïcödé", "Unicode"]
    assert len({pod_name(n, "训练") for n in names}) == len(names)
    assert len({label_value(n) for n in names}) == len(names)
    for name in names:
        assert DNS_1123.match(pod_name(name, "训练")) and LABEL_VALUE.match(label_value(name))


# ----- damaged pins --------------------------------------------------------------------------
def _pins_path():
    state = get_settings().pipeline_state_dir
    state.mkdir(parents=True, exist_ok=True)
    return state / "active.json"


def _two_versions(tmp_path):
    folder = tmp_path / "dags"
    write(folder / "good_one.yaml", minimal("good-one"))
    write(folder / "other_v1.yaml", minimal("other"))
    write(folder / "other_v2.yaml", minimal("other", version="2.0.0"))
    return folder


def test_an_empty_pins_file_hides_nothing(tmp_path, tp_home, caplog):
    folder = _two_versions(tmp_path)
    _pins_path().write_text("")
    assert scan_folder(folder).active == {"good-one": "1.0.0", "other": "2.0.0"}
    assert "ignoring unreadable pipeline pins" in caplog.text


def test_an_unreadable_pins_file_hides_nothing(tmp_path, tp_home, caplog):
    folder = _two_versions(tmp_path)
    _pins_path().mkdir()  # a folder where the file should be: reading it fails with an OSError
    assert scan_folder(folder).active == {"good-one": "1.0.0", "other": "2.0.0"}
    assert "ignoring unreadable pipeline pins" in caplog.text


def test_wrong_value_types_drop_only_their_pins(tmp_path, tp_home, caplog):
    folder = _two_versions(tmp_path)
    _pins_path().write_text(json.dumps({"good-one": {"version": "1.0.0"}, "other": "1.0.0", "third": [1]}))
    assert scan_folder(folder).active == {"good-one": "1.0.0", "other": "1.0.0"}  # other's valid pin kept
    assert "ignoring pins of good-one, third" in caplog.text


def test_a_pin_to_a_version_that_is_gone_hides_nothing(tmp_path, tp_home, caplog):
    folder = _two_versions(tmp_path)
    _pins_path().write_text(json.dumps({"other": "9.9.9", "good-one": "1.0.0"}))
    assert scan_folder(folder).active == {"good-one": "1.0.0", "other": "2.0.0"}
    assert "9.9.9" in caplog.text
