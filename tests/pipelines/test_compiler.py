"""The compiler: spec -> DAG shape, Params, resources, retries, executors, Kubernetes pods."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tests.pipelines.helpers import COMMAND_EXAMPLE, EXAMPLE, minimal, write
from train_platform.cli import main
from train_platform.compiler.compiler import build_dag
from train_platform.compiler.plan import describe
from train_platform.settings import get_settings
from train_platform.spec.validate import load_pipeline


def test_example_compiles_unchanged_to_four_chained_tasks(tp_home):
    spec = load_pipeline(EXAMPLE)
    dag = build_dag(spec, source=str(EXAMPLE), active=True, settings=get_settings())
    assert dag.dag_id == "incremental-learning-pipeline"
    order = ["data-preparation", "model-training", "model-evaluation", "model-deployment"]
    assert sorted(dag.task_ids) == sorted(order)
    for upstream, downstream in zip(order, order[1:]):
        assert dag.get_task(downstream).upstream_task_ids == {upstream}
    assert dag.get_task("data-preparation").upstream_task_ids == set()
    training = dag.get_task("model-training")
    assert training.container_resources == {"cpu": "8", "memory": "16Gi", "gpu": 1}
    assert all(dag.get_task(t).container_resources["gpu"] == 0 for t in order if t != "model-training")
    assert set(dag.params.keys()) == {"learning_rate", "batch_size", "epochs", "incremental_ratio"}
    assert dag.params["epochs"] == 100
    assert dag.params.get_param("learning_rate").schema["type"] == ["number", "integer"]
    assert dag.params.get_param("batch_size").schema["type"] == "integer"
    assert "train-platform" in dag.tags and "version:1.0.0" in dag.tags


def test_compile_json_has_the_documented_shape(capsys):
    assert main(["pipeline", "compile", str(EXAMPLE), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert set(plan) == {"dag_id", "version", "schedule", "params", "tasks"}
    assert plan["params"] == {"learning_rate": 0.001, "batch_size": 32, "epochs": 100, "incremental_ratio": 0.1}
    assert [t["task_id"] for t in plan["tasks"]] == ["data-preparation", "model-training", "model-evaluation", "model-deployment"]
    training = plan["tasks"][1]
    assert set(training) == {"task_id", "type", "operator", "upstream", "resources", "retries",
                             "priority_weight", "pool", "executor"}
    assert training["operator"] == "TrainingOperator"
    assert training["upstream"] == ["data-preparation"]
    assert training["resources"] == {"cpu": "8", "memory": "16Gi", "gpu": 1}
    assert training["executor"] == "local"


def test_params_are_validated_like_the_trigger_form(tp_home):
    from airflow.sdk import ParamsDict  # noqa: F401 - the class the trigger form validates with

    spec = load_pipeline(COMMAND_EXAMPLE)
    dag = build_dag(spec, source="x", active=True, settings=get_settings())
    param = dag.params.get_param("samples")
    assert param.resolve(500) == 500
    with pytest.raises(Exception, match="(?i)minimum|less than"):
        param.resolve(3)
    with pytest.raises(Exception):
        param.resolve("many")


def test_task_fields_reach_the_operators(tmp_path, tp_home):
    path = write(tmp_path / "p.yaml", """
    apiVersion: train-platform/v1
    kind: Pipeline
    metadata: {name: fields, version: "2.1.0", owner: alice, description: "Line one,\\nstill the first sentence. Then more", tags: [team-a]}
    spec:
      schedule: "0 3 * * *"
      default_args: {retries: 4, retry_delay: 2m}
      tasks:
        - name: a
          type: command
          image: busybox
          command: "echo hello"
          args: ["{{ params.who }}"]
          priority: 7
          pool: gpu_pool
          timeout: 1h
          retry_delay: 30s
          executor: kubernetes
        - name: b
          type: command
          command: [echo]
          retries: 0
          depends_on: [a]
      parameters:
        who: world
    """)
    spec = load_pipeline(path)
    dag = build_dag(spec, source=str(path), active=True, settings=get_settings())
    a, b = dag.get_task("a"), dag.get_task("b")
    assert a.command == ["echo", "hello", "{{ params.who }}"]
    assert (a.priority_weight, a.pool, a.retries, a.runner) == (7, "gpu_pool", 4, "kubernetes")
    assert a.execution_timeout.total_seconds() == 3600 and a.retry_delay.total_seconds() == 30
    assert b.retries == 0 and b.retry_delay.total_seconds() == 120 and b.runner == "local"
    assert dag.owner == "alice" and "team-a" in dag.tags
    # the first sentence, across the line break of its paragraph
    assert dag.description == "Line one, still the first sentence. (v2.1.0)"
    assert describe(spec, get_settings())["schedule"] == "0 3 * * *"


def test_inactive_version_is_unscheduled_and_tagged(tp_home):
    spec = load_pipeline(COMMAND_EXAMPLE)
    dag = build_dag(spec, source="x", active=False, settings=get_settings())
    assert dag.dag_id == "example-command-pipeline__v1.0.0"
    assert "inactive-version" in dag.tags
    assert dag.is_paused_upon_creation is True


def test_asset_schedule(tmp_path, tp_home):
    path = write(tmp_path / "p.yaml", """
    apiVersion: train-platform/v1
    kind: Pipeline
    metadata: {name: on-data, version: "1.0.0"}
    spec:
      schedule: {assets: ["s3://sensors/new"]}
      tasks: [{name: a, type: command, command: [echo]}]
    """)
    spec = load_pipeline(path)
    assert describe(spec, get_settings())["schedule"] == {"assets": ["s3://sensors/new"]}
    dag = build_dag(spec, source=str(path), active=True, settings=get_settings())
    assert "s3://sensors/new" in str(dag.timetable.asset_condition)


def test_gpu_task_pod_is_a_valid_kubernetes_pod(tp_home, kubeconfig):
    """The pod KubernetesPodOperator would create for the example's training task,
    checked offline against the Kubernetes schema."""
    import kubernetes_validate
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from kubernetes.client import ApiClient

    spec = load_pipeline(EXAMPLE)
    dag = build_dag(spec, source=str(EXAMPLE), active=True, settings=get_settings())
    training = dag.get_task("model-training")
    kwargs = training.pod_operator_kwargs(["python", "-m", "ml.train", "--mode", "incremental"], {"A": "1"})
    pod = KubernetesPodOperator(**kwargs).build_pod_request_obj()
    manifest = ApiClient().sanitize_for_serialization(pod)
    kubernetes_validate.validate(manifest, "1.30", strict=True)
    container = manifest["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["resources"]["requests"] == {"cpu": "8", "memory": "16Gi"}
    assert container["image"] == "train-platform/trainer:0.1.0"
    assert container["command"] == ["python"] and container["args"][:2] == ["-m", "ml.train"]
    assert manifest["spec"]["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert manifest["metadata"]["labels"]["train-platform/pipeline"] == "incremental-learning-pipeline"
    # the pod gets the platform's settings (catalog, warehouse, registry) from the chart
    sources = container["envFrom"]
    assert {"configMapRef": {"name": "train-platform-config", "optional": True}} in sources
    assert {"secretRef": {"name": "train-platform-secrets", "optional": True}} in sources


MOUNTED = """
apiVersion: train-platform/v1
kind: Pipeline
metadata: {name: mounted, version: "1.0.0"}
spec:
  mounts: "user-data(pvc):/mnt/user/data,4G(memory):/dev/shm"
  tasks:
    - name: train
      type: command
      image: train-platform/trainer:latest
      executor: kubernetes
      command: ["python", "-c", "print(1)"]
      inputs: [{name: data, source: /mnt/user/data/processed}]
      resources: {gpu: 2}
      mounts: ["scratch(pvc):/mnt/scratch"]
    - name: local-step
      type: command
      command: ["python", "-c", "print(1)"]
      inputs: [{name: data, source: /mnt/user/data/processed}]
      outputs: [{name: out, destination: /mnt/other/out}]
