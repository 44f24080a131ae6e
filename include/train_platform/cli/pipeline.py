"""``tp pipeline``: validate, compile, list and activate pipeline files."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from train_platform.exceptions import PipelineNotFoundError, PipelineSpecError
from train_platform.settings import get_settings


def register(groups: argparse._SubParsersAction) -> None:
    parser = groups.add_parser("pipeline", help="validate, compile, list and activate pipelines")
    commands = parser.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)

    validate = commands.add_parser("validate", help="check pipeline files; one FILE:LINE: field: message per error")
    validate.add_argument("files", nargs="+", type=Path, metavar="FILE")
    validate.set_defaults(func=cmd_validate)

    compile_ = commands.add_parser("compile", help="show the DAG a pipeline file compiles to")
    compile_.add_argument("file", type=Path, metavar="FILE")
    compile_.add_argument("--json", action="store_true", help="print JSON")
    compile_.set_defaults(func=cmd_compile)

    list_ = commands.add_parser("list", help="pipelines in the dags folder with their versions")
    list_.add_argument("--dags-folder", type=Path, help="default: TP_DAGS_FOLDER or Airflow's dags folder")
    list_.add_argument("--json", action="store_true", help="print JSON")
    list_.set_defaults(func=cmd_list)

    activate = commands.add_parser("activate", help="make VERSION the scheduled version of NAME (rollback)")
    activate.add_argument("name")
    activate.add_argument("version", nargs="?", help="omit with --latest to follow the highest version again")
    activate.add_argument("--latest", action="store_true", help="remove the pin: the highest version is active")
    activate.add_argument("--dags-folder", type=Path)
    activate.add_argument("--as", dest="user", metavar="USER",
                          help="act as USER (platform-admins only; default: the OS user)")
    activate.set_defaults(func=cmd_activate)


def cmd_validate(args: argparse.Namespace) -> int:
    from train_platform.spec.validate import load_pipeline

    failed = False
    for path in args.files:
        try:
            spec = load_pipeline(path)
        except PipelineSpecError as exc:
            failed = True
            for issue in exc.issues:
                print(issue)
            continue
        print(f"{path}: ok ({spec.name} {spec.version}, {len(spec.spec.tasks)} tasks)", file=sys.stderr)
    return 1 if failed else 0


def cmd_compile(args: argparse.Namespace) -> int:
    from train_platform.compiler.plan import describe
    from train_platform.spec.validate import load_pipeline

    try:
        spec = load_pipeline(args.file)
    except PipelineSpecError as exc:
        for issue in exc.issues:
            print(issue)
        return 1
    plan = describe(spec, get_settings())
    if args.json:
        print(json.dumps(plan, indent=2, default=str))
        return 0
    print(f"DAG {plan['dag_id']} (version {plan['version']}, schedule {plan['schedule']})")
    for name, default in plan["params"].items():
        print(f"  param {name} = {default!r}")
    for task in plan["tasks"]:
        upstream = ", ".join(task["upstream"]) or "-"
        res = task["resources"]
        print(f"  {task['task_id']:<24} {task['operator']:<24} after: {upstream:<20} "
              f"cpu={res['cpu']} memory={res['memory']} gpu={res['gpu']} executor={task['executor']}")
    return 0


def _scan(folder: Path | None):
    from train_platform.spec.folder import scan_folder

    settings = get_settings()
    folder = folder or settings.dags_folder
    if not folder.is_dir():
        raise PipelineNotFoundError(f"dags folder {folder} does not exist")
    return scan_folder(folder, settings)


def cmd_list(args: argparse.Namespace) -> int:
    from train_platform.spec.models import version_key

    scan = _scan(args.dags_folder)
    rows = []
    for name in sorted(scan.active):
        found = scan.versions_of(name)
        for version in sorted(found, key=version_key):
            rows.append({"name": name, "version": version, "active": version == scan.active[name],
                         "file": str(found[version].path)})
    broken = [{"file": str(f.path), "errors": [str(i) for i in f.issues]} for f in scan.broken()]
    if args.json:
        print(json.dumps({"pipelines": rows, "invalid": broken}, indent=2))
        return 0
    print(f"{'NAME':<36} {'VERSION':<12} {'ACTIVE':<7} FILE")
    for row in rows:
        print(f"{row['name']:<36} {row['version']:<12} {'*' if row['active'] else '':<7} {row['file']}")
    for item in broken:
        print(f"INVALID {item['file']}: {item['errors'][0]}")
    return 0


def cmd_activate(args: argparse.Namespace) -> int:
    """Needs the pipeline's owner (of its active version) or a platform-admin; recorded in
    the platform audit log (``tp admin audit``)."""
    from train_platform.registry import identity
    from train_platform.spec import versions

    settings = get_settings()
    actor = identity.acting_user(settings, args.user)
    scan = _scan(args.dags_folder)
    found = scan.versions_of(args.name)
    if not found:
        raise PipelineNotFoundError(f"no valid pipeline named {args.name!r} in {args.dags_folder or settings.dags_folder}")
    if not args.latest and not args.version:
        raise PipelineNotFoundError("give a VERSION, or --latest")
    if not args.latest and args.version not in found:
        raise PipelineNotFoundError(
            f"pipeline {args.name!r} has no version {args.version!r} (found: {', '.join(sorted(found))})")
    active = found[scan.active[args.name]].spec
    owner = active.spec.default_args.owner or active.metadata.owner
    identity.authorize_pipeline_activation(actor, owner, args.name, None if args.latest else args.version,
                                           database_url=settings.database_uri)
    previous = scan.active[args.name]
    if args.latest:
        versions.write_pin(settings, args.name, None)
        now = versions.choose_active(list(found), None)
        print(f"{args.name}: the highest version is active again ({now})")
    else:
        versions.write_pin(settings, args.name, args.version)
        now = args.version
        print(f"{args.name}: version {args.version} is active ({found[args.version].path}); "
              "the DAG changes at the next parse of the dags folder")
    identity.record(actor, "pipeline_activate", f"pipeline {args.name}",
                    {"version": now, "previous": previous, "pinned": not args.latest, "owner": owner},
                    database_url=settings.database_uri)
    return 0
