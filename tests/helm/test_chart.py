"""The platform's Helm chart (helm/train-platform) and the values for the official Airflow
chart (helm/airflow-values.yaml), checked offline.

The chart is linted and rendered by Helm's own Go SDK (helm_python binds libhelm), every
rendered object is validated against the Kubernetes 1.30 OpenAPI schema in strict mode
(kubernetes_validate), and what the manifests say is compared with what the code expects:
the GPU node selector and toleration of compiler/pods.py, the TP_* variables that
train_platform.settings reads, the claims and paths the example pipeline uses.
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath
from typing import Any

import helm_python as helm
import kubernetes_validate
import numpy as np
import pytest
import yaml

from train_platform.compiler.pods import GPU_NODE_SELECTOR, GPU_RESOURCE, GPU_TOLERATION
from train_platform.settings import Settings
from train_platform.storage import parse_mounts

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "helm" / "train-platform"
AIRFLOW_VALUES = ROOT / "helm" / "airflow-values.yaml"
EXAMPLE_PIPELINE = ROOT / "dags" / "pipelines" / "incremental-learning-pipeline.yaml"
# The oldest Kubernetes minor the chart supports (Chart.yaml kubeVersion) and a current one.
KUBE_VERSIONS = ("1.27", "1.30", "1.37")
RELEASE = "train-platform"
NAMESPACE = "train-platform"

TOKENS = ["tok-0123456789abcdef", "tok-fedcba9876543210"]
FULL_SECRETS = {
    "catalogUrl": "postgresql+psycopg2://tp:pw@pg:5432/catalog",
    "databaseUrl": "postgresql+psycopg2://tp:pw@pg:5432/platform",
    "redisUrl": "redis://:pw@redis:6379/0",
    "apiTokens": TOKENS,
    "s3AccessKeyId": "minio",
    "s3SecretAccessKey": "minio-secret",
}

# Value sets every test of "renders valid Kubernetes objects" runs against.
VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "gpu-fixed-replicas": {
        "inference": {"gpu": 1, "replicas": 3, "model": "sensor-cls"},
        "autoscaling": {"enabled": False},
        "podDisruptionBudget": {"enabled": False},
    },
    "all-secrets": {"secrets": FULL_SECRETS},
    "existing-secret-and-claims": {
        "secrets": {"existingSecret": "platform-credentials"},
        "serviceAccount": {"create": False, "name": "serving"},
        "persistence": {
            "data": {"create": False},
            "models": {"create": False, "storageClassName": "nfs"},
            "results": {"create": False},
            "state": {"create": False},
        },
        "taskPodLauncher": {"create": False},
    },
}


@pytest.fixture(scope="module")
def chart():
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded


def render(chart: helm.Chart, values: dict[str, Any] | None = None, *, release: str = RELEASE) -> list[dict]:
    """Every object the chart renders for ``values`` (NOTES.txt is text, not an object)."""
    manifests = chart.render(values, name=release, namespace=NAMESPACE)
    objects = []
    for path, text in manifests.items():
        if path.endswith("NOTES.txt"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def notes(chart: helm.Chart, values: dict[str, Any] | None = None) -> str:
    manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE)
    return next(text for path, text in manifests.items() if path.endswith("NOTES.txt"))


def only(objects: list[dict], kind: str, name: str | None = None) -> dict:
    found = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


def of_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def container(objects: list[dict]) -> dict:
    return only(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def pod_env(objects: list[dict]) -> dict[str, str]:
    """The environment a serving pod would get: ConfigMap and Secret (decoded) through
    envFrom, then the container's own env, in Kubernetes' order of precedence."""
    by_name = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    env: dict[str, str] = {}
    for source in container(objects)["envFrom"]:
        if "configMapRef" in source:
            env.update(by_name[("ConfigMap", source["configMapRef"]["name"])]["data"])
        else:
            secret = by_name[("Secret", source["secretRef"]["name"])]
            env.update({k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()})
    env.update({item["name"]: item["value"] for item in container(objects).get("env", [])})
    return env


def names_the_code_reads() -> set[str]:
    """Environment variable names that appear as string literals in the platform's code."""
    names: set[str] = set()
    for folder in ("include/train_platform", "ml"):
        for source in (ROOT / folder).rglob("*.py"):
            names.update(re.findall(r"[\"']((?:TP|AWS|BENTOML)_[A-Z0-9_]+)[\"']", source.read_text()))
    return names


# --- lint and offline validation -------------------------------------------------------


