"""scale-out: the worker registry, the account lease log, shared call budgets, and an
index for the launcher's claim

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25 00:06:57.768418
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

WHEN = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


NEW = sa.text("state = 'new'")


def upgrade() -> None:
    op.create_index(
        "ix_instances_new_by_account",
        "instances",
        ["account_id", "created_at"],
        postgresql_where=NEW,
        sqlite_where=NEW,
    )
    op.create_table(
        "workers",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(length=32), nullable=False),
        sa.Column("started_at", WHEN, nullable=False),
        sa.Column("heartbeat_at", WHEN, nullable=False),
        sa.Column("stopped_at", WHEN, nullable=True),
        sa.Column("holds", JSON, nullable=False, comment="what it held at its last heartbeat"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workers")),
    )
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.create_index("ix_workers_heartbeat_at", ["heartbeat_at"], unique=False)

    op.create_table(
        "call_budgets",
        sa.Column("account_id", BIG_ID, nullable=False),
        sa.Column(
            "rate", sa.Double(), nullable=True, comment="calls per second now; null: unlimited"
        ),
        sa.Column("burst", sa.Double(), nullable=False),
        sa.Column("tokens", sa.Double(), nullable=False),
        sa.Column("refilled_at", WHEN, nullable=False),
        sa.Column("throttled_at", WHEN, nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_call_budgets_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_call_budgets")),
    )
    op.create_table(
        "lease_log",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("account_id", BIG_ID, nullable=False),
        sa.Column("worker_id", sa.String(length=128), nullable=False),
        sa.Column("started_at", WHEN, nullable=False),
        sa.Column("expires_at", WHEN, nullable=False, comment="renewed with the lease"),
        sa.Column("finished_at", WHEN, nullable=True, comment="null: crashed or still held"),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_lease_log_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lease_log")),
    )
    with op.batch_alter_table("lease_log", schema=None) as batch_op:
        batch_op.create_index(
            "ix_lease_log_account_started", ["account_id", "started_at"], unique=False
        )
        batch_op.create_index(
            "ix_lease_log_open", ["account_id", "worker_id", "finished_at"], unique=False
        )


def downgrade() -> None:
    op.drop_index("ix_instances_new_by_account", table_name="instances")
    with op.batch_alter_table("lease_log", schema=None) as batch_op:
        batch_op.drop_index("ix_lease_log_open")
        batch_op.drop_index("ix_lease_log_account_started")

    op.drop_table("lease_log")
    op.drop_table("call_budgets")
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.drop_index("ix_workers_heartbeat_at")

    op.drop_table("workers")
