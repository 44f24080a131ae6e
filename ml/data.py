"""Data refs -> in-memory series.

A ref is one of
- ``aeon:NAME[:train|test]``: a dataset shipped inside the aeon package, read from aeon's own
  data folder (never downloaded; a dataset that is not shipped is an error);
- a file path ending in ``.npz``, ``.csv`` or ``.parquet``/``.pq`` (formats in ml/README.md);
- ``tp://NAME@REF``: a versioned platform dataset, read through
  ``train_platform.datasets.reader.read_samples`` (imported lazily, so ``ml`` works without it).

Everything becomes a ``SeriesData``: a list of (T_i, C) float32 arrays plus what the tasks
need (class labels or numeric targets, per-step anomaly labels). Values are checked here
(NaN, channel counts, empty sets) so that bad data fails before any training starts.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ml.exceptions import DataError, DatasetNotFoundError

log = logging.getLogger(__name__)

# Single-series aeon datasets are split in time: the last 20% is the test part (with the
# training part kept in front of it as forecasting context).
SINGLE_SERIES_TEST_FRACTION = 0.2


@dataclass
class SeriesData:
    ref: str
    series: list[np.ndarray]  # each (T_i, C) float32
    ids: list[str]
    labels: list[str | None] | None = None  # class names or numbers as text, one per series
    point_labels: list[np.ndarray] | None = None  # per-step 0/1 anomaly labels
    timestamps: list[np.ndarray] | None = None  # per-step seconds, when the source has them
    extras: list[dict] | None = None  # optional text / image / audio per series
    eval_from: int | None = None  # forecasting: index where the held-out part begins
    label_kind: str | None = None  # "class" or "numeric" when the source says which

    def __len__(self) -> int:
        return len(self.series)

    @property
    def n_channels(self) -> int:
        return int(self.series[0].shape[1])

    def subset(self, index: list[int]) -> "SeriesData":
        def pick(values):
            return None if values is None else [values[i] for i in index]

        return SeriesData(
            ref=self.ref,
            series=pick(self.series),
            ids=pick(self.ids),
            labels=pick(self.labels),
            point_labels=pick(self.point_labels),
            timestamps=pick(self.timestamps),
            extras=pick(self.extras),
            eval_from=self.eval_from,
            label_kind=self.label_kind,
        )


def load_ref(ref: str, *, accepted_prelabels: bool = False) -> SeriesData:
    """Load and check the data behind ``ref``; raise ``DataError`` naming what is wrong.
    ``accepted_prelabels``: for ``tp://`` refs, pending model pre-labels accepted above their
    run's threshold (``label_source`` ``model-accepted``) count as labels too."""
    if not isinstance(ref, str) or not ref.strip():
        raise DataError("empty data ref")
    ref = ref.strip()
    if ref.startswith("aeon:"):
        data = _load_aeon(ref)
    elif ref.startswith("tp://"):
        data = _load_platform(ref, accepted_prelabels=accepted_prelabels)
    else:
        data = _load_file(ref)
    check_series(data)
    return data


def check_series(data: SeriesData) -> None:
    """Empty sets, ragged channel counts and non-finite values fail here, with the place."""
    if len(data.series) == 0:
        raise DataError(f"{data.ref}: the data set is empty (0 series)")
    n_ch = None
    for i, x in enumerate(data.series):
        where = f"{data.ref}: series {data.ids[i]!r}"
        if x.ndim != 2:
            raise DataError(f"{where}: expected a (time, channels) array, got shape {x.shape}")
        if x.shape[0] == 0:
            raise DataError(f"{where}: has no time steps")
        if n_ch is None:
            n_ch = x.shape[1]
        elif x.shape[1] != n_ch:
            raise DataError(f"{where}: has {x.shape[1]} channels, the first series has {n_ch}")
        bad = ~np.isfinite(x)
        if bad.any():
            t, c = (int(v) for v in np.argwhere(bad)[0])
            raise DataError(f"{where}: non-finite value {x[t, c]} at time step {t}, channel {c}")


# ---- aeon --------------------------------------------------------------------------------------
def _aeon_data_dir() -> Path:
    import aeon

    return Path(aeon.__file__).parent / "datasets" / "data"


def _load_aeon(ref: str) -> SeriesData:
    parts = ref.split(":")
    if len(parts) not in (2, 3) or not parts[1]:
        raise DataError(f"bad aeon ref {ref!r}: expected aeon:NAME or aeon:NAME:train|test")
    name = parts[1]
    split = parts[2].lower() if len(parts) == 3 else None
    if split not in (None, "train", "test"):
        raise DataError(f"bad aeon ref {ref!r}: split must be 'train' or 'test', got {split!r}")
    root = _aeon_data_dir()
    folder = root / name
    if not folder.is_dir():
        shipped = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise DatasetNotFoundError(
            f"aeon dataset {name!r} is not shipped inside the installed aeon package (datasets are"
            f" loaded offline only); shipped: {', '.join(shipped)}"
        )
    ts_train = folder / f"{name}_TRAIN.ts"
    if ts_train.exists():
        return _load_aeon_ts(ref, name, folder, split)
    tsad = sorted(folder.glob("*_TRAIN.csv"))
    if tsad:
        return _load_aeon_tsad(ref, tsad[0], split)
    csvs = sorted(folder.glob("*.csv"))
    if len(csvs) == 1:
        return _load_aeon_single_series(ref, csvs[0], split)
    raise DataError(f"aeon dataset {name!r} has no file layout this loader understands ({folder})")


