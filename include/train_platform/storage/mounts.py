"""Storage mounts: one spec for the volume types a task can ask for.

A mount is written either structured (a dict, validated by the pydantic models below) or as
the shorthand ``name(type):/mount/path[:ro|:rw]``, several joined by commas::

    user-data(pvc):/mnt/user/data,4G(memory):/dev/shm,/mnt/raw(hostpath):/data:ro

In the shorthand the ``name`` part carries what identifies the volume for its type: the
claim for ``pvc``, the size for ``memory``, the host folder for ``hostpath``,
``server:/export`` for ``nfs``, ``bucket[/prefix]`` for ``s3``, the object's name for
``configmap`` and ``secret``.

Each mount turns into a Kubernetes ``V1Volume``/``V1VolumeMount`` pair for pod executors and
into a local folder for the local executor. This module is imported by the DAG processor at
parse time, so the Kubernetes client is imported only inside ``to_k8s``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, ValidationInfo, field_validator, model_validator

from train_platform.settings import Settings, get_settings
from train_platform.storage.exceptions import MountError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from kubernetes.client import V1Volume, V1VolumeMount

MOUNT_TYPES = ("pvc", "hostpath", "configmap", "secret", "memory", "nfs", "s3")

# A memory-backed emptyDir counts against the pod's memory limit; anything above this is far
# beyond the nodes the platform targets and almost surely a typo (4T for 4G).
MAX_MEMORY_BYTES = 64 * 1024**3
# Below this tmpfs is useless for the shared-memory segments data loaders create.
MIN_MEMORY_BYTES = 1024**2

_SHORTHAND = re.compile(r"^(?P<name>[^()\s,]+)\((?P<type>[A-Za-z0-9]+)\):(?P<path>/[^:,]*)(?::(?P<mode>ro|rw))?$")
_QUANTITY = re.compile(r"^(?P<number>\d+(?:\.\d+)?)(?P<unit>|k|K|M|G|T|P|Ki|Mi|Gi|Ti|Pi)$")
_UNITS = {
    "": 1, "k": 1000, "K": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4, "P": 1000**5,
    "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4, "Pi": 1024**5,
}
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


def memory_bytes(quantity: str) -> int:
    """Bytes in a Kubernetes quantity such as ``4G`` (decimal) or ``512Mi`` (binary)."""
    match = _QUANTITY.match(quantity.strip())
    if not match:
        raise ValueError(f"size {quantity!r} is not a quantity like 512Mi, 4G or 2Gi")
    return int(float(match["number"]) * _UNITS[match["unit"]])


def _clean_absolute(value: str, what: str) -> str:
    """An absolute POSIX path with no ``..``; returned normalised (no doubled or trailing /)."""
    if not value or not value.startswith("/"):
        raise ValueError(f"{what} {value!r} must be an absolute path")
    parts = value.split("/")
    if ".." in parts:
        raise ValueError(f"{what} {value!r} must not contain '..'")
    return str(PurePosixPath(value))


def _volume_name(text: str) -> str:
    """A DNS-1123 label (what Kubernetes requires of volume names) derived from ``text``."""
    label = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return label[:63].rstrip("-")


class Mount(BaseModel):
    """Fields every mount type has; one subclass per type adds what identifies its volume.
    ``isinstance(x, Mount)`` holds for every parsed mount."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str
    # What the user calls the mount; also the source of the Kubernetes volume name.
    name: str = Field(min_length=1)
    mount_path: str
    # Writable unless asked otherwise: tasks write checkpoints and caches to their mounts.
    read_only: bool = False

    @field_validator("name")
    @classmethod
    def _name_is_plain(cls, value: str) -> str:
        if re.search(r"[\s,()]", value):
            raise ValueError(f"name {value!r} must not contain spaces, commas or parentheses")
        return value

    @field_validator("mount_path")
    @classmethod
    def _mount_path_is_clean(cls, value: str) -> str:
        path = _clean_absolute(value, "mount_path")
        if path == "/":
            raise ValueError("mount_path must not be '/'")
        return path

    @property
    def volume_name(self) -> str:
        label = _volume_name(f"{self.type}-{self.name}")
        return label or self.type

    def _volume_source(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def to_k8s(self) -> tuple["V1Volume", "V1VolumeMount"]:
        """The pod volume and the container's mount of it."""
        from kubernetes.client import V1Volume, V1VolumeMount

        volume = V1Volume(name=self.volume_name, **self._volume_source())
        mount = V1VolumeMount(name=self.volume_name, mount_path=self.mount_path, read_only=self.read_only or None)
        return volume, mount

    def local_path(self, settings: Settings | None = None) -> Path:
        """Folder standing in for this volume when a task runs as a local process.

        Folders live under ``TP_HOME/mounts/<type>/`` keyed by what identifies the volume, so
        two tasks naming the same claim (or bucket, or secret) see the same files, as they
        would in a cluster."""
        settings = settings or get_settings()
        return settings.home / "mounts" / self.type / self._local_key()

    def _local_key(self) -> str:
        return _volume_name(self.name) or self.type

    def shorthand(self) -> str:
        mode = ":ro" if self.read_only else ""
        return f"{self.name}({self.type}):{self.mount_path}{mode}"


class _ObjectMount(Mount):
    """A mount of a Kubernetes object (claim, ConfigMap, Secret) named in ``_object_field``,
    which defaults to the mount's name."""

    _object_field: ClassVar[str]

    @model_validator(mode="before")
    @classmethod
    def _default_object(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get(cls._object_field) and data.get("name"):
            data = {**data, cls._object_field: data["name"]}
        return data

    @model_validator(mode="after")
    def _object_is_dns(self) -> "_ObjectMount":
        value = getattr(self, self._object_field)
        if not _DNS_SUBDOMAIN.match(value):
            raise ValueError(
                f"{self._object_field} {value!r} is not a valid Kubernetes object name (lower-case, digits, '-', '.')"
            )
        return self

    @property
    def object_name(self) -> str:
        return getattr(self, self._object_field)

    def _local_key(self) -> str:
        return self.object_name


class PvcMount(_ObjectMount):
    """An existing PersistentVolumeClaim."""

    _object_field: ClassVar[str] = "claim_name"
    type: Literal["pvc"] = "pvc"
    # The claim is usually named like the mount; give it when they differ.
    claim_name: str = ""

    def _volume_source(self) -> dict[str, Any]:
        from kubernetes.client import V1PersistentVolumeClaimVolumeSource

        return {"persistent_volume_claim": V1PersistentVolumeClaimVolumeSource(claim_name=self.claim_name, read_only=self.read_only or None)}


class HostPathMount(Mount):
    """A folder of the node. Only allowed under ``settings.hostpath_prefixes``: a task must not
    be able to mount /etc or the container runtime's socket."""

    type: Literal["hostpath"] = "hostpath"
    host_path: str = ""
    # Creating a missing folder is what users expect from a data path; "Directory" refuses.
    host_path_type: Literal["Directory", "DirectoryOrCreate"] = "DirectoryOrCreate"

    @model_validator(mode="before")
    @classmethod
    def _host_path_from_name(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("host_path"):
            name = data.get("name", "")
            if isinstance(name, str) and name.startswith("/"):
                data = {**data, "host_path": name}
            else:
                raise ValueError("a hostpath mount needs host_path (or an absolute path as its name)")
        return data

    @field_validator("host_path")
    @classmethod
    def _host_path_allowed(cls, value: str, info: ValidationInfo) -> str:
        path = _clean_absolute(value, "host_path")
        settings = (info.context or {}).get("settings") or get_settings()
        prefixes = [str(PurePosixPath(p)) for p in settings.hostpath_prefixes]
        if not any(path == p or path.startswith(p.rstrip("/") + "/") for p in prefixes):
            raise ValueError(f"host_path {path!r} is not under an allowed prefix ({', '.join(prefixes) or 'none configured'}; see TP_HOSTPATH_PREFIXES)")
        return path

    def _volume_source(self) -> dict[str, Any]:
        from kubernetes.client import V1HostPathVolumeSource

        return {"host_path": V1HostPathVolumeSource(path=self.host_path, type=self.host_path_type)}

    def local_path(self, settings: Settings | None = None) -> Path:
        # A local process already runs on the host: the folder itself is the volume.
        return Path(self.host_path)


class ConfigMapMount(_ObjectMount):
    """A ConfigMap's keys as files."""

    _object_field: ClassVar[str] = "config_map"
    type: Literal["configmap"] = "configmap"
    config_map: str = ""
    # Kubernetes mounts ConfigMaps read-only whatever the spec says; say so up front.
    read_only: bool = True

    def _volume_source(self) -> dict[str, Any]:
        from kubernetes.client import V1ConfigMapVolumeSource

        return {"config_map": V1ConfigMapVolumeSource(name=self.config_map)}


class SecretMount(_ObjectMount):
    """A Secret's keys as files."""

    _object_field: ClassVar[str] = "secret_name"
    type: Literal["secret"] = "secret"
    secret_name: str = ""
    # Secrets are read-only in the pod; a task writing to one is a bug.
    read_only: bool = True

    def _volume_source(self) -> dict[str, Any]:
        from kubernetes.client import V1SecretVolumeSource

        return {"secret": V1SecretVolumeSource(secret_name=self.secret_name)}


class MemoryMount(Mount):
    """A tmpfs (memory-backed emptyDir), typically /dev/shm for data-loader workers."""

    type: Literal["memory"] = "memory"
    size: str = ""

    @model_validator(mode="before")
    @classmethod
    def _size_and_name(cls, data: Any) -> Any:
        if isinstance(data, dict):
            if not data.get("size") and isinstance(data.get("name"), str) and _QUANTITY.match(data["name"]):
                data = {**data, "size": data["name"]}
            if not data.get("size"):
                raise ValueError("a memory mount needs a size (e.g. 4G or 512Mi)")
            if not data.get("name"):
                data = {**data, "name": str(data["size"])}
        return data

    @field_validator("size")
    @classmethod
    def _size_in_limits(cls, value: str) -> str:
        size = memory_bytes(value)
        if size < MIN_MEMORY_BYTES:
            raise ValueError(f"size {value!r} is below the minimum of 1Mi")
        if size > MAX_MEMORY_BYTES:
            raise ValueError(f"size {value!r} is above the limit of 64Gi for a memory mount")
        return value

    @property
    def size_bytes(self) -> int:
        return memory_bytes(self.size)

    @property
    def volume_name(self) -> str:
        # The name of a memory mount is usually its size, which says nothing; the path does.
        return _volume_name(f"memory-{self.mount_path}") or "memory"

    def _volume_source(self) -> dict[str, Any]:
        from kubernetes.client import V1EmptyDirVolumeSource

        return {"empty_dir": V1EmptyDirVolumeSource(medium="Memory", size_limit=self.size)}

    def _local_key(self) -> str:
        return self.volume_name


class NfsMount(Mount):
    """An NFS export, ``server:/export`` in the shorthand."""

    type: Literal["nfs"] = "nfs"
    server: str = ""
    path: str = ""

    @model_validator(mode="before")
    @classmethod
    def _server_from_name(cls, data: Any) -> Any:
        if isinstance(data, dict) and not (data.get("server") and data.get("path")):
            server, sep, path = str(data.get("name", "")).partition(":")
            if not (sep and server and path):
                raise ValueError("an nfs mount needs server and path (or 'server:/export' as its name)")
            data = {**data, "server": data.get("server") or server, "path": data.get("path") or path}
        return data

    @field_validator("server")
    @classmethod
    def _server_is_host(cls, value: str) -> str:
        if not re.match(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$", value):
            raise ValueError(f"server {value!r} is not a host name or IPv4 address")
        return value

    @field_validator("path")
    @classmethod
    def _export_is_clean(cls, value: str) -> str:
        return _clean_absolute(value, "path")

    def _volume_source(self) -> dict[str, Any]:
        from kubernetes.client import V1NFSVolumeSource

        return {"nfs": V1NFSVolumeSource(server=self.server, path=self.path, read_only=self.read_only or None)}

    def _local_key(self) -> str:
        return str(Path(self.server, *PurePosixPath(self.path).parts[1:]))


class S3Mount(Mount):
    """A bucket (and prefix) mounted as files through an S3 CSI driver.

    Kubernetes has no built-in S3 volume; the cluster needs a CSI driver that supports
    inline ephemeral volumes, named by ``driver``."""

    type: Literal["s3"] = "s3"
    bucket: str = ""
    prefix: str = ""
    # Mountpoint for Amazon S3's CSI driver, the most widely deployed one; set it for others.
    driver: str = "s3.csi.aws.com"

    @model_validator(mode="before")
    @classmethod
    def _bucket_from_name(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("bucket"):
            location = str(data.get("name", "")).removeprefix("s3://")
            bucket, _, prefix = location.partition("/")
            data = {**data, "bucket": bucket, "prefix": data.get("prefix") or prefix}
        return data

    @field_validator("bucket")
    @classmethod
    def _bucket_is_valid(cls, value: str) -> str:
        if not re.match(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", value):
            raise ValueError(f"bucket {value!r} is not a valid S3 bucket name")
        return value

    @field_validator("prefix")
    @classmethod
    def _prefix_is_clean(cls, value: str) -> str:
        value = value.strip("/")
        if ".." in value.split("/"):
            raise ValueError(f"prefix {value!r} must not contain '..'")
        return value

    def _volume_source(self) -> dict[str, Any]:
        from kubernetes.client import V1CSIVolumeSource

        attributes = {"bucketName": self.bucket}
        if self.prefix:
            attributes["prefix"] = self.prefix + "/"
        return {"csi": V1CSIVolumeSource(driver=self.driver, read_only=self.read_only or None, volume_attributes=attributes)}

    def _local_key(self) -> str:
        return str(Path(self.bucket, *self.prefix.split("/"))) if self.prefix else self.bucket


AnyMount = Annotated[
    Union[PvcMount, HostPathMount, ConfigMapMount, SecretMount, MemoryMount, NfsMount, S3Mount],
    Field(discriminator="type"),
]
"""Pydantic field type for one mount of any type (``list[AnyMount]`` in a spec model)."""

_ADAPTER: TypeAdapter[Any] = TypeAdapter(AnyMount)


def _describe_errors(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        location = ".".join(str(p) for p in item["loc"][1:]) if len(item["loc"]) > 1 else ""
        message = item["msg"].removeprefix("Value error, ")
        # Field validators already name their field; say it once.
        parts.append(f"{location}: {message}" if location and not message.startswith(location) else message)
    return "; ".join(parts)


def _parse_shorthand(text: str, settings: Settings) -> Mount:
    match = _SHORTHAND.match(text.strip())
    if not match:
        raise MountError(f"mount {text!r}: expected name(type):/mount/path[:ro|:rw], e.g. user-data(pvc):/mnt/user/data")
    kind = match["type"].lower()
    if kind not in MOUNT_TYPES:
        raise MountError(f"mount {text!r}: unknown type {match['type']!r} (expected one of {', '.join(MOUNT_TYPES)})")
    data: dict[str, Any] = {"type": kind, "name": match["name"], "mount_path": match["path"]}
    if match["mode"]:
        data["read_only"] = match["mode"] == "ro"
    return _validate(data, f"mount {text!r}", settings)


def _validate(data: dict[str, Any], where: str, settings: Settings) -> Mount:
    kind = data.get("type")
    if kind not in MOUNT_TYPES:
        raise MountError(f"{where}: unknown type {kind!r} (expected one of {', '.join(MOUNT_TYPES)})")
    try:
        return _ADAPTER.validate_python(data, context={"settings": settings})
    except ValidationError as exc:
        raise MountError(f"{where}: {_describe_errors(exc)}") from exc


def parse_mounts(value: Any, settings: Settings | None = None) -> list[Mount]:
    """Mounts from a shorthand string (comma-separated), or a list whose items are shorthand
    strings, structured dicts or already-parsed mounts. ``None`` means no mounts.

    Raises ``MountError`` naming the offending item when an item is invalid or when two
    mounts share a mount path or a volume name."""
    settings = settings or get_settings()
    if value is None:
        return []
    if isinstance(value, str):
        items: list[Any] = [part for part in value.split(",") if part.strip()]
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise MountError(f"mounts must be a shorthand string or a list, not {type(value).__name__}")

    mounts: list[Mount] = []
    labels: list[str] = []
    for index, item in enumerate(items):
        if isinstance(item, Mount):
            mounts.append(item)
            labels.append(f"mounts[{index}] {item.shorthand()!r}")
        elif isinstance(item, str):
            for part in (p for p in item.split(",") if p.strip()):
                mounts.append(_parse_shorthand(part, settings))
                labels.append(f"mount {part.strip()!r}")
        elif isinstance(item, dict):
            where = f"mounts[{index}]" + (f" ({item['name']!r})" if isinstance(item.get("name"), str) else "")
            mounts.append(_validate(dict(item), where, settings))
            labels.append(where)
        else:
            raise MountError(f"mounts[{index}]: expected a shorthand string or a mapping, not {type(item).__name__}")
    _check_unique(mounts, labels)
    return mounts


def _check_unique(mounts: list[Mount], labels: list[str]) -> None:
    paths: dict[str, str] = {}
    volumes: dict[str, str] = {}
    for mount, label in zip(mounts, labels):
        if mount.mount_path in paths:
            raise MountError(f"{label}: mount path {mount.mount_path} is already used by {paths[mount.mount_path]}")
        paths[mount.mount_path] = label
        if mount.volume_name in volumes:
            raise MountError(f"{label}: volume name {mount.volume_name!r} is already used by {volumes[mount.volume_name]}")
        volumes[mount.volume_name] = label


def merge_mounts(pipeline: Iterable[Mount], task: Iterable[Mount]) -> list[Mount]:
    """A task's mounts on top of its pipeline's: a task mount replaces the pipeline mount at
    the same mount path or with the same volume name; the rest are kept in order."""
    task = list(task)
    taken_paths = {m.mount_path for m in task}
    taken_volumes = {m.volume_name for m in task}
    kept = [m for m in pipeline if m.mount_path not in taken_paths and m.volume_name not in taken_volumes]
    return kept + task


def to_k8s(mounts: Iterable[Mount]) -> tuple[list["V1Volume"], list["V1VolumeMount"]]:
    """Pod volumes and container mounts for a list of mounts."""
    pairs = [m.to_k8s() for m in mounts]
    return [v for v, _ in pairs], [m for _, m in pairs]


def prepare_local(mounts: Iterable[Mount], settings: Settings | None = None) -> dict[str, Path]:
    """Create the local folders of ``mounts`` and map each mount path to its folder, for the
    local executor (which points the task at the folder instead of mounting it)."""
    settings = settings or get_settings()
    result: dict[str, Path] = {}
    for mount in mounts:
        path = mount.local_path(settings)
        path.mkdir(parents=True, exist_ok=True)
        result[mount.mount_path] = path
    return result
