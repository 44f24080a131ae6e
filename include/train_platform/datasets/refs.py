"""A dataset's refs: ``main``, users' own branches, ``NAME@REF`` text, and what a ref
names in a table.

Branches and tags are Iceberg refs of the dataset's table; a ref given as text may also be
a snapshot id.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from train_platform.datasets.catalog import check_name
from train_platform.datasets.exceptions import DatasetError, RefNotFoundError

if TYPE_CHECKING:
    from pyiceberg.table import Table
    from pyiceberg.table.snapshots import Snapshot

MAIN = "main"
USER_BRANCH_PREFIX = "user/"
_REF_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")


def parse_ref(text: str) -> tuple[str, str | None]:
    """``NAME@REF`` (or ``tp://NAME@REF``) into ``(NAME, REF)``; REF is ``None`` when absent."""
    text = text.removeprefix("tp://")
    name, sep, ref = text.partition("@")
    if sep and not ref:
        raise DatasetError(f"{text!r}: nothing after '@' (expected NAME@BRANCH, NAME@TAG or NAME@SNAPSHOT_ID)")
    return check_name(name), (ref or None)


def user_branch(user: str) -> str:
    """The user's own branch. Characters a ref name cannot hold (an e-mail's '@') become '-'."""
    return f"{USER_BRANCH_PREFIX}{re.sub(r'[^A-Za-z0-9._-]+', '-', user).strip('-.') or 'anonymous'}"


def check_ref_name(name: str) -> str:
    """``name`` if a new branch or tag may be called that, else ``DatasetError``. All-digit
    names are refused because they read as snapshot ids."""
    if not _REF_NAME.match(name) or ".." in name or name.isdigit():
        raise DatasetError(
            f"ref name {name!r} is invalid: use letters, digits, '.', '_', '-', '/', not all digits (those are snapshot ids)"
        )
    return name


def ref_heads(table: Table) -> dict[str, dict[str, Any]]:
    """Every branch and tag of ``table`` by name: ``{"type": "branch"|"tag", "snapshot_id"}``."""
    from pyiceberg.table.refs import SnapshotRefType

    return {
        name: {"type": "tag" if ref.snapshot_ref_type == SnapshotRefType.TAG else "branch", "snapshot_id": ref.snapshot_id}
        for name, ref in sorted(table.metadata.refs.items())
    }


def resolve_snapshot(table: Table, ref: str | int | None, *, dataset: str) -> Snapshot:
    """The snapshot a branch, tag or snapshot id names (``None`` means main), else
    ``RefNotFoundError`` listing the refs there are. ``dataset`` names the table in errors."""
    ref = MAIN if ref is None else ref
    if isinstance(ref, str) and ref in table.metadata.refs:
        snapshot = table.snapshot_by_name(ref)
    elif isinstance(ref, int) or (isinstance(ref, str) and ref.lstrip("-").isdigit()):
        snapshot = table.snapshot_by_id(int(ref))
    else:
        snapshot = None
    if snapshot is None:
        known = ", ".join(sorted(table.metadata.refs)) or "none"
        raise RefNotFoundError(f"{dataset}: no branch, tag or snapshot {ref!r} (refs: {known})")
    return snapshot


def check_writable_branch(table: Table, branch: str, *, dataset: str) -> str:
    """``branch`` if it is a branch of ``table``; a missing ref or a tag is an error."""
    from pyiceberg.table.refs import SnapshotRefType

    ref = table.metadata.refs.get(branch)
    if ref is None:
        raise RefNotFoundError(f"{dataset}: no branch {branch!r} (create it with `tp dataset branch`)")
    if ref.snapshot_ref_type == SnapshotRefType.TAG:
        raise DatasetError(f"{dataset}: {branch!r} is a tag; tags cannot be written to")
    return branch


__all__ = [
    "MAIN",
    "USER_BRANCH_PREFIX",
    "check_ref_name",
    "check_writable_branch",
    "parse_ref",
    "ref_heads",
    "resolve_snapshot",
    "user_branch",
]