def _load_aeon_ts(ref: str, name: str, folder: Path, split: str | None) -> SeriesData:
    from aeon.datasets import load_from_ts_file

    series: list[np.ndarray] = []
    labels: list[str] = []
    ids: list[str] = []
    kind = "class"
    for part in ("train", "test") if split is None else (split,):
        path = folder / f"{name}_{part.upper()}.ts"
        if not path.exists():
            raise DatasetNotFoundError(f"{ref}: aeon ships no {part} split of {name} ({path.name} missing)")
        X, y = load_from_ts_file(str(path))
        for i, x in enumerate(X):
            series.append(np.ascontiguousarray(np.asarray(x, dtype=np.float32).T))  # (T, C)
            ids.append(f"{name}/{part}/{i}")
        if np.issubdtype(np.asarray(y).dtype, np.floating):
            kind = "numeric"
        labels.extend(_label_text(v) for v in y)
    return SeriesData(ref=ref, series=series, ids=ids, labels=labels, label_kind=kind)


def _load_aeon_tsad(ref: str, train_csv: Path, split: str | None) -> SeriesData:
    """KDD-TSAD style: a normal-only TRAIN file and a TEST file holding the whole series with
    per-step labels. Without a split the whole (test) series is returned."""
    import pandas as pd

    path = train_csv if split == "train" else train_csv.with_name(train_csv.name.replace("_TRAIN", "_TEST"))
    frame = pd.read_csv(path)
    values = frame.iloc[:, 1:-1].to_numpy(dtype=np.float32)
    labels = frame.iloc[:, -1].to_numpy(dtype=np.int64)
    return SeriesData(ref=ref, series=[values], ids=[path.stem], point_labels=[labels])


def _load_aeon_single_series(ref: str, path: Path, split: str | None) -> SeriesData:
    import pandas as pd

    frame = pd.read_csv(path)
    frame = frame.iloc[:, 1:]  # the first column is the time index (date, year or row number)
    numeric = frame.select_dtypes(include="number")
    values = numeric.to_numpy(dtype=np.float32)
    n = len(values)
    cut = n - int(math.floor(n * SINGLE_SERIES_TEST_FRACTION))
    eval_from = None
    if split == "train":
        values = values[:cut]
    elif split == "test":
        eval_from = cut  # the whole series; only forecasts starting at `cut` are scored
    return SeriesData(ref=ref, series=[values], ids=[path.stem], eval_from=eval_from)


def _label_text(value) -> str:
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    return str(value)


# ---- files -------------------------------------------------------------------------------------
def _load_file(ref: str) -> SeriesData:
    path = Path(ref)
    suffix = path.suffix.lower()
    if suffix not in (".npz", ".csv", ".parquet", ".pq"):
        raise DataError(
            f"unknown data ref {ref!r}: expected aeon:NAME[:train|test], tp://NAME@REF or a"
            " .npz/.csv/.parquet file"
        )
    if not path.exists():
        raise DatasetNotFoundError(f"data file {ref} does not exist")
    if suffix == ".npz":
        return _load_npz(ref, path)
    import pandas as pd

    try:
        frame = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
    except Exception as e:  # pandas raises many kinds; all mean "unreadable"
        raise DataError(f"{ref}: cannot read the table: {e}") from e
    return _from_table(ref, frame)


def _load_npz(ref: str, path: Path) -> SeriesData:
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as e:
        raise DataError(f"{ref}: cannot read the npz file: {e}") from e
    with archive:
        if "X" not in archive:
            raise DataError(f"{ref}: the npz file has no array 'X' (keys: {', '.join(archive.files)})")
        X = archive["X"]
        if X.ndim == 2:  # (N, T): univariate
            X = X[:, :, None]
        if X.ndim != 3:
            raise DataError(f"{ref}: 'X' must be (series, time, channels), got shape {X.shape}")
        if not np.issubdtype(X.dtype, np.number):
            raise DataError(f"{ref}: 'X' must hold numbers, got dtype {X.dtype}")
        lengths = archive["lengths"] if "lengths" in archive else np.full(len(X), X.shape[1])
        series = [np.asarray(X[i, : int(lengths[i])], dtype=np.float32) for i in range(len(X))]
        ids = [str(v) for v in archive["ids"]] if "ids" in archive else [str(i) for i in range(len(X))]
        labels = kind = None
        if "y" in archive:
            y = archive["y"]
            if len(y) != len(X):
                raise DataError(f"{ref}: 'y' has {len(y)} entries but 'X' has {len(X)} series")
            kind = "numeric" if np.issubdtype(y.dtype, np.floating) else "class"
            labels = [_label_text(v) for v in y]
        point_labels = None
        if "point_labels" in archive:
            pl = archive["point_labels"]
            point_labels = [np.asarray(pl[i, : int(lengths[i])], dtype=np.int64) for i in range(len(X))]
        timestamps = None
        if "timestamps" in archive:
            ts = archive["timestamps"]
            timestamps = [np.asarray(ts[i, : int(lengths[i])], dtype=np.float64) for i in range(len(X))]
        extras = None
        present = [k for k in ("text", "image", "audio") if k in archive]
        if present:
            extras = [{k: archive[k][i] for k in present} for i in range(len(X))]
    return SeriesData(
        ref=ref, series=series, ids=ids, labels=labels, point_labels=point_labels,
        timestamps=timestamps, extras=extras, label_kind=kind,
    )


