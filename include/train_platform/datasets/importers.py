"""Turn source files into rows of the sample schema.

Sources (``--from``):

* ``path.csv`` / ``path.parquet`` in *long* form, one row per time step: ``sample_id``,
  optional ``timestamp``, optional annotation columns (``label``, ``status``,
  ``label_source``, ``confidence``, ``annotator``, ``batch_id``); every other column is a
  numeric channel. Steps are ordered by ``timestamp`` when given, else by file order.
* ``path.parquet`` already in the sample schema (it has a ``values`` column), as written by
  ``tp dataset show --out`` or another platform.
* ``path.npz`` with ``X`` shaped ``(N, T, C)`` (or ``(N, T)``), optional ``y`` ``(N,)`` and
  optional ``ids`` ``(N,)``.
* ``aeon:NAME[:split]``: a classification dataset shipped inside the aeon package, loaded
  offline (``split`` is ``train``, ``test`` or absent for both).

A sample's ``series_uri`` (a ``.npy`` file instead of inline values) must lie inside the
warehouse: ``check_series_uri`` refuses an absolute path elsewhere, a relative path, ``..``
segments, another scheme or bucket, a query or fragment, and (local warehouse) a path whose
symlinks resolve outside it. ``Dataset`` checks every row it writes, and
``reader.read_samples`` every URI before it opens it.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from train_platform.datasets.exceptions import InvalidSamplesError
from train_platform.datasets.schema import COLUMNS, build_samples, conform

_ANNOTATION = ("label", "status", "label_source", "confidence", "annotator", "batch_id")


def load_rows(source: str | pa.Table) -> pa.Table:
    """Rows in the sample schema: an Arrow table conformed to it, or ``load_source(source)``."""
    if isinstance(source, pa.Table):
        return conform(source)
    return load_source(source)


_S3_SCHEMES = ("s3", "s3a", "s3n")


def check_series_uri(uri: str, warehouse: str, *, where: str) -> str:
    """``uri`` if it names a file inside ``warehouse`` (``file://...`` or ``s3://bucket/prefix``),
    else ``InvalidSamplesError`` saying where (``where``) and why."""

    def refuse(reason: str) -> InvalidSamplesError:
        return InvalidSamplesError(f"{where}: series_uri {uri!r} is not inside the warehouse {warehouse}: {reason}")

    if not isinstance(uri, str) or not uri.strip():
        raise refuse("empty")
    home, parts = urlsplit(warehouse), urlsplit(uri)
    if parts.query or parts.fragment or "?" in uri or "#" in uri:
        raise refuse("a URI with a query or fragment is not a file name")
    path = unquote(parts.path)
    if ".." in path.split("/") or ".." in parts.path.split("/"):
        raise refuse("'..' segments are not allowed")
    if home.scheme in _S3_SCHEMES:
        if parts.scheme not in _S3_SCHEMES:
            raise refuse(f"the warehouse is on S3, and this is {'a local path' if not parts.scheme else parts.scheme + '://'}")
        if parts.netloc != home.netloc:
            raise refuse(f"bucket {parts.netloc!r} is not the warehouse's bucket {home.netloc!r}")
        prefix = unquote(home.path).strip("/")
        if prefix and not path.lstrip("/").startswith(prefix + "/"):
            raise refuse(f"the key is not under the warehouse prefix {prefix + '/'!r}")
        return uri
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise refuse(f"host {parts.netloc!r} is not this machine")
    elif parts.scheme:
        raise refuse(f"scheme {parts.scheme}:// on a local warehouse")
    if not os.path.isabs(path):
        raise refuse("a relative path")
    root = os.path.realpath(unquote(home.path))
    if not _within(os.path.normpath(path), os.path.normpath(unquote(home.path))) and not _within(os.path.normpath(path), root):
        raise refuse("the path is elsewhere")
    if not _within(os.path.realpath(path), root):
        raise refuse(f"a symbolic link leads outside it (to {os.path.realpath(path)})")
    return uri


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def check_series_uris(rows: pa.Table, warehouse: str, *, where: str) -> None:
    """``check_series_uri`` on every non-null ``series_uri`` of ``rows``."""
    if "series_uri" not in rows.column_names or rows.column("series_uri").null_count == rows.num_rows:
        return
    for sample_id, uri in zip(rows.column("sample_id").to_pylist(), rows.column("series_uri").to_pylist()):
        if uri is not None:
            check_series_uri(uri, warehouse, where=f"{where}: sample {sample_id!r}")


def load_source(source: str) -> pa.Table:
    """Rows in the sample schema read from ``source`` (see the module docstring)."""
    if source.startswith("aeon:"):
        return load_aeon(source)
    path = Path(source).expanduser()
    if not path.exists():
        raise InvalidSamplesError(f"{source}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        from pyarrow import csv

        try:
            table = csv.read_csv(path)
        except pa.ArrowInvalid as exc:
            raise InvalidSamplesError(f"{source}: not a readable CSV file: {exc}") from exc
        return from_long(table, source)
    if suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except pa.ArrowInvalid as exc:
            raise InvalidSamplesError(f"{source}: not a readable Parquet file: {exc}") from exc
        if "values" in table.column_names or "series_uri" in table.column_names:
            return conform(table, where=source)
        return from_long(table, source)
    if suffix == ".npz":
        return load_npz(path, source)
    raise InvalidSamplesError(f"{source}: unknown source type {suffix or '(no suffix)'}; use .csv, .parquet, .npz or aeon:NAME")


def from_long(table: pa.Table, where: str) -> pa.Table:
    """Samples from a long table (one row per time step, channels as columns)."""
    if "sample_id" not in table.column_names:
        raise InvalidSamplesError(f"{where}: a long-form file needs a sample_id column")
    if table.num_rows == 0:
        raise InvalidSamplesError(f"{where}: no rows")
    channel_names = [c for c in table.column_names if c not in ("sample_id", "timestamp", *_ANNOTATION)]
    if not channel_names:
        raise InvalidSamplesError(f"{where}: no channel columns (every column other than sample_id, timestamp and {', '.join(_ANNOTATION)} is a channel)")
    for name in channel_names:
        if not (pa.types.is_integer(table.schema.field(name).type) or pa.types.is_floating(table.schema.field(name).type)):
            raise InvalidSamplesError(f"{where}: channel column {name!r} is {table.schema.field(name).type}, not numeric")
    ids = table.column("sample_id").cast(pa.string())
    if ids.null_count:
        row = pc.index(pc.is_null(ids), True).as_py()
        raise InvalidSamplesError(f"{where}: row {row + 1} has no sample_id")
    keys = [("sample_id", "ascending")]
    work = table.set_column(table.column_names.index("sample_id"), "sample_id", ids)
    has_time = "timestamp" in table.column_names
    if has_time:
        stamps = _utc_timestamps(work.column("timestamp"), where)
        work = work.set_column(work.column_names.index("timestamp"), "timestamp", stamps)
        keys.append(("timestamp", "ascending"))
    # sort_indices is stable, so without timestamps the file order of each sample's steps is kept.
    work = work.take(pc.sort_indices(work, sort_keys=keys))

    sorted_ids = work.column("sample_id").to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(np.concatenate([[True], sorted_ids[1:] != sorted_ids[:-1]]))
    ends = np.concatenate([starts[1:], [len(sorted_ids)]])
    matrix = np.column_stack([work.column(c).to_numpy(zero_copy_only=False).astype(np.float32) for c in channel_names])
    series = [matrix[s:e] for s, e in zip(starts, ends)]

    columns: dict[str, list] = {}
    for name in _ANNOTATION:
        if name not in work.column_names:
            continue
        values = work.column(name).to_pylist()
        per_sample = []
        for s, e in zip(starts, ends):
            distinct = set(values[s:e])
            if len(distinct) > 1:
                raise InvalidSamplesError(f"{where}: sample {sorted_ids[s]!r} has different {name} values on its rows: {sorted(map(str, distinct))}")
            per_sample.append(values[s])
        columns[name] = per_sample
    kwargs = {}
    if has_time:
        stamps = work.column("timestamp").to_pylist()
        kwargs["start_time"] = [stamps[s] for s in starts]
        kwargs["end_time"] = [stamps[e - 1] for e in ends]
    try:
        return build_samples(
            [str(sorted_ids[s]) for s in starts],
            series,
            labels=columns.get("label"),
            status=columns.get("status"),
            label_source=columns.get("label_source"),
            confidence=columns.get("confidence"),
            annotator=columns.get("annotator"),
            batch_id=columns.get("batch_id"),
            **kwargs,
        )
    except InvalidSamplesError as exc:
        raise InvalidSamplesError(f"{where}: {exc}") from exc


def _utc_timestamps(column: pa.ChunkedArray, where: str) -> pa.ChunkedArray:
    """Timestamps as UTC. Times without a zone (common in sensor exports) are taken as UTC."""
    try:
        if pa.types.is_timestamp(column.type):
            return column.cast(pa.timestamp("us", tz=column.type.tz or "UTC"))
        try:
            return column.cast(pa.timestamp("us", tz="UTC"))  # strings with an offset
        except pa.ArrowInvalid:
            return column.cast(pa.timestamp("us")).cast(pa.timestamp("us", tz="UTC"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InvalidSamplesError(f"{where}: column 'timestamp' is not a time: {exc}") from exc


def load_npz(path: Path, where: str) -> pa.Table:
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InvalidSamplesError(f"{where}: not a readable .npz file: {exc}") from exc
    if "X" not in archive.files:
        raise InvalidSamplesError(f"{where}: no array named X (found {', '.join(archive.files) or 'none'})")
    X = archive["X"]
    if X.ndim == 2:
        X = X[:, :, None]
    if X.ndim != 3:
        raise InvalidSamplesError(f"{where}: X must be (N, T, C) or (N, T), got shape {X.shape}")
    n = X.shape[0]
    y = archive["y"] if "y" in archive.files else None
    if y is not None and y.shape != (n,):
        raise InvalidSamplesError(f"{where}: y has shape {y.shape}, expected ({n},) to match X")
    ids = archive["ids"] if "ids" in archive.files else None
    if ids is not None and ids.shape != (n,):
        raise InvalidSamplesError(f"{where}: ids has shape {ids.shape}, expected ({n},) to match X")
    id_list = [str(i) for i in ids] if ids is not None else [f"{path.stem}-{i:06d}" for i in range(n)]
    labels = [str(v) for v in y] if y is not None else None
    try:
        return build_samples(id_list, list(X), labels=labels)
    except InvalidSamplesError as exc:
        raise InvalidSamplesError(f"{where}: {exc}") from exc


def aeon_datasets() -> list[str]:
    """Names of the classification datasets shipped inside the installed aeon package."""
    import aeon.datasets

    folder = Path(aeon.datasets.__file__).parent / "data"
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and any(p.glob("*_TRAIN.ts")))


def load_aeon(source: str) -> pa.Table:
    _, _, rest = source.partition(":")
    name, _, split = rest.partition(":")
    available = aeon_datasets()
    if name not in available:
        raise InvalidSamplesError(f"{source}: {name!r} is not shipped with aeon (offline); available: {', '.join(available)}")
    if split not in ("", "train", "test"):
        raise InvalidSamplesError(f"{source}: split must be train or test, not {split!r}")
    import aeon.datasets
    from aeon.datasets import load_classification

    folder = Path(aeon.datasets.__file__).parent / "data"
    X, y = load_classification(name, split=split or None, extract_path=str(folder))
    tag = f"{name.lower()}-{split}" if split else name.lower()
    # aeon gives (N, C, T) arrays, or a list of (C, T_i) for unequal lengths.
    series = [np.asarray(x, dtype=np.float32).T for x in X]
    return build_samples([f"{tag}-{i:05d}" for i in range(len(series))], series, labels=[str(v) for v in y])


__all__ = ["COLUMNS", "aeon_datasets", "check_series_uri", "check_series_uris", "from_long", "load_aeon", "load_npz", "load_source"]
