"""Read a dataset ref into NumPy arrays, for training and scoring code.

``read_samples("tp://NAME@REF")`` resolves REF (a branch, a tag or a snapshot id; none
means main) to one snapshot and returns its samples. The ref is resolved once, so the
result is that snapshot's content even while other processes commit. This module never
imports Airflow: ``ml`` uses it inside trainer pods.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np

from train_platform.settings import Settings, get_settings


@dataclass(frozen=True)
class SampleSet:
    """Samples of one snapshot, in the table's order."""

    dataset: str
    ref: str
    snapshot_id: int
    ids: list[str]
    series: list[np.ndarray]  # each (T_i, C) float32
    labels: list[str | None]
    status: list[str]
    label_source: list[str | None] = field(default_factory=list)
    confidence: list[float | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)


def parse_uri(uri: str) -> tuple[str, str]:
    """``tp://NAME@REF`` (or ``NAME@REF``) into ``(NAME, REF)``; REF defaults to main."""
    from train_platform.datasets.refs import MAIN, parse_ref

    name, ref = parse_ref(uri)
    return name, ref or MAIN


def read_samples(ref: str, *, user: str | None = None, settings: Settings | None = None) -> SampleSet:
    """All samples at ``tp://NAME@REF`` as ``(T, C)`` float32 arrays with their labels.
    The acting user (``TP_USER`` by default) needs the reader role."""
    from train_platform.datasets.schema import series_of
    from train_platform.datasets.dataset import open_dataset

    settings = settings or get_settings()
    name, ref_name = parse_uri(ref)
    dataset = open_dataset(name, user=user, settings=settings)
    snapshot_id, table = dataset.read_with_snapshot(ref_name)
    series = series_of(table)
    uris = table.column("series_uri").to_pylist()
    channels = table.column("n_channels").to_pylist()
    ids = table.column("sample_id").to_pylist()
    for index, (array, uri) in enumerate(zip(series, uris)):
        if array is None:
            series[index] = _load_external(dataset, ids[index], uri, channels[index])
    return SampleSet(
        dataset=name,
        ref=ref_name,
        snapshot_id=snapshot_id,
        ids=ids,
        series=series,  # type: ignore[arg-type]
        labels=table.column("label").to_pylist(),
        status=table.column("status").to_pylist(),
        label_source=table.column("label_source").to_pylist(),
        confidence=table.column("confidence").to_pylist(),
    )


def _load_external(dataset, sample_id: str, uri: str, channels: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    """A large sample stored as a ``.npy`` file in the object store (or a local path),
    read through the warehouse's FileIO so the same S3 endpoint and credentials apply. A
    URI outside the warehouse (``importers.check_series_uri``: written before that check,
    or by another tool, or a symbolic link placed since) is refused before it is opened."""
    from train_platform.datasets.exceptions import DatasetError, InvalidSamplesError
    from train_platform.datasets.importers import check_series_uri

    try:
        check_series_uri(uri, dataset.settings.warehouse_uri, where=f"{dataset.name}: sample {sample_id!r}")
    except InvalidSamplesError as exc:
        raise DatasetError(f"refusing to read: {exc}") from exc
    try:
        with dataset._table.io.new_input(uri).open() as handle:
            array = np.load(io.BytesIO(handle.read()), allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{dataset.name}: cannot read series {uri}: {exc}") from exc
    array = np.asarray(array, dtype=np.float32)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2 or array.shape[1] != channels:
        raise DatasetError(f"{dataset.name}: series {uri} has shape {array.shape}, expected (T, {channels})")
    return array