def _from_table(ref: str, frame) -> SeriesData:
    """Rows are time steps. Optional columns: ``series_id`` (groups rows into series),
    ``label`` (one value per series), ``is_anomaly`` (per step), ``timestamp``. Every other
    column is a channel and must be numeric."""
    import pandas as pd

    if len(frame) == 0:
        raise DataError(f"{ref}: the table has no rows")
    special = {"series_id", "label", "is_anomaly", "timestamp"}
    channels = [c for c in frame.columns if c not in special]
    if not channels:
        raise DataError(f"{ref}: the table has no channel columns (only {', '.join(map(str, frame.columns))})")
    for c in channels:
        if not pd.api.types.is_numeric_dtype(frame[c]):
            raise DataError(f"{ref}: channel column {c!r} is not numeric (dtype {frame[c].dtype})")
    groups = frame.groupby("series_id", sort=False) if "series_id" in frame.columns else [("0", frame)]
    series, ids, labels, points, stamps = [], [], [], [], []
    kind = None
    if "label" in frame.columns:
        kind = "numeric" if pd.api.types.is_float_dtype(frame["label"]) else "class"
    for key, g in groups:
        series.append(g[channels].to_numpy(dtype=np.float32))
        ids.append(str(key))
        if "label" in g.columns:
            distinct = g["label"].dropna().unique()
            if len(distinct) > 1:
                raise DataError(f"{ref}: series {key!r} has {len(distinct)} different labels; expected one")
            labels.append(_label_text(distinct[0]) if len(distinct) else None)
        if "is_anomaly" in g.columns:
            points.append(g["is_anomaly"].to_numpy(dtype=np.int64))
        if "timestamp" in g.columns:
            ts = g["timestamp"]
            if not pd.api.types.is_numeric_dtype(ts):
                ts = pd.to_datetime(ts).astype("int64") / 1e9
            stamps.append(np.asarray(ts, dtype=np.float64))
    return SeriesData(
        ref=ref, series=series, ids=ids,
        labels=labels if "label" in frame.columns else None,
        point_labels=points or None, timestamps=stamps or None, label_kind=kind,
    )


# ---- platform datasets -------------------------------------------------------------------------
def _load_platform(ref: str, *, accepted_prelabels: bool = False) -> SeriesData:
    try:
        from train_platform.datasets.reader import read_samples
        from train_platform.registry.identity import acting_user
    except ImportError as e:
        raise DataError(
            f"{ref}: platform dataset refs need train_platform.datasets.reader, which is not"
            f" importable here ({e})"
        ) from e
    try:
        # The OS user, or TP_USER (a task's pipeline owner) when the OS user is a platform-admin.
        samples = read_samples(ref, user=acting_user())
    except Exception as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"{ref}: the platform dataset reader failed: {e}") from e
    series = [np.asarray(s, dtype=np.float32) for s in samples.series]
    series = [s[:, None] if s.ndim == 1 else s for s in series]
    # Only confirmed labels teach: a "pending" label is a model's pre-label awaiting review,
    # so those samples count as unlabelled here, unless the run opts in to pre-labels the
    # model gave above its pre-label run's --accept-above (label_source "model-accepted").
    status = list(samples.status) if getattr(samples, "status", None) else ["confirmed"] * len(series)
    sources = list(samples.label_source) if getattr(samples, "label_source", None) else [None] * len(series)

    def teaches(st: str, source: str | None) -> bool:
        return st != "pending" or (accepted_prelabels and source == "model-accepted")

    labels = [str(v) if v is not None and teaches(st, src) else None for v, st, src in zip(samples.labels, status, sources)]
    pending = sum(1 for v, st, src in zip(samples.labels, status, sources) if v is not None and not teaches(st, src))
    accepted = sum(1 for v, st in zip(samples.labels, status) if v is not None and st == "pending") - pending
    if pending:
        log.info("%s: %d samples with pending (unreviewed) labels are treated as unlabelled", ref, pending)
    if accepted:
        log.info("%s: %d accepted model pre-labels teach (use_accepted_prelabels)", ref, accepted)
    return SeriesData(ref=ref, series=series, ids=[str(i) for i in samples.ids], labels=labels, label_kind="class")

