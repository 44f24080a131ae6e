"""The sample schema every dataset table has, and the one way rows are built and checked
before they reach Iceberg.

A sample is one time series with its annotation. Its values are stored inline, time-major
and flattened (``values[t * n_channels + c]``), so a reader turns a row into a ``(T, C)``
array with one reshape; a sample too large to inline (video, audio) instead names a ``.npy``
file in the object store in ``series_uri`` and leaves ``values`` null.

Columns are only ever added, as optional ones, so a table created before a column existed
keeps working: ``upgrade_table`` adds the missing columns through Iceberg schema evolution
(metadata only, no data file is rewritten) when a dataset is opened, and rows of snapshots
written before read the new column as null. ``alternatives`` came that way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.schema import Schema
from pyiceberg.types import (
    DoubleType,
    FloatType,
    IntegerType,
    ListType,
    NestedField,
    StringType,
    StructType,
    TimestamptzType,
)

from train_platform.datasets.exceptions import DatasetError, InvalidSamplesError

STATUSES = ("raw", "pending", "confirmed")
LABEL_SOURCES = ("human", "model", "model-accepted", "imported")
# Labels a model gave (``tp dataset prelabel``): ``model-accepted`` where its confidence was
# at or above the pre-label run's --accept-above, ``model`` otherwise. Both stay ``pending``.
MODEL_LABEL_SOURCES = ("model", "model-accepted")

SAMPLE_SCHEMA = Schema(
    NestedField(1, "sample_id", StringType(), required=True),
    NestedField(2, "values", ListType(13, FloatType(), element_required=True), required=False),
    NestedField(3, "n_channels", IntegerType(), required=True),
    NestedField(4, "series_uri", StringType(), required=False),
    NestedField(5, "start_time", TimestamptzType(), required=False),
    NestedField(6, "end_time", TimestamptzType(), required=False),
    NestedField(7, "label", StringType(), required=False),
    NestedField(8, "label_source", StringType(), required=False),
    NestedField(9, "confidence", DoubleType(), required=False),
    NestedField(10, "annotator", StringType(), required=False),
    NestedField(11, "status", StringType(), required=True),
    NestedField(12, "batch_id", StringType(), required=False),
    # A model's pre-label's runners-up, most probable first: the labels it found next most
    # likely with their probabilities (``tp dataset prelabel --alternatives K``). Null for
    # every other label and for tables written before the column existed.
    NestedField(14, "alternatives", ListType(15, StructType(
        NestedField(16, "label", StringType(), required=True),
        NestedField(17, "probability", DoubleType(), required=True),
    ), element_required=True), required=False),
    # Upserts and merges match rows on the sample id, as Iceberg's identifier field.
    identifier_field_ids=[1],
)



def _without_field_ids(field_type: pa.DataType) -> pa.DataType:
    if pa.types.is_list(field_type):
        item = field_type.value_field
        return pa.list_(pa.field(item.name, _without_field_ids(item.type), item.nullable))
    if pa.types.is_struct(field_type):
        return pa.struct([pa.field(f.name, _without_field_ids(f.type), f.nullable) for f in field_type])
    return field_type


# Rows carry no Iceberg field ids: writes match their columns to a table's by name, so a
# table whose ids were assigned differently (one created before a column was added, which
# got the next free ids) takes the same rows.
ARROW_SCHEMA: pa.Schema = pa.schema([pa.field(f.name, _without_field_ids(f.type), f.nullable)
                                     for f in SAMPLE_SCHEMA.as_arrow()])
COLUMNS: tuple[str, ...] = tuple(ARROW_SCHEMA.names)
# Columns an annotation changes; everything else describes the recording itself.
LABEL_COLUMNS = ("label", "label_source", "confidence", "annotator", "status", "alternatives")
# Columns compared as Python values in ``rows_equal`` (Arrow has no equality kernel for lists
# of structs).
_NESTED_COLUMNS = ("alternatives",)


def upgrade_table(table: Any) -> Any:
    """``table`` (a pyiceberg ``Table``) with every column of the sample schema: a table
    created before a column was added gets it through schema evolution (an optional column,
    metadata only). Safe when several processes open the same old table at once: a lost
    commit race is retried on the newest metadata, and a process that finds the columns
    there already does nothing. Returns the table as it is now."""
    from pyiceberg.exceptions import CommitFailedException

    for _attempt in range(10):
        missing = [name for name in COLUMNS if name not in table.schema().column_names]
        if not missing:
            return table
        try:
            with table.update_schema() as update:
                update.union_by_name(SAMPLE_SCHEMA)
        except CommitFailedException:
            pass  # someone committed meanwhile (maybe this very upgrade): look again
        table = table.refresh()
    raise DatasetError(f"could not add column(s) {', '.join(missing)} to {'.'.join(table.name())}: "
                              "too many concurrent commits")


def is_person_annotation(row: Mapping[str, Any]) -> bool:
    """True when a person stands behind a sample's annotation, which no model may replace:
    it is confirmed, or its label came from anywhere but a model (``human``, ``imported``).
    Unlabelled samples and model pre-labels awaiting review are not."""
    return row.get("status") == "confirmed" or row.get("label_source") not in (None, *MODEL_LABEL_SOURCES)


def build_samples(
    ids: Sequence[str],
    series: Sequence[np.ndarray | None] | None = None,
    *,
    labels: Sequence[str | None] | None = None,
    label_source: str | Sequence[str | None] | None = None,
    confidence: Sequence[float | None] | None = None,
    annotator: str | Sequence[str | None] | None = None,
    status: str | Sequence[str] | None = None,
    batch_id: str | Sequence[str | None] | None = None,
    series_uri: Sequence[str | None] | None = None,
    n_channels: Sequence[int] | None = None,
    start_time: Sequence[datetime | None] | None = None,
    end_time: Sequence[datetime | None] | None = None,
    alternatives: Sequence[Sequence[Mapping[str, Any]] | None] | None = None,
) -> pa.Table:
    """Rows in the sample schema from columns. ``series`` items are ``(T, C)`` (or ``(T,)``
    for one channel) arrays; an item is ``None`` when ``series_uri`` names the data instead.

    ``status`` defaults to ``confirmed`` for labelled rows and ``raw`` otherwise;
    ``label_source`` defaults to ``imported`` for labelled rows. Raises
    ``InvalidSamplesError`` naming the first offending sample."""
    n = len(ids)

    def column(value: Any, name: str) -> list[Any]:
        if value is None or isinstance(value, str):
            return [value] * n
        values = list(value)
        if len(values) != n:
            raise InvalidSamplesError(f"{name} has {len(values)} entries for {n} sample ids")
        return values

    labels_l = column(labels, "labels")
    if status is None:
        status_l = ["confirmed" if lab is not None else "raw" for lab in labels_l]
    else:
        status_l = column(status, "status")
    if label_source is None:
        source_l = ["imported" if lab is not None else None for lab in labels_l]
    else:
        source_l = column(label_source, "label_source")
    uris = column(series_uri, "series_uri")
    series_l = column(series, "series") if series is not None else [None] * n

    offsets = np.zeros(n + 1, dtype=np.int32)
    chunks: list[np.ndarray] = []
    valid = np.zeros(n, dtype=bool)
    channels = np.ones(n, dtype=np.int32)
    given_channels = column(n_channels, "n_channels") if n_channels is not None else None
    for i, item in enumerate(series_l):
        if item is None:
            if uris[i] is None:
                raise InvalidSamplesError(f"sample {ids[i]!r} has neither series values nor a series_uri")
            if given_channels is not None:
                channels[i] = int(given_channels[i])
            offsets[i + 1] = offsets[i]
            continue
        array = np.asarray(item, dtype=np.float32)
        if array.ndim == 1:
            array = array[:, None]
        if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
            raise InvalidSamplesError(f"sample {ids[i]!r}: series must be a non-empty (T, C) array, got shape {np.shape(item)}")
        if np.isinf(array).any():
            raise InvalidSamplesError(f"sample {ids[i]!r}: series contains infinite values")
        channels[i] = array.shape[1]
        valid[i] = True
        chunks.append(array.reshape(-1))
        offsets[i + 1] = offsets[i] + array.size
    flat = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    values = pa.ListArray.from_arrays(
        pa.array(offsets), pa.array(flat, type=pa.float32()), mask=pa.array(~valid)
    ).cast(ARROW_SCHEMA.field("values").type)

    table = pa.table(
        {
            "sample_id": pa.array(list(ids), pa.string()),
            "values": values,
            "n_channels": pa.array(channels, pa.int32()),
            "series_uri": pa.array(uris, pa.string()),
            "start_time": pa.array(column(start_time, "start_time"), pa.timestamp("us", tz="UTC")),
            "end_time": pa.array(column(end_time, "end_time"), pa.timestamp("us", tz="UTC")),
            "label": pa.array(labels_l, pa.string()),
            "label_source": pa.array(source_l, pa.string()),
            "confidence": pa.array(column(confidence, "confidence"), pa.float64()),
            "annotator": pa.array(column(annotator, "annotator"), pa.string()),
            "status": pa.array(status_l, pa.string()),
            "batch_id": pa.array(column(batch_id, "batch_id"), pa.string()),
            "alternatives": pa.array(column(alternatives, "alternatives") if alternatives is not None else [None] * n,
                                     ARROW_SCHEMA.field("alternatives").type),
        }
    )
    return conform(table)


def conform(table: pa.Table, *, where: str = "rows") -> pa.Table:
    """``table`` cast to the sample schema (columns in order, missing optional columns as
    nulls) after checking every rule a stored row must meet."""
    extra = [name for name in table.column_names if name not in COLUMNS]
    if extra:
        raise InvalidSamplesError(f"{where}: unknown column(s) {', '.join(extra)}; the sample columns are {', '.join(COLUMNS)}")
    columns = []
    for field in ARROW_SCHEMA:
        if field.name in table.column_names:
            try:
                columns.append(table.column(field.name).cast(field.type))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise InvalidSamplesError(f"{where}: column {field.name!r} cannot be read as {field.type}: {exc}") from exc
        elif field.nullable:
            columns.append(pa.nulls(table.num_rows, field.type))
        else:
            raise InvalidSamplesError(f"{where}: required column {field.name!r} is missing")
    table = pa.Table.from_arrays(columns, schema=ARROW_SCHEMA)
    _check(table, where)
    return table


def _first(table: pa.Table, mask: pa.Array) -> str:
    index = pc.index(mask, True).as_py()
    return repr(table.column("sample_id")[index].as_py()) if index >= 0 else "?"


def _check(table: pa.Table, where: str) -> None:
    if table.num_rows == 0:
        return
    ids = table.column("sample_id")
    for name in ("sample_id", "n_channels", "status"):
        if table.column(name).null_count:
            raise InvalidSamplesError(f"{where}: {name} is empty for {table.column(name).null_count} row(s)")
    if pc.any(pc.equal(pc.utf8_length(ids), 0)).as_py():
        raise InvalidSamplesError(f"{where}: a sample_id is the empty string")
    if pc.count_distinct(ids).as_py() != table.num_rows:
        counts = pc.value_counts(ids)
        duplicated = [c["values"] for c in counts.to_pylist() if c["counts"] > 1][:10]
        raise InvalidSamplesError(f"{where}: duplicate sample_id(s) {', '.join(map(repr, duplicated))}")
    bad_status = pc.invert(pc.is_in(table.column("status"), pa.array(STATUSES)))
    if pc.any(bad_status).as_py():
        raise InvalidSamplesError(f"{where}: sample {_first(table, bad_status)} has status not in {', '.join(STATUSES)}")
    source = table.column("label_source")
    bad_source = pc.and_(pc.is_valid(source), pc.invert(pc.is_in(source, pa.array(LABEL_SOURCES))))
    if pc.any(bad_source).as_py():
        raise InvalidSamplesError(f"{where}: sample {_first(table, bad_source)} has label_source not in {', '.join(LABEL_SOURCES)}")
    confidence = table.column("confidence")
    bad_conf = pc.fill_null(pc.or_(pc.less(confidence, 0.0), pc.greater(confidence, 1.0)), False)
    if pc.any(bad_conf).as_py():
        raise InvalidSamplesError(f"{where}: sample {_first(table, bad_conf)} has confidence outside [0, 1]")
    alternatives = table.column("alternatives")
    if alternatives.null_count < table.num_rows:
        probability = pc.struct_field(pc.list_flatten(alternatives), "probability")
        if pc.any(pc.or_(pc.is_null(probability), pc.or_(pc.less(probability, 0.0), pc.greater(probability, 1.0)))).as_py():
            bad = [row["sample_id"] for row in table.select(["sample_id", "alternatives"]).to_pylist()
                   if any(a["probability"] is None or not 0.0 <= a["probability"] <= 1.0 for a in row["alternatives"] or ())]
            raise InvalidSamplesError(f"{where}: sample {bad[0]!r} has an alternative whose probability is outside [0, 1]")
    unlabeled_confirmed = pc.and_(pc.equal(table.column("status"), "confirmed"), pc.is_null(table.column("label")))
    if pc.any(unlabeled_confirmed).as_py():
        raise InvalidSamplesError(f"{where}: sample {_first(table, unlabeled_confirmed)} is confirmed but has no label")
    values = table.column("values")
    no_series = pc.and_(pc.is_null(values), pc.is_null(table.column("series_uri")))
    if pc.any(no_series).as_py():
        raise InvalidSamplesError(f"{where}: sample {_first(table, no_series)} has neither series values nor a series_uri")
    channels = table.column("n_channels")
    if pc.any(pc.less(channels, 1)).as_py():
        raise InvalidSamplesError(f"{where}: sample {_first(table, pc.less(channels, 1))} has n_channels < 1")
    lengths = pc.list_value_length(values)
    ragged = pc.fill_null(pc.not_equal(pc.multiply(pc.divide(lengths, channels), channels), lengths), False)
    empty = pc.fill_null(pc.equal(lengths, 0), False)
    bad_shape = pc.or_(ragged, empty)
    if pc.any(bad_shape).as_py():
        raise InvalidSamplesError(f"{where}: sample {_first(table, bad_shape)} has a number of values that is not a positive multiple of n_channels")


def rows_equal(left: pa.Table, right: pa.Table, ignore: Sequence[str] = ()) -> np.ndarray:
    """Per-row equality of two tables in the sample schema whose rows are already aligned
    (row i of each is the same sample), over every column not in ``ignore``. Nulls equal
    nulls; NaN readings equal NaN."""
    if left.num_rows != right.num_rows:
        raise ValueError("rows_equal needs aligned tables of the same length")
    n = left.num_rows
    equal = np.ones(n, dtype=bool)
    if n == 0:
        return equal
    for name in COLUMNS:
        if name == "values" or name in ignore:
            continue
        a, b = left.column(name), right.column(name)
        if name in _NESTED_COLUMNS:
            equal &= _nested_equal(a, b)
            continue
        same = pc.fill_null(pc.equal(a, b), False)
        both_null = pc.and_(pc.is_null(a), pc.is_null(b))
        equal &= pc.or_(same, both_null).to_numpy(zero_copy_only=False)
    if "values" not in ignore:
        equal &= _lists_equal(left.column("values").combine_chunks(), right.column("values").combine_chunks())
    return equal


def _nested_equal(a: pa.ChunkedArray, b: pa.ChunkedArray) -> np.ndarray:
    """Per-row equality of a list column where null and the empty list both mean "none"
    (pyiceberg reads a column missing from an older data file either way); only rows where
    either side holds an item are turned into Python values."""
    empty_a = pc.fill_null(pc.equal(pc.list_value_length(a), 0), True).to_numpy(zero_copy_only=False)
    empty_b = pc.fill_null(pc.equal(pc.list_value_length(b), 0), True).to_numpy(zero_copy_only=False)
    result = empty_a & empty_b
    rows = np.flatnonzero(~result)
    if rows.size:
        index = pa.array(rows)
        values_a, values_b = a.take(index).to_pylist(), b.take(index).to_pylist()
        result[rows] = [x == y for x, y in zip(values_a, values_b)]
    return result


def _lists_equal(a: pa.ListArray, b: pa.ListArray) -> np.ndarray:
    null_a = a.is_null().to_numpy(zero_copy_only=False)
    null_b = b.is_null().to_numpy(zero_copy_only=False)
    len_a = pc.fill_null(pc.list_value_length(a), 0).to_numpy()
    len_b = pc.fill_null(pc.list_value_length(b), 0).to_numpy()
    result = (null_a == null_b) & (len_a == len_b)
    rows = np.flatnonzero(result & ~null_a & (len_a > 0))
    if rows.size == 0:
        return result
    # Compare only rows whose shapes already match, flattened in the same order on both sides.
    index = pa.array(rows)
    flat_a = pc.list_flatten(a.take(index)).to_numpy(zero_copy_only=False)
    flat_b = pc.list_flatten(b.take(index)).to_numpy(zero_copy_only=False)
    same = (flat_a == flat_b) | (np.isnan(flat_a) & np.isnan(flat_b))
    starts = np.concatenate([[0], np.cumsum(len_a[rows])[:-1]])
    result[rows] = np.logical_and.reduceat(same, starts)
    return result


def series_of(table: pa.Table) -> list[np.ndarray | None]:
    """Each row's inline series as a ``(T, C)`` float32 array (``None`` where the row has a
    ``series_uri`` instead). One pass over the flattened values, no per-value Python."""
    values = table.column("values").combine_chunks()
    channels = table.column("n_channels").to_numpy()
    flat = pc.list_flatten(values).to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    lengths = pc.fill_null(pc.list_value_length(values), 0).to_numpy()
    valid = values.is_valid().to_numpy(zero_copy_only=False)
    ends = np.cumsum(lengths)
    out: list[np.ndarray | None] = []
    for i in range(table.num_rows):
        if not valid[i]:
            out.append(None)
            continue
        out.append(flat[ends[i] - lengths[i] : ends[i]].reshape(-1, int(channels[i])))
    return out


def ids_of(table: pa.Table) -> list[str]:
    return table.column("sample_id").to_pylist()


def take_ids(table: pa.Table, ids: Iterable[str]) -> pa.Table:
    """Rows of ``table`` whose sample id is in ``ids``, in ``ids`` order."""
    wanted = pa.array(list(ids), pa.string())
    positions = pc.index_in(wanted, value_set=table.column("sample_id"))
    if positions.null_count:
        raise KeyError("some ids are not in the table")
    return table.take(positions)