@pytest.mark.parametrize("values_name", sorted(VALUE_SETS))
def test_lint_reports_no_errors_or_warnings(values_name):
    report = helm.lint(CHART_DIR, VALUE_SETS[values_name], strict=True, namespace=NAMESPACE, kube_version="v1.30.0")
    assert report["errors"] == []
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == [], problems


@pytest.mark.parametrize("values_name", sorted(VALUE_SETS))
def test_every_rendered_object_is_valid_kubernetes(chart, values_name):
    objects = render(chart, VALUE_SETS[values_name])
    assert objects
    for obj in objects:
        assert obj["metadata"]["namespace"] == NAMESPACE, obj["metadata"]["name"]
        for version in KUBE_VERSIONS:
            # Raises kubernetes_validate.ValidationError naming the field; strict mode also
            # refuses fields the API does not know (a misspelt key would be dropped silently).
            kubernetes_validate.validate(obj, version, strict=True)


def test_validation_does_catch_a_broken_manifest(chart):
    """The offline validator is not a rubber stamp: a misplaced field fails."""
    deployment = only(render(chart), "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, "1.30", strict=True)


# --- the inference Deployment, Service and HPA -------------------------------------------


def test_defaults_render_the_at_scale_objects(chart):
    objects = render(chart)
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == sorted([
        "ConfigMap", "Secret", "ServiceAccount", "Deployment", "Service", "HorizontalPodAutoscaler",
        "PodDisruptionBudget", "Role", "RoleBinding",
        # the alert rules: a ConfigMap where the cluster serves no PrometheusRule (offline)
        "ConfigMap",
    ] + ["PersistentVolumeClaim"] * 7)

    main = container(objects)
    assert main["command"] == ["tp", "model", "serve", "default", "--host", "0.0.0.0", "--port", "3000"]
    assert main["ports"] == [{"name": "http", "containerPort": 3000, "protocol": "TCP"}]
    assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert main["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert main["startupProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert main["resources"]["requests"] == {"cpu": "1", "memory": "2Gi"}
    assert GPU_RESOURCE not in main["resources"]["limits"]

    service = only(objects, "Service")
    deployment = only(objects, "Deployment")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert deployment["spec"]["template"]["metadata"]["labels"].items() >= service["spec"]["selector"].items()
    # The HPA owns the replica count: the Deployment leaves it out.
    assert "replicas" not in deployment["spec"]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert (annotations["prometheus.io/port"], annotations["prometheus.io/path"]) == ("3000", "/metrics")
    pod_spec = deployment["spec"]["template"]["spec"]
    assert pod_spec["serviceAccountName"] == only(objects, "ServiceAccount")["metadata"]["name"]
    assert "nodeSelector" not in pod_spec and "tolerations" not in pod_spec


def test_gpu_value_flows_to_limits_node_selector_and_toleration(chart):
    objects = render(chart, {"inference": {"gpu": 2, "nodeSelector": {"zone": "a"}}})
    pod_spec = only(objects, "Deployment")["spec"]["template"]["spec"]
    assert container(objects)["resources"]["limits"][GPU_RESOURCE] == "2"
    # The same scheduling terms compiler/pods.py gives GPU task pods.
    assert pod_spec["nodeSelector"] == {**GPU_NODE_SELECTOR, "zone": "a"}
    assert pod_spec["tolerations"] == [GPU_TOLERATION]


def test_replicas_without_autoscaling(chart):
    objects = render(chart, {"inference": {"replicas": 3}, "autoscaling": {"enabled": False}})
    assert only(objects, "Deployment")["spec"]["replicas"] == 3
    assert of_kind(objects, "HorizontalPodAutoscaler") == []


def test_hpa_values_flow_through(chart):
    objects = render(chart, {"autoscaling": {"minReplicas": 3, "maxReplicas": 7, "targetCPUUtilizationPercentage": 55}})
    hpa = only(objects, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "Deployment", "name": only(objects, "Deployment")["metadata"]["name"],
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 7)
    assert hpa["spec"]["metrics"] == [{
        "type": "Resource",
        "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 55}},
    }]


def test_model_and_port_flow_to_command_probes_and_service(chart):
    objects = render(chart, {"inference": {"model": "sensor-cls", "port": 8080}, "service": {"port": 9000}})
    main = container(objects)
    assert main["command"][3] == "sensor-cls"
    assert main["command"][-2:] == ["--port", "8080"]
    assert main["ports"][0]["containerPort"] == 8080
    assert only(objects, "Service")["spec"]["ports"][0]["port"] == 9000
    assert only(objects, "Deployment")["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == "8080"
    assert "--port 3000" not in notes(chart, {"inference": {"port": 8080}, "service": {"port": 9000}})


def test_changed_settings_roll_the_pods(chart):
    """Settings are read once at start-up, so the pod template must change with them."""
    def annotations(values):
        return only(render(chart, values), "Deployment")["spec"]["template"]["metadata"]["annotations"]

    base = annotations({})
    assert annotations({"secrets": {"apiTokens": TOKENS}})["checksum/secret"] != base["checksum/secret"]
    assert annotations({"config": {"warehouse": "s3://other/wh"}})["checksum/config"] != base["checksum/config"]


# --- configuration: ConfigMap and Secret ------------------------------------------------


def test_secret_holds_the_tokens_and_urls_and_settings_read_them(chart):
    objects = render(chart, {"secrets": FULL_SECRETS})
    secret = only(objects, "Secret")
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert decoded == {
        "TP_CATALOG_URL": FULL_SECRETS["catalogUrl"],
        "TP_DATABASE_URL": FULL_SECRETS["databaseUrl"],
        "TP_REDIS_URL": FULL_SECRETS["redisUrl"],
        "TP_API_TOKENS": ",".join(TOKENS),
        "AWS_ACCESS_KEY_ID": "minio",
        "AWS_SECRET_ACCESS_KEY": "minio-secret",
    }
    # Nothing secret leaks into the ConfigMap.
    config_text = yaml.safe_dump(only(objects, "ConfigMap", "train-platform-config"))
    for value in (*TOKENS, "pw@", "minio-secret"):
        assert value not in config_text

    # The pod's environment, parsed by the real settings module, is the at-scale shape.
    settings = Settings.from_env(pod_env(objects))
    assert settings.api_tokens == tuple(TOKENS)
    assert settings.catalog_uri == FULL_SECRETS["catalogUrl"]
    assert settings.database_uri == FULL_SECRETS["databaseUrl"]
    assert settings.redis_url == FULL_SECRETS["redisUrl"]
    assert settings.warehouse_uri == "s3://train-platform/warehouse"
    assert settings.s3_endpoint == "http://minio:9000"
    assert settings.default_executor == "kubernetes"
    assert settings.k8s_namespace == NAMESPACE
    assert str(settings.home) == "/var/lib/train-platform"


def test_empty_secrets_leave_the_settings_unset(chart):
    """An empty value writes no key, so settings fall back instead of reading ''."""
    objects = render(chart)
    assert only(objects, "Secret")["data"] == {}
    assert Settings.from_env(pod_env(objects)).api_tokens == ()
    assert "WARNING: secrets.apiTokens is empty" in notes(chart)
    assert "WARNING" not in notes(chart, {"secrets": FULL_SECRETS})


def test_existing_secret_is_referenced_not_created(chart):
    objects = render(chart, {"secrets": {"existingSecret": "platform-credentials"}})
    assert of_kind(objects, "Secret") == []
    assert {"secretRef": {"name": "platform-credentials"}} in container(objects)["envFrom"]


def test_every_variable_the_chart_sets_is_read_by_the_code(chart):
    env = pod_env(render(chart, {"secrets": FULL_SECRETS, "inference": {"env": {"TP_SERVE_MAX_BATCH_SIZE": "32"}}}))
    unknown = {name for name in env if name != "HOME"} - names_the_code_reads()
    assert unknown == set()


# --- shared volumes ----------------------------------------------------------------------


def test_claims_cover_every_path_of_the_example_pipeline(chart):
    """The NOTES line users paste into spec.mounts parses with the platform's own mount
    parser, names the claims the chart creates, and covers every input and output path of
    dags/pipelines/incremental-learning-pipeline.yaml."""
    objects = render(chart)
    line = next(line for line in notes(chart).splitlines() if line.strip().startswith("mounts:"))
    mounts = parse_mounts(yaml.safe_load(line)["mounts"], Settings.from_env({"TP_HOME": "/tmp/tp"}))
    claims = {pvc["metadata"]["name"]: pvc for pvc in of_kind(objects, "PersistentVolumeClaim")}
    by_path = {}
    for mount in mounts:
        assert mount.type == "pvc"
        pvc = claims[mount.name]
        assert pvc["metadata"]["annotations"]["train-platform/mount-path"] == mount.mount_path
        assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
        assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        by_path[PurePosixPath(mount.mount_path)] = mount.name
    assert set(by_path) >= {PurePosixPath("/mnt/user/data"), PurePosixPath("/mnt/user/models")}

    pipeline = yaml.safe_load(EXAMPLE_PIPELINE.read_text())
    paths = [
        PurePosixPath(item.get("source") or item["destination"])
        for task in pipeline["spec"]["tasks"]
        for item in task.get("inputs", []) + task.get("outputs", [])
    ]
    assert paths
    uncovered = [str(p) for p in paths if not any(root == p or root in p.parents for root in by_path)]
    assert uncovered == []


def test_serving_pods_mount_the_model_store(chart):
    objects = render(chart)
    pod_spec = only(objects, "Deployment")["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in container(objects)["volumeMounts"]}
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod_spec["volumes"] if "persistentVolumeClaim" in v}
    assert claims == {"models": "user-models"}
    assert mounts["models"] == "/mnt/user/models"
    assert pod_env(objects)["BENTOML_HOME"] == "/mnt/user/models/bentoml"


def test_claim_names_and_paths_are_values(chart):
    objects = render(chart, {"persistence": {"data": {"claimName": "sensors", "mountPath": "/srv/sensors", "size": "2Ti"}}})
    pvc = next(p for p in of_kind(objects, "PersistentVolumeClaim") if p["metadata"]["name"] == "sensors")
    assert pvc["spec"]["resources"]["requests"]["storage"] == "2Ti"
    assert "sensors(pvc):/srv/sensors" in notes(chart, {"persistence": {"data": {"claimName": "sensors", "mountPath": "/srv/sensors"}}})


# --- RBAC ------------------------------------------------------------------------------


def test_airflow_workers_may_launch_task_pods_here(chart):
    objects = render(chart, {"taskPodLauncher": {"airflowServiceAccounts": [
        {"name": "airflow-worker"}, {"name": "airflow-triggerer", "namespace": "airflow"},
    ]}})
    role, binding = only(objects, "Role"), only(objects, "RoleBinding")
    verbs = {resource: set(rule["verbs"]) for rule in role["rules"] for resource in rule["resources"]}
    assert {"create", "get", "list", "watch", "delete"} <= verbs["pods"]
    assert "get" in verbs["pods/log"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]}
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "airflow-worker", "namespace": NAMESPACE},
        {"kind": "ServiceAccount", "name": "airflow-triggerer", "namespace": "airflow"},
    ]
    # The serving pods never talk to the API server.
    deployment = only(objects, "Deployment")
    assert deployment["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


# --- values the chart refuses --------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"inference": {"gpu": -1}}, "/inference/gpu"),
        ({"inference": {"gpu": "1"}}, "/inference/gpu"),
        ({"inference": {"resources": {"requests": {"memory": "2 GB"}}}}, "/inference/resources/requests/memory"),
        ({"inference": {"resources": {"limits": {"nvidia.com/gpu": 1}}}}, "/inference/resources/limits"),
        ({"inference": {"model": "no spaces allowed"}}, "/inference/model"),
        ({"autoscaling": {"targetCPUUtilizationPercentage": 150}}, "/autoscaling/targetCPUUtilizationPercentage"),
        ({"autoscaling": {"targetCPU": 50}}, "/autoscaling"),
        ({"service": {"type": "Ingress"}}, "/service/type"),
        ({"secrets": {"apiTokens": ["short"]}}, "/secrets/apiTokens/0"),
        ({"secrets": {"apiTokens": ["tok-0123456789abcdef,tok-2"]}}, "/secrets/apiTokens/0"),
        ({"secrets": {"catalogUrl": "pg:5432/catalog"}}, "/secrets/catalogUrl"),
        ({"secrets": {"redisUrl": "localhost:6379"}}, "/secrets/redisUrl"),
        ({"config": {"executor": "celery"}}, "/config/executor"),
        ({"config": {"warehouse": "bucket/warehouse"}}, "/config/warehouse"),
        ({"persistence": {"data": {"mountPath": "mnt/user/data"}}}, "/persistence/data/mountPath"),
        ({"persistence": {"data": {"mountPath": "/mnt/user/../etc"}}}, "/persistence/data/mountPath"),
        ({"persistence": {"models": {"claimName": "User_Models"}}}, "/persistence/models/claimName"),
        ({"persistence": {"models": {"accessModes": ["ReadWriteSometimes"]}}}, "/persistence/models/accessModes/0"),
        ({"taskPodLauncher": {"airflowServiceAccounts": []}}, "/taskPodLauncher/airflowServiceAccounts"),
    ],
)
def test_schema_refuses_bad_values(chart, values, where):
    with pytest.raises(helm.HelmValuesError) as refused:
        chart.validate_schema(chart.merge_values(values))
    assert f"at '{where}'" in str(refused.value)
    # Rendering (what `helm install` does) refuses them the same way.
    with pytest.raises(helm.HelmValuesError):
        chart.render(values, name=RELEASE, namespace=NAMESPACE)


