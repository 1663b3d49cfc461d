"""credentials given inline by launch orders, kept under a retention policy

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 23:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(
            sa.Column(
                "credentials_from_order",
                sa.Boolean(),
                server_default=sa.false(),
                nullable=False,
                comment="given inline by a launch order: dropped under the retention policy",
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("credentials_from_order")
