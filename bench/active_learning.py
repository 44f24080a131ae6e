"""Pool-based active learning on real data shipped inside aeon: how many labels each
sampling strategy needs to reach 95% of the accuracy of training on the whole pool.

    .venv/bin/python bench/active_learning.py --data aeon:JapaneseVowels
    .venv/bin/python bench/active_learning.py --data aeon:BasicMotions --tiny --out /tmp/al.json

The dataset's shipped splits are joined and split again (seeded, stratified) into a pool
(``--test-fraction`` held out for accuracy). Each repetition starts from a seed set of
``--seed-per-class`` labelled samples per class; every round trains a model from scratch on
the labelled samples with the platform's own training (``ml.training_run.run``, what
``python -m ml.train`` runs) for a fixed step budget, scores the pool and the test set as
``python -m ml.serving.batch_inference --out scores.npz`` does (``class_scores``: class
probabilities, pooled embeddings, MC-dropout passes for ``bald``), asks
``train_platform.sampling.selection.select`` (what ``tp dataset sample`` runs) for the next
labels, and "labels" them with the pool's true labels. The reference is a model trained the
same way on the whole pool. Both run in Python rather than as commands: starting torch twice
per round would cost more than the training itself on two cores. The independent runs (each
strategy's repetitions and the whole-pool references) are spread over ``--workers``
processes (default: one per core), each with ``TP_TORCH_THREADS`` torch threads (default 1).

``below_confidence`` is left out: it takes a threshold, not a number of labels per round.

Results go to ``bench/results/active_learning.json`` (``--out``), merged per dataset:
``{DATASET: {STRATEGY: {"labels_to_target", "curve": [[labels, accuracy], ...]},
"summary": {...}}, "selection_100k": {...}, "machine": {...}}``, where ``curve`` averages
the repetitions at each label count, ``labels_to_target`` is the first label count whose
mean accuracy reaches the target (``null``: not within the schedule), ``summary`` has the
reference accuracy, the target, the schedule, the best strategy and its labels relative to
random's, and ``selection_100k`` is the time ``select`` takes per strategy for a budget of
1,000 from 100,000 scored samples (target: 30 s). ``machine`` records the load average, which
a shared machine makes part of every figure.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "include"))

log = logging.getLogger("bench.active_learning")

RESULTS = ROOT / "bench" / "results" / "active_learning.json"
STRATEGIES = ("random", "least_confidence", "margin", "entropy", "bald", "diverse")
TARGET_FRACTION = 0.95  # of the whole pool's accuracy
TARGET_RATIO = 0.6  # the best strategy should need at most this share of random's labels
# Label counts per round, as multiples of the seed set: dense early, where strategies differ.
SCHEDULE = (1, 2, 3, 4, 6, 8, 11, 15, 20, 27, 36)


def load_split(ref: str, test_fraction: float, seed: int):
    """(pool, test) SeriesData: the shipped splits joined, then split per class."""
    from ml.data import load_ref

    data = load_ref(ref)
    if data.labels is None or data.label_kind == "numeric":
        raise SystemExit(f"{ref}: active learning needs a classification dataset")
    rng = np.random.default_rng(seed)
    labels = np.array(data.labels)
    test = []
    for c in sorted(set(labels)):
        index = np.flatnonzero(labels == c)
        rng.shuffle(index)
        test += index[: max(1, int(round(len(index) * test_fraction)))].tolist()
    pool = sorted(set(range(len(labels))) - set(test))
    return data.subset(pool), data.subset(sorted(test))


def train(data, out: Path, steps: int, seed: int, model: dict):
    """A model trained from scratch on ``data`` for about ``steps`` optimizer steps."""
    from ml.checkpoint import load_checkpoint
    from ml.config import TrainConfig
    from ml.training_run import TrainRequest, run

    batch = 32
    epochs = max(1, math.ceil(steps / math.ceil(len(data) / batch)))
    cfg = TrainConfig(epochs=epochs, batch_size=batch, seed=seed, val_fraction=0.0, log_every=0, plugins=[],
                      model=model)
    result = run(TrainRequest(mode="initial", task="classification", data=data, out=out, cfg=cfg, write_plot=False))
    return load_checkpoint(result.checkpoint)


def score(checkpoint, pool, test, mc_samples: int, seed: int):
    """(Scores of the pool, accuracy on the test set)."""
    from ml.serving.batch_inference import class_scores
    from train_platform.sampling.selection import Scores

    samples = [{"sensor": x} for x in pool.series + test.series]
    arrays = class_scores(checkpoint, samples, mc_samples=mc_samples, seed=seed)
    n = len(pool)
    classes = np.array(checkpoint.labels)
    predicted = classes[arrays["probabilities"][n:].argmax(1)]
    accuracy = float(np.mean(predicted == np.array(test.labels)))
    mc = arrays.get("mc_probabilities")
    scores = Scores(sample_ids=np.array(pool.ids), classes=classes, probabilities=arrays["probabilities"][:n],
                    embeddings=arrays["embeddings"][:n], mc_probabilities=None if mc is None else mc[:, :n])
    return scores, accuracy


def seed_set(pool, per_class: int, rng) -> list[int]:
    labels = np.array(pool.labels)
    chosen = []
    for c in sorted(set(labels)):
        index = np.flatnonzero(labels == c)
        chosen += rng.choice(index, size=min(per_class, len(index)), replace=False).tolist()
    return sorted(chosen)


def run_strategy(strategy: str, pool, test, schedule: list[int], args, repetition: int, work: Path) -> list[list]:
    from train_platform.sampling.selection import select

    rng = np.random.default_rng(1000 + repetition)
    labelled = seed_set(pool, args.seed_per_class, rng)
    index_of = {sid: i for i, sid in enumerate(pool.ids)}
    curve = []
    scores = None  # of the previous round's model; the first round only trains on the seed set
    for round_no, target in enumerate(schedule):
        if len(labelled) < target:
            taken = set(labelled)
            candidates = [pool.ids[i] for i in range(len(pool)) if i not in taken]
            picked = select(candidates, scores, strategy, budget=target - len(labelled), seed=1000 * repetition + round_no)
            labelled = sorted(labelled + [index_of[s] for s in picked.ids])
        checkpoint = train(pool.subset(labelled), work / f"{strategy}-{repetition}-{round_no}", args.steps,
                           seed=repetition, model=args.model_config)
        scores, accuracy = score(checkpoint, pool, test, args.mc_samples if strategy == "bald" else 0, seed=round_no)
        curve.append([len(labelled), accuracy])
        log.info("%s rep %d: %d labels -> accuracy %.3f", strategy, repetition, len(labelled), accuracy)
    return curve


# Set in each worker process by ``_init_worker``: the split and the parsed arguments.
_STATE: dict = {}


def _init_worker(args, split) -> None:
    import torch

    torch.set_num_threads(args.threads)
    _quiet_logs()
    _STATE["args"] = args
    _STATE["split"] = split


def _job(kind: str, repetition: int, schedule: list[int]):
    """One independent run: ``kind`` is ``"full"`` (the whole-pool reference: its accuracy)
    or a strategy (its curve). Runs in a worker set up by ``_init_worker``."""
    args = _STATE["args"]
    pool, test = _STATE["split"]
    with tempfile.TemporaryDirectory(prefix="tp-al-") as tmp:
        work = Path(tmp)
        if kind == "full":
            checkpoint = train(pool, work / f"full-{repetition}", args.steps, seed=repetition, model=args.model_config)
            accuracy = score(checkpoint, pool, test, 0, 0)[1]
            log.info("whole pool rep %d: accuracy %.3f", repetition, accuracy)
            return accuracy
        return run_strategy(kind, pool, test, schedule, args, repetition, work)


def _quiet_logs() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("ml").setLevel(logging.WARNING)
    logging.getLogger("train_platform").setLevel(logging.WARNING)


def labels_to_target(curve: list[list], target: float) -> int | None:
    return next((int(n) for n, acc in curve if acc >= target), None)


def selection_timing(n: int = 100_000, budget: int = 1000) -> dict:
    """Seconds ``select`` takes per strategy for ``budget`` of ``n`` synthetic scored samples
    (10 classes, 64-dimensional embeddings, 20 MC-dropout passes)."""
    from train_platform.sampling.selection import STRATEGIES as ALL
    from train_platform.sampling.selection import Scores, select

    rng = np.random.default_rng(0)
    k, d, s = 10, 64, 20
    logits = rng.normal(0, 2, (n, k))
    p = np.exp(logits)
    p /= p.sum(1, keepdims=True)
    mc = np.exp(logits[None] + rng.normal(0, 1, (s, n, k)))
    mc /= mc.sum(-1, keepdims=True)
    ids = np.array([f"s{i:06d}" for i in range(n)])
    scores = Scores(ids, np.array([f"c{i}" for i in range(k)]), p.astype(np.float32),
                    rng.normal(size=(n, d)).astype(np.float32), mc.astype(np.float32))
    seconds = {}
    for strategy in ALL:
        kw = {"threshold": 0.3} if strategy == "below_confidence" else {"budget": budget}
        started = time.perf_counter()
        select(ids.tolist(), scores, strategy, **kw)
        seconds[strategy] = round(time.perf_counter() - started, 2)
    return {"pool": n, "budget": budget, "seconds": seconds, "target_s": 30.0,
            "met": max(seconds.values()) <= 30.0}


def run_jobs(jobs: list[tuple[str, int]], schedule: list[int], args, split) -> dict:
    """``{(kind, repetition): outcome}`` for every job, run in this process with one worker
    and otherwise in ``args.workers`` spawned processes (each given the split once)."""
    if args.workers == 1:
        _init_worker(args, split)
        return {(kind, r): _job(kind, r, schedule) for kind, r in jobs}
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_init_worker, initargs=(args, split)) as executor:
        futures = {job: executor.submit(_job, *job, schedule) for job in jobs}
        return {job: future.result() for job, future in futures.items()}


def run_dataset(args) -> dict:
    name = args.data.split(":")[1]
    pool, test = load_split(args.data, args.test_fraction, seed=0)
    n_classes = len(set(pool.labels))
    seed_size = n_classes * args.seed_per_class
    schedule = sorted({min(len(pool), seed_size * m) for m in SCHEDULE if seed_size * m <= args.max_fraction * len(pool)}
                      | {seed_size})
    if args.tiny:
        schedule = schedule[:3]
    log.info("%s: pool %d, test %d, %d classes, schedule %s", args.data, len(pool), len(test), n_classes, schedule)
    started = time.monotonic()
    jobs = [("full", r) for r in range(args.repeats)] + [(s, r) for s in args.strategies for r in range(args.repeats)]
    outcomes = run_jobs(jobs, schedule, args, (pool, test))
    reference = float(np.mean([outcomes["full", r] for r in range(args.repeats)]))
    target = TARGET_FRACTION * reference
    log.info("%s: whole pool accuracy %.3f, target %.3f", name, reference, target)
    result: dict = {}
    for strategy in args.strategies:
        curves = [outcomes[strategy, r] for r in range(args.repeats)]
        curve = [[int(curves[0][i][0]), round(float(np.mean([c[i][1] for c in curves])), 4)]
                 for i in range(len(schedule))]
        result[strategy] = {"labels_to_target": labels_to_target(curve, target), "curve": curve}
    reached = {s: r["labels_to_target"] for s, r in result.items() if s != "random" and r["labels_to_target"] is not None}
    random_labels = result.get("random", {}).get("labels_to_target")
    best = min(reached, key=reached.get) if reached else None
    ratio = None
    if best is not None and random_labels:
        ratio = round(reached[best] / random_labels, 3)
    result["summary"] = {
        "pool": len(pool), "test": len(test), "classes": n_classes, "schedule": schedule,
        "seed_per_class": args.seed_per_class, "repeats": args.repeats, "steps_per_training": args.steps,
        "full_pool_accuracy": round(reference, 4), "target_accuracy": round(target, 4),
        "best_strategy": best, "best_labels_to_target": None if best is None else reached[best],
        "random_labels_to_target": random_labels, "best_vs_random": ratio,
        "target_met": ratio is not None and ratio <= TARGET_RATIO,
        "seconds": round(time.monotonic() - started, 1), "workers": args.workers, "torch_threads": args.threads,
        "tiny": bool(args.tiny),
    }
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, metavar="aeon:NAME", help="a classification dataset shipped in aeon")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"results file, merged per dataset (default {RESULTS})")
    parser.add_argument("--strategies", nargs="*", default=list(STRATEGIES), choices=STRATEGIES)
    parser.add_argument("--repeats", type=int, default=2, help="repetitions with other seed sets (default 2)")
    parser.add_argument("--seed-per-class", type=int, default=2, help="labelled samples per class to start from")
    parser.add_argument("--steps", type=int, default=150, help="optimizer steps per training run")
    parser.add_argument("--mc-samples", type=int, default=10, help="MC-dropout passes for bald")
    parser.add_argument("--test-fraction", type=float, default=0.3)
    parser.add_argument("--max-fraction", type=float, default=0.6, help="largest labelled share of the pool in the schedule")
    parser.add_argument("--tiny", action="store_true", help="three rounds, one repetition, few steps: a smoke run")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="processes for the independent runs (default: one per core)")
    parser.add_argument("--no-timing", action="store_true", help="skip the 100,000-sample selection timing")
    args = parser.parse_args()
    if not args.data.startswith("aeon:") or len(args.data.split(":")) != 2:
        parser.error("--data must be aeon:NAME")
    if args.tiny:
        args.repeats, args.steps = 1, min(args.steps, 20)
    # The model of ml's defaults, narrower: ten training runs per strategy on two cores.
    args.model_config = {"d_model": 32, "n_heads": 4, "d_ff": 64, "n_layers": 2}
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    _quiet_logs()

    import torch

    threads = args.threads = int(os.environ.get("TP_TORCH_THREADS", "1"))
    torch.set_num_threads(threads)
    load_before = os.getloadavg()
    name = args.data.split(":")[1]
    payload = json.loads(args.out.read_text()) if args.out.exists() else {}
    payload[name] = run_dataset(args)
    if not args.no_timing:
        payload["selection_100k"] = selection_timing()
    payload["machine"] = {
        "cpu_count": os.cpu_count(), "workers": args.workers, "torch_threads": threads, "python": platform.python_version(),
        "torch": torch.__version__, "device": "cpu",
        f"load_average_{name}": {"before": [round(v, 2) for v in load_before],
                                 "after": [round(v, 2) for v in os.getloadavg()]},
        **{k: v for k, v in payload.get("machine", {}).items() if k.startswith("load_average_") and k != f"load_average_{name}"},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(json.dumps({name: payload[name]["summary"], "selection_100k": payload.get("selection_100k")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
