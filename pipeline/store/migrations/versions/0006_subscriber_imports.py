"""subscriber imports: one row per CSV import and its per-row notes (issue 15 item 2)

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

import pipeline.store.schema

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "subscriber_imports",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("filename", sa.String(length=500), nullable=False),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("confirmed", sa.Boolean(), nullable=False),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(length=320), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("created", sa.Integer(), nullable=False),
        sa.Column("updated", sa.Integer(), nullable=False),
        sa.Column("unchanged", sa.Integer(), nullable=False),
        sa.Column("skipped", sa.Integer(), nullable=False),
        sa.Column("bad", sa.Integer(), nullable=False),
        sa.Column("confirmed_count", sa.Integer(), nullable=False),
        sa.Column("confirmations_queued", sa.Integer(), nullable=False),
        sa.Column("created_at", pipeline.store.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("started_at", pipeline.store.schema.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", pipeline.store.schema.UTCDateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=False),
        sa.CheckConstraint("status IN ('queued', 'running', 'done', 'failed')", name="ck_subscriber_imports_status"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscriber_imports")),
    )
    op.create_table(
        "subscriber_import_errors",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("import_id", sa.BigInteger(), nullable=False),
        sa.Column("line", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("field", sa.String(length=40), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["import_id"],
            ["subscriber_imports.id"],
            name=op.f("fk_subscriber_import_errors_import_id_subscriber_imports"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscriber_import_errors")),
    )
    op.create_index(
        op.f("ix_subscriber_import_errors_import_id"), "subscriber_import_errors", ["import_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_subscriber_import_errors_import_id"), table_name="subscriber_import_errors")
    op.drop_table("subscriber_import_errors")
    op.drop_table("subscriber_imports")
