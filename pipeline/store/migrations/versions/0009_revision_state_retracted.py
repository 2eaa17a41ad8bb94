"""revisions.state may be 'retracted' (RevisionState.RETRACTED, the desk, issue 13)

RevisionState gained RETRACTED after migration 0002 froze ck_revisions_state without
it, so a migrated database rejected a state the declared schema (schema.py) allows,
and a database created from schema.py at once (the fresh-database path in
pipeline.store.upgrade) differed from a migrated one. This brings the migrated
constraint to the declared one (STORE-1). Values frozen as in pipeline.states here.

Revision ID: 0009
Revises: 0008
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

NAME = "ck_revisions_state"
BEFORE = "state IN ('draft', 'submitted', 'approved', 'rejected', 'superseded')"
AFTER = "state IN ('draft', 'submitted', 'approved', 'rejected', 'retracted', 'superseded')"


def _replace(sql: str) -> None:
    with op.batch_alter_table("revisions", schema=None) as batch_op:
        batch_op.drop_constraint(NAME, type_="check")
        batch_op.create_check_constraint(NAME, sql)


def upgrade() -> None:
    _replace(AFTER)


def downgrade() -> None:
    _replace(BEFORE)
