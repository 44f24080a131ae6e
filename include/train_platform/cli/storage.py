"""``tp storage``: the platform's object storage.

* ``tp storage init``: create the platform's buckets (warehouse, artifacts, intake; names
  from ``TP_WAREHOUSE_BUCKET``, ``TP_ARTIFACTS_BUCKET``, ``TP_INTAKE_BUCKET``) on the
  ``TP_S3_ENDPOINT`` endpoint where missing, and check each one by writing, reading back
  and deleting a small object (``train_platform.storage.object_store``). Running it again
  changes nothing. Exit 3 when the endpoint is unset, unreachable or refuses the
  credentials, with a message naming the endpoint and bucket and no secret.
* ``tp storage intake NAME[@BRANCH] --object URI ETAG FILE ...``: import recordings
  downloaded from object storage (``FILE``, any format ``tp dataset import --from`` reads)
  into ``NAME@BRANCH`` (default ``intake``, created from main when missing) as unlabelled
  samples (status ``raw``; labels in a file are dropped), one commit per object whose
  message records the object: ``intake s3://BUCKET/KEY (etag ETAG): N sample(s)``. An
  object whose URI and ETag a commit of the branch already records is not imported again,
  so the ``intake`` task type (``operators/intake.py``), which runs this after downloading
  new objects and moves them to a processed prefix afterwards, never imports one object
  twice, even when it is retried between the two steps. Every object is tried; exit 1 when
  one could not be imported (the others are), with the reasons in the output (and in
  ``--report PATH``, the same JSON, for the task).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from typing import Any

log = logging.getLogger(__name__)

INTAKE_BRANCH = "intake"
_RECORD = re.compile(r"^intake (s3://\S+) \(etag ([^)\s]+)\)")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("storage", help="object storage: the platform's buckets, intake of new recordings")
    commands = parser.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)

    p = commands.add_parser("init", help="create and check the warehouse, artifacts and intake buckets",
                            description="Create the platform's buckets on TP_S3_ENDPOINT where missing and check "
                                        "each one (write, read back, delete a small object). Idempotent.")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=cmd_init)

    p = commands.add_parser("intake", help="import downloaded objects into a dataset's intake branch, each once",
                            description="Import files downloaded from object storage into NAME@BRANCH (default "
                                        "intake, created from main) as unlabelled samples, one commit per object "
                                        "recording its URI and ETag; objects already recorded are skipped.")
    p.add_argument("name", metavar="NAME[@BRANCH]")
    p.add_argument("--object", dest="objects", nargs=3, action="append", required=True,
                   metavar=("URI", "ETAG", "FILE"), help="an object's s3:// URI, its ETag and the downloaded file")
    p.add_argument("--batch", default=None, metavar="ID",
                   help="batch_id of the imported samples (default: each object's key without its suffix)")
    p.add_argument("--report", default=None, metavar="PATH", help="also write the JSON result to PATH")
    p.add_argument("--as", dest="user", metavar="USER", help="act as USER (platform-admins only)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=cmd_intake)


def cmd_init(args: argparse.Namespace) -> int:
    from train_platform.settings import get_settings
    from train_platform.storage.object_store import endpoint_of, init_buckets

    settings = get_settings()
    statuses = init_buckets(settings)
    data = {"endpoint": endpoint_of(settings).shown, "buckets": [s.as_dict() for s in statuses]}
    if args.json:
        json.dump(data, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for s in statuses:
            print(f"{s.role:10} {s.name:40} {'created' if s.created else 'exists'}, checked")
    return 0


def recorded_objects(dataset: Any, branch: str) -> set[tuple[str, str]]:
    """``(uri, etag)`` of every object a commit reachable from ``branch`` imported."""
    found = set()
    for entry in dataset.log(branch):
        match = _RECORD.match(entry.message or "")
        if match:
            found.add((match[1], match[2]))
    return found


def _unlabelled(rows: Any, batch_id: str) -> Any:
    """``rows`` as new recordings: no annotation, status raw, the batch id given."""
    import pyarrow as pa

    from train_platform.datasets.schema import conform

    n = rows.num_rows
    table = rows
    for name in ("label", "label_source", "confidence", "annotator", "alternatives"):
        table = table.set_column(table.schema.get_field_index(name), name, pa.nulls(n, table.schema.field(name).type))
    table = table.set_column(table.schema.get_field_index("status"), "status", pa.array(["raw"] * n, pa.string()))
    table = table.set_column(table.schema.get_field_index("batch_id"), "batch_id", pa.array([batch_id] * n, pa.string()))
    return conform(table, where="intake")


def cmd_intake(args: argparse.Namespace) -> int:
    from train_platform.cli.dataset import acting_user
    from train_platform.datasets.dataset import open_dataset
    from train_platform.datasets.exceptions import DatasetError, RefExistsError
    from train_platform.datasets.importers import load_source
    from train_platform.datasets.refs import parse_ref
    from train_platform.storage.object_store import parse_s3_uri

    name, ref = parse_ref(args.name)
    branch = ref or INTAKE_BRANCH
    dataset = open_dataset(name, user=acting_user(args))
    objects = []
    for uri, etag, path in args.objects:
        parse_s3_uri(uri)  # a malformed URI is bad input before anything is written
        objects.append((uri, etag.strip('"'), path))
    refs = dataset.refs()
    if branch not in refs:
        try:
            dataset.branch(branch)  # from main
            log.info("%s: created branch %s from main", name, branch)
        except RefExistsError:
            pass  # created by a concurrent intake
    elif refs[branch]["type"] != "branch":
        raise DatasetError(f"{name}: {branch!r} is a tag; intake writes to a branch")
    done = recorded_objects(dataset, branch)
    results = []
    for uri, etag, path in objects:
        outcome: dict[str, Any] = {"object": uri, "etag": etag}
        if (uri, etag) in done:
            outcome.update(status="already-imported", samples=0)
            results.append(outcome)
            continue
        key = parse_s3_uri(uri)[1]
        batch = args.batch or re.sub(r"\.[A-Za-z0-9]+$", "", key)
        try:
            rows = _unlabelled(load_source(path), batch)
            sid = dataset.append(rows, branch, operation="intake",
                                 message=f"intake {uri} (etag {etag}): {rows.num_rows} sample(s)")
        except DatasetError as exc:
            outcome.update(status="failed", samples=0, error=str(exc))
            log.error("%s: %s not imported: %s", name, uri, exc)
        else:
            outcome.update(status="imported", samples=rows.num_rows, snapshot_id=sid)
            done.add((uri, etag))
        results.append(outcome)
    failed = [r for r in results if r["status"] == "failed"]
    data = {"dataset": name, "branch": branch, "objects": results,
            "imported": sum(r["samples"] for r in results), "failed": len(failed)}
    if args.report:
        from pathlib import Path

        Path(args.report).write_text(json.dumps(data, indent=2, default=str))
    if args.json:
        json.dump(data, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        for r in results:
            print(f"{r['object']}: {r['status']}" + (f", {r['samples']} sample(s)" if r["samples"] else "")
                  + (f": {r['error']}" if r.get("error") else ""))
    return 1 if failed else 0
