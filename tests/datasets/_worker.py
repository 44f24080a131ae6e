"""Subprocess body for the multi-process dataset tests (run as a script, settings from TP_*)."""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np


def rows(ids: list[str], batch: str | None = None):  # type: ignore[no-untyped-def]
    from train_platform.datasets import build_samples

    series = [np.full((4, 2), float(i), dtype=np.float32) for i in range(len(ids))]
    return build_samples(ids, series, batch_id=batch)


def main() -> None:
    mode, name, branch, *rest = sys.argv[1:]
    from train_platform.datasets import open_dataset

    user = os.environ.get("TP_USER", "writer")
    dataset = open_dataset(name, user=user)
    if mode == "append":
        worker, commits = rest[0], int(rest[1])
        print("READY", flush=True)
        start_file = os.environ.get("TP_START_FILE")
        while start_file and not os.path.exists(start_file):  # a common start line for timing
            time.sleep(0.01)
        for i in range(commits):
            dataset.append(rows([f"w{worker}-{i:03d}"]), branch=branch, message=f"worker {worker} commit {i}")
        print(json.dumps({"retries": dataset.commit_retries}), flush=True)
    elif mode == "batches":
        count, size = int(rest[0]), int(rest[1])
        for b in range(count):
            dataset.append(rows([f"b{b:03d}-{i:04d}" for i in range(size)], batch=f"b{b:03d}"), branch=branch)
        print(json.dumps({"retries": dataset.commit_retries}), flush=True)
    elif mode == "hang-commit":
        # Crash injection: let the commit write its data and metadata files, then stop just
        # before the catalog's pointer swap so the parent can SIGKILL us there.
        from pyiceberg.catalog.sql import SqlCatalog

        original = SqlCatalog._write_metadata

        def write_then_hang(*args, **kwargs):  # type: ignore[no-untyped-def]
            original(*args, **kwargs)
            print("IN-COMMIT", flush=True)
            time.sleep(600)

        SqlCatalog._write_metadata = staticmethod(write_then_hang)  # type: ignore[method-assign]
        dataset.append(rows([f"doomed-{i}" for i in range(50)]), branch=branch)
    elif mode == "hold-lock":
        from train_platform.datasets.locks import version_lock

        with version_lock(f"dataset:{name}", f"{user} (test holder)", dataset.settings):
            print("LOCKED", flush=True)
            time.sleep(float(rest[0]))
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
