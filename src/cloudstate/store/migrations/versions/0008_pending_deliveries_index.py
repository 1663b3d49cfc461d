"""a partial index for the deliverer's claim: pending deliveries in claim order

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25 03:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

PENDING = sa.text("status = 'pending'")


def upgrade() -> None:
    op.create_index(
        "ix_deliveries_pending_by_seq",
        "deliveries",
        ["event_seq", "id"],
        postgresql_where=PENDING,
        sqlite_where=PENDING,
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_pending_by_seq", table_name="deliveries")
