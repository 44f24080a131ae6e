"""`tp dataset` end to end through the CLI entry point, and the importers."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from train_platform.cli import main
from train_platform.datasets import InvalidSamplesError, open_dataset
from train_platform.datasets.catalog import get_catalog, identifier
from train_platform.datasets.importers import load_source


def tp(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["dataset", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_workflow(backend, ds_name, capsys):
    code, out, _ = tp(capsys, "import", ds_name, "--from", "aeon:GunPoint:train", "--as", "alice", "--json")
    assert code == 0 and json.loads(out)["samples"] == 50 and json.loads(out)["created"]

    assert tp(capsys, "branch", ds_name, "fix", "--as", "alice")[0] == 0
    code, out, _ = tp(capsys, "label", f"{ds_name}@fix", "gunpoint-train-00000=2", "gunpoint-train-00001=1", "--as", "alice")
    assert code == 0 and "labelled 2" in out

    code, out, _ = tp(capsys, "diff", ds_name, "main", "fix", "--as", "alice", "--json")
    assert json.loads(out)["changed"] == ["gunpoint-train-00000", "gunpoint-train-00001"]

    code, out, _ = tp(capsys, "merge", ds_name, "fix", "--as", "alice", "--json")
    assert code == 0 and json.loads(out)["kind"] == "fast-forward"

    code, out, _ = tp(capsys, "show", f"{ds_name}@main", "--as", "alice", "--json", "--limit", "0")
    shown = json.loads(out)
    assert shown["samples"] == 50
    first = [r for r in shown["rows"] if r["sample_id"] == "gunpoint-train-00000"][0]
    assert first["label"] == "2" and first["label_source"] == "human" and first["shape"] == [150, 1]

    code, out, _ = tp(capsys, "log", f"{ds_name}@main", "--as", "alice", "--json")
    log = json.loads(out)
    assert [e["operation"] for e in log] == ["label", "import", "create"]
    assert log[0]["user"] == "alice"

    assert tp(capsys, "tag", ds_name, "v1", "--as", "alice")[0] == 0
    import_snapshot = log[1]["snapshot_id"]
    assert tp(capsys, "revert", ds_name, str(import_snapshot), "--as", "alice")[0] == 0
    code, out, _ = tp(capsys, "diff", ds_name, str(import_snapshot), "main", "--as", "alice", "--json")
    assert json.loads(out)["changed"] == []
    code, out, _ = tp(capsys, "show", f"{ds_name}@v1", "--as", "alice", "--json", "--limit", "1")
    assert json.loads(out)["snapshot_id"] == log[0]["snapshot_id"]

    # Permissions: a stranger is refused with exit 5; after a grant bob labels his own branch.
    code, _, err = tp(capsys, "label", ds_name, "gunpoint-train-00003=1", "--as", "bob")
    assert code == 5 and "no role" in err
    assert tp(capsys, "grant", ds_name, "bob", "writer", "--as", "alice")[0] == 0
    code, out, _ = tp(capsys, "label", ds_name, "gunpoint-train-00003=1", "--as", "bob")
    assert code == 0 and "user/bob" in out

    code, out, _ = tp(capsys, "audit", ds_name, "--as", "alice", "--json")
    audit = json.loads(out)
    assert (audit[0]["user"], audit[0]["operation"], audit[0]["ref"]) == ("bob", "label", "user/bob")
    assert {"denied"} == {e["outcome"] for e in audit if e["user"] == "bob" and e["operation"] == "label" and e["snapshot_id"] is None}

    code, out, _ = tp(capsys, "expire", ds_name, "--older-than", "0", "--retain-last", "1", "--orphan-grace", "30", "--as", "alice", "--json")
    expired = json.loads(out)
    assert code == 0 and expired["snapshots"] and expired["deleted_files"] == []  # every file is still used by a ref
    code, out, _ = tp(capsys, "show", f"{ds_name}@v1", "--as", "alice", "--json", "--limit", "0")
    assert code == 0 and json.loads(out)["samples"] == 50  # the tag survived, files and all
    code, out, _ = tp(capsys, "refs", ds_name, "--as", "alice", "--json")
    assert set(json.loads(out)) == {"main", "fix", "v1", "user/bob"}


def test_cli_merge_conflict_exits_3_with_ids(backend, ds_name, capsys):
    assert tp(capsys, "import", ds_name, "--from", "aeon:ArrowHead:test", "--as", "alice")[0] == 0
    tp(capsys, "grant", ds_name, "bob", "writer", "--as", "alice")
    sample = "arrowhead-test-00007"
    assert tp(capsys, "label", ds_name, f"{sample}=1", "--as", "alice")[0] == 0
    assert tp(capsys, "label", ds_name, f"{sample}=2", "--as", "bob")[0] == 0
    assert tp(capsys, "merge", ds_name, "user/alice", "--as", "alice")[0] == 0
    main_before = open_dataset(ds_name, user="alice", settings=backend).resolve("main").snapshot_id
    code, out, err = tp(capsys, "merge", ds_name, "user/bob", "--as", "bob")
    assert code == 3
    assert out.split() == [sample]
    assert "conflicts on 1 sample" in err
    assert open_dataset(ds_name, user="alice", settings=backend).resolve("main").snapshot_id == main_before


def test_cli_bad_input_writes_nothing(tp_home, capsys, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("sample_id,label,acc\na,x,1.0\na,y,2.0\n")
    code, _, err = tp(capsys, "import", "badset", "--from", str(bad), "--as", "alice")
    assert code == 2 and "sample 'a' has different label values" in err
    from train_platform.settings import get_settings

    assert not get_catalog(get_settings()).table_exists(identifier("badset"))
    code, _, err = tp(capsys, "import", "Bad-Name", "--from", str(bad))
    assert code == 1 and "dataset name 'Bad-Name' is invalid" in err
    code, _, err = tp(capsys, "import", "x1", "--from", "aeon:NoSuchSet")
    assert code == 2 and "not shipped with aeon" in err
    tp(capsys, "import", "okset", "--from", "aeon:ItalyPowerDemand:train", "--as", "alice")
    code, _, err = tp(capsys, "label", "okset@main", "notanassignment", "--as", "alice")
    assert code == 2 and "expected ID=LABEL" in err
    code, _, err = tp(capsys, "show", "okset@nope", "--as", "alice")
    assert code == 1 and "no branch, tag or snapshot 'nope'" in err


def test_tp_entry_point_runs(tp_home):
    """A fresh process: registration imports nothing heavy and the command works."""
    out = subprocess.run(
        [sys.executable, "-c", "import sys; from train_platform.cli import main; sys.exit(main(['dataset', 'list', '--json']))"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0 and json.loads(out.stdout) == []


def test_importers_long_csv_parquet_npz(tmp_path):
    long = pa.table(
        {
            "sample_id": ["b", "a", "a", "b", "a"],
            "timestamp": ["2024-01-01T00:00:02", "2024-01-01T00:00:01", "2024-01-01T00:00:00", "2024-01-01T00:00:01", "2024-01-01T00:00:02"],
            "label": ["x", "y", "y", "x", "y"],
            "acc_x": [1, 2, 3, 4, 5],
            "acc_y": [0.1, 0.2, 0.3, 0.4, 0.5],
        }
    )
    pacsv.write_csv(long, tmp_path / "long.csv")
    pq.write_table(long, tmp_path / "long.parquet")
    for name in ("long.csv", "long.parquet"):
        rows = load_source(str(tmp_path / name))
        by_id = {r["sample_id"]: r for r in rows.to_pylist()}
        # Steps ordered by timestamp; channels interleaved time-major.
        np.testing.assert_allclose(by_id["a"]["values"], [3, 0.3, 2, 0.2, 5, 0.5], rtol=1e-6)
        assert by_id["b"]["n_channels"] == 2 and by_id["b"]["label"] == "x" and by_id["b"]["status"] == "confirmed"
        assert by_id["a"]["end_time"].second == 2

    np.savez(tmp_path / "d.npz", X=np.zeros((3, 5, 4)), y=np.array([0, 1, 0]))
    rows = load_source(str(tmp_path / "d.npz"))
    assert rows.column("sample_id").to_pylist() == ["d-000000", "d-000001", "d-000002"]
    assert rows.column("label").to_pylist() == ["0", "1", "0"] and rows.column("n_channels").to_pylist() == [4, 4, 4]

    pq.write_table(rows, tmp_path / "export.parquet")  # sample-schema Parquet round-trips
    assert load_source(str(tmp_path / "export.parquet")).equals(rows)

    np.savez(tmp_path / "bad.npz", X=np.zeros((3, 5, 4)), y=np.array([0, 1]))
    with pytest.raises(InvalidSamplesError, match=r"y has shape \(2,\), expected \(3,\)"):
        load_source(str(tmp_path / "bad.npz"))
    (tmp_path / "nochan.csv").write_text("sample_id,label\na,x\n")
    with pytest.raises(InvalidSamplesError, match="no channel columns"):
        load_source(str(tmp_path / "nochan.csv"))
    with pytest.raises(InvalidSamplesError, match="unknown source type"):
        (tmp_path / "x.json").write_text("{}")
        load_source(str(tmp_path / "x.json"))


def test_aeon_unequal_length_and_multichannel():
    rows = load_source("aeon:JapaneseVowels:test")
    lengths = {len(v) // c for v, c in zip(rows.column("values").to_pylist(), rows.column("n_channels").to_pylist())}
    assert len(lengths) > 1  # unequal-length series kept as they are
    assert set(rows.column("n_channels").to_pylist()) == {12}


def test_series_uri_samples_are_read_from_the_object_store(backend, ds_name):
    from train_platform.datasets import build_samples, create_dataset
    from train_platform.datasets.reader import read_samples

    dataset = create_dataset(ds_name, user="alice", settings=backend)
    big = np.random.default_rng(0).normal(size=(500, 3)).astype(np.float32)
    location = f"{dataset._table.location()}/media/big.npy"
    import io as _io

    buffer = _io.BytesIO()
    np.save(buffer, big)
    with dataset._table.io.new_output(location).create(overwrite=True) as handle:
        handle.write(buffer.getvalue())
    rows = build_samples(["inline", "external"], [np.ones((2, 3)), None], series_uri=[None, location], n_channels=[3, 3])
    dataset.append(rows, branch="main")
    samples = read_samples(f"{ds_name}@main", user="alice", settings=backend)
    by_id = dict(zip(samples.ids, samples.series))
    np.testing.assert_array_equal(by_id["external"], big)
    assert by_id["inline"].shape == (2, 3)


def test_imports_stay_light():
    """The package and the ml-facing reader load neither pyiceberg nor Airflow at import."""
    code = (
        "import sys, train_platform.datasets, train_platform.datasets.reader, train_platform.cli.dataset;"
        "print(sorted(m for m in ('pyiceberg', 'airflow', 'pyarrow', 'sqlalchemy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
