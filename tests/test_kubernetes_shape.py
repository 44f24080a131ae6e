"""The at-scale shape fits together: the shipped pipelines, the images docker/ builds, the
train-platform chart, the values for the official Airflow chart and the requirements.

Checked offline: every image a pipeline, the chart or the Airflow values name is one
docker/images.yaml lists with a Dockerfile, at the chart's appVersion; every path a shipped
pipeline reads or writes lies on a claim the chart creates, mounted where the chart says;
every task of every shipped pipeline compiles to a pod that the Kubernetes 1.27, 1.30 and
1.37 schemas accept (strict); the Airflow image installs no test package, and the trainer
image installs every pinned package the task code imports.
"""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path, PurePosixPath

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PIPELINES = sorted((ROOT / "dags" / "pipelines").glob("*.yaml"))
CHART_DIR = ROOT / "helm" / "train-platform"
KUBE_VERSIONS = ("1.27", "1.30", "1.37")
RELEASE = NAMESPACE = "train-platform"
# Packages only tests use; none may reach an image.
TEST_PACKAGES = {"pytest", "pytest-xdist", "moto", "playwright", "kubernetes-validate", "helm-python-sdk", "import-linter",
                 "scikit-activeml"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path: Path, seen: set[Path] | None = None) -> dict[str, str]:
    """Distribution -> version of a requirements file, following its ``-r`` includes."""
    seen = seen if seen is not None else set()
    if path in seen:
        return {}
    seen.add(path)
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            found.update(pins(path.parent / line[3:].strip(), seen))
        elif line and not line.startswith("-"):
            match = re.match(r"^([A-Za-z0-9_.-]+)(\[[^\]]*\])?==(\S+)$", line)
            assert match, f"{path.name}: {line!r} is not pinned with =="
            found[_norm(match[1])] = match[3]
    return found


@pytest.fixture(scope="module")
def images() -> dict[str, str]:
    return yaml.safe_load((ROOT / "docker" / "images.yaml").read_text())["images"]


@pytest.fixture(scope="module")
def app_version() -> str:
    return yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())["appVersion"]


@pytest.fixture(scope="module")
def chart_objects() -> list[dict]:
    with helm.Chart.load(CHART_DIR) as chart:
        manifests = chart.render({}, name=RELEASE, namespace=NAMESPACE)
    return [doc for path, text in manifests.items() if not path.endswith("NOTES.txt")
            for doc in yaml.safe_load_all(text) if doc]


@pytest.fixture(scope="module")
def claims(chart_objects) -> dict[str, str]:
    """Claim name -> the path pipelines mount it at (the chart's annotation)."""
    return {o["metadata"]["name"]: o["metadata"]["annotations"]["train-platform/mount-path"]
            for o in chart_objects if o["kind"] == "PersistentVolumeClaim"}


def _image(reference: str) -> tuple[str, str]:
    repository, _, tag = reference.rpartition(":")
    return (repository, tag) if repository and "/" not in tag else (reference, "")


# --- images ---------------------------------------------------------------------------------


