"""an event log with no global lock, and an explicit head per delivery key

Events: the old ``seq`` (an identity handed out at insert) becomes ``number``, which only
orders inserts; a new ``seq`` is the public cursor, given after commit by the sequencer from the
one-row ``event_counter``. Existing events keep their cursor (``seq = number``).

Deliveries: ``event_seq`` becomes ``event_number``; ``head`` marks the one open delivery of each
(subscription, key) that may be sent, so a claim no longer walks every row queued behind one.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 18:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

OPEN = sa.text("status IN ('pending', 'delivering')")
PENDING = sa.text("status = 'pending'")
PENDING_HEADS = sa.text("status = 'pending' AND head")
UNNUMBERED = sa.text("seq IS NULL")


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.drop_index("ix_deliveries_pending_by_seq", table_name="deliveries")
    op.drop_index("ix_deliveries_open_by_key", table_name="deliveries")
    # Both databases rename a column in place, indexes and foreign keys following it.
    op.execute("ALTER TABLE events RENAME COLUMN seq TO number")
    op.execute("ALTER TABLE deliveries RENAME COLUMN event_seq TO event_number")
    if postgres:
        op.execute(
            "ALTER TABLE deliveries RENAME CONSTRAINT fk_deliveries_event_seq_events"
            " TO fk_deliveries_event_number_events"
        )
    op.add_column("events", sa.Column("seq", sa.BigInteger(), nullable=True))
    op.execute("UPDATE events SET seq = number")
    op.create_index("uq_events_seq", "events", ["seq"], unique=True)
    op.create_index(
        "ix_events_unnumbered",
        "events",
        ["number"],
        postgresql_where=UNNUMBERED,
        sqlite_where=UNNUMBERED,
    )
    op.create_table(
        "event_counter",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_event_counter")),
    )
    op.execute(
        "INSERT INTO event_counter (id, last_seq) SELECT 1, COALESCE(MAX(seq), 0) FROM events"
    )
    op.add_column(
        "deliveries",
        sa.Column(
            "head",
            sa.Boolean(),
            server_default=sa.false(),
            nullable=False,
            comment="the one open delivery of its (subscription, key) that may be sent now",
        ),
    )
    op.execute(
        "UPDATE deliveries SET head = TRUE WHERE status IN ('pending', 'delivering') AND NOT"
        " EXISTS (SELECT 1 FROM deliveries AS earlier WHERE earlier.subscription_id ="
        " deliveries.subscription_id AND earlier.ordering_key = deliveries.ordering_key AND"
        " earlier.event_number < deliveries.event_number AND earlier.status IN ('pending',"
        " 'delivering'))"
    )
    op.create_index(
        "ix_deliveries_open_by_key",
        "deliveries",
        ["subscription_id", "ordering_key", "event_number"],
        postgresql_where=OPEN,
        sqlite_where=OPEN,
    )
    op.create_index(
        "ix_deliveries_pending_heads",
        "deliveries",
        ["event_number", "id"],
        postgresql_where=PENDING_HEADS,
        sqlite_where=PENDING_HEADS,
    )


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.drop_index("ix_deliveries_pending_heads", table_name="deliveries")
    op.drop_index("ix_deliveries_open_by_key", table_name="deliveries")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("head")
    op.drop_table("event_counter")
    op.drop_index("ix_events_unnumbered", table_name="events")
    op.drop_index("uq_events_seq", table_name="events")
    op.execute(
        "DELETE FROM deliveries WHERE event_number IN (SELECT number FROM events WHERE seq IS NULL)"
    )
    op.execute("DELETE FROM events WHERE seq IS NULL")
    with op.batch_alter_table("events") as batch:
        batch.drop_column("seq")
    if postgres:
        op.execute(
            "ALTER TABLE deliveries RENAME CONSTRAINT fk_deliveries_event_number_events"
            " TO fk_deliveries_event_seq_events"
        )
    op.execute("ALTER TABLE deliveries RENAME COLUMN event_number TO event_seq")
    op.execute("ALTER TABLE events RENAME COLUMN number TO seq")
    op.create_index(
        "ix_deliveries_open_by_key",
        "deliveries",
        ["subscription_id", "ordering_key", "event_seq"],
        postgresql_where=OPEN,
        sqlite_where=OPEN,
    )
    op.create_index(
        "ix_deliveries_pending_by_seq",
        "deliveries",
        ["event_seq", "id"],
        postgresql_where=PENDING,
        sqlite_where=PENDING,
    )
