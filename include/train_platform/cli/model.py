"""``tp model``: the model registry and the inference endpoint from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


# A VERSION argument is read as train_platform.registry.refs.ModelRef.of reads it.
_VERSION_HELP = "version number (3 or v3), alias, or latest"


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
                   help="evaluation gate verdict (default: pending)")
    p.set_defaults(func=_register)

    p = commands.add_parser("list", help="versions of a model with their aliases")
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

    p = commands.add_parser("gate", help="record the evaluation gate verdict of a version")
    p.add_argument("name")
    p.add_argument("version", type=int)
    verdict = p.add_mutually_exclusive_group(required=True)
    verdict.add_argument("--passed", action="store_true")
    verdict.add_argument("--failed", action="store_true")
    p.add_argument("--report", help="URI of the evaluation report")
    p.set_defaults(func=_gate)

    p = commands.add_parser("experiment", help="set, clear or show the A/B split")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    q = actions.add_parser("set", help="send WEIGHT of the traffic to VERSION, the rest to production")
    q.add_argument("name")
    q.add_argument("version", help=_VERSION_HELP)
    q.add_argument("--weight", type=float, required=True, help="candidate share, strictly between 0 and 1")
    q.set_defaults(func=_experiment_set)
    q = actions.add_parser("clear", help="end the A/B split; production keeps all traffic")
    q.add_argument("name")
    q.set_defaults(func=_experiment_clear)
    q = actions.add_parser("show", help="the running A/B split, if any")
    q.add_argument("name")
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

    p = commands.add_parser("deploy", help="one step of the scheduled deployment (A/B, promote, roll back)")
    p.add_argument("name")
    p.add_argument("--checkpoint", type=Path, help="register this checkpoint first (skipped if already registered)")
    p.add_argument("--evaluation", type=Path,
                   help="metrics JSON of the checkpoint's evaluation; its presence means the gate passed "
                        "unless it says \"passed\": false")
    p.add_argument("--policy", default="{}", help="JSON object of DeploymentPolicy fields")
    p.add_argument("--out", type=Path, help="folder to write deployment.json into")
    p.set_defaults(func=_deploy)

    p = commands.add_parser("serve", help="serve the production alias (and any A/B split) over HTTP")
    p.add_argument("name")
    p.add_argument("--port", type=int, default=3000)
    p.add_argument("--host", default="127.0.0.1")
    p.set_defaults(func=_serve)


def _registry():
    from train_platform.registry import ModelRegistry

    return ModelRegistry()


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
    version = _registry().register(
        args.name, args.checkpoint, training_run=args.training_run, dataset_snapshot=args.dataset_snapshot,
        metrics=_parse_metrics(args.metrics), parent_version=args.parent, gate_status=args.gate,
    )
    print(version.version)
    return 0


def _list(args: argparse.Namespace) -> int:
    versions = _registry().list_versions(args.name)
    if args.json:
        print(json.dumps([v.to_dict() for v in versions], indent=2, sort_keys=True))
        return 0
    print(f"{'VERSION':>7}  {'CREATED':19}  {'TASK':14}  {'GATE':7}  {'ALIASES':20}  METRICS")
    for v in versions:
        metrics = ", ".join(f"{k}={val:.4g}" if isinstance(val, float) else f"{k}={val}" for k, val in sorted(v.metrics.items()))
        aliases = ",".join(v.aliases) + (" (rejected)" if v.rejected else "")
        print(f"{v.version:>7}  {v.created_at:%Y-%m-%d %H:%M:%S}  {v.task:14}  {v.gate_status:7}  {aliases:20}  {metrics}")
    return 0


def _show(args: argparse.Namespace) -> int:
    from train_platform.registry import resolve

    found = resolve(args.ref, _registry())
    v = found.version
    if args.json:
        print(json.dumps({**v.to_dict(), "ref": str(found.ref), "checkpoint": str(found.checkpoint)},
                         indent=2, sort_keys=True))
        return 0
    print(f"{found.ref}: {v.model} version {v.version}")
    print(f"  checkpoint  {found.checkpoint}")
    print(f"  aliases     {', '.join(v.aliases) or '-'}{' (rejected)' if v.rejected else ''}")
    print(f"  task        {v.task}")
    print(f"  gate        {v.gate_status}")
    print(f"  created     {v.created_at:%Y-%m-%d %H:%M:%S} by {v.created_by}")
    return 0


def _promote(args: argparse.Namespace) -> int:
    v = _registry().promote(args.name, args.version, alias=args.alias, reason=args.reason)
    print(f"{args.name}: {args.alias} -> version {v.version}")
    return 0


def _rollback(args: argparse.Namespace) -> int:
    v = _registry().rollback(args.name, alias=args.alias, reason=args.reason)
    print(f"{args.name}: {args.alias} rolled back to version {v.version}")
    return 0


def _history(args: argparse.Namespace) -> int:
    events = _registry().history(args.name, alias=args.alias)
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
        detail = f"  {json.dumps(e.detail, sort_keys=True)}" if e.detail else ""
        print(f"{e.at:%Y-%m-%d %H:%M:%S}  {e.actor:12}  {what}{detail}")
    return 0


def _gate(args: argparse.Namespace) -> int:
    v = _registry().record_gate(args.name, args.version, passed=args.passed, report=args.report)
    print(f"{args.name} version {v.version}: gate {v.gate_status}")
    return 0


def _experiment_set(args: argparse.Namespace) -> int:
    exp = _registry().start_experiment(args.name, args.version, weight=args.weight)
    print(f"{args.name}: A/B v{exp.control_version} (production) vs v{exp.candidate_version} "
          f"at {exp.candidate_weight:.0%}")
    return 0


def _experiment_clear(args: argparse.Namespace) -> int:
    exp = _registry().end_experiment(args.name, outcome="cleared")
    print(f"{args.name}: A/B v{exp.control_version} vs v{exp.candidate_version} cleared")
    return 0


def _experiment_show(args: argparse.Namespace) -> int:
    exp = _registry().active_experiment(args.name)
    if exp is None:
        print(f"{args.name}: no A/B experiment")
    else:
        print(f"{args.name}: A/B v{exp.control_version} (production) vs v{exp.candidate_version} "
              f"at {exp.candidate_weight:.0%} since {exp.started_at:%Y-%m-%d %H:%M:%S}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from train_platform.registry.export import export_version

    uri = export_version(_registry(), args.name, args.version, args.to)
    print(uri)
    return 0


def _package(args: argparse.Namespace) -> int:
    from train_platform.registry.packaging import build_bento

    print(build_bento(_registry(), args.name, args.version))
    return 0


def _deploy(args: argparse.Namespace) -> int:
    from train_platform.registry.deployment import run_deploy_command

    result = run_deploy_command(_registry(), args.name, checkpoint=args.checkpoint, evaluation=args.evaluation,
                                policy_json=args.policy, out=args.out)
    print(json.dumps(result.to_dict(), sort_keys=True))
    return 0


def _serve(args: argparse.Namespace) -> int:
    from train_platform.registry.serve import serve_blocking

    _registry().get(args.name, "production")  # fail fast, with the registry's message
    print(f"serving {args.name} on http://{args.host}:{args.port}", file=sys.stderr)
    return serve_blocking(args.name, host=args.host, port=args.port)
