"""Data preparation, the default command of the ``data_processing`` task type.

    python -m ml.prepare --input PATH_OR_REF [--input ...] --out DIR

Each input is a data ref ``ml.data`` understands (an ``aeon:`` name, a ``tp://`` dataset ref,
a .npz/.csv/.parquet file) or a folder holding such files. All series are checked (no
empty sets, one channel count, finite values), joined, and written as one ``data.npz``
(``X`` padded to the longest series, ``lengths``, ``ids``, ``y`` when every series has a
label) that ``python -m ml.train --data DIR/data.npz`` reads. Nothing is written unless
every input is valid.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from ml.data import SeriesData, check_series, load_ref
from ml.exceptions import DataError
from train_platform.settings import configure_logging, redact

log = logging.getLogger("ml.prepare")
_SUFFIXES = (".npz", ".csv", ".parquet", ".pq")


def _expand(location: str) -> list[str]:
    path = Path(location)
    if path.is_dir():
        files = sorted(str(p) for p in path.rglob("*") if p.suffix.lower() in _SUFFIXES and p.is_file())
        if not files:
            raise DataError(f"input folder {location} holds no .npz, .csv or .parquet file")
        return files
    return [location]


def prepare(inputs: list[str], out_dir: Path) -> dict:
    parts: list[SeriesData] = [load_ref(ref) for location in inputs for ref in _expand(location)]
    series = [x for part in parts for x in part.series]
    ids = [f"{Path(part.ref).stem}:{i}" for part in parts for i in part.ids]
    labels = [label for part in parts for label in (part.labels or [None] * len(part))]
    merged = SeriesData(ref=", ".join(inputs), series=series, ids=ids, labels=labels)
    check_series(merged)  # channel counts must agree across inputs too
    if len(set(ids)) != len(ids):
        raise DataError("the inputs repeat series ids; give each input file a distinct name")
    longest = max(len(x) for x in series)
    X = np.zeros((len(series), longest, series[0].shape[1]), dtype=np.float32)
    for i, x in enumerate(series):
        X[i, : len(x)] = x
    arrays = {"X": X, "lengths": np.array([len(x) for x in series]), "ids": np.array(ids)}
    if all(label is not None for label in labels):
        arrays["y"] = np.array(labels)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Write then rename: a failed or killed run never leaves a half-written data.npz.
    fd, tmp = tempfile.mkstemp(dir=out_dir, suffix=".npz")
    os.close(fd)
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, out_dir / "data.npz")
    report = {"series": len(series), "channels": int(X.shape[2]), "max_length": longest,
              "labelled": sum(label is not None for label in labels), "inputs": inputs}
    (out_dir / "prepare.json").write_text(json.dumps(report, indent=2))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml.prepare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", action="append", required=True, help="data ref, file or folder (repeatable)")
    parser.add_argument("--out", required=True, type=Path, help="output folder for data.npz")
    args = parser.parse_args(argv)
    configure_logging(logging.INFO)  # redacting, as every ml command's (ml/_cli.py)
    try:
        report = prepare(args.input, args.out)
    except DataError as exc:
        print(f"error: {redact(exc)}", file=sys.stderr)
        return 2
    log.info("wrote %s: %d series, %d channels, %d labelled", args.out / "data.npz",
             report["series"], report["channels"], report["labelled"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
