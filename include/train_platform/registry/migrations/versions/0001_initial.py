"""The registry's tables as they were when migrations began.

Revision ID: 0001
Revises:
Create Date: 2026-12-02

On a fresh database this creates every table. On one made before the registry had
migrations (no version table), it creates only the tables that are missing and adds the
nullable columns an older table lacks (what ``schema`` did on every open until then), so
the database ends in the same state either way and is recorded at this revision.

The tables are written out here, frozen, and not imported from ``schema``: a later change
to ``schema`` comes with a revision of its own, and this one must keep building the
tables as they were.
"""

from __future__ import annotations

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def _tables() -> sa.MetaData:
    md = sa.MetaData()
    when = sa.DateTime(timezone=True)
    sa.Table(
        "tp_models", md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(63), nullable=False, unique=True),
        sa.Column("created_at", when, nullable=False),
    )
    sa.Table(
        "tp_model_versions", md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("model_id", sa.Integer, sa.ForeignKey("tp_models.id"), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("created_at", when, nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("task", sa.String(32), nullable=False),
        sa.Column("checkpoint_uri", sa.String(1024), nullable=False),
        sa.Column("checkpoint_digest", sa.String(64), nullable=False),
        sa.Column("bento_model_tag", sa.String(160), nullable=False),
        sa.Column("bento_tag", sa.String(160)),
        sa.Column("training_run", sa.String(256)),
        sa.Column("dataset_snapshot", sa.String(256)),
        sa.Column("parent_version", sa.Integer),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.Column("gate_status", sa.String(16), nullable=False),
        sa.Column("gate_report", sa.String(1024)),
        sa.Column("gate_detail", sa.JSON),
        sa.Column("rejected", sa.Boolean, nullable=False),
        sa.UniqueConstraint("model_id", "version", name="uq_tp_model_version"),
    )
    sa.Table(
        "tp_model_aliases", md,
        sa.Column("model_id", sa.Integer, sa.ForeignKey("tp_models.id"), primary_key=True),
        sa.Column("alias", sa.String(63), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("updated_at", when, nullable=False),
    )
    sa.Table(
        "tp_model_events", md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("model_id", sa.Integer, sa.ForeignKey("tp_models.id"), nullable=False),
        sa.Column("at", when, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("alias", sa.String(63)),
        sa.Column("version", sa.Integer),
        sa.Column("previous_version", sa.Integer),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("detail", sa.JSON, nullable=False),
        sa.Index("ix_tp_model_events_model", "model_id", "id"),
    )
    sa.Table(
        "tp_model_roles", md,
        sa.Column("model_id", sa.Integer, sa.ForeignKey("tp_models.id"), primary_key=True),
        sa.Column("user_name", sa.String(128), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("granted_by", sa.String(128), nullable=False),
        sa.Column("granted_at", when, nullable=False),
    )
    sa.Table(
        "tp_platform_roles", md,
        sa.Column("user_name", sa.String(128), primary_key=True),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("granted_by", sa.String(128), nullable=False),
        sa.Column("granted_at", when, nullable=False),
    )
    sa.Table(
        "tp_platform_audit", md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", when, nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("subject", sa.String(256), nullable=False),
        sa.Column("detail", sa.JSON, nullable=False),
    )
    sa.Table(
        "tp_experiments", md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("model_id", sa.Integer, sa.ForeignKey("tp_models.id"), nullable=False),
        sa.Column("control_version", sa.Integer, nullable=False),
        sa.Column("candidate_version", sa.Integer, nullable=False),
        sa.Column("candidate_weight", sa.Float, nullable=False),
        sa.Column("started_at", when, nullable=False),
        sa.Column("ended_at", when),
        sa.Column("outcome", sa.String(32)),
        sa.Index("ix_tp_experiments_active", "model_id", "ended_at"),
    )
    sa.Table(
        "tp_serving_stats", md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("model_id", sa.Integer, sa.ForeignKey("tp_models.id"), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("replica", sa.String(128), nullable=False),
        sa.Column("window_end", when, nullable=False),
        sa.Column("requests", sa.Integer, nullable=False),
        sa.Column("errors", sa.Integer, nullable=False),
        sa.Column("latency_ms_sum", sa.Float, nullable=False),
        sa.Column("latency_buckets", sa.JSON, nullable=False),
        sa.Column("labelled", sa.Integer, nullable=False),
        sa.Column("correct", sa.Integer, nullable=False),
        sa.Index("ix_tp_serving_stats_version", "model_id", "version", "window_end"),
    )
    return md


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    tables = _tables()
    missing = [t for t in tables.sorted_tables if not inspector.has_table(t.name)]
    tables.create_all(bind, tables=missing, checkfirst=False)
    for table in tables.sorted_tables:
        if table in missing:
            continue
        present = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in present and column.nullable:
                # A database made before migrations, by code older than this column.
                op.add_column(table.name, sa.Column(column.name, column.type, nullable=True))


def downgrade() -> None:
    bind = op.get_bind()
    _tables().drop_all(bind)
