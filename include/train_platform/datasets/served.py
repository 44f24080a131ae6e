"""Served data comes back: keyed predictions of the inference service become pre-labelled
samples on a dataset's ``intake`` branch, ready for the next round of review and training.

**Which requests.** A keyed ``/predict`` request is captured when ``capture_bucket(key)``, a
hash of the key alone, is below the capture rate: the same keys are captured on every
worker and replica, and a test can say in advance which ones. The sample id derives from
the model and the key (``served_sample_id``), so a replayed key is one sample: the first
capture of a key is kept, later ones are dropped at import.

**The spool.** The request path never commits to Iceberg. Each worker process appends its
captures to a spool file of its own under ``spool_dir(home, dataset)``
(``TP_HOME/serving/capture/DATASET/``), one JSON line per sample written with a single
``write`` on an ``O_APPEND`` descriptor, and holds an exclusive ``flock`` on that file while
it writes there. A flush renames the file from ``*.open`` to ``*.ready`` (still holding the
lock) and starts a new one. A worker killed mid-line leaves a torn last line, which the
import skips; a worker killed with an ``.open`` file leaves it unlocked, and the next
import renames it to ``.ready`` itself (a file whose lock it can take has no live writer).

**The import** (``import_spool``, run by the service's flusher or by
``tp dataset intake-served NAME``) claims ready files by taking their ``flock`` without
waiting (a file another importer holds is left to it; the kernel drops the lock of a
killed importer), reads them, appends the samples the ``intake`` branch does not hold yet in
one commit, and then deletes the files. Each spool file lands exactly once: two importers
never read the same file at once, and an importer killed after its commit but before the
delete leaves files whose samples are all on the branch already, which the next import
finds and deletes without committing. A lost race with another importer's commit of the
same ids (a key captured by two workers) is recomputed from the new branch head.

**What a captured sample holds.** The series the model was asked about (``sensor``, the
validated float32 values; text, image and audio have no column in the sample schema and are
not kept), and, where the model gave a class, its answer as a pre-label exactly as
``tp dataset prelabel`` writes one: ``label``, ``confidence``, ``label_source`` ``model``,
status ``pending`` (a pre-label awaiting review, which training treats as unlabelled). The
version that answered is the annotator, as a model reference ``model:NAME:vN``. Answers
without a class (regression, forecasting, anomaly scores) are captured with no label,
status ``raw``. ``batch_id`` is ``served-MODEL-YYYY-MM-DD`` (the UTC day of the request),
so the review can take one day of served data at a time.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from train_platform.datasets.catalog import check_name
from train_platform.datasets.exceptions import DatasetError, InvalidSamplesError, PermissionDeniedError, RefExistsError

if TYPE_CHECKING:
    from train_platform.datasets.dataset import Dataset
    from train_platform.settings import Settings

log = logging.getLogger(__name__)

INTAKE = "intake"
OPERATION = "intake-served"
RECORD_VERSION = 1
_OPEN, _READY = ".open", ".ready"


# ---------------------------------------------------------------------- which keys, which ids

def capture_bucket(key: str) -> float:
    """A uniform number in [0, 1) fixed by the key alone (salted apart from the A/B
    routing hash, so the captured keys are not the keys of one experiment arm)."""
    digest = hashlib.blake2b(key.encode(), digest_size=8, person=b"tp-capture").digest()
    return int.from_bytes(digest, "big") / 2.0**64


def is_captured(key: str | None, rate: float) -> bool:
    """Whether a request with ``key`` is captured at ``rate`` (0 captures nothing, 1 every
    keyed request; unkeyed requests never)."""
    if not key or rate <= 0.0:
        return False
    return rate >= 1.0 or capture_bucket(key) < rate


def served_sample_id(model: str, key: str) -> str:
    """The intake sample id of ``model``'s prediction for ``key``: the same on every replay.
    The key itself is not stored anywhere (it may name a client)."""
    digest = hashlib.blake2b(f"{model}\0{key}".encode(), digest_size=12).hexdigest()
    return f"served-{model}-{digest}"


def spool_dir(home: Path, dataset: str) -> Path:
    """Where a replica's workers spool the captures for ``dataset``."""
    return Path(home) / "serving" / "capture" / check_name(dataset)


