"""Fixtures of the sampling and pre-label tests: the small classifiers of
``tests/registry/models.py`` (trained once per session by ``python -m ml.train``) and a
dataset holding their test samples, unlabelled."""

from __future__ import annotations

import pytest

from tests.registry.models import trained_models


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> dict:
    return trained_models(tmp_path_factory.getbasetemp() / "tp-models")
