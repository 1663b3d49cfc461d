"""engine bookkeeping: orphans, account cycle state

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 21:06:55.720446
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "orphans",
        sa.Column(
            "account_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("provider_id", sa.String(length=255), nullable=False),
        sa.Column("uuid", sa.Uuid(), nullable=True),
        sa.Column("raw_state", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False, comment="unknown | duplicate"),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_orphans_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("account_id", "provider_id", name=op.f("pk_orphans")),
    )
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("consecutive_failures", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column(
                "last_cycle_at",
                sa.DateTime(timezone=True),
                nullable=True,
                comment="last complete listing",
            )
        )
        batch_op.add_column(
            sa.Column("realms_checked_at", sa.DateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_column("realms_checked_at")
        batch_op.drop_column("last_cycle_at")
        batch_op.drop_column("consecutive_failures")

    op.drop_table("orphans")
