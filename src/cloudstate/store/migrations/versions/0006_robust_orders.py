"""robust orders: failover, launch history, dependencies, launch timeout, rollback reason,
and an index for listing orders newest first

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
EMPTY_LIST = sa.text("'[]'")


def upgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.add_column(
            sa.Column(
                "reason",
                sa.Text(),
                server_default="",
                nullable=False,
                comment="why it is rolling back, rolled back, cancelled or failed",
            )
        )
        batch.add_column(
            sa.Column(
                "launch_deadline",
                sa.DateTime(timezone=True),
                nullable=True,
                comment="instances not running by then fail (launch timeout)",
            )
        )
    op.create_index("ix_orders_created_at_id", "orders", ["created_at", "id"])
    with op.batch_alter_table("instances") as batch:
        batch.add_column(
            sa.Column(
                "failover",
                JSON,
                server_default=EMPTY_LIST,
                nullable=False,
                comment="accounts still to try, in order, if a launch is refused here",
            )
        )
        batch.add_column(
            sa.Column(
                "launch_history",
                JSON,
                server_default=EMPTY_LIST,
                nullable=False,
                comment="each launch attempt: account, error (null: launched), when",
            )
        )
        batch.add_column(
            sa.Column(
                "after",
                JSON,
                server_default=EMPTY_LIST,
                nullable=False,
                comment="instance UUIDs that must be running before this one launches",
            )
        )
        batch.add_column(
            sa.Column(
                "blocked",
                sa.Boolean(),
                server_default=sa.false(),
                nullable=False,
                comment="waiting for ``after``",
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        for column in ("blocked", "after", "launch_history", "failover"):
            batch.drop_column(column)
    op.drop_index("ix_orders_created_at_id", table_name="orders")
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("launch_deadline")
        batch.drop_column("reason")