def test_schema_accepts_the_defaults_and_every_value_set(chart):
    for values in VALUE_SETS.values():
        chart.validate_schema(chart.merge_values(values))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"autoscaling": {"minReplicas": 5, "maxReplicas": 3}}, "autoscaling.minReplicas (5) is larger than autoscaling.maxReplicas (3)"),
        ({"inference": {"resources": {"requests": {"memory": "2Gi", "cpu": None}}}}, "needs inference.resources.requests.cpu"),
        ({"persistence": {"results": {"mountPath": "/mnt/user/data"}}}, 'persistence.results.mountPath "/mnt/user/data" is also the mountPath of persistence.data'),
        ({"persistence": {"state": {"claimName": "user-models"}}}, 'persistence.state.claimName "user-models" is also the claimName of persistence.models'),
        ({"persistence": {"models": {"mountInInference": False}}}, "persistence.models.mountInInference is false but config.bentomlHome is empty"),
    ],
)
def test_values_that_contradict_each_other_are_refused(chart, values, message):
    with pytest.raises(helm.HelmRenderError) as refused:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    assert message in str(refused.value)


# --- helm/airflow-values.yaml ---------------------------------------------------------------


@pytest.fixture(scope="module")
def airflow_values() -> dict[str, Any]:
    return yaml.safe_load(AIRFLOW_VALUES.read_text())


