"""``tp dataset sample`` and ``tp dataset prelabel``: a model's view of a dataset's
unconfirmed samples, turned into a review queue or into pre-labels.

Both read one snapshot (``NAME@REF``), score it by running the scorer as a command
(``python -m ml.serving.batch_inference --out scores.npz``: this process never imports torch
or ``ml``), and write nothing until everything is known: a run that fails or is killed
before its last step leaves the dataset as it was. The one write is a single annotation
commit to the target branch (``--to BRANCH``, created at the snapshot read when missing),
and it never replaces a person's annotation (``schema.is_person_annotation``): the check is
made again on the state the commit lands on, so a label a person commits meanwhile wins.

Exit codes: 0 ok; 2 bad input (an unknown strategy, a budget the pool cannot meet, a
missing dataset, ref or model, a model that is not a classifier: nothing written); 5 the
acting user lacks the role; 1 any other error.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from train_platform.datasets.dataset import Dataset
    from train_platform.registry import ResolvedModel
    from train_platform.sampling.selection import Scores

log = logging.getLogger(__name__)

# MC-dropout passes for bald when --mc-samples is not given: BALD is usually estimated from
# 10 to 50 passes; 20 keeps a scoring run at 21 forward passes over the pool.
DEFAULT_MC_SAMPLES = 20
_ANNOTATION = ("sample_id", "label", "label_source", "confidence", "status", "alternatives")


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``sample`` and ``prelabel`` to the ``tp dataset`` sub-commands."""
    from train_platform.sampling import STRATEGIES

    p = commands.add_parser(
        "sample", help="active learning: pick the samples a person should label next",
        description="Select unconfirmed samples of NAME@REF by a strategy; --to BRANCH marks them pending there.",
    )
    p.add_argument("name", metavar="NAME[@REF]", help="dataset and branch, tag or snapshot id (default main)")
    p.add_argument("--strategy", required=True, metavar="S", help=f"one of {', '.join(STRATEGIES)}")
    p.add_argument("--budget", type=int, metavar="N", help="samples to select (below_confidence: at most)")
    p.add_argument("--threshold", type=float, metavar="F", help="below_confidence: select every sample the model is less sure of")
    p.add_argument("--model", metavar="MODEL_REF", help="model:NAME:ALIAS|vN whose scores rank the samples (all but random)")
    p.add_argument("--seed", type=int, default=0, help="seed of random, diverse and the MC-dropout passes (default 0)")
    p.add_argument("--min-per-class", type=int, default=0, metavar="K", help="at least K samples per predicted class where the pool has them")
    p.add_argument("--mc-samples", type=int, default=None, metavar="S",
                   help=f"bald: MC-dropout passes (default {DEFAULT_MC_SAMPLES})")
    p.add_argument("--include-confirmed", action="store_true", help="confirmed samples are candidates too")
    p.add_argument("--to", dest="to", metavar="BRANCH", help="mark the selected samples pending (awaiting review) on BRANCH")
    p.add_argument("--as", dest="user", metavar="USER", help="act as USER (default: TP_USER or $USER)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=cmd_sample)

    p = commands.add_parser(
        "prelabel", help="write a model's labels as pending pre-labels (never over a person's)",
        description="Pre-label the unconfirmed samples of NAME@REF with a model; a person reviews them later.",
    )
    p.add_argument("name", metavar="NAME[@REF]",
                   help="dataset and branch to pre-label (without @REF: your own branch user/<you>)")
    p.add_argument("--model", required=True, metavar="MODEL_REF", help="model:NAME:ALIAS|vN")
    p.add_argument("--accept-above", type=float, default=None, metavar="F",
                   help="pre-labels with confidence >= F get label_source model-accepted (still pending)")
    p.add_argument("--alternatives", type=int, default=None, metavar="K",
                   help="store the model's K next most likely labels with their probabilities (default 3; 0: none)")
    p.add_argument("--to", dest="to", metavar="BRANCH", help="write to BRANCH (created at REF when missing) instead of REF")
    p.add_argument("--as", dest="user", metavar="USER", help="act as USER (default: TP_USER or $USER)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=cmd_prelabel)


# ---- shared steps -------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Source:
    dataset: Dataset
    ref: str
    snapshot_id: int
    rows: dict[str, dict[str, Any]]  # sample id -> annotation columns at the snapshot


def _missing(exc: Exception) -> Exception:
    from train_platform.sampling.exceptions import MissingInputError

    error = MissingInputError(str(exc))
    error.__cause__ = exc
    return error


def _annotations(dataset: Dataset, ref: str | int) -> tuple[int, dict[str, dict[str, Any]]]:
    snapshot_id, table = dataset.read_with_snapshot(ref, columns=_ANNOTATION)
    rows = {row["sample_id"]: row for row in table.to_pylist()}
    for row in rows.values():  # no alternatives: null, [] or (a snapshot older than the column) absent
        row["alternatives"] = row.get("alternatives") or None
    return snapshot_id, rows


def acting_user(args: argparse.Namespace) -> str:
    """The OS user, or ``--as`` for a platform-admin (the rule of every ``tp dataset`` command)."""
    from train_platform.cli.dataset import acting_user as resolve

    return resolve(args)


def _open_source(text: str, user: str | None) -> _Source:
    """The dataset and the snapshot ``NAME@REF`` names (main without @REF), with its
    samples' annotations. A missing dataset or ref is bad input (exit 2)."""
    from train_platform.datasets.dataset import open_dataset
    from train_platform.datasets.exceptions import DatasetNotFoundError, RefNotFoundError
    from train_platform.datasets.refs import MAIN, parse_ref

    name, ref = parse_ref(text)
    try:
        dataset = open_dataset(name, user=user)
        snapshot_id, rows = _annotations(dataset, ref or MAIN)
    except (DatasetNotFoundError, RefNotFoundError) as exc:
        raise _missing(exc) from exc
    if not rows:
        from train_platform.sampling.exceptions import MissingInputError

        raise MissingInputError(f"{name}@{ref or MAIN} (snapshot {snapshot_id}) holds no samples")
    return _Source(dataset=dataset, ref=ref or MAIN, snapshot_id=snapshot_id, rows=rows)


def _target(dataset: Dataset, branch: str) -> bool:
    """Whether ``branch`` exists; a tag, a snapshot id or an invalid name is bad input.
    Checked before anything runs."""
    from train_platform.datasets.exceptions import DatasetError
    from train_platform.datasets.refs import check_ref_name
    from train_platform.sampling.exceptions import SamplingError

    refs = dataset.refs()
    if branch in refs:
        if refs[branch]["type"] != "branch":
            raise SamplingError(f"{dataset.name}: {branch!r} is a tag; annotations go to a branch (--to BRANCH)")
        return True
    try:
        check_ref_name(branch)
    except DatasetError as exc:
        raise SamplingError(f"{dataset.name}: cannot write to {branch!r}: {exc}") from exc
    return False


def _resolve_model(text: str) -> ResolvedModel:
    """The registered version ``text`` names; unknown models, versions and aliases, and
    models that are no classifiers, are bad input (exit 2)."""
    from train_platform.registry import resolve
    from train_platform.registry.exceptions import (
        AliasNotSetError,
        InvalidModelRefError,
        ModelNotFoundError,
        VersionNotFoundError,
    )
    from train_platform.sampling.exceptions import ScoresError

    try:
        found = resolve(text)
    except (InvalidModelRefError, ModelNotFoundError, VersionNotFoundError, AliasNotSetError) as exc:
        raise _missing(exc) from exc
    if found.version.task != "classification":
        raise ScoresError(f"{text} is a {found.version.task} model; sampling and pre-labels need a classification model")
    return found


def _score(source: _Source, model: ResolvedModel, folder: Path, *, mc_samples: int = 0, seed: int = 0) -> Scores:
    """Run the scorer on the source snapshot with the resolved version and read its scores."""
    from train_platform.sampling.exceptions import ScoringError
    from train_platform.sampling.selection import Scores

    out = folder / "scores.npz"
    # The exact version and snapshot: a promotion or a commit meanwhile changes nothing.
    model_ref = f"model:{model.ref.name}:v{model.version.version}"
    data_ref = f"tp://{source.dataset.name}@{source.snapshot_id}"
    command = [sys.executable, "-m", "ml.serving.batch_inference", "--model", model_ref, "--data", data_ref,
               "--out", str(out)]
    if mc_samples:
        command += ["--mc-samples", str(mc_samples), "--seed", str(seed)]
    log.info("scoring %s with %s%s", data_ref, model_ref, f" ({mc_samples} MC-dropout passes)" if mc_samples else "")
    run = subprocess.run(command, env={**os.environ, "TP_USER": source.dataset.user}, capture_output=True, text=True)
    if run.returncode != 0:
        lines = [line for line in run.stderr.splitlines() if line.strip()]
        reason = next((line for line in reversed(lines) if line.startswith("error:")), lines[-1] if lines else "no output")
        raise ScoringError(f"scoring {data_ref} with {model_ref} failed (exit {run.returncode}): {reason}", run.returncode)
    return Scores.load(out)


def _commit(
    dataset: Dataset,
    branch: str,
    create_from: int | None,
    updates: Sequence[Mapping[str, Any]],
    refuse_if: Callable[[Mapping[str, Any]], bool],
    *,
    operation: str,
    message: str,
) -> tuple[int | None, list[str]]:
    """Write ``updates`` to ``branch`` in one commit (creating the branch at ``create_from``
    first), leaving out any sample ``refuse_if`` holds for when the commit lands. Returns the
    new head (``None`` when nothing was left to write) and the ids left out."""
    from train_platform.datasets.exceptions import ProtectedSamplesError

    if create_from is not None:
        dataset.branch(branch, create_from)
    pending = list(updates)
    refused: list[str] = []
    while pending:
        try:
            return dataset.annotate(pending, branch, message=message, operation=operation, refuse_if=refuse_if), refused
        except ProtectedSamplesError as exc:
            # Someone annotated these meanwhile: theirs stays. Each round drops at least one.
            log.info("%s@%s: %d sample(s) were annotated meanwhile and are left as they are", dataset.name, branch, len(exc.ids))
            refused += exc.ids
            dropped = set(exc.ids)
            pending = [u for u in pending if u["sample_id"] not in dropped]
    return None, refused


def _emit(args: argparse.Namespace, data: dict, text: str) -> None:
    if args.json:
        json.dump(data, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(text)


# ---- tp dataset sample --------------------------------------------------------------------------
def cmd_sample(args: argparse.Namespace) -> int:
    from train_platform.sampling.exceptions import ScoresError
    from train_platform.sampling.selection import NEEDS_MC, NEEDS_MODEL, check_request, select

    check_request(args.strategy, args.budget, args.threshold, args.min_per_class)
    needs_model = args.strategy in NEEDS_MODEL or args.min_per_class > 0
    if needs_model and not args.model:
        what = f"strategy {args.strategy}" + (" with --min-per-class" if args.min_per_class else "")
        raise ScoresError(f"{what} ranks by a model's scores: give --model MODEL_REF")
    mc_samples = args.mc_samples if args.mc_samples is not None else (DEFAULT_MC_SAMPLES if args.strategy in NEEDS_MC else 0)
    if args.strategy in NEEDS_MC and mc_samples < 2:
        raise ScoresError(f"bald needs at least 2 MC-dropout passes, got --mc-samples {mc_samples}")
    source = _open_source(args.name, acting_user(args))
    candidates = sorted(i for i, row in source.rows.items() if args.include_confirmed or row["status"] != "confirmed")
    from train_platform.datasets.refs import MAIN

    if args.to and source.ref != MAIN and not args.include_confirmed:
        # Sampling an intake or pre-label branch for a review branch made from main: samples
        # a person confirmed on main already (an earlier round's review) are not candidates.
        on_main = _annotations(source.dataset, MAIN)[1]
        candidates = [i for i in candidates if on_main.get(i, {}).get("status") != "confirmed"]
    if not candidates:
        from train_platform.sampling.exceptions import NoCandidatesError

        raise NoCandidatesError(f"{source.dataset.name}@{source.ref}: every sample is confirmed, no candidate samples"
                                " to select from (--include-confirmed makes them candidates)")
    check_request(args.strategy, args.budget, args.threshold, args.min_per_class, pool=len(candidates))
    target_exists = _target(source.dataset, args.to) if args.to else None
    model = _resolve_model(args.model) if args.model else None

    scores = None
    with tempfile.TemporaryDirectory(prefix="tp-sample-") as folder:
        if model is not None:
            scores = _score(source, model, Path(folder), mc_samples=mc_samples, seed=args.seed)
        selection = select(candidates, scores, args.strategy, budget=args.budget, threshold=args.threshold,
                           min_per_class=args.min_per_class, seed=args.seed)

    marked = None
    if args.to:
        marked = _mark(source, args.to, target_exists, selection.ids, args.include_confirmed, args.strategy)
    name = source.dataset.name
    data = {
        **selection.as_dict(),
        "dataset": name,
        "ref": source.ref,
        "snapshot_id": source.snapshot_id,
        "model": None if model is None else f"model:{model.ref.name}:v{model.version.version}",
        "to": marked,
    }
    lines = [f"{name}@{source.ref} (snapshot {source.snapshot_id}): {len(selection.selected)} of {selection.pool}"
             f" candidate(s) by {args.strategy}"]
    lines += [f"{s.sample_id:28}  {s.score:.6g}" for s in selection.selected]
    if marked is not None:
        lines.append(f"marked {marked['marked']} sample(s) pending on {name}@{args.to}"
                     + (f": snapshot {marked['snapshot_id']}" if marked["snapshot_id"] is not None else ""))
    _emit(args, data, "\n".join(lines))
    return 0


def _mark(source: _Source, branch: str, exists: bool, ids: list[str], include_confirmed: bool, strategy: str) -> dict:
    """Mark the selected samples pending (awaiting review) on ``branch``, created from main
    when missing, so that merging it back changes the reviewed samples only. A sample's
    label, source and confidence at the sampled snapshot travel with it (a model's
    pre-label shows in the review), except over a person's annotation, which keeps its
    label and only becomes pending (``--include-confirmed``). Samples already in that state
    stay as they are, and so do those a person annotates meanwhile. Selected samples that
    are not on the branch (new recordings sampled from an intake or pre-label branch) are
    copied onto it from the sampled snapshot, pending, in a commit of their own before the
    others are marked: only they, not the rest of that branch, reach main with the review."""
    from train_platform.datasets.refs import MAIN
    from train_platform.datasets.schema import is_person_annotation

    dataset = source.dataset
    current = _annotations(dataset, branch if exists else MAIN)[1]
    absent = [i for i in ids if i not in current]
    if not exists:
        dataset.branch(branch)  # from main
        exists = True
    copied = _copy_pending(source, branch, absent, strategy) if absent else 0
    ids = [i for i in ids if i not in set(absent)]  # the rest are on the branch (created from main)
    persons = {i for i in ids if is_person_annotation(current[i])}
    # Confirmed on the branch though not where they were sampled: reviewed already.
    reviewed = [] if include_confirmed else [i for i in ids if current[i]["status"] == "confirmed"]
    updates = []
    for i in ids:
        if i in reviewed:
            continue
        update: dict[str, Any] = {"sample_id": i, "status": "pending"}
        if i not in persons:
            update.update({k: source.rows[i].get(k) for k in ("label", "label_source", "confidence", "alternatives")})
        if any(current[i].get(k) != v for k, v in update.items() if k != "sample_id"):
            updates.append(update)

    def annotated_meanwhile(row: Mapping[str, Any]) -> bool:
        return is_person_annotation(row) and row["sample_id"] not in persons

    sid, refused = (None, [])
    if updates:
        sid, refused = _commit(dataset, branch, None, updates, annotated_meanwhile,
                               operation="sample", message=f"sample {strategy}: {len(updates)} sample(s) awaiting review")
    head = dataset.resolve(branch).snapshot_id
    return {"branch": branch, "snapshot_id": head, "marked": copied + len(updates) - len(refused),
            "copied": copied, "unchanged": len(ids) - len(updates) - len(reviewed),
            "left_as_annotated": sorted(reviewed + refused), "committed": sid is not None or copied > 0}


def _copy_pending(source: _Source, branch: str, ids: list[str], strategy: str) -> int:
    """Append the samples ``ids`` of the sampled snapshot to ``branch``, pending review, with
    their annotation at that snapshot (a model's pre-label); returns how many."""
    import pyarrow as pa

    from train_platform.review.reading import load_table, rows_of

    # Only the selected rows are read (an id filter on the scan), not the whole snapshot.
    rows = rows_of(load_table(source.dataset), source.snapshot_id, ids)
    rows = rows.set_column(rows.schema.get_field_index("status"), "status",
                           pa.array(["pending"] * rows.num_rows, type=rows.schema.field("status").type))
    source.dataset.append(rows, branch, operation="sample",
                          message=f"sample {strategy}: {rows.num_rows} new sample(s) from {source.ref} awaiting review")
    return rows.num_rows


# ---- tp dataset prelabel ------------------------------------------------------------------------
def cmd_prelabel(args: argparse.Namespace) -> int:
    from train_platform.datasets.refs import parse_ref, user_branch
    from train_platform.datasets.schema import is_person_annotation
    from train_platform.sampling.exceptions import BudgetError
    from train_platform.sampling.selection import DEFAULT_ALTERNATIVES

    alternatives_k = DEFAULT_ALTERNATIVES if args.alternatives is None else args.alternatives
    if alternatives_k < 0:
        raise BudgetError(f"--alternatives must be 0 or more, got {alternatives_k}")
    if args.accept_above is not None and not 0.0 < args.accept_above <= 1.0:
        raise BudgetError(f"--accept-above must be in (0, 1], got {args.accept_above}")
    source = _open_source(args.name, acting_user(args))
    dataset = source.dataset
    branch = args.to or parse_ref(args.name)[1] or user_branch(dataset.user)
    exists = _target(dataset, branch)
    model = _resolve_model(args.model)
    current = _annotations(dataset, branch)[1] if exists else source.rows
    open_ids = {i for i, row in current.items() if not is_person_annotation(row)}
    kept = len(current) - len(open_ids)

    with tempfile.TemporaryDirectory(prefix="tp-prelabel-") as folder:
        scores = _score(source, model, Path(folder))
    predicted, confidence = scores.predicted, scores.confidence
    alternatives = scores.alternatives(alternatives_k)
    updates, unchanged, accepted = [], 0, 0
    for row, sample_id in enumerate(scores.sample_ids.tolist()):
        if sample_id not in open_ids:
            continue
        conf = float(confidence[row])
        is_accepted = args.accept_above is not None and conf >= args.accept_above
        update = {"sample_id": sample_id, "label": str(scores.classes[predicted[row]]), "confidence": conf,
                  "label_source": "model-accepted" if is_accepted else "model", "status": "pending",
                  "alternatives": alternatives[row] or None}
        now = current[sample_id]
        if all(now.get(k) == v for k, v in update.items()):
            unchanged += 1
            continue
        accepted += is_accepted
        updates.append(update)

    model_ref = f"model:{model.ref.name}:v{model.version.version}"
    sid, refused = None, []
    if updates:
        sid, refused = _commit(dataset, branch, None if exists else source.snapshot_id, updates, is_person_annotation,
                               operation="prelabel", message=f"prelabel {len(updates)} sample(s) with {model_ref}")
    elif not exists:
        dataset.branch(branch, source.snapshot_id)
    refused_set = set(refused)
    accepted -= sum(1 for u in updates if u["sample_id"] in refused_set and u["label_source"] == "model-accepted")
    head = dataset.resolve(branch).snapshot_id
    data = {
        "dataset": dataset.name, "ref": source.ref, "snapshot_id": source.snapshot_id, "model": model_ref,
        "branch": branch, "branch_snapshot_id": head, "prelabelled": len(updates) - len(refused),
        "accepted": accepted, "accept_above": args.accept_above, "unchanged": unchanged,
        "kept_person_labels": kept + len(refused), "committed": sid is not None,
    }
    _emit(args, data, f"pre-labelled {data['prelabelled']} sample(s) of {dataset.name}@{branch} with {model_ref}"
                      f" ({accepted} accepted, {unchanged} unchanged, {data['kept_person_labels']} person labels kept)"
                      + (f": snapshot {head}" if sid is not None else ": nothing to write"))
    return 0