def capture_record(model: str, version: int, key: str, sensor: np.ndarray, answer: dict[str, Any],
                   at: float | None = None) -> dict[str, Any]:
    """One spool line: the sample id, the model version, the series (float32 bytes, exact),
    and the class and confidence when the answer has them."""
    values = np.ascontiguousarray(sensor, dtype="<f4")
    if values.ndim == 1:
        values = values[:, None]
    record: dict[str, Any] = {
        "v": RECORD_VERSION, "id": served_sample_id(model, key), "model": model, "version": int(version),
        "shape": list(values.shape), "values": base64.b64encode(values.tobytes()).decode("ascii"),
        "at": time.time() if at is None else at,
    }
    if "label" in answer:
        record["label"] = str(answer["label"])
        if answer.get("confidence") is not None:
            record["confidence"] = float(answer["confidence"])
    return record


# ---------------------------------------------------------------------- the writer side

class SpoolWriter:
    """A worker's spool: one ``*.open`` file at a time, locked by this process for as long
    as it writes there, renamed to ``*.ready`` by ``rotate``. Meant for one thread (the
    worker's event loop): ``append`` is one ``write`` system call, no fsync (a power loss may
    drop the last captures, never corrupt a line that an import would then read)."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        host = "".join(c if c.isalnum() or c in ".-" else "-" for c in socket.gethostname()) or "host"
        self.writer_id = f"{host}~{os.getpid()}~{uuid.uuid4().hex[:8]}"
        self._fd: int | None = None
        self._path: Path | None = None
        self._seq = 0
        self.samples = 0  # lines in the open file

    @property
    def path(self) -> Path | None:
        return self._path

    def _open(self) -> None:
        self._seq += 1
        path = self.directory / f"{self.writer_id}~{self._seq:06d}{_OPEN}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_EXCL, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)  # a new file of ours: nobody else holds it
        self._fd, self._path, self.samples = fd, path, 0

    def append(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n").encode()
        if self._fd is None:
            self._open()
        view = memoryview(line)
        while view:  # a regular file takes the whole line unless the disk is full
            written = os.write(self._fd, view)
            view = view[written:]
        self.samples += 1

    def rotate(self) -> Path | None:
        """Hands the open file over to the importers (renamed to ``*.ready`` under our lock,
        then closed); the next ``append`` starts a new one. ``None`` when nothing was spooled."""
        if self._fd is None:
            return None
        fd, path = self._fd, self._path
        self._fd, self._path = None, None
        ready = path.with_suffix(_READY)
        try:
            if self.samples:
                os.rename(path, ready)
            else:
                os.unlink(path)
                ready = None
        finally:
            os.close(fd)
            self.samples = 0
        return ready

    def close(self) -> Path | None:
        return self.rotate()


# ---------------------------------------------------------------------- the import side

@dataclass
class IntakeResult:
    dataset: str
    branch: str = INTAKE
    files: int = 0  # spool files read and deleted
    lines: int = 0  # captures read from them
    imported: int = 0  # new samples committed to the branch
    duplicates: int = 0  # captures of a sample already on the branch (or earlier in this import)
    skipped: int = 0  # torn or unreadable lines
    recovered: int = 0  # .open files of writers that are gone, taken over as ready
    busy: int = 0  # ready files another importer holds
    snapshot_id: int | None = None
    seconds: float = 0.0
    ids: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _lock_path(path: Path) -> int | None:
    """An fd of ``path`` with its exclusive lock taken, or ``None`` if another process holds
    the lock or the path no longer names the file we opened (renamed or deleted meanwhile)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return None
        raise
    try:
        same = os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        same = False
    if not same:
        os.close(fd)
        return None
    return fd