def test_airflow_values_configure_the_at_scale_shape(airflow_values):
    assert airflow_values["executor"] in ("KubernetesExecutor", "CeleryExecutor")
    assert airflow_values["airflowVersion"].startswith("3.")
    assert airflow_values["postgresql"]["enabled"] or airflow_values["data"]["metadataSecretName"]
    assert airflow_values["config"]["core"]["dags_folder"] == "/opt/airflow/dags"
    env = {item["name"]: item["value"] for item in airflow_values["env"]}
    assert env["TP_EXECUTOR"] == "kubernetes"
    # Only variables the platform reads, and the settings module accepts them.
    assert set(env) <= names_the_code_reads()
    settings = Settings.from_env(env)
    assert settings.default_executor == "kubernetes"
    assert settings.k8s_namespace == airflow_values["config"]["kubernetes_executor"]["namespace"] == NAMESPACE
    # Dockerfile.airflow copies the dags folder where the chart's Airflow looks for it.
    dockerfile = (ROOT / "docker" / "Dockerfile.airflow").read_text()
    assert "COPY --chown=airflow:root dags /opt/airflow/dags" in dockerfile


def test_airflow_values_refer_to_what_the_chart_renders(chart, airflow_values):
    """Names that tie the two releases together: ConfigMap and Secret (extraEnvFrom), the
    claims and their paths (volumes), the worker service account (RoleBinding)."""
    objects = render(chart, release=RELEASE)
    env_from = yaml.safe_load(airflow_values["extraEnvFrom"])
    assert {"configMapRef": {"name": only(objects, "ConfigMap", "train-platform-config")["metadata"]["name"]}} in env_from
    assert {"secretRef": {"name": only(objects, "Secret")["metadata"]["name"]}} in env_from

    claim_paths = {
        pvc["metadata"]["name"]: pvc["metadata"]["annotations"]["train-platform/mount-path"]
        for pvc in of_kind(objects, "PersistentVolumeClaim")
    }
    volume_claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in airflow_values["volumes"]}
    mounted = {volume_claims[m["name"]]: m["mountPath"] for m in airflow_values["volumeMounts"]}
    assert mounted == claim_paths
    env = {item["name"]: item["value"] for item in airflow_values["env"]}
    assert env["TP_HOME"] == claim_paths["train-platform-state"]
    # The registry on the workers writes the BentoML store the serving pods read.
    bentoml_home = PurePosixPath(only(objects, "ConfigMap", "train-platform-config")["data"]["BENTOML_HOME"])
    assert PurePosixPath(claim_paths["user-models"]) in bentoml_home.parents

    subjects = only(objects, "RoleBinding")["subjects"]
    section = "kubernetes" if airflow_values["executor"] == "KubernetesExecutor" else "celery"
    worker = airflow_values["workers"][section]["serviceAccount"]["name"]
    assert {"kind": "ServiceAccount", "name": worker, "namespace": NAMESPACE} in subjects


