"""Mount specs: shorthand and structured parsing, validation, Kubernetes and local output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from train_platform.settings import Settings
from train_platform.storage import (
    HostPathMount,
    MemoryMount,
    Mount,
    MountError,
    merge_mounts,
    parse_mounts,
    prepare_local,
    to_k8s,
)


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(home=tmp_path / "home", hostpath_prefixes=("/mnt", "/data"))


def test_shorthand_from_the_design(settings):
    mounts = parse_mounts("user-data(pvc):/mnt/user/data,4G(memory):/dev/shm", settings)
    assert [(m.name, m.type, m.mount_path) for m in mounts] == [
        ("user-data", "pvc", "/mnt/user/data"),
        ("4G", "memory", "/dev/shm"),
    ]
    assert all(isinstance(m, Mount) for m in mounts)
    assert mounts[0].claim_name == "user-data"
    assert isinstance(mounts[1], MemoryMount) and mounts[1].size_bytes == 4 * 1000**3


def test_every_type_in_shorthand_and_k8s_output(settings):
    spec = (
        "user-data(pvc):/mnt/user/data,4G(memory):/dev/shm,/mnt/raw(hostpath):/data:ro,"
        "nfs.local:/exports/a(nfs):/mnt/nfs,s3://bkt/pre/x(s3):/mnt/s3,cfg(configmap):/etc/cfg,"
        "creds(secret):/etc/creds"
    )
    mounts = parse_mounts(spec, settings)
    volumes, volume_mounts = to_k8s(mounts)
    by_path = {vm.mount_path: (v, vm) for v, vm in zip(volumes, volume_mounts)}
    for volume, volume_mount in by_path.values():
        assert volume.name == volume_mount.name
    assert by_path["/mnt/user/data"][0].persistent_volume_claim.claim_name == "user-data"
    shm = by_path["/dev/shm"][0].empty_dir
    assert (shm.medium, shm.size_limit) == ("Memory", "4G")
    host, host_mount = by_path["/data"]
    assert host.host_path.path == "/mnt/raw" and host_mount.read_only is True
    nfs = by_path["/mnt/nfs"][0].nfs
    assert (nfs.server, nfs.path) == ("nfs.local", "/exports/a")
    csi = by_path["/mnt/s3"][0].csi
    assert csi.volume_attributes == {"bucketName": "bkt", "prefix": "pre/x/"}
    assert by_path["/etc/cfg"][0].config_map.name == "cfg" and by_path["/etc/cfg"][1].read_only
    assert by_path["/etc/creds"][0].secret.secret_name == "creds"
    # Kubernetes requires distinct DNS-label volume names within a pod.
    names = [v.name for v in volumes]
    assert len(set(names)) == len(names)
    assert all(len(n) <= 63 and n.replace("-", "").isalnum() and n == n.lower() for n in names)


def test_structured_and_mixed_list(settings):
    mounts = parse_mounts(
        [
            "cache(pvc):/cache",
            {"type": "nfs", "name": "shared", "server": "10.0.0.5", "path": "/exports/x", "mount_path": "/shared"},
            {"type": "hostpath", "name": "raw", "host_path": "/data/raw", "mount_path": "/raw", "read_only": True},
            {"type": "memory", "size": "512Mi", "mount_path": "/dev/shm"},
        ],
        settings,
    )
    assert [m.type for m in mounts] == ["pvc", "nfs", "hostpath", "memory"]
    assert mounts[2].host_path == "/data/raw" and mounts[2].read_only
    assert mounts[3].size_bytes == 512 * 1024**2


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("x(pvx):/a", "unknown type 'pvx'"),
        ("/etc(hostpath):/x", "'/etc' is not under an allowed prefix"),
        ("/mntx/a(hostpath):/x", "'/mntx/a' is not under an allowed prefix"),
        ("/mnt/../etc(hostpath):/x", "must not contain '..'"),
        ("a(pvc):/x/../y", "must not contain '..'"),
        ("a(pvc):relative", "expected name(type):/mount/path"),
        ("a(pvc):/", "must not be '/'"),
        ("a(pvc):/x,b(pvc):/x/", "mount path /x is already used by mount 'a(pvc):/x'"),
        ("100T(memory):/dev/shm", "above the limit of 64Gi"),
        ("10k(memory):/dev/shm", "below the minimum"),
        ("lots(memory):/dev/shm", "needs a size"),
        ("Bad_Claim(pvc):/a", "claim_name 'Bad_Claim' is not a valid Kubernetes object name"),
        ([{"type": "nfs", "name": "n", "mount_path": "/a"}], "mounts[0] ('n'): an nfs mount needs server and path"),
        ([{"type": "pvc", "name": "a", "mount_path": "/a", "colour": "red"}], "colour: Extra inputs are not permitted"),
        ([{"type": "tape", "name": "a", "mount_path": "/a"}], "unknown type 'tape'"),
        (["ok(pvc):/a", 7], "mounts[1]: expected a shorthand string or a mapping"),
        (42, "must be a shorthand string or a list"),
    ],
)
def test_invalid_mounts_name_the_item(settings, value, expected):
    with pytest.raises(MountError) as info:
        parse_mounts(value, settings)
    assert expected in str(info.value)
    assert isinstance(info.value, ValueError)


def test_hostpath_prefixes_come_from_settings(tmp_path):
    custom = Settings(home=tmp_path, hostpath_prefixes=("/srv/data",))
    assert isinstance(parse_mounts("/srv/data/x(hostpath):/x", custom)[0], HostPathMount)
    with pytest.raises(MountError, match="not under an allowed prefix"):
        parse_mounts("/mnt/x(hostpath):/x", custom)


def test_local_folders(settings):
    mounts = parse_mounts("user-data(pvc):/mnt/user/data,4G(memory):/dev/shm,s3://bkt/a(s3):/s3", settings)
    folders = prepare_local(mounts, settings)
    assert folders["/mnt/user/data"] == settings.home / "mounts" / "pvc" / "user-data"
    assert folders["/s3"] == settings.home / "mounts" / "s3" / "bkt" / "a"
    assert all(path.is_dir() and settings.home in path.parents for path in folders.values())
    # Two tasks naming the same claim share one folder.
    again = parse_mounts("user-data(pvc):/elsewhere", settings)[0]
    assert again.local_path(settings) == folders["/mnt/user/data"]
    assert parse_mounts("/mnt/raw(hostpath):/raw", settings)[0].local_path(settings) == Path("/mnt/raw")


def test_task_mounts_override_pipeline_mounts(settings):
    pipeline = parse_mounts("user-data(pvc):/mnt/user/data,1G(memory):/dev/shm", settings)
    task = parse_mounts("8G(memory):/dev/shm", settings)
    merged = merge_mounts(pipeline, task)
    assert [(m.type, m.name) for m in merged] == [("pvc", "user-data"), ("memory", "8G")]


def test_import_does_not_load_kubernetes():
    code = "import sys, train_platform.storage; print('kubernetes' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
