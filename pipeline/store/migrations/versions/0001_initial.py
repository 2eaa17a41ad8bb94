"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-25

While the first release is being built this creates the tables from the metadata;
it is frozen into explicit operations before the first release (see README, Storage).
"""
from alembic import op

from pipeline.store.schema import metadata

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    metadata.create_all(op.get_bind())


def downgrade() -> None:
    metadata.drop_all(op.get_bind())
