"""``tp dataset``: versioned datasets from the command line.

Every sub-command acts as the OS user it runs as, and is checked against that user's role
on the dataset; ``--as USER`` (else ``TP_USER``) is reserved to a platform-admin
(``train_platform.registry.identity``; anyone else gets exit 2). Commands that print data take ``--json``.
Exit codes: 0 ok, 1 error, 2 bad input, 3 merge conflict, 4 dataset locked, 5 permission denied.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import timedelta
from typing import Any


def _add_user(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--as", dest="user", metavar="USER",
                        help="act as USER (platform-admins only; default: the OS user, or TP_USER for an admin)")


def acting_user(args: argparse.Namespace) -> str:
    """Who a command acts as: the OS user, or ``--as`` / ``TP_USER`` for a platform-admin
    (``IdentityError``, exit 2, for anyone else)."""
    from train_platform.registry.identity import acting_user as resolve

    return resolve(requested=getattr(args, "user", None))


def _add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("dataset", help="versioned datasets (Iceberg): import, branch, label, merge, ...")
    commands = parser.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)

    p = commands.add_parser("import", help="create a dataset (or add samples to it) from a file or aeon:NAME")
    p.add_argument("name", metavar="NAME[@BRANCH]")
    p.add_argument("--from", dest="source", required=True, metavar="REF", help="file.csv, file.parquet, file.npz or aeon:NAME[:split]")
    p.add_argument("-m", "--message", help="snapshot message")
    _add_user(p)
    _add_json(p)
    p.set_defaults(func=cmd_import)

    p = commands.add_parser("list", help="list datasets")
    _add_json(p)
    p.set_defaults(func=cmd_list)

    p = commands.add_parser("refs", help="list a dataset's branches and tags")
    p.add_argument("name", metavar="NAME")
    _add_user(p)
    _add_json(p)
    p.set_defaults(func=cmd_refs)

    p = commands.add_parser("branch", help="create a branch (metadata only, no data copied)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("branch", metavar="BRANCH")
    p.add_argument("--from", dest="from_ref", default=None, metavar="REF", help="branch, tag or snapshot id (default main)")
    _add_user(p)
    p.set_defaults(func=cmd_branch)

    p = commands.add_parser("tag", help="name a snapshot forever (never expired)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("tag", metavar="TAG")
    p.add_argument("--ref", default=None, metavar="REF", help="branch, tag or snapshot id to tag (default main)")
    _add_user(p)
    p.set_defaults(func=cmd_tag)

    p = commands.add_parser("label", help="set labels; without @BRANCH they go to your own branch user/<you>")
    p.add_argument("name", metavar="NAME[@BRANCH]")
    p.add_argument("labels", nargs="+", metavar="ID=LABEL")
    p.add_argument("--source", default="human", choices=("human", "model", "imported"))
    p.add_argument("--confidence", type=float, default=None)
    p.add_argument("--status", default="confirmed", choices=("raw", "pending", "confirmed"))
    p.add_argument("-m", "--message", help="snapshot message")
    _add_user(p)
    _add_json(p)
    p.set_defaults(func=cmd_label)

    p = commands.add_parser("merge", help="merge a branch into main (exit 3 and the ids on a conflict)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("branch", metavar="BRANCH")
    p.add_argument("--wait", type=float, default=None, metavar="SECONDS", help="wait this long for the version lock")
    p.add_argument("-m", "--message", help="snapshot message")
    _add_user(p)
    _add_json(p)
    p.set_defaults(func=cmd_merge)

    p = commands.add_parser("show", help="samples at a branch, tag or snapshot")
    p.add_argument("name", metavar="NAME[@REF]")
    p.add_argument("--limit", type=int, default=20, help="rows to print (0: all)")
    p.add_argument("--out", metavar="FILE.parquet", help="also write every sample to a Parquet file")
    _add_user(p)
    _add_json(p)
    p.set_defaults(func=cmd_show)

    p = commands.add_parser("log", help="snapshots reachable from a ref, newest first")
    p.add_argument("name", metavar="NAME[@REF]")
    p.add_argument("--limit", type=int, default=None)
    _add_user(p)
    _add_json(p)
    p.set_defaults(func=cmd_log)

    p = commands.add_parser("diff", help="sample ids added, changed and removed from REF1 to REF2")
    p.add_argument("name", metavar="NAME")
    p.add_argument("ref1", metavar="REF1")
    p.add_argument("ref2", metavar="REF2")
    _add_user(p)
    _add_json(p)
    p.set_defaults(func=cmd_diff)

    p = commands.add_parser("revert", help="make main hold a snapshot's samples again (new snapshot)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("to", metavar="REF", help="snapshot id, tag or branch whose content main gets")
    p.add_argument("--wait", type=float, default=None, metavar="SECONDS", help="wait this long for the version lock")
    p.add_argument("-m", "--message", help="snapshot message")
    _add_user(p)
    p.set_defaults(func=cmd_revert)

    p = commands.add_parser("grant", help="give USER a role: owner, writer, reader, or none to remove")
    p.add_argument("name", metavar="NAME")
    p.add_argument("grantee", metavar="USER")
    p.add_argument("role", choices=("owner", "writer", "reader", "none"))
    _add_user(p)
    p.set_defaults(func=cmd_grant)

    p = commands.add_parser("audit", help="who did what to a dataset, newest first")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--limit", type=int, default=None)
    _add_user(p)
    _add_json(p)
    p.set_defaults(func=cmd_audit)

    p = commands.add_parser("expire", help="drop old snapshots (tags, branch heads and merge bases are kept)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--older-than", type=float, default=7.0, metavar="DAYS", help="keep snapshots younger than this (default 7)")
    p.add_argument("--retain-last", type=int, default=10, metavar="N", help="keep the newest N of every branch (default 10)")
    p.add_argument(
        "--orphan-grace", type=float, default=60.0, metavar="MINUTES",
        help="delete unreferenced data files older than this (default 60, at least 30: spares writes in flight)",
    )
    p.add_argument("--keep-files", action="store_true", help="delete no data files, only expire snapshots")
    p.add_argument("--wait", type=float, default=None, metavar="SECONDS")
    _add_user(p)
    _add_json(p)
    p.set_defaults(func=cmd_expire)

    from train_platform.cli import dataset_check

    dataset_check.register(commands)

    from train_platform.cli import dataset_sampling

    dataset_sampling.register(commands)

    from train_platform.cli import dataset_intake

    dataset_intake.register(commands)


def _emit(args: argparse.Namespace, data: Any, text: str) -> None:
    if getattr(args, "json", False):
        json.dump(data, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        print(text)


def _open(name: str, args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from train_platform.datasets.dataset import open_dataset

    return open_dataset(name, user=acting_user(args))


def cmd_import(args: argparse.Namespace) -> int:
    from train_platform.datasets.catalog import get_catalog, identifier
    from train_platform.datasets.dataset import create_dataset, creation_unfinished
    from train_platform.datasets.refs import MAIN, parse_ref
    from train_platform.settings import get_settings

    name, branch = parse_ref(args.name)
    settings = get_settings()
    # A creation killed before its first commit is finished by its creator's next import.
    if get_catalog(settings).table_exists(identifier(name)) and not (
            branch in (None, MAIN) and creation_unfinished(name, acting_user(args), settings=settings)):
        dataset = _open(name, args)
        sid = dataset.import_(args.source, branch or MAIN, message=args.message)
        created = False
    else:
        if branch not in (None, MAIN):
            from train_platform.datasets.exceptions import DatasetNotFoundError

            raise DatasetNotFoundError(f"no dataset named {name!r}; import into main to create it")
        dataset = create_dataset(name, user=acting_user(args), source=args.source, message=args.message)
        sid = dataset.resolve(MAIN).snapshot_id
        created = True
    count = dataset.samples_count(branch or MAIN)
    _emit(
        args,
        {"dataset": name, "ref": branch or MAIN, "snapshot_id": sid, "created": created, "samples": count},
        f"{'created' if created else 'imported into'} {name}@{branch or MAIN}: snapshot {sid}, {count} samples",
    )
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from train_platform.datasets.dataset import list_datasets

    names = list_datasets()
    _emit(args, names, "\n".join(names) if names else "(no datasets)")
    return 0


def cmd_refs(args: argparse.Namespace) -> int:
    refs = _open(args.name, args).refs()
    _emit(args, refs, "\n".join(f"{kind['type']:6}  {name:30}  {kind['snapshot_id']}" for name, kind in refs.items()))
    return 0


def cmd_branch(args: argparse.Namespace) -> int:
    sid = _open(args.name, args).branch(args.branch, args.from_ref)
    print(f"branch {args.branch} of {args.name} at snapshot {sid}")
    return 0


def cmd_tag(args: argparse.Namespace) -> int:
    sid = _open(args.name, args).tag(args.tag, args.ref)
    print(f"tag {args.tag} of {args.name} at snapshot {sid}")
    return 0


def cmd_label(args: argparse.Namespace) -> int:
    from train_platform.datasets.exceptions import InvalidSamplesError
    from train_platform.datasets.refs import parse_ref, user_branch

    name, branch = parse_ref(args.name)
    labels: dict[str, str] = {}
    for item in args.labels:
        sample_id, sep, label = item.partition("=")
        if not sep or not sample_id or not label:
            raise InvalidSamplesError(f"{item!r}: expected ID=LABEL")
        if sample_id in labels:
            raise InvalidSamplesError(f"sample {sample_id!r} is labelled twice")
        labels[sample_id] = label
    dataset = _open(name, args)
    sid = dataset.label(labels, branch, source=args.source, confidence=args.confidence, status=args.status, message=args.message)
    target = branch or user_branch(dataset.user)
    _emit(args, {"dataset": name, "ref": target, "snapshot_id": sid, "labelled": len(labels)}, f"labelled {len(labels)} sample(s) on {name}@{target}: snapshot {sid}")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from train_platform.datasets.exceptions import MergeConflict

    dataset = _open(args.name, args)
    try:
        result = dataset.merge(args.branch, message=args.message, wait_s=args.wait)
    except MergeConflict as exc:
        _emit(args, {"conflict": True, "ids": exc.ids}, "\n".join(exc.ids))
        print(f"tp: error: {exc}", file=sys.stderr)
        return exc.exit_code
    _emit(
        args,
        result.as_dict(),
        f"{result.kind}: {args.branch} into main of {args.name}, snapshot {result.snapshot_id} "
        f"(+{result.added} ~{result.changed} -{result.removed})",
    )
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from train_platform.datasets.schema import series_of
    from train_platform.datasets.refs import MAIN, parse_ref

    name, ref = parse_ref(args.name)
    if args.limit < 0:
        from train_platform.datasets.exceptions import InvalidSamplesError

        raise InvalidSamplesError(f"--limit {args.limit}: give a number of rows, or 0 for all")
    dataset = _open(name, args)
    # Only the rows printed are read, unless --out asks for every sample.
    snapshot_id, shown = dataset.read_with_snapshot(ref, limit=None if args.out or not args.limit else args.limit)
    if args.out:
        import pyarrow.parquet as pq

        pq.write_table(shown, args.out)
    total = shown.num_rows if args.out or not args.limit else dataset.samples_count(snapshot_id)
    if args.limit:
        shown = shown.slice(0, args.limit)
    shapes = [None if s is None else list(s.shape) for s in series_of(shown)]
    rows = [
        {k: r[k] for k in ("sample_id", "label", "label_source", "confidence", "annotator", "status", "batch_id", "series_uri")}
        | {"shape": shape}
        for r, shape in zip(shown.select([c for c in shown.column_names if c != "values"]).to_pylist(), shapes)
    ]
    header = f"{name}@{ref or MAIN}: snapshot {snapshot_id}, {total} samples"
    lines = [header] + [
        f"{r['sample_id']:28}  {str(r['label']):16}  {r['status']:9}  {str(r['label_source']):8}  "
        f"{'' if r['confidence'] is None else format(r['confidence'], '.3f'):6}  {r['shape'] or r['series_uri']}"
        for r in rows
    ]
    if len(rows) < total:
        lines.append(f"... {total - len(rows)} more (--limit 0 for all)")
    _emit(args, {"dataset": name, "ref": ref or MAIN, "snapshot_id": snapshot_id, "samples": total, "rows": rows}, "\n".join(lines))
    return 0


def cmd_log(args: argparse.Namespace) -> int:
    from train_platform.datasets.refs import parse_ref

    name, ref = parse_ref(args.name)
    entries = _open(name, args).log(ref, limit=args.limit)
    text = "\n".join(
        f"{e.snapshot_id}  {e.timestamp:%Y-%m-%d %H:%M:%S}  {e.operation:8}  {e.user or '?':12}  {e.message or ''}" for e in entries
    )
    _emit(args, [e.as_dict() for e in entries], text)
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    result = _open(args.name, args).diff(args.ref1, args.ref2)
    lines = [f"{args.ref1} ({result.snapshot1}) -> {args.ref2} ({result.snapshot2})"]
    lines += [f"+ {i}" for i in result.added] + [f"~ {i}" for i in result.changed] + [f"- {i}" for i in result.removed]
    _emit(args, result.as_dict(), "\n".join(lines))
    return 0


def cmd_revert(args: argparse.Namespace) -> int:
    sid = _open(args.name, args).revert(args.to, message=args.message, wait_s=args.wait)
    print(f"reverted main of {args.name} to {args.to}: snapshot {sid}")
    return 0


def cmd_grant(args: argparse.Namespace) -> int:
    _open(args.name, args).grant(args.grantee, None if args.role == "none" else args.role)
    print(f"{args.grantee} is now {args.role} on {args.name}")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    entries = _open(args.name, args).audit(limit=args.limit)
    text = "\n".join(
        f"{e.at:%Y-%m-%d %H:%M:%S}  {e.user:12}  {e.operation:8}  {e.outcome:8}  {e.ref or '':20}  {e.snapshot_id or ''}" for e in entries
    )
    _emit(args, [e.as_dict() for e in entries], text or "(no entries)")
    return 0


def cmd_expire(args: argparse.Namespace) -> int:
    from train_platform.datasets.maintenance import check_orphan_grace

    grace = None if args.keep_files else check_orphan_grace(timedelta(minutes=args.orphan_grace), option="--orphan-grace")
    result = _open(args.name, args).expire(
        older_than=timedelta(days=args.older_than), retain_last=args.retain_last, orphan_grace=grace, wait_s=args.wait
    )
    _emit(args, result.as_dict(), f"expired {len(result.snapshots)} snapshot(s), deleted {len(result.deleted_files)} unused data file(s)")
    return 0