"""


def test_mounts_become_pod_volumes_and_local_folders(tmp_path, tp_home, kubeconfig):
    import kubernetes_validate
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from kubernetes.client import ApiClient

    path = write(tmp_path / "p.yaml", MOUNTED)
    dag = build_dag(load_pipeline(path), source=str(path), active=True, settings=get_settings())
    train = dag.get_task("train")
    kwargs = train.pod_operator_kwargs(["python", "-c", "print(1)"], {})
    manifest = ApiClient().sanitize_for_serialization(KubernetesPodOperator(**kwargs).build_pod_request_obj())
    kubernetes_validate.validate(manifest, "1.30", strict=True)
    mounts = {m["mountPath"] for m in manifest["spec"]["containers"][0]["volumeMounts"]}
    assert {"/mnt/user/data", "/dev/shm", "/mnt/scratch"} <= mounts
    claims = {v["persistentVolumeClaim"]["claimName"] for v in manifest["spec"]["volumes"] if "persistentVolumeClaim" in v}
    assert {"user-data", "scratch"} <= claims
    assert manifest["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "2"

    # On the local executor the same container path lands in the mount's local folder.
    local = dag.get_task("local-step")
    resolved = local._resolve(local.inputs)["data"]
    pvc_folder = local.parsed_mounts[0].local_path(get_settings())
    assert Path(resolved) == pvc_folder / "processed"
    assert local._resolve(local.outputs)["out"] == str(tp_home / "fs" / "mnt" / "other" / "out")


def test_bad_mounts_are_validation_errors_with_their_line(tmp_path, capsys):
    path = write(tmp_path / "p.yaml", MOUNTED.replace("/mnt/scratch", "/mnt/../etc"))
    assert main(["pipeline", "validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"{path}:14: spec.tasks[0].mounts: " in out and ".." in out


# --- what a DAG says about itself in the UI: description, docs, parameter descriptions ---


def _markdown_tokens(text: str):
    """doc_md parsed as CommonMark with GFM tables, the Markdown Airflow 3.3's UI renders."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark").enable("table").parse(text)