# --- the rendered pod, run as a local process ----------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str, *, body: dict | None = None, token: str | None = None) -> tuple[int, bytes]:
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=headers, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except urllib.error.URLError:  # not listening yet
        return 0, b""


@pytest.mark.slow
def test_the_rendered_serving_container_serves_a_registered_model(chart, tmp_path):
    """The Deployment's own command, environment (ConfigMap + Secret) and probe paths, run
    as a local process: the probes answer, and the Secret's tokens guard /predict."""
    rng = np.random.default_rng(0)
    labels = np.array(["low", "high"])[rng.integers(0, 2, 40)]
    x = rng.normal(0, 0.3, (40, 16, 3)).astype(np.float32) + np.where(labels == "high", 1.0, -1.0)[:, None, None]
    np.savez(tmp_path / "train.npz", X=x, y=labels)
    # The smallest transformer ml/config.py accepts: this test is about the pod, not the model.
    (tmp_path / "tiny.json").write_text(json.dumps({
        "model": {"d_model": 8, "n_layers": 1, "n_heads": 2, "d_ff": 16, "max_len": 32}, "plugins": [], "batch_size": 20,
    }))
    subprocess.run([sys.executable, "-m", "ml.train", "--mode", "initial", "--task", "classification",
                    "--data", str(tmp_path / "train.npz"), "--epochs", "1", "--config", str(tmp_path / "tiny.json"),
                    "--out", str(tmp_path / "ckpt")], check=True, capture_output=True, timeout=300, cwd=ROOT)

    port = _free_port()
    objects = render(chart, {
        "inference": {"model": "smoke", "port": port},
        "config": {"home": str(tmp_path / "home"), "bentomlHome": str(tmp_path / "bentoml"),
                   "warehouse": "", "s3Endpoint": ""},
        "secrets": {"databaseUrl": f"sqlite:///{tmp_path / 'platform.db'}", "apiTokens": TOKENS},
    })
    main = container(objects)
    venv_bin = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TP_", "BENTOML_"))}
    env.update(pod_env(objects), PATH=f"{venv_bin}{os.pathsep}{os.environ['PATH']}")
    (tmp_path / "home").mkdir()
    # `tp model register` then `tp model promote`, in one process to import bentoml once.
    register = (
        "import sys; from train_platform.cli import main; "
        f"sys.exit(main(['model', 'register', 'smoke', '--checkpoint', {str(tmp_path / 'ckpt')!r}, '--gate', 'passed'])"
        " or main(['model', 'promote', 'smoke', '1']))"
    )
    subprocess.run([sys.executable, "-c", register], env=env, check=True, capture_output=True, timeout=120)

    assert main["command"][0] == "tp"
    server = subprocess.Popen([str(venv_bin / "tp"), *main["command"][1:]], env=env, cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        base = f"http://127.0.0.1:{main['ports'][0]['containerPort']}"
        deadline = time.monotonic() + 180
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert main[probe]["httpGet"]["port"] == "http"
            while (status := _get(base + main[probe]["httpGet"]["path"])[0]) != 200:
                assert server.poll() is None, server.stderr.read().decode()[-3000:]
                assert time.monotonic() < deadline, f"{probe} never answered 200 (last {status})"
                time.sleep(0.5)
        sample = {"sensor": x[0].tolist()}
        assert _get(base + "/predict", body=sample)[0] == 401
        assert _get(base + "/predict", body=sample, token="tok-not-a-valid-one")[0] == 401
        status, answer = _get(base + "/predict", body=sample, token=TOKENS[1])
        assert status == 200, answer
        assert json.loads(answer)["label"] in {"low", "high"}
        # What the scrape annotations point Prometheus at, without a token.
        annotations = only(objects, "Deployment")["spec"]["template"]["metadata"]["annotations"]
        status, metrics = _get(base + annotations["prometheus.io/path"])
        assert status == 200 and b"tp_predict_requests_total" in metrics
    finally:
        server.terminate()
        server.wait(timeout=60)
