"""the lease log says which leases saw a whole reconcile cycle through

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-25 03:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("lease_log") as batch:
        batch.add_column(
            sa.Column(
                "completed",
                sa.Boolean(),
                nullable=False,
                server_default=sa.false(),
                comment="the cycle listed every page and judged what it did not see",
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("lease_log") as batch:
        batch.drop_column("completed")
