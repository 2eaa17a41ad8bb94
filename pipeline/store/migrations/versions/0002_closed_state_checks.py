"""closed states as CHECK constraints (issue 17)

Constraints only: no column, table or row changes. On SQLite, batch mode copies each
table (env.py turns foreign keys off meanwhile, so ON DELETE CASCADE children survive
the copy). The values are written out here, frozen, as they were in pipeline.states
at this revision; a later change to a state set needs its own migration.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

CHECKS = [
    ("subscribers", "ck_subscribers_state", "state IN ('unconfirmed', 'confirmed', 'unsubscribed', 'suppressed')"),
    ("subscribers", "ck_subscribers_frequency", "frequency IN ('instant', 'daily', 'weekly')"),
    (
        "deliveries",
        "ck_deliveries_state",
        "state IN ('queued', 'sending', 'sent', 'retry', 'failed', 'suppressed', 'dead', 'cancelled')",
    ),
    ("revisions", "ck_revisions_state", "state IN ('draft', 'submitted', 'approved', 'rejected', 'superseded')"),
    ("approvals", "ck_approvals_decision", "decision IN ('approved', 'rejected', 'retracted')"),
    (
        "suppressions",
        "ck_suppressions_reason",
        "reason IN ('unsubscribed', 'hard_bounce', 'soft_bounces', 'complaint', 'manual')",
    ),
    ("job_runs", "ck_job_runs_status", "status IN ('running', 'ok', 'failed', 'skipped', 'missed')"),
    ("delivery_workers", "ck_delivery_workers_state", "state IN ('running', 'stopping', 'stopped')"),
    ("partner_state", "ck_partner_state_state", "state IN ('active', 'paused', 'disabled')"),
]


def _by_table():
    tables: dict[str, list[tuple[str, str]]] = {}
    for table, name, sql in CHECKS:
        tables.setdefault(table, []).append((name, sql))
    return tables


def upgrade() -> None:
    for table, checks in _by_table().items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            for name, sql in checks:
                batch_op.create_check_constraint(name, sql)


def downgrade() -> None:
    for table, checks in _by_table().items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            for name, _sql in checks:
                batch_op.drop_constraint(name, type_="check")
