"""Pipeline and task names in any script Airflow accepts (the design's users write Chinese),
with Kubernetes pod names and labels derived so that Kubernetes accepts them too."""

from __future__ import annotations

import re

import pytest

from tests.pipelines.helpers import write
from train_platform.compiler.compiler import build_dag
from train_platform.compiler.pods import label_value, pod_name
from train_platform.exceptions import PipelineSpecError
from train_platform.settings import get_settings
from train_platform.spec.validate import load_pipeline

DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

CHINESE = """
apiVersion: train-platform/v1
kind: Pipeline
metadata: {name: 传感器-增量训练, version: "1.0.0", owner: 数据团队}
spec:
  tasks:
    - {name: 数据准备, type: command, command: [echo, hi], executor: kubernetes, image: busybox}
    - {name: 训练, type: command, command: [echo, hi], executor: kubernetes, image: busybox, depends_on: [数据准备]}
"""


def test_a_chinese_pipeline_compiles_to_a_dag_and_valid_pods(tmp_path, tp_home, kubeconfig):
    import kubernetes_validate
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from kubernetes.client import ApiClient

    path = write(tmp_path / "p.yaml", CHINESE)
    spec = load_pipeline(path)
    dag = build_dag(spec, source=str(path), active=True, settings=get_settings())
    dag.validate()
    assert dag.dag_id == "传感器-增量训练"
    assert {t.task_id for t in dag.tasks} == {"数据准备", "训练"}
    names = set()
    for task in dag.tasks:
        pod = KubernetesPodOperator(**task.pod_operator_kwargs(["echo", "hi"], {})).build_pod_request_obj()
        manifest = ApiClient().sanitize_for_serialization(pod)
        kubernetes_validate.validate(manifest, "1.30", strict=True)
        name = manifest["metadata"]["name"]
        assert DNS_1123.match(name) and len(name) <= 63, name
        for key, value in manifest["metadata"]["labels"].items():
            assert LABEL_VALUE.match(value) and len(value) <= 63, (key, value)
        names.add(task.pod_operator_kwargs(["echo"], {})["name"])
    assert len(names) == 2  # two tasks whose names have no ASCII at all still differ


@pytest.mark.parametrize("pipeline, task", [("传感器", "训练"), ("a" * 200, "b" * 200), ("sensor.v2", "x_y"),
                                            ("Sensor-Training", "Step")])
def test_derived_kubernetes_names_are_valid(pipeline, task):
    name = pod_name(pipeline, task)
    assert DNS_1123.match(name) and len(name) <= 50, name
    for text in (pipeline, task, "1.0.0+build.7"):
        value = label_value(text)
        assert LABEL_VALUE.match(value) and 0 < len(value) <= 63, value


def test_plain_names_stay_readable():
    assert pod_name("sensor-training", "train") == "sensor-training-train"
    assert label_value("sensor-training") == "sensor-training"
    assert label_value("1.0.0") == "1.0.0"


def test_a_name_airflow_would_refuse_is_still_an_error(tmp_path):
    path = write(tmp_path / "p.yaml", CHINESE.replace("传感器-增量训练", "传感器 训练"))
    with pytest.raises(PipelineSpecError, match="pipeline name '传感器 训练' may only contain letters"):
        load_pipeline(path)
