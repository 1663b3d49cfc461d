"""a partial index for the deliverer's head-of-queue check

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 21:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

OPEN = sa.text("status IN ('pending', 'delivering')")


def upgrade() -> None:
    op.create_index(
        "ix_deliveries_open_by_key",
        "deliveries",
        ["subscription_id", "ordering_key", "event_seq"],
        postgresql_where=OPEN,
        sqlite_where=OPEN,
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_open_by_key", table_name="deliveries")
