"""Alembic environment: runs against the engine handed in by pipeline.store.upgrade()."""

from alembic import context
from sqlalchemy import text

from pipeline.store import MIGRATION_LOCK
from pipeline.store.schema import metadata

config = context.config
engine = config.attributes.get("engine")
if engine is None:  # plain `alembic` command line: URL from the config
    from pipeline.store import make_engine

    engine = make_engine(config.get_main_option("sqlalchemy.url"))

with engine.connect() as connection:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # Batch mode copies a table and drops the old one; with foreign keys on, that
        # drop would cascade into the children (subscriber_events, confirm_tokens).
        # The pragma only works outside a transaction, so it goes to the driver first.
        connection.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")
    if connection.dialect.name == "postgresql":
        # Two processes starting at once must not both create the tables.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=sqlite, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
    if sqlite:
        connection.connection.driver_connection.execute("PRAGMA foreign_keys=ON")