LONG = """
apiVersion: train-platform/v1
kind: Pipeline
metadata:
  name: long-description
  version: "1.4.0"
  description: |
    Retrains the activity classifier on every newly confirmed label that the labelling team merged into
    the main branch of the sensor dataset during the previous day, replaying a balanced sample of the older
    classes so that nothing is forgotten. Then evaluates it.

    A second paragraph with `code` and a | pipe.
spec:
  parameters:
    epochs: 20
    rate: {type: number, default: 0.001, minimum: 0, description: AdamW peak rate}
    mode: {type: string, default: fast, enum: [fast, slow]}
    note: null
  tasks:
    - {name: prepare, type: command, command: [echo, "```not a fence"]}
    - {name: train, type: command, command: [echo], depends_on: [prepare]}
"""


def test_description_is_a_whole_first_sentence_within_the_limit(tmp_path, tp_home):
    from train_platform.compiler.docs import DESCRIPTION_LIMIT

    path = write(tmp_path / "p.yaml", LONG)
    dag = build_dag(load_pipeline(path), source="p.yaml", active=True, settings=get_settings())
    assert len(dag.description) <= DESCRIPTION_LIMIT
    assert dag.description.endswith("… (v1.4.0)")
    kept = dag.description.removesuffix("… (v1.4.0)")
    # a prefix of the first sentence that ends where a word ends, and most of the room used
    sentence = " ".join(LONG.split("description: |")[1].split("Then evaluates")[0].split())
    assert sentence.startswith(kept) and not sentence[len(kept)].isalnum() and len(kept) > DESCRIPTION_LIMIT // 2
    # the full description is in the docs, both paragraphs
    assert "replaying a balanced sample" in dag.doc_md and "A second paragraph with `code`" in dag.doc_md