def test_every_image_is_built_by_docker_and_tagged_with_the_charts_version(images, app_version):
    dockerfiles = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docker").glob("Dockerfile*"))
    assert sorted(images.values()) == dockerfiles
    assert app_version == re.search(r'(?m)^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text())[1]
    named = []
    for path in PIPELINES:
        for task in yaml.safe_load(path.read_text())["spec"]["tasks"]:
            assert task.get("image"), f"{path.name}: task {task['name']} names no image"
            named.append((f"{path.name}:{task['name']}", task["image"]))
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    named.append(("chart image", f"{values['image']['repository']}:{values['image']['tag'] or app_version}"))
    airflow = yaml.safe_load((ROOT / "helm" / "airflow-values.yaml").read_text())
    named.append(("airflow images.airflow", f"{airflow['images']['airflow']['repository']}:{airflow['images']['airflow']['tag']}"))
    named.append(("airflow default", f"{airflow['defaultAirflowRepository']}:{airflow['defaultAirflowTag']}"))
    wrong = [(where, ref) for where, ref in named if _image(ref) not in {(repo, app_version) for repo in images}]
    assert wrong == []
    assert _image(named[-1][1])[0] == "train-platform/airflow"
    assert values["image"]["repository"] == "train-platform/trainer"


def test_the_airflow_image_installs_no_test_packages():
    dockerfile = (ROOT / "docker" / "Dockerfile.airflow").read_text()
    installed = re.findall(r"-r\s+/opt/train-platform/(\S+)", dockerfile)
    assert installed == ["requirements.txt"]
    copied = re.search(r"COPY --chown=airflow:root ((?:\S+ )+)/opt/train-platform/", dockerfile)[1].split()
    assert "requirements-test.txt" not in copied
    image = pins(ROOT / "requirements.txt")
    assert TEST_PACKAGES.isdisjoint(image), sorted(TEST_PACKAGES & set(image))
    assert "apache-airflow" in image and "prometheus-client" in image
    # `make install` still installs everything into .venv: the test packages too.
    tests = pins(ROOT / "requirements-test.txt")
    assert set(tests) == TEST_PACKAGES
    assert "-r requirements.txt -r requirements-test.txt" in (ROOT / "Makefile").read_text()


def _third_party_imports(folder: Path) -> set[str]:
    names = set()
    for source in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"train_platform", "ml", "operators", "airflow", "__future__"}


def test_the_trainer_image_installs_every_pinned_package_the_task_code_imports():
    """Task pods run `python -m ml.*` and `python -m train_platform.cli` from the trainer
    image; whatever they import that requirements.txt pins must be installed there, at the
    same version."""
    dockerfile = (ROOT / "docker" / "Dockerfile.trainer").read_text()
    trainer = {_norm(m[1]): m[3] for m in re.finditer(r"'?([A-Za-z0-9_.-]+)(\[[^\]]*\])?==([^\s']+)'?", dockerfile)}
    pinned = pins(ROOT / "requirements.txt")
    distributions = packages_distributions()
    needed = {}
    for module in _third_party_imports(ROOT / "include" / "train_platform") | _third_party_imports(ROOT / "ml"):
        for dist in distributions.get(module, []):
            if _norm(dist) in pinned:
                needed[_norm(dist)] = module
    assert {"torch", "bentoml", "pyiceberg"} <= set(needed)
    missing = sorted(f"{dist} (import {module})" for dist, module in needed.items() if dist not in trainer)
    assert missing == []
    # The same versions as the .venv the tests run in: requirements.txt, else constraints.txt.
    constraints = {_norm(m[1]): m[2] for m in re.finditer(r"(?m)^([A-Za-z0-9_.-]+)==(\S+)$",
                                                          (ROOT / "constraints.txt").read_text())}
    expected = {**constraints, **pinned}
    assert {dist: trainer[dist] for dist in trainer} == {dist: expected.get(dist) for dist in trainer}
    assert "-c constraints.txt" in dockerfile
    assert TEST_PACKAGES.isdisjoint(trainer)


# --- claims and mounts --------------------------------------------------------------------


