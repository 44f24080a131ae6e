"""``tp model``: the model registry and the inference endpoint from the command line; and
``tp admin``: the platform-admin role.

Every ``tp model`` command acts as the OS user it runs as; ``--as USER`` (else ``TP_USER``)
is reserved to a platform-admin (``train_platform.registry.identity``). Each command needs a
role on the model (``train_platform.registry.access``): reader to list, show, read the
history, export and serve; maintainer to register, gate, package, promote, roll back,
deploy and run experiments; owner to grant roles.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

# A VERSION argument is read as train_platform.registry.refs.ModelRef.of reads it.
_VERSION_HELP = "version number (3 or v3), alias, or latest"


def _add_user(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--as", dest="user", metavar="USER",
                        help="act as USER (platform-admins only; default: the OS user, or TP_USER for an admin)")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("model", help="model registry, A/B experiments and serving")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = commands.add_parser("register", help="add a version from a checkpoint folder; prints the version")
    p.add_argument("name")
    p.add_argument("--checkpoint", required=True, type=Path, help="folder written by `python -m ml.train`")
    p.add_argument("--training-run", help="id of the run that produced the checkpoint")
    p.add_argument("--dataset-snapshot", help="dataset ref it was trained on (name@snapshot)")
    p.add_argument("--parent", type=int, help="version this one was trained from")
    p.add_argument("--metrics", help="JSON object or a path to a JSON file of evaluation metrics")
    p.add_argument("--gate", choices=("pending", "passed", "failed"), default="pending",
                   help="evaluation gate verdict given by hand (default: pending)")
    p.set_defaults(func=_register)

    p = commands.add_parser("list", help="versions of a model with their aliases and gate verdicts")
    p.add_argument("name")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_list)

    p = commands.add_parser("show", help="the version a model reference stands for, and its checkpoint folder")
    p.add_argument("ref", help="model:NAME:ALIAS, model:NAME:vN or model:NAME:latest")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_show)

    p = commands.add_parser("promote", help="point an alias at a version")
    p.add_argument("name")
    p.add_argument("version", help=_VERSION_HELP)
    p.add_argument("--alias", default="production")
    p.add_argument("--reason")
    p.set_defaults(func=_promote)

    p = commands.add_parser("rollback", help="move an alias back to its previous holder")
    p.add_argument("name")
    p.add_argument("--alias", default="production")
    p.add_argument("--reason")
    p.set_defaults(func=_rollback)

    p = commands.add_parser("history", help="every recorded step of a model, oldest first")
    p.add_argument("name")
    p.add_argument("--alias", help="only this alias's moves")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_history)

    p = commands.add_parser("gate", help="record an evaluation gate verdict by hand")
    p.add_argument("name")
    p.add_argument("version", type=int)
    verdict = p.add_mutually_exclusive_group(required=True)
    verdict.add_argument("--passed", action="store_true")
    verdict.add_argument("--failed", action="store_true")
    p.add_argument("--report", help="URI of the evaluation report")
    p.add_argument("--reason", help="why (recorded with the verdict)")
    p.set_defaults(func=_gate)

    p = commands.add_parser("grant", help="give USER a role on a model: owner, maintainer, reader, or none")
    p.add_argument("name")
    p.add_argument("grantee", metavar="USER")
    p.add_argument("role", choices=("owner", "maintainer", "reader", "none"))
    p.set_defaults(func=_grant)

    p = commands.add_parser("roles", help="who holds which role on a model")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_roles)

    p = commands.add_parser("experiment", help="set, clear or show the A/B split")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    q = actions.add_parser("set", help="send WEIGHT of the traffic to VERSION, the rest to production")
    q.add_argument("name")
    q.add_argument("version", help=_VERSION_HELP)
    q.add_argument("--weight", type=float, required=True, help="candidate share, strictly between 0 and 1")
    _add_user(q)
    q.set_defaults(func=_experiment_set)
    q = actions.add_parser("clear", help="end the A/B split; production keeps all traffic")
    q.add_argument("name")
    _add_user(q)
    q.set_defaults(func=_experiment_clear)
    q = actions.add_parser("show", help="the running A/B split, if any")
    q.add_argument("name")
    _add_user(q)
    q.set_defaults(func=_experiment_show)

    p = commands.add_parser("export", help="export a version (BentoML archive) to S3")
    p.add_argument("name")
    p.add_argument("version", help=_VERSION_HELP)
    p.add_argument("--to", required=True, help="s3://bucket/prefix")
    p.set_defaults(func=_export)

    p = commands.add_parser("package", help="build a Bento (service, pinned packages, model) for a version")
    p.add_argument("name")
    p.add_argument("version", nargs="?", default="latest", help=_VERSION_HELP + " (default: latest)")
    p.set_defaults(func=_package)

    p = commands.add_parser("deploy", help="register a checkpoint with its evaluation gate, then one step of the "
                                           "scheduled deployment (A/B, promote, roll back)")
    p.add_argument("name")
    p.add_argument("--checkpoint", type=Path, help="register this checkpoint first (skipped if already registered)")
    p.add_argument("--evaluation", type=Path,
                   help="the checkpoint's evaluation by `python -m ml.evaluate` (file or folder); the registry's "
                        "gate decides from it. A failed gate deploys nothing and exits 99")
    p.add_argument("--policy", default="{}", help="JSON object of DeploymentPolicy fields")
    p.add_argument("--gate-policy", default="{}", help="JSON object of GatePolicy fields")
    p.add_argument("--out", type=Path, help="folder to write deployment.json into")
    p.set_defaults(func=_deploy)

    p = commands.add_parser("serve", help="serve the production alias (and any A/B split) over HTTP")
    p.add_argument("name")
    p.add_argument("--port", type=int, default=3000)
    p.add_argument("--host", default="127.0.0.1")
    p.set_defaults(func=_serve)

    for name, sub in commands.choices.items():
        if name != "experiment":
            _add_user(sub)
    _register_admin(subparsers)


def _register_admin(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("admin", help="the platform-admin role: who holds it, grant, revoke, audit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    p = commands.add_parser("whoami", help="the OS user, the user commands act as, and whether it is an admin")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_admin_whoami)
    p = commands.add_parser("list", help="the platform admins")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_admin_list)
    p = commands.add_parser("grant", help="give USER the platform-admin role (admins only)")
    p.add_argument("grantee", metavar="USER")
    p.set_defaults(func=_admin_grant)
    p = commands.add_parser("revoke", help="take the platform-admin role from USER (the last admin keeps it)")
    p.add_argument("grantee", metavar="USER")
    p.set_defaults(func=_admin_revoke)
    p = commands.add_parser("audit", help="admin grants, revocations, refusals and pipeline activations, newest first")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_admin_audit)


def _actor(args: argparse.Namespace) -> str:
    from train_platform.registry.identity import acting_user

    return acting_user(requested=getattr(args, "user", None))


def _registry(args: argparse.Namespace):
    from train_platform.registry import ModelRegistry

    return ModelRegistry(actor=_actor(args))


def _parse_metrics(value: str | None) -> dict[str, Any]:
    from train_platform.registry import CheckpointInvalidError

    if not value:
        return {}
    text = Path(value).read_text() if not value.lstrip().startswith("{") and Path(value).is_file() else value
    try:
        metrics = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointInvalidError(f"--metrics is neither a JSON object nor a JSON file: {exc}") from exc
    if not isinstance(metrics, dict):
        raise CheckpointInvalidError("--metrics must be a JSON object of name -> value")
    return metrics


def _register(args: argparse.Namespace) -> int:
    by_hand = None if args.gate == "pending" else {"passed": args.gate == "passed",
                                                   "reasons": ["set by hand at registration"]}
    version = _registry(args).register(
        args.name, args.checkpoint, training_run=args.training_run, dataset_snapshot=args.dataset_snapshot,
        metrics=_parse_metrics(args.metrics), parent_version=args.parent, gate_status=args.gate,
        gate_detail=by_hand,
    )
    print(version.version)
    return 0


def _list(args: argparse.Namespace) -> int:
    registry = _registry(args)
    registry.check_access(args.name, "list")
    versions = registry.list_versions(args.name)
    if args.json:
        print(json.dumps([v.to_dict() for v in versions], indent=2, sort_keys=True))
        return 0
    print(f"{'VERSION':>7}  {'CREATED':19}  {'BY':14}  {'TASK':14}  {'GATE':7}  {'ALIASES':20}  METRICS")
    for v in versions:
        metrics = ", ".join(f"{k}={val:.4g}" if isinstance(val, float) else f"{k}={val}" for k, val in sorted(v.metrics.items()))
        aliases = ",".join(v.aliases) + (" (rejected)" if v.rejected else "")
        print(f"{v.version:>7}  {v.created_at:%Y-%m-%d %H:%M:%S}  {v.created_by:14}  {v.task:14}  {v.gate_status:7}  "
              f"{aliases:20}  {metrics}")
        if v.gate_status == "failed":
            print(f"{'':9}gate failed: {'; '.join(v.gate_reasons) or 'no reason recorded'}")
    return 0


def _show(args: argparse.Namespace) -> int:
    from train_platform.registry import ModelRef, resolve

    registry = _registry(args)
    registry.check_access(ModelRef.parse(args.ref).name, "show")
    found = resolve(args.ref, registry)
    v = found.version
    if args.json:
        print(json.dumps({**v.to_dict(), "ref": str(found.ref), "checkpoint": str(found.checkpoint)},
                         indent=2, sort_keys=True))
        return 0
    print(f"{found.ref}: {v.model} version {v.version}")
    print(f"  checkpoint  {found.checkpoint}")
    print(f"  aliases     {', '.join(v.aliases) or '-'}{' (rejected)' if v.rejected else ''}")
    print(f"  task        {v.task}")
    print(f"  gate        {v.gate_status}{': ' + '; '.join(v.gate_reasons) if v.gate_reasons else ''}")
    data = ((v.gate_detail or {}).get("figures") or {}).get("data")
    if data:
        print(f"  evaluated   on {data.get('ref')} ({data.get('samples')} samples, sha256 {str(data.get('sha256'))[:12]})")
    print(f"  created     {v.created_at:%Y-%m-%d %H:%M:%S} by {v.created_by}")
    return 0


def _promote(args: argparse.Namespace) -> int:
    v = _registry(args).promote(args.name, args.version, alias=args.alias, reason=args.reason)
    print(f"{args.name}: {args.alias} -> version {v.version}")
    return 0


def _rollback(args: argparse.Namespace) -> int:
    v = _registry(args).rollback(args.name, alias=args.alias, reason=args.reason)
    print(f"{args.name}: {args.alias} rolled back to version {v.version}")
    return 0


def _history(args: argparse.Namespace) -> int:
    registry = _registry(args)
    registry.check_access(args.name, "history")
    events = registry.history(args.name, alias=args.alias)
    if args.json:
        print(json.dumps([e.to_dict() for e in events], indent=2, sort_keys=True))
        return 0
    for e in events:
        what = e.kind
        if e.alias:
            what += f" {e.alias}: {e.previous_version if e.previous_version is not None else '-'} -> " \
                    f"{e.version if e.version is not None else '-'}"
        elif e.version is not None:
            what += f" v{e.version}"
        detail = dict(e.detail)
        if e.kind == "gate":  # the verdict and its reasons; the figures are in --json
            detail = {k: detail[k] for k in ("status", "reasons") if k in detail}
        text = f"  {json.dumps(detail, sort_keys=True)}" if detail else ""
        print(f"{e.at:%Y-%m-%d %H:%M:%S}  {e.actor:14}  {what}{text}")
    return 0


def _gate(args: argparse.Namespace) -> int:
    detail = {"passed": args.passed, "reasons": [f"set by hand: {args.reason}" if args.reason else "set by hand"]}
    v = _registry(args).record_gate(args.name, args.version, passed=args.passed, report=args.report, detail=detail)
    print(f"{args.name} version {v.version}: gate {v.gate_status}")
    return 0


def _grant(args: argparse.Namespace) -> int:
    role = None if args.role == "none" else args.role
    _registry(args).grant(args.name, args.grantee, role)
    print(f"{args.name}: {args.grantee} {'has no role now' if role is None else 'is ' + role}")
    return 0


def _roles(args: argparse.Namespace) -> int:
    registry = _registry(args)
    registry.check_access(args.name, "show")
    roles = registry.roles(args.name)
    if args.json:
        print(json.dumps(roles, indent=2, sort_keys=True))
    else:
        for user, role in roles.items():
            print(f"{user:24}  {role}")
    return 0


def _experiment_set(args: argparse.Namespace) -> int:
    exp = _registry(args).start_experiment(args.name, args.version, weight=args.weight)
    print(f"{args.name}: A/B v{exp.control_version} (production) vs v{exp.candidate_version} "
          f"at {exp.candidate_weight:.0%}")
    return 0


def _experiment_clear(args: argparse.Namespace) -> int:
    exp = _registry(args).end_experiment(args.name, outcome="cleared")
    print(f"{args.name}: A/B v{exp.control_version} vs v{exp.candidate_version} cleared")
    return 0


def _experiment_show(args: argparse.Namespace) -> int:
    registry = _registry(args)
    registry.check_access(args.name, "show")
    exp = registry.active_experiment(args.name)
    if exp is None:
        print(f"{args.name}: no A/B experiment")
    else:
        print(f"{args.name}: A/B v{exp.control_version} (production) vs v{exp.candidate_version} "
              f"at {exp.candidate_weight:.0%} since {exp.started_at:%Y-%m-%d %H:%M:%S}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from train_platform.registry.export import export_version

    uri = export_version(_registry(args), args.name, args.version, args.to)
    print(uri)
    return 0


def _package(args: argparse.Namespace) -> int:
    from train_platform.registry.packaging import build_bento

    registry = _registry(args)
    registry.check_access(args.name, "package")  # before the build, not after it
    print(build_bento(registry, args.name, args.version, actor=registry.actor))
    return 0


def _deploy(args: argparse.Namespace) -> int:
    from train_platform.registry.deployment import GATE_FAILED_EXIT_CODE, run_deploy_command

    registry = _registry(args)
    if args.name in registry.list_models():  # a first registration creates the model, owned by the actor
        registry.check_access(args.name, "deploy")
    result = run_deploy_command(registry, args.name, checkpoint=args.checkpoint, evaluation=args.evaluation,
                                policy_json=args.policy, gate_policy_json=args.gate_policy, out=args.out)
    print(json.dumps(result.to_dict(), sort_keys=True, default=str))
    if result.action == "gate_failed":
        print(f"tp: {args.name} v{result.version} failed its evaluation gate, nothing deployed: "
              f"{'; '.join(result.reasons)}", file=sys.stderr)
        return GATE_FAILED_EXIT_CODE
    return 0


def _serve(args: argparse.Namespace) -> int:
    from train_platform.registry.serve import serve_blocking

    registry = _registry(args)
    registry.check_access(args.name, "show")
    registry.get(args.name, "production")  # fail fast, with the registry's message
    print(f"serving {args.name} on http://{args.host}:{args.port}", file=sys.stderr)
    return serve_blocking(args.name, host=args.host, port=args.port)


# ---------------------------------------------------------------------- tp admin

def _admin_whoami(args: argparse.Namespace) -> int:
    from train_platform.registry.identity import acting_user, is_admin
    from train_platform.settings import get_settings

    settings = get_settings()
    me = settings.os_user
    info = {"os_user": me, "acts_as": acting_user(settings), "platform_admin": is_admin(me, settings.database_uri)}
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
    else:
        print(f"OS user {info['os_user']}, acting as {info['acts_as']}; "
              f"{'a' if info['platform_admin'] else 'not a'} platform-admin")
    return 0


def _admin_list(args: argparse.Namespace) -> int:
    from train_platform.registry.identity import list_admins
    from train_platform.settings import get_settings

    admins = list_admins(get_settings().database_uri)
    print(json.dumps(admins) if args.json else "\n".join(admins))
    return 0


def _admin_grant(args: argparse.Namespace) -> int:
    from train_platform.registry.identity import grant_admin
    from train_platform.settings import get_settings

    grant_admin(args.grantee, actor=get_settings().os_user, database_url=get_settings().database_uri)
    print(f"{args.grantee} is a platform-admin")
    return 0


def _admin_revoke(args: argparse.Namespace) -> int:
    from train_platform.registry.identity import revoke_admin
    from train_platform.settings import get_settings

    revoke_admin(args.grantee, actor=get_settings().os_user, database_url=get_settings().database_uri)
    print(f"{args.grantee} is no platform-admin now")
    return 0


def _admin_audit(args: argparse.Namespace) -> int:
    from train_platform.registry.identity import audit_log
    from train_platform.settings import get_settings

    entries = audit_log(get_settings().database_uri, args.limit)
    if args.json:
        print(json.dumps([e.to_dict() for e in entries], indent=2, sort_keys=True))
        return 0
    for e in entries:
        detail = f"  {json.dumps(e.detail, sort_keys=True)}" if e.detail else ""
        print(f"{e.at:%Y-%m-%d %H:%M:%S}  {e.actor:14}  {e.action:14}  {e.subject}{detail}")
    return 0
