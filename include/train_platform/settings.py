"""One place where the platform reads its configuration.

Every setting is an environment variable with the ``TP_`` prefix. The defaults give the
embedded shape (SQLite, local folders, local processes); setting the URLs below moves a
deployment to the scale shape (PostgreSQL, S3/MinIO, Redis, Kubernetes pods) without any
other code path.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

_PROJECT_ROOT = Path(__file__).resolve().parents[2]

# What a bearer token of the inference endpoint may call: `predict` (POST /predict) and
# `feedback` (POST /feedback, confirmed labels).
API_SCOPES = ("predict", "feedback")
# A named entry of TP_API_TOKENS: NAME:SCOPE[+SCOPE]=TOKEN (the token itself may contain '=').
_NAMED_TOKEN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._@-]{0,62}):([a-z]+(?:\+[a-z]+)*)=(.+)$")


# Secrets never appear in a message, a log line or CLI output: ``redact`` replaces them.
REDACTED = "***"
# scheme://user:PASSWORD@host (the user may be empty, as in redis://:PASSWORD@host).
_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)(?P<secret>[^@\s]+)@")
# password=..., token=... in query strings and libpq keyword strings.
_KEYWORD_SECRET = re.compile(r"(?P<head>\b(?:password|passwd|pwd|secret|token|access_token|api_key)=)(?P<secret>[^\s&;,'\"]+)",
                             re.IGNORECASE)
# Environment variables whose values are secrets, or URLs that may carry one.
_SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "TP_API_TOKENS")
_URL_ENV = ("TP_CATALOG_URL", "TP_DATABASE_URL", "TP_REDIS_URL", "TP_S3_ENDPOINT", "TP_WAREHOUSE")
# Shorter values would blank out ordinary words; no real secret is that short.
_MIN_SECRET_LENGTH = 4


def _known_secrets(env: dict[str, str] | os._Environ[str]) -> set[str]:
    from urllib.parse import unquote, urlsplit

    secrets: set[str] = set()
    for name in _URL_ENV:
        value = env.get(name)
        if not value:
            continue
        try:
            password = urlsplit(value).password
        except ValueError:  # a malformed URL: its userinfo is still found by the regex
            password = None
        if password:
            secrets.update({password, unquote(password)})
    for name in _SECRET_ENV:
        value = env.get(name)
        if not value:
            continue
        if name == "TP_API_TOKENS":
            for entry in _split(value):
                named = _NAMED_TOKEN.match(entry)
                secrets.add(named[3] if named else entry)
        else:
            secrets.add(value)
    return {secret for secret in secrets if len(secret) >= _MIN_SECRET_LENGTH}


def redact(text: object, *, env: dict[str, str] | None = None) -> str:
    """``str(text)`` with every secret replaced by ``***``: the password of any URL in it
    (``scheme://user:PASSWORD@host``), ``password=``/``token=`` values, and wherever they
    appear the values of this process's secrets: the passwords in ``TP_CATALOG_URL``,
    ``TP_DATABASE_URL`` and ``TP_REDIS_URL``, the ``TP_API_TOKENS`` tokens,
    ``AWS_SECRET_ACCESS_KEY`` and ``AWS_SESSION_TOKEN`` (from ``env``, default
    ``os.environ``). Use it on anything built from settings that reaches an exception
    message, a log line or CLI output."""
    out = str(text)
    for secret in sorted(_known_secrets(os.environ if env is None else env), key=len, reverse=True):
        out = out.replace(secret, REDACTED)
    out = _URL_PASSWORD.sub(lambda m: m["head"] + (m["secret"] if m["secret"] == REDACTED else REDACTED) + "@", out)
    return _KEYWORD_SECRET.sub(lambda m: m["head"] + REDACTED, out)


# The log line of the platform's own processes: tp, python -m ml.*.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RedactingFormatter(logging.Formatter):
    """A log formatter whose output (message, arguments and traceback) goes through
    ``redact``: the ``tp`` CLI's handler uses it, and so can any process's. With ``wraps``,
    the lines are that formatter's (a library's own format), redacted."""

    def __init__(self, *args: object, wraps: logging.Formatter | None = None, **kwargs: object):
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.wraps = wraps

    def format(self, record: logging.LogRecord) -> str:
        return redact(self.wraps.format(record) if self.wraps is not None else super().format(record))


def configure_logging(level: int = logging.INFO) -> None:
    """``logging.basicConfig`` at ``level`` with one handler on stderr whose lines go
    through ``RedactingFormatter`` (nothing, as ``basicConfig``, when the root logger
    already has handlers). The ``tp`` command and the ``python -m ml.*`` commands use it."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter(LOG_FORMAT))
    logging.basicConfig(level=level, handlers=[handler])