@pytest.mark.parametrize(("description", "expected"), [
    ("Smooths the signal. Shows how params reach commands.", "Smooths the signal. (v1.0.0)"),
    ("Uses e.g. a window of 5 on v1.2 data. More.", "Uses e.g. a window of 5 on v1.2 data. (v1.0.0)"),
    ("Spans\na line break; still one sentence", "Spans a line break; still one sentence (v1.0.0)"),
    ("传感器数据的增量训练。第二句。", "传感器数据的增量训练。 (v1.0.0)"),
])
def test_description_sentences(tmp_path, tp_home, description, expected):
    text = textwrap.dedent(minimal("s")).replace('  version: "1.0.0"\n',
                                                 f'  version: "1.0.0"\n  description: {json.dumps(description)}\n')
    path = write(tmp_path / "p.yaml", text)
    dag = build_dag(load_pipeline(path), source="p.yaml", active=True, settings=get_settings())
    assert dag.description == expected


def test_a_pipeline_without_description_is_summarised_by_its_tasks(tmp_path, tp_home):
    path = write(tmp_path / "p.yaml", minimal("nodesc", extra_task="""
        - name: second
          type: command
          command: [echo]
          depends_on: [only]
    """))
    dag = build_dag(load_pipeline(path), source="p.yaml", active=True, settings=get_settings())
    assert dag.description == "2 tasks (only, second), triggered by hand (v1.0.0)"
    assert "2 tasks (only, second), triggered by hand." in dag.doc_md


def test_every_parameter_has_a_description(tmp_path, tp_home):
    path = write(tmp_path / "p.yaml", LONG)
    dag = build_dag(load_pipeline(path), source="p.yaml", active=True, settings=get_settings())
    described = {name: dag.params.get_param(name).description for name in dag.params}
    assert described == {
        "epochs": "Integer; default 20.",
        "rate": "AdamW peak rate",
        "mode": "String, one of \"fast\", \"slow\"; default \"fast\".",
        "note": "String or null; no default.",
    }
    # the trigger form shows Param.description; the serialized DAG carries it
    from airflow.serialization.serialized_objects import DagSerialization

    params = DagSerialization.to_dict(dag)["dag"]["params"]
    assert {name: value["description"] for name, value in params} == described
    example = build_dag(load_pipeline(COMMAND_EXAMPLE), source="x", active=True, settings=get_settings())
    assert example.params.get_param("window").description == "Integer; default 5."
    assert example.params.get_param("samples").description == "how many readings to generate"


def test_docs_show_the_yaml_source_and_render_without_html(tmp_path, tp_home):
    path = write(tmp_path / "p.yaml", LONG)
    text = path.read_text()
    dag = build_dag(load_pipeline(path), source="team/p.yaml", active=True, settings=get_settings(), text=text)
    from airflow.api_fastapi.core_api.datamodels.dags import DAGDetailsResponse

    # what Airflow's API hands the UI (it runs inspect.cleandoc on doc_md)
    served = DAGDetailsResponse.get_doc_md(dag.doc_md)
    tokens = _markdown_tokens(served)
    # Airflow 3.3's UI drops raw HTML (react-markdown skipHtml): the docs use none
    assert not [t for t in tokens if t.type in ("html_block", "html_inline")]
    inline_html = [c for t in tokens if t.children for c in t.children if c.type == "html_inline"]
    assert inline_html == []
    fences = [t for t in tokens if t.type == "fence"]
    # the file exactly, in one YAML block, although the file itself holds three backticks
    assert [(f.info, f.content) for f in fences] == [("yaml", text)]
    headings = [tokens[i + 1].content for i, t in enumerate(tokens) if t.type == "heading_open"]
    assert headings == ["long-description 1.4.0", "Parameters", "Versions of `long-description` in the dags folder",
                        "Source of `team/p.yaml`"]
    # parameters and versions are tables; the pipe of the description did not break one
    assert sum(t.type == "table_open" for t in tokens) == 3
    assert "| `rate` | number, at least 0 | `0.001` | AdamW peak rate |" in served
    assert '| `mode` | string, one of "fast", "slow" | `"fast"` | String, one of "fast", "slow"; default "fast". |' in served
