"""Fixtures of the registry tests: trained checkpoints, and the registry on SQLite and on
the real PostgreSQL server (a fresh database per test)."""

from __future__ import annotations

import uuid

import pytest

from tests.registry.models import trained_models


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> dict:
    return trained_models(tmp_path_factory.getbasetemp() / "tp-models")


@pytest.fixture
def fresh_postgres(postgres_url):
    """URL of a new, empty database on the test PostgreSQL server; dropped afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"tp_registry_{uuid.uuid4().hex[:10]}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    yield url
    from train_platform.registry import schema

    for key in [k for k in schema._engines if k[0] == url]:
        schema._engines.pop(key).dispose()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def registry(request, tp_home):
    from train_platform.registry import ModelRegistry
    from train_platform.settings import get_settings

    url = request.getfixturevalue("fresh_postgres") if request.param == "postgresql" else None
    return ModelRegistry(get_settings(), database_url=url)