def redact_log_handlers() -> int:
    """Make every handler already attached to the root logger or a named logger, and
    logging's last resort, redact: each formatter is wrapped in a ``RedactingFormatter``
    that keeps its format. For a process whose logging a library configures (the inference
    service's workers and ``tp model serve``'s process, set up by BentoML before it imports
    the service). Returns how many handlers were changed."""
    loggers = [logging.getLogger()] + [logger for logger in list(logging.Logger.manager.loggerDict.values())
                                       if isinstance(logger, logging.Logger)]
    # logging's last resort prints what reaches no handler (a root logger configured
    # without one, as BentoML's command-line configuration leaves it).
    handlers = [handler for logger in loggers for handler in logger.handlers] + [logging.lastResort]
    changed = 0
    for handler in dict.fromkeys(h for h in handlers if h is not None):
        if not isinstance(handler.formatter, RedactingFormatter):
            handler.setFormatter(RedactingFormatter(wraps=handler.formatter or logging.Formatter()))
            changed += 1
    return changed


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def os_user() -> str:
    """The user this process runs as, from the kernel's uid and the password database; never
    from environment variables (``USER`` and ``LOGNAME`` are whatever the caller set). A uid
    without a password entry, as in some containers, is ``uid-<N>``."""
    import pwd

    uid = os.getuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid-{uid}"


@dataclass(frozen=True)
class ApiClient:
    """One bearer token of the inference endpoint: the name the registry's history records
    for what it does, and the scopes it may call."""

    token: str
    name: str
    scopes: frozenset[str]

    def __repr__(self) -> str:  # never print the token itself
        return f"ApiClient(name={self.name!r}, scopes={sorted(self.scopes)})"


