"""What the read-only platform views show, as plain JSON-ready dicts: the pages render
them and the JSON API returns them as they are.

Datasets are read as the logged-in user, so the dataset roles decide what they see (a user
without a role on a dataset sees its name only). Models are read from the registry, which
has no roles: every logged-in Airflow user sees them.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

# Branch counts above this are listed without their pending counts (one scan each).
MAX_COUNTED_BRANCHES = 30


def dataset_list(user: str) -> list[dict[str, Any]]:
    """Every dataset with the user's role on it (``None``: no access)."""
    from train_platform.datasets.access import AccessStore
    from train_platform.datasets.dataset import list_datasets
    from train_platform.settings import get_settings

    settings = get_settings()
    names = list_datasets(settings)  # first: it creates the catalog (and its folder) when missing
    access = AccessStore(settings.catalog_uri)
    return [{"name": name, "role": access.role_of(name, user)} for name in names]


def dataset_view(name: str, user: str, *, audit_limit: int = 50) -> dict[str, Any]:
    """Branches (head, samples, samples awaiting review), the latest snapshot of main, the
    review steps waiting on it, and the audit log; the user needs the reader role."""
    from train_platform.datasets.dataset import open_dataset
    from train_platform.datasets.refs import MAIN, USER_BRANCH_PREFIX
    from train_platform.review import reading
    from train_platform.review.journal import ReviewJournal
    from train_platform.settings import get_settings

    settings = get_settings()
    ds = open_dataset(name, user=user, settings=settings)
    refs = ds.refs()
    table = reading.load_table(ds)
    branches, tags = [], []
    counted = 0
    for ref_name, ref in refs.items():
        snapshot = table.snapshot_by_id(ref["snapshot_id"])
        summary = snapshot.summary if snapshot and snapshot.summary else {}
        entry = {"name": ref_name, "snapshot_id": str(ref["snapshot_id"]),
                 "samples": int(summary.get("total-records") or 0),
                 "at": snapshot.timestamp_ms if snapshot else None, "user": summary.get("tp.user"),
                 "operation": summary.get("tp.operation")}
        if ref["type"] == "tag":
            tags.append(entry)
            continue
        entry["user_branch"] = ref_name.startswith(USER_BRANCH_PREFIX)
        if counted < MAX_COUNTED_BRANCHES:
            entry["pending"] = reading.pending(table, ref["snapshot_id"]).num_rows
            counted += 1
        else:
            entry["pending"] = None
        branches.append(entry)
    branches.sort(key=lambda b: (b["name"] != MAIN, b["user_branch"], b["name"]))
    latest = ds.log(MAIN, limit=1)
    journal = ReviewJournal(settings.catalog_uri)
    return {
        "name": name,
        "role": ds.roles().get(user),
        "branches": branches,
        "tags": tags,
        "latest": latest[0].as_dict() if latest else None,
        "requests": [r.as_dict() for r in journal.requests(name, limit=10)],
        "audit": [entry.as_dict() for entry in ds.audit(audit_limit)],
    }


def model_list() -> list[dict[str, Any]]:
    """Every registered model with its aliases and number of versions."""
    from train_platform.registry import ModelRegistry

    registry = ModelRegistry()
    out = []
    for name in registry.list_models():
        versions = registry.list_versions(name)
        out.append({"name": name, "aliases": registry.aliases(name), "versions": len(versions),
                    "latest": versions[-1].version if versions else None})
    return out


def _stats(registry: Any, name: str, version: int | None) -> dict[str, Any] | None:
    if version is None:
        return None
    stats = registry.live_stats(name, version)
    return {"version": version, "requests": stats.requests, "errors": stats.errors,
            "error_rate": stats.error_rate, "accuracy": stats.accuracy, "labelled": stats.labelled,
            "mean_latency_ms": stats.mean_latency_ms, "p99_latency_ms": stats.latency_quantile_ms(0.99)}


def model_view(name: str) -> dict[str, Any]:
    """Versions (metrics, evaluation gate, lineage), aliases, the A/B split, live serving
    figures of the versions being served, and the history of every step."""
    from train_platform.registry import PRODUCTION, ModelRegistry

    registry = ModelRegistry()
    versions = registry.list_versions(name)
    state = registry.serving_state(name)
    experiment = state.experiment
    split = None
    if experiment is not None:
        split = {"control_version": experiment.control_version, "candidate_version": experiment.candidate_version,
                 "candidate_weight": experiment.candidate_weight, "started_at": experiment.started_at.isoformat()}
    served = {PRODUCTION: state.production}
    if experiment is not None:
        served["candidate"] = experiment.candidate_version
    return {
        "name": name,
        "aliases": registry.aliases(name),
        "versions": [v.to_dict() for v in reversed(versions)],
        "ab_split": split,
        "live": {alias: _stats(registry, name, version) for alias, version in served.items()},
        "history": [e.to_dict() for e in reversed(registry.history(name))],
    }


__all__ = ["dataset_list", "dataset_view", "model_list", "model_view"]
