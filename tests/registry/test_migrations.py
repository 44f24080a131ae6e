"""The registry's tables come from its Alembic migrations: on a fresh SQLite and a fresh
PostgreSQL database, on a database made before migrations existed (adopted, data kept),
with two processes opening a fresh database at once, and with an opener killed half-way
through the upgrade. The scripts ship inside the built wheel."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from sqlalchemy import create_engine, insert, text

from tests._faults import Point, kill_at, release_file, spawn

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def url(request, tp_home, monkeypatch) -> str:
    """A fresh, empty database, exported as TP_DATABASE_URL for subprocesses."""
    from train_platform.settings import reload_settings

    value = request.getfixturevalue("fresh_postgres") if request.param == "postgresql" \
        else f"sqlite:///{tp_home / 'platform.db'}"
    monkeypatch.setenv("TP_DATABASE_URL", value)
    monkeypatch.delenv("TP_USER", raising=False)
    reload_settings()
    yield value
    from train_platform.registry import schema

    schema.dispose(value)


def _revision(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text("SELECT version_num FROM tp_registry_alembic_version")).scalars())
    finally:
        engine.dispose()


def _differences(url: str) -> list:
    """What Alembic's autogenerate finds between the database and ``schema.metadata``."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from train_platform.registry import schema
    from train_platform.registry.migrations import VERSION_TABLE

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={
                "compare_type": True, "version_table": VERSION_TABLE,
                "include_object": lambda obj, name, type_, *_: type_ != "table" or name in schema.metadata.tables,
            })
            return compare_metadata(context, schema.metadata)
    finally:
        engine.dispose()


def _admins_and_audit(url: str) -> tuple[list, list]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            admins = list(conn.execute(text("SELECT user_name FROM tp_platform_roles")).scalars())
            audit = list(conn.execute(text("SELECT action FROM tp_platform_audit")).scalars())
            return admins, audit
    finally:
        engine.dispose()


def test_the_head_revision_is_the_one_the_code_expects():
    from alembic.script import ScriptDirectory

    from train_platform.registry.migrations import HEAD, alembic_config

    assert ScriptDirectory.from_config(alembic_config()).get_heads() == [HEAD]


def test_a_fresh_database_is_created_by_the_migrations(url, checkpoints):
    from train_platform.registry import ModelRegistry
    from train_platform.settings import os_user

    registry = ModelRegistry(database_url=url)
    assert registry.list_models() == []
    assert _revision(url) == ["0001"]
    assert _differences(url) == []  # the revision builds exactly the tables schema.py declares
    assert _admins_and_audit(url) == ([os_user()], ["admin_grant"])
    assert registry.register("fresh", checkpoints["good"]).version == 1


def _older_database(url: str) -> None:
    """A database as the registry made it before migrations: ``create_all`` of its tables
    and the first admin, by code older than ``gate_detail`` and the platform audit table;
    one model with one version in it."""
    from datetime import datetime, timezone

    spec = importlib.util.spec_from_file_location(
        "baseline", ROOT / "include/train_platform/registry/migrations/versions/0001_initial.py")
    baseline = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(baseline)
    tables = baseline._tables()
    versions = tables.tables["tp_model_versions"]
    versions._columns.remove(versions.c.gate_detail)
    tables.remove(tables.tables["tp_platform_audit"])
    now = datetime.now(timezone.utc)
    engine = create_engine(url)
    try:
        tables.create_all(engine)
        with engine.begin() as conn:
            conn.execute(insert(tables.tables["tp_platform_roles"]).values(
                user_name="old-admin", role="platform-admin", granted_by="old-admin", granted_at=now))
            conn.execute(insert(tables.tables["tp_models"]).values(id=1, name="kept", created_at=now))
            conn.execute(insert(tables.tables["tp_model_roles"]).values(
                model_id=1, user_name="old-admin", role="owner", granted_by="old-admin", granted_at=now))
            conn.execute(insert(versions).values(
                model_id=1, version=1, created_at=now, created_by="old-admin", task="classification",
                checkpoint_uri="/old/ckpt", checkpoint_digest="0" * 64, bento_model_tag="kept:v1", metrics={"acc": 0.9},
                gate_status="passed", rejected=False))
    finally:
        engine.dispose()


def test_a_database_made_before_migrations_is_adopted_with_its_data(url):
    from train_platform.registry import ModelRegistry

    _older_database(url)
    registry = ModelRegistry(database_url=url, actor="old-admin")
    (kept,) = registry.list_versions("kept")
    assert (kept.version, kept.created_by, kept.metrics, kept.gate_status, kept.gate_detail) == (
        1, "old-admin", {"acc": 0.9}, "passed", None)
    assert _revision(url) == ["0001"]
    assert _differences(url) == []  # the missing column and table were added
    # Not taken for a fresh database: the old admin stays the only one.
    assert _admins_and_audit(url) == (["old-admin"], [])
    registry.record_gate("kept", 1, passed=False)
    assert registry.get("kept", 1).gate_detail == {"passed": False, "reasons": ["set by hand"]}


def test_a_database_at_an_unknown_revision_is_refused_with_the_reason(url):
    from train_platform.registry import ModelRegistry, RegistryError, schema

    ModelRegistry(database_url=url).list_models()
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE tp_registry_alembic_version SET version_num = '9999'"))
    engine.dispose()
    schema.dispose(url)
    with pytest.raises(RegistryError, match=r"schema revision '9999', which this version of train-platform does not know"):
        ModelRegistry(database_url=url).list_models()


# Inside the upgrade's transaction: the tables created and the revision recorded, not
# committed, the write lock held.
IN_UPGRADE = Point("alembic.command:upgrade", "after", 1)
OPEN = ["-m", "train_platform.cli", "admin", "list"]


@pytest.mark.slow
def test_two_openers_at_once_migrate_the_database_once(url, tmp_path):
    marker = tmp_path / "marker"
    first = spawn(IN_UPGRADE, OPEN, marker)
    second = None
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        second = subprocess.Popen([sys.executable, *OPEN], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(3)
        assert second.poll() is None, "the second opener did not wait for the first one's upgrade"
        release_file(marker).touch()
        outs = [proc.communicate(timeout=120) for proc in (first, second)]
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert [first.returncode, second.returncode] == [0, 0], outs
    assert "migrated" in outs[0][1] and "migrated" not in outs[1][1]
    assert _revision(url) == ["0001"]
    admins, audit = _admins_and_audit(url)
    assert len(admins) == 1 and audit == ["admin_grant"]


@pytest.mark.slow
def test_an_opener_killed_mid_upgrade_leaves_the_database_as_it_was(url, tmp_path):
    from sqlalchemy import inspect

    kill_at(IN_UPGRADE, OPEN, tmp_path / "marker")
    engine = create_engine(url)
    try:
        assert [t for t in inspect(engine).get_table_names() if t.startswith("tp_")] == []
    finally:
        engine.dispose()
    proc = subprocess.run([sys.executable, *OPEN], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert _revision(url) == ["0001"] and _differences(url) == []


@pytest.mark.slow
def test_the_migration_scripts_ship_in_the_wheel(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for item in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / item, source / item)
    for folder in ("include", "ml", "operators"):
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (wheel,) = (tmp_path / "dist").glob("train_platform-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    base = "train_platform/registry/migrations/"
    scripts = {base + "env.py", base + "script.py.mako", base + "versions/0001_initial.py"}
    assert scripts <= names, sorted(n for n in names if n.startswith(base))
