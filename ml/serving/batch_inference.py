"""``python -m ml.serving.batch_inference``: batch inference with a registered model version.

    python -m ml.serving.batch_inference --model model:NAME:ALIAS|vN --data REF --out predictions.jsonl

REF is a dataset ref ``tp://NAME@REF`` (read through the datasets reader), a
``.npz/.csv/.parquet`` file or ``aeon:NAME[:split]``. Each output line is
``{"id", "model", "model_version", ...answer}``; ``.parquet`` output is written when the
file name ends so. The file appears complete or not at all (written aside, then renamed).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from ml._cli import run_cli

log = logging.getLogger(__name__)

# Samples per predict() call: bounds memory on long data sets; predict batches by 64 inside.
CHUNK = 1024


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ml.serving.batch_inference",
                                description="Score a data set with a registered model.")
    p.add_argument("--model", required=True,
                   help="model reference: model:NAME:ALIAS, model:NAME:vN or model:NAME:latest")
    p.add_argument("--data", required=True, help="tp://NAME@REF, a .npz/.csv/.parquet file or aeon:NAME[:split]")
    p.add_argument("--out", required=True, type=Path, help="predictions file (.jsonl or .parquet)")
    return p


def score(model_ref: str, data_ref: str, out: Path) -> dict:
    from ml.checkpoint import load_checkpoint
    from ml.data import load_ref
    from ml.predict import predict
    from train_platform.registry import resolve

    found = resolve(model_ref)
    name, entry = found.ref.name, found.version
    checkpoint = load_checkpoint(found.checkpoint)
    data = load_ref(data_ref)
    rows = []
    for start in range(0, len(data.series), CHUNK):
        samples = []
        for i in range(start, min(start + CHUNK, len(data.series))):
            sample = {"sensor": data.series[i]}
            if data.timestamps is not None:
                sample["timestamps"] = data.timestamps[i]
            if data.extras is not None:
                sample.update(data.extras[i])
            samples.append(sample)
        for i, answer in enumerate(predict(checkpoint, samples), start=start):
            rows.append({"id": data.ids[i], "model": name, "model_version": entry.version, **answer})
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    if out.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        flat = [{**r, **({"probabilities": json.dumps(r["probabilities"])} if "probabilities" in r else {})} for r in rows]
        pq.write_table(pa.Table.from_pylist(flat), tmp)
    else:
        with open(tmp, "w") as handle:
            for row in rows:
                handle.write(json.dumps(row) + "\n")
    os.replace(tmp, out)
    summary = {"model": name, "model_version": entry.version, "data": data_ref, "predictions": len(rows), "out": str(out)}
    log.info("scored %d samples of %s with %s v%d into %s", len(rows), data_ref, name, entry.version, out)
    return summary


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    print(json.dumps(score(args.model, args.data, args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