def recover_abandoned(directory: Path) -> int:
    """Renames the ``*.open`` files whose writer is gone (their lock can be taken) to
    ``*.ready``; returns how many."""
    recovered = 0
    for path in sorted(Path(directory).glob(f"*{_OPEN}")):
        fd = _lock_path(path)
        if fd is None:
            continue
        try:
            os.rename(path, path.with_suffix(_READY))
            recovered += 1
            log.info("spool file %s of a writer that is gone taken over for import", path.name)
        except FileNotFoundError:
            pass
        finally:
            os.close(fd)
    return recovered


@contextlib.contextmanager
def _claimed(directory: Path, limit: int | None) -> Iterator[tuple[list[tuple[Path, int]], int]]:
    """The ready files this importer could lock (up to ``limit``), locked until the block
    ends, and how many another importer holds."""
    held: list[tuple[Path, int]] = []
    busy = 0
    try:
        for path in sorted(Path(directory).glob(f"*{_READY}")):
            if limit is not None and len(held) >= limit:
                break
            fd = _lock_path(path)
            if fd is None:
                busy += path.exists()
                continue
            held.append((path, fd))
        yield held, busy
    finally:
        for _, fd in held:
            os.close(fd)


def _read_lines(path: Path, fd: int, result: IntakeResult) -> list[dict[str, Any]]:
    with os.fdopen(os.dup(fd), "rb") as handle:
        data = handle.read()
    records = []
    lines = data.split(b"\n")
    if lines and lines[-1] != b"":
        # No newline at the end: its writer was killed in the middle of that line.
        log.warning("%s: torn last line (%d bytes) skipped", path.name, len(lines[-1]))
        result.skipped += 1
    for number, line in enumerate(lines[:-1], start=1):
        if not line:
            continue
        try:
            record = json.loads(line)
            if record.get("v") != RECORD_VERSION or not isinstance(record.get("id"), str):
                raise ValueError(f"not a version {RECORD_VERSION} capture record")
            records.append(record)
        except ValueError as exc:
            log.warning("%s line %d skipped: %s", path.name, number, exc)
            result.skipped += 1
    return records


def _rows(records: list[dict[str, Any]], result: IntakeResult):
    from train_platform.datasets.schema import build_samples

    ids, series, labels, sources, confidence, annotators, status, batches = [], [], [], [], [], [], [], []
    for record in records:
        try:
            shape = tuple(int(n) for n in record["shape"])
            values = np.frombuffer(base64.b64decode(record["values"], validate=True), dtype="<f4").reshape(shape)
            label = record.get("label")
            day = datetime.fromtimestamp(float(record["at"]), tz=timezone.utc).strftime("%Y-%m-%d")
            model, version = str(record["model"]), int(record["version"])
            conf = record.get("confidence")
            if values.ndim != 2 or values.size == 0 or not np.isfinite(values).all():
                raise ValueError(f"series of shape {values.shape} is empty or not finite")
            if conf is not None and not 0.0 <= float(conf) <= 1.0:
                raise ValueError(f"confidence {conf!r} is outside [0, 1]")
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("capture %r skipped: %s", record.get("id"), exc)
            result.skipped += 1
            continue
        ids.append(record["id"])
        series.append(values)
        labels.append(None if label is None else str(label))
        sources.append(None if label is None else "model")
        confidence.append(None if label is None or conf is None else float(conf))
        annotators.append(f"model:{model}:v{version}")
        status.append("raw" if label is None else "pending")
        batches.append(f"served-{model}-{day}")
    return build_samples(ids, series, labels=labels, label_source=sources, confidence=confidence,
                         annotator=annotators, status=status, batch_id=batches)


def ensure_intake(dataset: Dataset) -> None:
    """The ``intake`` branch, created from main on first use (by whoever gets there first)."""
    if INTAKE not in dataset.refs():
        try:
            dataset.branch(INTAKE)
        except RefExistsError:
            pass


