"""A sample's series_uri stays inside the warehouse: an absolute path elsewhere, '..'
traversal, another scheme or bucket, or a symbolic link out of it is refused at import
(nothing written) and at read (nothing opened)."""

from __future__ import annotations

import io
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from train_platform.datasets import DatasetError, InvalidSamplesError, build_samples, create_dataset, open_dataset
from train_platform.datasets.reader import read_samples

SECRET = np.full((4, 2), 42.0, dtype=np.float32)


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _put(dataset, location: str, array: np.ndarray) -> str:
    with dataset._table.io.new_output(location).create(overwrite=True) as handle:
        handle.write(_npy(array))
    return location


def _external(uri: str, sample_id: str = "ext"):
    return build_samples([sample_id], [None], series_uri=[uri], n_channels=[2])


@pytest.fixture
def ds(backend, ds_name):
    return create_dataset(ds_name, user="alice", settings=backend)


def _outside_uris(ds, backend, tmp_path) -> dict[str, str]:
    """URIs of files outside the warehouse, each holding SECRET, by what is wrong."""
    outside = tmp_path / "outside.npy"
    outside.write_bytes(_npy(SECRET))
    location = ds._table.location()
    uris = {
        "absolute path elsewhere": str(outside),
        "file URI elsewhere": outside.as_uri(),
        "'..' traversal": f"{location}/media/../../../../outside.npy",
        "relative path": "outside.npy",
        "another scheme": "https://example.com/outside.npy",
        "query": f"{location}/media/x.npy?../../outside",
    }
    if backend.warehouse_uri.startswith("s3://"):
        bucket, _, prefix = backend.warehouse_uri.removeprefix("s3://").partition("/")
        uris["another bucket"] = f"s3://other-{bucket}/{prefix}/x.npy"
        uris["same bucket, outside the prefix"] = f"s3://{bucket}/elsewhere/x.npy"
        uris["encoded '..'"] = f"s3://{bucket}/{prefix}/%2e%2e/%2e%2e/elsewhere/x.npy"
    else:
        warehouse = backend.warehouse_uri.removeprefix("file://")
        link = os.path.join(warehouse, "escape.npy")
        os.symlink(outside, link)
        uris["symbolic link out of the warehouse"] = link
        uris["another bucket"] = "s3://some-bucket/x.npy"
    return uris


def test_series_uri_outside_the_warehouse_is_refused_at_import(ds, backend, tmp_path):
    inside = _put(ds, f"{ds._table.location()}/media/ok.npy", SECRET)
    ds.append(_external(inside, "inside"), branch="main")  # inside: accepted
    snapshots = len(ds._fresh().metadata.snapshots)
    for what, uri in _outside_uris(ds, backend, tmp_path).items():
        with pytest.raises(InvalidSamplesError, match=r"sample 'ext': series_uri .* is not inside the warehouse") as caught:
            ds.append(_external(uri), branch="main")
        assert ds.name in str(caught.value), what
        with pytest.raises(InvalidSamplesError):
            ds.upsert(_external(uri), branch="main")
    assert len(ds._fresh().metadata.snapshots) == snapshots  # nothing was written
    assert ds.read("main").column("sample_id").to_pylist() == ["inside"]


def test_tp_dataset_import_refuses_it_with_exit_2(backend, ds_name, tmp_path, capsys):
    from train_platform.cli import main

    outside = tmp_path / "outside.npy"
    outside.write_bytes(_npy(SECRET))
    source = tmp_path / "samples.parquet"
    pq.write_table(_external(str(outside), "leaky"), source)
    capsys.readouterr()
    code = main(["dataset", "import", ds_name, "--from", str(source), "--as", "alice"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"sample 'leaky': series_uri '{outside}' is not inside the warehouse" in err
    assert ("this is a local path" if backend.warehouse_uri.startswith("s3://") else "the path is elsewhere") in err
    from train_platform.datasets import list_datasets

    assert ds_name not in list_datasets(backend)  # bad input created nothing


def test_series_uri_outside_the_warehouse_is_refused_at_read(ds, backend, tmp_path):
    """Rows written without the check (another tool, an older version) are not followed."""
    for what, uri in _outside_uris(ds, backend, tmp_path).items():
        name = f"{ds.name}_{abs(hash(what)) % 10**6}"
        other = create_dataset(name, user="alice", settings=backend)
        other._fresh().append(_external(uri), branch="main")  # straight through pyiceberg
        with pytest.raises(DatasetError, match=r"refusing to read: .*sample 'ext': series_uri .* is not inside the warehouse"):
            read_samples(f"{name}@main", user="alice", settings=backend)


def test_a_symlink_placed_after_import_is_refused_at_read(ds, backend, tmp_path):
    if backend.warehouse_uri.startswith("s3://"):
        pytest.skip("object stores have no symbolic links")
    location = ds._table.location().removeprefix("file://")
    inside = os.path.join(location, "media", "series.npy")
    os.makedirs(os.path.dirname(inside))
    with open(inside, "wb") as handle:
        handle.write(_npy(np.zeros((4, 2), dtype=np.float32)))
    ds.append(_external(inside), branch="main")
    assert read_samples(f"{ds.name}@main", user="alice", settings=backend).series[0].shape == (4, 2)
    outside = tmp_path / "outside.npy"
    outside.write_bytes(_npy(SECRET))
    os.remove(inside)
    os.symlink(outside, inside)
    with pytest.raises(DatasetError, match="a symbolic link leads outside it"):
        read_samples(f"{ds.name}@main", user="alice", settings=open_dataset(ds.name, user="alice", settings=backend).settings)
