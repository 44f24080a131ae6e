"""One place where the platform reads its configuration.

Every setting is an environment variable with the ``TP_`` prefix. The defaults give the
embedded shape (SQLite, local folders, local processes); setting the URLs below moves a
deployment to the scale shape (PostgreSQL, S3/MinIO, Redis, Kubernetes pods) without any
other code path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

_PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


@dataclass(frozen=True)
class Settings:
    # Root of everything the platform writes on the embedded shape: task folders,
    # the SQLite catalog and registry, the Iceberg warehouse, locks.
    home: Path
    # Executor for tasks whose spec does not name one: "local" runs the container
    # command as a subprocess, "kubernetes" launches a pod.
    default_executor: str = "local"
    # SQLAlchemy URL of the Iceberg SQL catalog; SQLite under `home` when unset.
    catalog_url: str | None = None
    # Iceberg warehouse: a local folder under `home` when unset, or s3://bucket/prefix.
    warehouse: str | None = None
    # S3/MinIO endpoint for an s3:// warehouse and model exports.
    s3_endpoint: str | None = None
    # Redis for version locks and the inference cache; file locks / in-process when unset.
    redis_url: str | None = None
    # SQLAlchemy URL of the platform database (model registry); SQLite under `home` when unset.
    database_url: str | None = None
    # Bearer tokens accepted by the inference endpoint; empty means auth is off.
    api_tokens: tuple[str, ...] = ()
    # hostPath mounts are only allowed under these prefixes.
    hostpath_prefixes: tuple[str, ...] = ("/mnt", "/data")
    # Kubernetes namespace for task pods.
    k8s_namespace: str = "train-platform"
    # ConfigMap and Secret (from the helm chart) whose TP_* variables every task pod gets, so
    # a pod reaches the same catalog, warehouse, registry and Redis as the scheduler.
    k8s_config_map: str = "train-platform-config"
    k8s_secret: str = "train-platform-secrets"
    # Where pipeline files are dropped: Airflow's dags folder.
    dags_folder: Path = _PROJECT_ROOT / "dags"
    # Acting user when a CLI call gives no --as.
    user: str = field(default_factory=lambda: os.environ.get("USER", "anonymous"))

    @property
    def pipeline_state_dir(self) -> Path:
        return self.home / "pipelines"

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    @property
    def catalog_uri(self) -> str:
        return self.catalog_url or f"sqlite:///{self.home / 'catalog.db'}"

    @property
    def warehouse_uri(self) -> str:
        return self.warehouse or (self.home / "warehouse").as_uri()

    @property
    def database_uri(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'platform.db'}"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Settings":
        env = dict(os.environ if env is None else env)
        home = Path(env.get("TP_HOME") or _PROJECT_ROOT / ".tp_home").expanduser().resolve()
        executor = env.get("TP_EXECUTOR", "local")
        if executor not in ("local", "kubernetes"):
            raise ValueError(f"TP_EXECUTOR must be 'local' or 'kubernetes', not {executor!r}")
        return cls(
            home=home,
            default_executor=executor,
            catalog_url=env.get("TP_CATALOG_URL") or None,
            warehouse=env.get("TP_WAREHOUSE") or None,
            s3_endpoint=env.get("TP_S3_ENDPOINT") or None,
            redis_url=env.get("TP_REDIS_URL") or None,
            database_url=env.get("TP_DATABASE_URL") or None,
            api_tokens=_split(env.get("TP_API_TOKENS", "")),
            hostpath_prefixes=_split(env.get("TP_HOSTPATH_PREFIXES", "/mnt,/data")),
            k8s_namespace=env.get("TP_K8S_NAMESPACE", "train-platform"),
            k8s_config_map=env.get("TP_K8S_CONFIG_MAP", "train-platform-config"),
            k8s_secret=env.get("TP_K8S_SECRET", "train-platform-secrets"),
            dags_folder=Path(env.get("TP_DAGS_FOLDER") or env.get("AIRFLOW__CORE__DAGS_FOLDER")
                             or _PROJECT_ROOT / "dags").expanduser().resolve(),
            user=env.get("TP_USER") or env.get("USER") or "anonymous",
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings of this process, read once. Tests that change TP_* call ``reload_settings``."""
    return Settings.from_env()


def reload_settings() -> Settings:
    get_settings.cache_clear()
    return get_settings()
