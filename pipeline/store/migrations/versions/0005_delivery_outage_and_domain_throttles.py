"""delivery: channel outage backoff, per-domain throttles (issues 16 item 11, 19 item 3)

Revision ID: 0005
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

import pipeline.store.schema

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("delivery_channels") as batch:
        batch.add_column(sa.Column("outage_until", pipeline.store.schema.UTCDateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("outage_reason", sa.Text(), server_default="", nullable=False))
        batch.add_column(sa.Column("outage_count", sa.Integer(), server_default="0", nullable=False))
    op.create_table(
        "delivery_throttles",
        sa.Column("channel", sa.String(length=20), nullable=False),
        sa.Column("domain", sa.String(length=255), nullable=False),
        sa.Column("rate_factor", sa.Integer(), nullable=False),
        sa.Column("throttled_until", pipeline.store.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("window_seconds", sa.Integer(), nullable=False),
        sa.Column("base_per_minute", sa.Integer(), nullable=True),
        sa.Column("updated_at", pipeline.store.schema.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("channel", "domain", name=op.f("pk_delivery_throttles")),
    )


def downgrade() -> None:
    op.drop_table("delivery_throttles")
    with op.batch_alter_table("delivery_channels") as batch:
        batch.drop_column("outage_count")
        batch.drop_column("outage_reason")
        batch.drop_column("outage_until")
