"""``python -m ml.serving.batch_inference``: batch inference with a registered model version.

    python -m ml.serving.batch_inference --model model:NAME:ALIAS|vN --data REF --out predictions.jsonl
    python -m ml.serving.batch_inference --model REF --data REF --out scores.npz [--mc-samples S] [--seed N]

REF is a dataset ref ``tp://NAME@REF`` (read through the datasets reader), a
``.npz/.csv/.parquet`` file or ``aeon:NAME[:split]``. ``--checkpoint DIR`` scores with a
checkpoint folder instead of a registered version.

Each ``.jsonl`` line is ``{"id", "model", "model_version", ...answer}``; ``.parquet`` output
is written when the file name ends so. ``.npz`` output (classification models only) holds
the arrays that sampling and pre-labelling read:

- ``sample_ids`` (N,), ``classes`` (K,): the samples in data order and the class names;
- ``probabilities`` (N, K): softmax of the model's logits, dropout off;
- ``embeddings`` (N, D): the model's pooled representation, the mean of the encoder's
  outputs over every valid token (the input of the classification head), D = d_model;
- ``mc_probabilities`` (S, N, K) with ``--mc-samples S``: S forward passes with the dropout
  layers on (MC dropout, Gal & Ghahramani 2016), seeded by ``--seed``, so a rerun gives the
  same arrays;
- ``model``, ``model_version``: what scored them (``model_version`` -1 for ``--checkpoint``).

Every output appears complete or not at all (written aside, then renamed).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np

from ml._cli import run_cli

log = logging.getLogger(__name__)

# Samples per predict() call: bounds memory on long data sets; predict batches by 64 inside.
CHUNK = 1024


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ml.serving.batch_inference",
                                description="Score a data set with a registered model.")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="model reference: model:NAME:ALIAS, model:NAME:vN or model:NAME:latest")
    which.add_argument("--checkpoint", type=Path, help="a checkpoint folder instead of a registered version")
    p.add_argument("--data", required=True, help="tp://NAME@REF, a .npz/.csv/.parquet file or aeon:NAME[:split]")
    p.add_argument("--out", required=True, type=Path,
                   help="predictions file (.jsonl or .parquet), or class scores (.npz, classification only)")
    p.add_argument("--mc-samples", type=int, default=0, metavar="S",
                   help="with an .npz output: also S forward passes with dropout on (mc_probabilities)")
    p.add_argument("--seed", type=int, default=0, help="seed of the MC dropout passes (default 0)")
    return p


def _load_model(model_ref: str | None, checkpoint_dir: Path | None):
    """``(name, version, checkpoint)``; version is -1 for a checkpoint folder."""
    from ml.checkpoint import load_checkpoint

    if checkpoint_dir is not None:
        return str(checkpoint_dir), -1, load_checkpoint(checkpoint_dir)
    from train_platform.registry import resolve

    found = resolve(model_ref)
    return found.ref.name, found.version.version, load_checkpoint(found.checkpoint)


def _samples(data, start: int, stop: int) -> list[dict]:
    samples = []
    for i in range(start, stop):
        sample = {"sensor": data.series[i]}
        if data.timestamps is not None:
            sample["timestamps"] = data.timestamps[i]
        if data.extras is not None:
            sample.update(data.extras[i])
        samples.append(sample)
    return samples


def class_scores(checkpoint, samples: list[dict], mc_samples: int = 0, seed: int = 0) -> dict[str, np.ndarray]:
    """``probabilities`` (N, K) and ``embeddings`` (N, D) of validated ``samples``, and with
    ``mc_samples`` S > 0 ``mc_probabilities`` (S, N, K) from S passes with dropout on."""
    import torch
    from torch import nn

    from ml.collate import collate
    from ml.exceptions import CheckpointError, InvalidInputError
    from ml.predict import BATCH_SIZE, validate_sample

    if checkpoint.task != "classification":
        raise CheckpointError(f"{checkpoint.path}: class scores (.npz) need a classification model, this one is {checkpoint.task}")
    validated = []
    for i, s in enumerate(samples):
        try:
            validated.append(validate_sample(checkpoint, s))
        except InvalidInputError as e:
            raise InvalidInputError(f"sample {i}: {e}") from e
    model, dev, norm = checkpoint.model, checkpoint.device, checkpoint.normalization
    examples = [v.arrays() for v in validated]

    def passes() -> np.ndarray:
        probs = []
        for start in range(0, len(examples), BATCH_SIZE):
            inputs, _ = collate(examples[start : start + BATCH_SIZE], "classification", norm, device=dev)
            out, _ = model(inputs, "classification")
            probs.append(torch.softmax(out["logits"].float(), dim=-1).cpu().numpy())
        return np.concatenate(probs)

    pooled: list[torch.Tensor] = []
    with torch.inference_mode():
        # The classification head's input is the pooled representation: a forward hook
        # reads it in the same pass that gives the logits.
        hook = model.classifier.register_forward_hook(lambda module, args, output: pooled.append(args[0]))
        try:
            result = {"probabilities": passes()}
        finally:
            hook.remove()
        result["embeddings"] = torch.cat(pooled).float().cpu().numpy()
        if mc_samples > 0:
            # MC dropout: train mode turns every nn.Dropout and the attention dropout on.
            # The model has no batch-norm, whose running statistics train mode would
            # update; a norm layer with running statistics stays in eval mode all the same.
            model.train()
            for module in model.modules():
                if isinstance(module, nn.modules.batchnorm._NormBase):
                    module.eval()
            try:
                torch.manual_seed(seed)
                result["mc_probabilities"] = np.stack([passes() for _ in range(mc_samples)])
            finally:
                model.eval()
    return result


def score(model_ref: str | None, data_ref: str, out: Path, *, checkpoint_dir: Path | None = None,
          mc_samples: int = 0, seed: int = 0) -> dict:
    from ml.data import load_ref
    from ml.exceptions import ConfigError
    from ml.predict import predict

    as_arrays = out.suffix == ".npz"
    if mc_samples < 0:
        raise ConfigError(f"--mc-samples must be >= 0, got {mc_samples}")
    if mc_samples and not as_arrays:
        raise ConfigError(f"--mc-samples needs an .npz output, got {out}")
    name, version, checkpoint = _load_model(model_ref, checkpoint_dir)
    data = load_ref(data_ref)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    if as_arrays:
        scores = class_scores(checkpoint, _samples(data, 0, len(data.series)), mc_samples, seed)
        with open(tmp, "wb") as handle:
            np.savez(handle, sample_ids=np.array(data.ids, dtype=str), classes=np.array(checkpoint.labels, dtype=str),
                     model=np.array(name), model_version=np.array(version), **scores)
        os.replace(tmp, out)
        log.info("class scores of %d samples of %s with %s v%d (%d MC passes) into %s",
                 len(data.ids), data_ref, name, version, mc_samples, out)
        return {"model": name, "model_version": version, "data": data_ref, "predictions": len(data.ids),
                "mc_samples": mc_samples, "out": str(out)}
    rows = []
    for start in range(0, len(data.series), CHUNK):
        samples = _samples(data, start, min(start + CHUNK, len(data.series)))
        for i, answer in enumerate(predict(checkpoint, samples), start=start):
            rows.append({"id": data.ids[i], "model": name, "model_version": version, **answer})
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
    summary = {"model": name, "model_version": version, "data": data_ref, "predictions": len(rows), "out": str(out)}
    log.info("scored %d samples of %s with %s v%d into %s", len(rows), data_ref, name, version, out)
    return summary


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    print(json.dumps(score(args.model, args.data, args.out, checkpoint_dir=args.checkpoint,
                           mc_samples=args.mc_samples, seed=args.seed)))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
