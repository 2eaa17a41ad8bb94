"""edition reports: aggregate click counts, indexes for per-edition counts (issue 14 item 3)

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

import pipeline.store.schema

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "edition_clicks",
        sa.Column("edition_id", sa.BigInteger(), nullable=False),
        sa.Column("article_id", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("first_at", pipeline.store.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_at", pipeline.store.schema.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["edition_id"],
            ["digest_editions.id"],
            name=op.f("fk_edition_clicks_edition_id_digest_editions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("edition_id", "article_id", name=op.f("pk_edition_clicks")),
    )
    op.create_index("ix_deliveries_edition", "deliveries", ["edition_id", "state", "sent_at"])
    op.create_index("ix_bounce_events_delivery", "bounce_events", ["delivery_id"])


def downgrade() -> None:
    op.drop_index("ix_bounce_events_delivery", table_name="bounce_events")
    op.drop_index("ix_deliveries_edition", table_name="deliveries")
    op.drop_table("edition_clicks")
