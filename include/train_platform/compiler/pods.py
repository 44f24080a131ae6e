"""The Kubernetes executor: what a task's pod looks like.

Builds the keyword arguments of ``KubernetesPodOperator`` for a task: image, command,
resources (``nvidia.com/gpu`` limits for GPU tasks, with the node selector and toleration
GPU nodes carry), storage mounts as volumes, environment, and labels that tie the pod to
its pipeline run. The ``kubernetes`` client is imported here, inside the functions, so DAG
parsing never pays for it.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Mapping, Sequence

from train_platform.settings import Settings

GPU_RESOURCE = "nvidia.com/gpu"
# Nodes with GPUs carry this label and taint in the platform's chart (helm/).
GPU_NODE_SELECTOR = {"train-platform/accelerator": "nvidia-gpu"}
GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def pod_name(pipeline: str, task_id: str) -> str:
    """A DNS-1123 name (lowercase ASCII letters, digits, '-'); KubernetesPodOperator appends
    a random suffix. Names in other scripts (``传感器-训练``), which Airflow accepts, keep
    their ASCII part and get a short digest of the full name, so two pipelines never
    share a pod name prefix."""
    full = f"{pipeline}-{task_id}"
    name = re.sub(r"[^a-z0-9-]+", "-", full.lower()).strip("-")
    if name != full:
        name = f"{name[:40].rstrip('-')}-{_digest(full)}".lstrip("-")
    return name[:50].rstrip("-") or "task"


def label_value(text: str) -> str:
    """A Kubernetes label value: at most 63 of ``[A-Za-z0-9_.-]``, starting and ending with a
    letter or digit; a value that had to change carries a digest of the original."""
    value = re.sub(r"[^A-Za-z0-9_.-]+", "_", text)
    if value != text or len(value) > 63:
        value = f"{value[:54]}-{_digest(text)}"
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", value) or _digest(text)


def pod_operator_kwargs(
    *,
    task_id: str,
    pipeline: str,
    pipeline_version: str,
    image: str,
    command: Sequence[str],
    resources: Mapping[str, Any],
    env: Mapping[str, str],
    mounts: Sequence = (),
    settings: Settings,
) -> dict[str, Any]:
    from kubernetes.client import models as k8s

    requests: dict[str, str] = {}
    for key in ("cpu", "memory"):
        if resources.get(key):
            requests[key] = str(resources[key])
    limits = dict(requests)
    gpu = int(resources.get("gpu") or 0)
    if gpu:
        limits[GPU_RESOURCE] = str(gpu)
    volumes, volume_mounts = [], []
    for mount in mounts:
        volume, volume_mount = mount.to_k8s()
        volumes.append(volume)
        volume_mounts.append(volume_mount)
    return {
        "task_id": task_id,
        "name": pod_name(pipeline, task_id),
        "namespace": settings.k8s_namespace,
        "image": image,
        "cmds": list(command[:1]),
        "arguments": list(command[1:]),
        "env_vars": [k8s.V1EnvVar(name=k, value=str(v)) for k, v in env.items()],
        # optional: a pod still starts where the chart's ConfigMap/Secret are not installed
        "env_from": [
            k8s.V1EnvFromSource(config_map_ref=k8s.V1ConfigMapEnvSource(name=settings.k8s_config_map, optional=True)),
            k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(name=settings.k8s_secret, optional=True)),
        ],
        "container_resources": k8s.V1ResourceRequirements(requests=requests or None, limits=limits or None),
        "node_selector": dict(GPU_NODE_SELECTOR) if gpu else None,
        "tolerations": [k8s.V1Toleration(**GPU_TOLERATION)] if gpu else None,
        "volumes": volumes,
        "volume_mounts": volume_mounts,
        "labels": {
            "app.kubernetes.io/part-of": "train-platform",
            "train-platform/pipeline": label_value(pipeline),
            "train-platform/pipeline-version": label_value(pipeline_version),
        },
        "get_logs": True,
        "on_finish_action": "delete_succeeded_pod",
    }