def _static_prefix(location: str) -> PurePosixPath | None:
    """The fixed part of a container path (``/mnt/user/models/{{ params.x }}`` ->
    ``/mnt/user/models``); None for refs (tp://, model:, s3://, aeon:)."""
    if not location.startswith("/"):
        return None
    return PurePosixPath(location.split("{{", 1)[0].rstrip("/") or "/")


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.name)
def test_shipped_pipelines_mount_a_chart_claim_under_every_path_they_use(path, claims):
    from train_platform.settings import Settings
    from train_platform.storage import parse_mounts

    spec = yaml.safe_load(path.read_text())["spec"]
    mounts = parse_mounts(spec.get("mounts"), Settings.from_env({"TP_HOME": "/tmp/tp"}))
    for task in spec["tasks"]:
        mounts += parse_mounts(task.get("mounts"), Settings.from_env({"TP_HOME": "/tmp/tp"}))
    for mount in mounts:
        assert mount.type == "pvc", f"{path.name}: {mount.shorthand()} is not a shared claim"
        assert claims.get(mount.claim_name) == mount.mount_path, (
            f"{path.name}: {mount.shorthand()}: the chart mounts {mount.claim_name} at {claims.get(mount.claim_name)}")
    roots = [PurePosixPath(m.mount_path) for m in mounts]
    used = [_static_prefix(item.get("source") or item.get("destination"))
            for task in spec["tasks"] for item in task.get("inputs", []) + task.get("outputs", [])]
    uncovered = [str(p) for p in used if p is not None and not any(p == r or r in p.parents for r in roots)]
    assert uncovered == [], f"{path.name}: no claim mounted under {uncovered}"
    # Each declared claim is used by some path: no mount for nothing.
    for root in roots:
        needed_by_registry = str(root) == claims.get("user-models")  # BENTOML_HOME lives there
        assert needed_by_registry or any(p is not None and (p == root or root in p.parents) for p in used), (
            f"{path.name}: {root} is mounted but no task uses it")


def test_every_chart_claim_is_mounted_by_airflow_at_the_same_path(claims):
    airflow = yaml.safe_load((ROOT / "helm" / "airflow-values.yaml").read_text())
    volumes = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in airflow["volumes"]}
    assert {volumes[m["name"]]: m["mountPath"] for m in airflow["volumeMounts"]} == claims


# --- task pods -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.name)
def test_every_task_of_the_shipped_pipelines_is_a_valid_pod(path, tp_home, kubeconfig, claims, chart_objects, images):
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from kubernetes.client import ApiClient

    from train_platform.compiler.compiler import build_dag
    from train_platform.settings import get_settings
    from train_platform.spec.validate import load_pipeline

    config_map = next(o for o in chart_objects if o["kind"] == "ConfigMap" and "TP_K8S_CONFIG_MAP" in o.get("data", {}))
    dag = build_dag(load_pipeline(path), source=str(path), active=True, settings=get_settings())
    assert dag.tasks
    for task in dag.tasks:
        if not hasattr(task, "pod_operator_kwargs"):
            # A review waits for people and merges in the Airflow worker: it never is a pod.
            assert task.task_type == "review", (task.task_id, type(task).__name__)
            continue
        command = task.command or ["python", "-m", "train_platform.cli", "--help"]
        kwargs = task.pod_operator_kwargs(command, {"TP_RUN_ID": "manual__1", "TP_TASK_ID": task.task_id})
        manifest = ApiClient().sanitize_for_serialization(KubernetesPodOperator(**kwargs).build_pod_request_obj())
        for version in KUBE_VERSIONS:
            kubernetes_validate.validate(manifest, version, strict=True)
        spec = manifest["spec"]
        container = spec["containers"][0]
        assert _image(container["image"])[0] in images, (task.task_id, container["image"])
        assert manifest["metadata"]["namespace"] == NAMESPACE
        pod_claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in spec.get("volumes", [])
                      if "persistentVolumeClaim" in v}
        mounted = {pod_claims[m["name"]]: m["mountPath"] for m in container.get("volumeMounts", [])
                   if m["name"] in pod_claims}
        assert mounted and all(claims[c] == p for c, p in mounted.items()), (task.task_id, mounted)
        # The platform's settings come from the chart's ConfigMap and Secret.
        sources = container["envFrom"]
        assert {"configMapRef": {"name": config_map["metadata"]["name"], "optional": True}} in sources
        assert {"secretRef": {"name": config_map["data"]["TP_K8S_SECRET"], "optional": True}} in sources