def parse_api_tokens(value: str) -> tuple[ApiClient, ...]:
    """TP_API_TOKENS: comma-separated ``NAME:SCOPES=TOKEN`` entries (``SCOPES``: ``predict``,
    ``feedback``, or both joined by ``+``). A bare ``TOKEN`` has both scopes and the name
    ``token-`` + the first 8 hex digits of its sha256, so the token never appears in a record."""
    clients, names = [], set()
    for entry in _split(value):
        named = _NAMED_TOKEN.match(entry)
        if named:
            name, scopes, token = named[1], frozenset(named[2].split("+")), named[3]
            unknown = sorted(scopes - set(API_SCOPES))
            if unknown:
                raise ValueError(f"TP_API_TOKENS: token {name!r} has unknown scope(s) {', '.join(unknown)} "
                                 f"(known: {', '.join(API_SCOPES)})")
        else:
            token, scopes = entry, frozenset(API_SCOPES)
            name = "token-" + hashlib.sha256(token.encode()).hexdigest()[:8]
        if name in names:
            raise ValueError(f"TP_API_TOKENS: the name {name!r} is given to two tokens")
        names.add(name)
        clients.append(ApiClient(token=token, name=name, scopes=scopes))
    return tuple(clients)


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
    # The buckets `tp storage init` creates and checks: the Iceberg warehouse's (default: the
    # bucket of an s3:// TP_WAREHOUSE, else tp-warehouse), model artifacts', and the intake
    # bucket new recordings are dropped into.
    warehouse_bucket_name: str | None = None
    artifacts_bucket: str = "tp-artifacts"
    intake_bucket: str = "tp-intake"
    # Redis for version locks and the inference cache; file locks / in-process when unset.
    redis_url: str | None = None
    # SQLAlchemy URL of the platform database (model registry); SQLite under `home` when unset.
    database_url: str | None = None
    # Bearer tokens accepted by the inference endpoint; empty means auth is off.
    api_tokens: tuple[str, ...] = ()
    # The same tokens with their names and scopes (TP_API_TOKENS entries NAME:SCOPES=TOKEN);
    # derived from `api_tokens` (bare tokens) when not given.
    api_clients: tuple[ApiClient, ...] = ()
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
    # The OS user this process runs as (kernel uid -> password database): who is
    # authenticated. Never taken from the environment.
    os_user: str = field(default_factory=os_user)
    # TP_USER: the user a process asks to act as. Only a platform-admin's processes may act
    # as someone else (train_platform.registry.identity decides); tasks get it from the
    # platform: the pipeline's owner.
    requested_user: str | None = None

    def __repr__(self) -> str:
        """Every field, with the passwords of the URLs and the API tokens left out."""
        shown = []
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if name == "api_tokens":
                value = tuple(REDACTED for _ in value)
            elif isinstance(value, str) and name.endswith("_url"):
                value = _URL_PASSWORD.sub(lambda m: m["head"] + REDACTED + "@", value)
            shown.append(f"{name}={value!r}")
        return f"Settings({', '.join(shown)})"

    def __post_init__(self) -> None:
        if self.api_tokens and not self.api_clients:
            object.__setattr__(self, "api_clients", parse_api_tokens(",".join(self.api_tokens)))

    @property
    def user(self) -> str:
        """The user asked for: ``TP_USER``, else the OS user. Whether the OS user may act as
        that user is checked by ``train_platform.registry.identity.acting_user``."""
        return self.requested_user or self.os_user

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
    def warehouse_bucket(self) -> str:
        if self.warehouse_bucket_name:
            return self.warehouse_bucket_name
        if self.warehouse and self.warehouse.startswith(("s3://", "s3a://")):
            return self.warehouse.split("://", 1)[1].split("/", 1)[0]
        return "tp-warehouse"

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
        clients = parse_api_tokens(env.get("TP_API_TOKENS", ""))
        return cls(
            home=home,
            default_executor=executor,
            catalog_url=env.get("TP_CATALOG_URL") or None,
            warehouse=env.get("TP_WAREHOUSE") or None,
            s3_endpoint=env.get("TP_S3_ENDPOINT") or None,
            warehouse_bucket_name=env.get("TP_WAREHOUSE_BUCKET") or None,
            artifacts_bucket=env.get("TP_ARTIFACTS_BUCKET") or "tp-artifacts",
            intake_bucket=env.get("TP_INTAKE_BUCKET") or "tp-intake",
            redis_url=env.get("TP_REDIS_URL") or None,
            database_url=env.get("TP_DATABASE_URL") or None,
            api_tokens=tuple(client.token for client in clients),
            api_clients=clients,
            hostpath_prefixes=_split(env.get("TP_HOSTPATH_PREFIXES", "/mnt,/data")),
            k8s_namespace=env.get("TP_K8S_NAMESPACE", "train-platform"),
            k8s_config_map=env.get("TP_K8S_CONFIG_MAP", "train-platform-config"),
            k8s_secret=env.get("TP_K8S_SECRET", "train-platform-secrets"),
            dags_folder=Path(env.get("TP_DAGS_FOLDER") or env.get("AIRFLOW__CORE__DAGS_FOLDER")
                             or _PROJECT_ROOT / "dags").expanduser().resolve(),
            requested_user=env.get("TP_USER") or None,
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings of this process, read once. Tests that change TP_* call ``reload_settings``."""
    return Settings.from_env()


def reload_settings() -> Settings:
    get_settings.cache_clear()
    return get_settings()
