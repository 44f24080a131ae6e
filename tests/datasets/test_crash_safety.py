"""Dataset commands killed with SIGKILL at each point of their work leave every ref
pointing at a snapshot whose manifests and data files all exist, and the next command works.

Each test runs the real ``tp dataset`` command (``python -m train_platform.cli``) in a
subprocess, stops it at one point of its code (``tests/_faults.py``) and kills it there:
the creation of a dataset by its first import (after the table exists, after the owner's
role, after the first empty commit), an import into an existing dataset (its data files
written, its new metadata written but the catalog pointer not swapped, committed), and a
merge inside its commit.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests._faults import Point, kill_at

pytestmark = pytest.mark.slow


def _npz(path: Path, ids: list[str], seed: int) -> str:
    rng = np.random.default_rng(seed)
    np.savez(path, X=rng.normal(size=(len(ids), 6, 2)).astype(np.float32), y=np.array(["a", "b"] * (len(ids) // 2)),
             ids=np.array(ids))
    return str(path)


@pytest.fixture
def files(tmp_path) -> dict[str, str]:
    return {"first": _npz(tmp_path / "first.npz", [f"f{i:02d}" for i in range(10)], 0),
            "second": _npz(tmp_path / "second.npz", [f"s{i:02d}" for i in range(10)], 1),
            "third": _npz(tmp_path / "third.npz", [f"t{i:02d}" for i in range(10)], 2)}


@pytest.fixture
def local(backend):
    if backend.catalog_url:
        pytest.skip("the SQLite catalog shows these points; the PostgreSQL one is covered by the commit tests")
    return backend


def _tp(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "train_platform.cli", *args], capture_output=True, text=True,
                          timeout=120)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def check_consistent(name: str, settings) -> dict[str, int]:
    """Every ref's snapshot, manifest list, manifests and data files exist and read back,
    and every committed audit row names a snapshot of the table; returns samples per ref."""
    from train_platform.datasets import open_dataset

    dataset = open_dataset(name, user="checker", settings=settings)
    table = dataset._fresh()
    io = table.io
    counts = {}
    for ref, info in table.metadata.refs.items():
        snapshot = table.snapshot_by_id(info.snapshot_id)
        assert snapshot is not None, f"{name}@{ref} points at a missing snapshot"
        assert io.new_input(snapshot.manifest_list).exists(), f"{name}@{ref}: manifest list missing"
        for manifest in snapshot.manifests(io):
            assert io.new_input(manifest.manifest_path).exists(), f"{name}@{ref}: manifest missing"
            for entry in manifest.fetch_manifest_entry(io, discard_deleted=True):
                assert io.new_input(entry.data_file.file_path).exists(), f"{name}@{ref}: data file missing"
        rows = table.scan(snapshot_id=snapshot.snapshot_id).to_arrow()
        assert rows.num_rows == int(snapshot.summary["total-records"])
        assert len(set(rows.column("sample_id").to_pylist())) == rows.num_rows
        counts[ref] = rows.num_rows
    snapshots = {s.snapshot_id for s in table.metadata.snapshots}
    for entry in open_dataset(name, user=_owner(name, settings), settings=settings).audit():
        if entry.outcome == "ok" and entry.snapshot_id is not None:
            assert entry.snapshot_id in snapshots, entry
    return counts


def _owner(name: str, settings) -> str:
    from train_platform.datasets.access import AccessStore

    roles = AccessStore(settings.catalog_uri).roles(name)
    owners = [user for user, role in roles.items() if role == "owner"]
    assert owners, f"{name} has no owner: {roles}"
    return owners[0]


CREATION = {
    # The Iceberg table exists; nobody holds a role on it yet.
    "table-created": Point("train_platform.datasets.access:AccessStore.set_role", "before", 1),
    # The owner's role is there; the first (empty) commit is not.
    "owner-set": Point("train_platform.datasets.dataset:Dataset._commit", "before", 1),
    # The first empty commit made; the import's samples not written.
    "created-empty": Point("train_platform.datasets.dataset:Dataset.append", "before", 1),
}


@pytest.mark.parametrize("case", list(CREATION))
def test_a_first_import_killed_mid_creation_is_finished_by_the_next_one(local, ds_name, files, case, tmp_path):
    from train_platform.settings import os_user

    kill_at(CREATION[case], ["-m", "train_platform.cli", "dataset", "import", ds_name, "--from", files["first"]],
            tmp_path / "marker")
    proc = _tp("dataset", "import", ds_name, "--from", files["first"], "--json")
    assert json.loads(proc.stdout)["samples"] == 10
    assert check_consistent(ds_name, local)["main"] == 10
    assert _owner(ds_name, local) == os_user()
    # The dataset is fully usable: a second import, a branch, a label.
    _tp("dataset", "import", ds_name, "--from", files["second"])
    _tp("dataset", "branch", ds_name, "relabel", "--from", "main")
    _tp("dataset", "label", f"{ds_name}@relabel", "f00=b")
    assert check_consistent(ds_name, local) == {"main": 20, "relabel": 20}


APPEND = {
    # The samples' data files written, nothing committed.
    "data-files-written": (Point("train_platform.datasets.dataset:write_data_files", "after", 1), False),
    # The new table metadata written, the catalog's pointer not swapped.
    "metadata-written": (Point("pyiceberg.catalog.sql:SqlCatalog._write_metadata", "after", 1), False),
    # Committed with its audit row; the command not yet returned.
    "committed": (Point("train_platform.datasets.dataset:Dataset._commit", "after", 1), True),
}


@pytest.mark.parametrize("case", list(APPEND))
def test_an_import_killed_at_any_point_is_all_there_or_not_at_all(local, ds_name, files, case, tmp_path):
    _tp("dataset", "import", ds_name, "--from", files["first"])
    point, committed = APPEND[case]
    kill_at(point, ["-m", "train_platform.cli", "dataset", "import", ds_name, "--from", files["second"]],
            tmp_path / "marker")
    assert check_consistent(ds_name, local) == {"main": 20 if committed else 10}
    retry = _tp("dataset", "import", ds_name, "--from", files["second"], check=False)
    if committed:
        assert retry.returncode == 2 and "already has sample(s)" in retry.stderr  # not imported twice
    else:
        assert retry.returncode == 0, retry.stderr
    _tp("dataset", "import", ds_name, "--from", files["third"])
    assert check_consistent(ds_name, local) == {"main": 30}


def test_a_merge_killed_in_its_commit_leaves_main_as_it_was_and_merges_next_time(local, ds_name, files, tmp_path):
    _tp("dataset", "import", ds_name, "--from", files["first"])
    _tp("dataset", "branch", ds_name, "more", "--from", "main")
    _tp("dataset", "import", f"{ds_name}@more", "--from", files["second"])
    _tp("dataset", "label", f"{ds_name}@more", "f01=a")
    before = check_consistent(ds_name, local)
    kill_at(Point("pyiceberg.catalog.sql:SqlCatalog._write_metadata", "after", 1),
            ["-m", "train_platform.cli", "dataset", "merge", ds_name, "more"], tmp_path / "marker")
    assert check_consistent(ds_name, local) == before == {"main": 10, "more": 20}
    _tp("dataset", "merge", ds_name, "more")  # the lock its holder had is free again
    assert check_consistent(ds_name, local) == {"main": 20, "more": 20}