def _append_new(dataset: Dataset, rows, result: IntakeResult) -> None:
    """Appends the rows whose ids ``intake`` does not hold yet, recomputing after a race with
    another importer that committed some of the same ids."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from train_platform.datasets.changes import existing_ids

    ids = rows.column("sample_id").to_pylist()
    held: set[str] = set()
    for _attempt in range(10):
        table = dataset._table.refresh()  # noqa: SLF001 - this package's own table handle
        held = existing_ids(table, table.metadata.refs[INTAKE].snapshot_id, ids)
        new = rows.filter(pc.invert(pc.is_in(rows.column("sample_id"), value_set=pa.array(sorted(held), pa.string()))))
        if new.num_rows == 0:
            break
        models = sorted({a.rsplit(":", 1)[0].removeprefix("model:") for a in new.column("annotator").to_pylist()})
        try:
            result.snapshot_id = dataset.append(new, INTAKE, operation=OPERATION,
                                                message=f"intake {new.num_rows} served sample(s) of {', '.join(models)}")
        except InvalidSamplesError as exc:
            if "already has sample" not in str(exc):
                raise
            log.info("%s@%s: another importer committed some of these samples; recomputing", dataset.name, INTAKE)
            continue
        result.imported = new.num_rows
        result.ids = new.column("sample_id").to_pylist()
        break
    else:
        raise DatasetError(f"{dataset.name}@{INTAKE}: served samples kept colliding with other importers' commits")
    result.duplicates += len(held)


def import_spool(dataset: Dataset, directory: Path | None = None, *, limit_files: int | None = None) -> IntakeResult:
    """Imports the ready spool files of ``directory`` (default: this installation's spool of
    ``dataset``) into ``dataset``'s ``intake`` branch, exactly once each (module docstring).
    Files whose import fails stay where they are for the next import."""
    started = time.perf_counter()
    directory = Path(directory) if directory is not None else spool_dir(dataset.settings.home, dataset.name)
    result = IntakeResult(dataset=dataset.name)
    if not directory.is_dir():
        return result
    result.recovered = recover_abandoned(directory)
    with _claimed(directory, limit_files) as (held, busy):
        result.busy = busy
        if not held:
            result.seconds = time.perf_counter() - started
            return result
        records: dict[str, dict[str, Any]] = {}
        for path, fd in held:
            for record in _read_lines(path, fd, result):
                result.lines += 1
                if record["id"] in records:
                    result.duplicates += 1  # a replayed key: the first capture is kept
                else:
                    records[record["id"]] = record
        if records:
            rows = _rows(list(records.values()), result)
            if rows.num_rows:
                ensure_intake(dataset)
                _append_new(dataset, rows, result)
        for path, _ in held:
            os.unlink(path)
        result.files = len(held)
    result.seconds = time.perf_counter() - started
    log.info("%s@%s: %d served sample(s) imported from %d spool file(s), %d duplicate(s), %d skipped",
             dataset.name, INTAKE, result.imported, result.files, result.duplicates, result.skipped)
    return result


def check_capture_target(name: str, user: str, settings: Settings) -> Dataset:
    """The dataset captures go to, opened as ``user``, who must be able to write to it:
    ``DatasetNotFoundError`` or ``PermissionDeniedError`` otherwise, naming the setting."""
    from train_platform.datasets.dataset import open_dataset
    from train_platform.datasets.exceptions import DatasetNotFoundError

    try:
        dataset = open_dataset(name, user=user, settings=settings)
    except DatasetNotFoundError as exc:
        raise DatasetNotFoundError(f"TP_SERVE_CAPTURE_DATASET: {exc} (create it with `tp dataset import`)") from exc
    from train_platform.datasets.access import AccessStore

    role = AccessStore(settings.catalog_uri).role_of(name, user)
    if role not in ("writer", "owner"):
        raise PermissionDeniedError(
            f"TP_SERVE_CAPTURE_DATASET: the service acts as {user!r}, who has "
            f"{'role ' + repr(role) if role else 'no role'} on dataset {name!r}; capturing needs writer "
            f"(`tp dataset grant {name} {user} writer`)")
    return dataset


__all__ = [
    "INTAKE", "IntakeResult", "SpoolWriter", "capture_bucket", "capture_record", "check_capture_target",
    "ensure_intake", "import_spool", "is_captured", "recover_abandoned", "served_sample_id", "spool_dir",
]
