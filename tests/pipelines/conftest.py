"""Fixtures shared by the pipeline tests."""

from __future__ import annotations

import pytest

from tests.pipelines.helpers import write


@pytest.fixture
def kubeconfig(tmp_path, monkeypatch):
    """KubernetesPodOperator reads a cluster config to label the pod; no cluster is contacted."""
    path = write(tmp_path / "kubeconfig", """
    apiVersion: v1
    kind: Config
    clusters: [{name: offline, cluster: {server: "https://127.0.0.1:6443"}}]
    users: [{name: tester, user: {token: unused}}]
    contexts: [{name: offline, context: {cluster: offline, user: tester}}]
    current-context: offline
    """)
    monkeypatch.setenv("KUBECONFIG", str(path))
    return path
