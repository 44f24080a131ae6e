"""Fixtures of the annotation-check tests: the dataset fixtures of ``tests/datasets`` (every
test taking ``backend`` runs on the embedded shape and on PostgreSQL + S3), and helpers that
put real BasicMotions recordings into a dataset and damage them on a branch."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from tests.datasets.conftest import backend, ds_name, s3_bucket  # noqa: F401  (fixtures, re-exported)
from train_platform.cli import main
from train_platform.datasets import open_dataset
from train_platform.datasets.catalog import get_catalog, identifier
from train_platform.datasets.schema import ARROW_SCHEMA, build_samples, series_of
from train_platform.settings import get_settings

OWNER = "alice"


def tp(*argv: str) -> int:
    return main(["dataset", *argv])


def import_basic_motions(name: str, *splits: str) -> None:
    """``tp dataset import NAME --from aeon:BasicMotions:SPLIT`` for each split, as alice."""
    for split in splits:
        assert tp("import", name, "--from", f"aeon:BasicMotions:{split}", "--as", OWNER) == 0


def rows_by_id(name: str, ref: str = "main") -> dict[str, dict]:
    """The samples at ``ref``: id -> row (a dict) with its series as ``series``."""
    table = open_dataset(name, user=OWNER).read(ref)
    rows = table.to_pylist()
    for row, series in zip(rows, series_of(table)):
        row["series"] = series
    return {row["sample_id"]: row for row in rows}


def sample_row(row: dict, series: np.ndarray | None = None, **changes) -> pa.Table:
    """One row in the sample schema: ``row`` with its series and columns replaced."""
    row = {**row, **changes}
    return build_samples(
        [row["sample_id"]], [row["series"] if series is None else series], labels=[row["label"]],
        label_source=[row["label_source"]], status=[row["status"]], confidence=[row["confidence"]],
        annotator=[row["annotator"]], batch_id=[row["batch_id"]],
    )


def append_unchecked(name: str, branch: str, rows: pa.Table, **columns: list) -> None:
    """Append ``rows`` with ``columns`` replaced straight through pyiceberg, past the
    platform's write checks: what a writer that does not use the platform can leave in a
    table (duplicate ids, unknown statuses or label sources)."""
    for column, values in columns.items():
        rows = rows.set_column(rows.schema.get_field_index(column), ARROW_SCHEMA.field(column), pa.array(values, ARROW_SCHEMA.field(column).type))
    get_catalog(get_settings()).load_table(identifier(name)).append(rows.cast(ARROW_SCHEMA), branch=branch)


@pytest.fixture
def basic_motions(backend, ds_name) -> str:
    """A dataset holding BasicMotions' 40 training recordings on main (4 activities)."""
    import_basic_motions(ds_name, "train")
    return ds_name
