"""Optimistic commits to one branch, retried until they win the race.

Writers to one branch race through Iceberg's optimistic commit: the catalog swaps the
metadata pointer only if the branch head is still the one the writer started from. A loser
re-reads the table and recomputes its change from the new head (``write`` runs again), with
jittered exponential backoff, so no row is lost and no change is applied to a stale state.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table, Transaction
from pyiceberg.table.update import update_table_metadata

from train_platform.datasets.exceptions import CommitRetriesExhaustedError

log = logging.getLogger(__name__)

# ``write(table, transaction, snapshot_properties)`` stages one change on the transaction.
WriteFn = Callable[[Table, Any, dict[str, str]], None]

TABLE_PROPERTIES = {
    # This package retries conflicts itself, recomputing the change from the new branch
    # head; pyiceberg's own retry would re-apply a change computed from a stale state.
    "commit.retry.num-retries": "0",
    # Labelling rewrites whole data files (copy-on-write); smaller files keep a label edit
    # on a million-sample dataset from rewriting all of it.
    "write.target-file-size-bytes": str(64 * 1024 * 1024),
    # Many small commits (one per annotation batch) would otherwise leave one manifest each,
    # and every scan plan reads all of them.
    "commit.manifest-merge.enabled": "true",
    "commit.manifest.min-count-to-merge": "16",
    # Every commit writes a new metadata file; old ones are only history of the pointer.
    "write.metadata.previous-versions-max": "20",
    "write.metadata.delete-after-commit.enabled": "true",
}


class _Transaction(Transaction):
    """A pyiceberg transaction that builds its staged metadata once per staged state.

    pyiceberg rebuilds and deep-copies the whole table metadata on every read of
    ``table_metadata`` (about twenty per append); with a few hundred snapshots that was most
    of a commit's time. Metadata models are frozen and never changed in place, so reusing
    the result until the table or the staged updates change is safe."""

    _cache: tuple[Any, Any, Any] | None = None

    @property
    def table_metadata(self):  # type: ignore[override]
        cache = self._cache
        if cache is None or cache[0] is not self._table.metadata or cache[1] is not self._updates:
            cache = (self._table.metadata, self._updates, update_table_metadata(self._table.metadata, self._updates))
            self._cache = cache
        return cache[2]


@dataclass(frozen=True)
class CommitPolicy:
    # Eight writers on two cores lose many races in a row; each loss costs one re-read.
    max_attempts: int = 200
    # First backoff; doubles per lost race, with full jitter so losers do not collide again.
    base_delay_s: float = 0.1
    # Cap keeps a writer from sleeping long after the branch has gone quiet.
    max_delay_s: float = 2.0

    def delay_s(self, attempt: int) -> float:
        """The most a writer sleeps after losing race number ``attempt`` (0-based)."""
        return min(self.max_delay_s, self.base_delay_s * 2 ** min(attempt, 16))


def commit_properties(user: str, operation: str, message: str | None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Summary properties of one commit's snapshots. ``tp.commit`` is new on every call and
    groups the snapshots of one commit: an overwrite is a delete snapshot followed by an
    append snapshot, and ``log`` shows them as one entry."""
    return {
        "tp.user": user,
        "tp.operation": operation,
        "tp.message": message or operation,
        "tp.commit": uuid.uuid4().hex,
        **(extra or {}),
    }


def commit_with_retries(
    table_for_attempt: Callable[[int], Table],
    write: WriteFn,
    properties: Callable[[], dict[str, str]],
    *,
    policy: CommitPolicy = CommitPolicy(),
    what: str = "commit",
    on_lost_race: Callable[[], None] | None = None,
) -> Table:
    """Stage ``write`` on ``table_for_attempt(attempt)`` and commit it, until a commit wins
    or ``policy.max_attempts`` are lost (``CommitRetriesExhaustedError``, nothing written).

    ``table_for_attempt`` gives the table to start from (a fresh load after a lost race);
    ``properties`` is called once per attempt; ``write`` may raise to give up, which ends
    the retries too. ``what`` names the commit in logs and errors (``NAME@BRANCH:
    OPERATION``). Returns the table as
    committed."""
    for attempt in range(policy.max_attempts):
        table = table_for_attempt(attempt)
        txn = _Transaction(table)
        write(table, txn, properties())
        try:
            return txn.commit_transaction()
        except CommitFailedException as exc:
            reason = str(exc)
        except ValueError as exc:
            # A writer that read the table before a commit to *another* branch carries a
            # stale sequence number; the catalog refuses it like any lost race.
            if "sequence number" not in str(exc) and "already exists" not in str(exc):
                raise
            reason = str(exc)
        if on_lost_race is not None:
            on_lost_race()
        delay = policy.delay_s(attempt)
        log.debug("%s lost a race (%s); retry %d in %.3f s", what, reason, attempt + 1, delay)
        time.sleep(random.uniform(0, delay))
    raise CommitRetriesExhaustedError(f"{what} lost {policy.max_attempts} commit races in a row; nothing was written")


__all__ = ["TABLE_PROPERTIES", "CommitPolicy", "WriteFn", "commit_properties", "commit_with_retries"]
