"""Alembic environment: runs against the engine handed in by pipeline.store.upgrade()."""

from alembic import context
from sqlalchemy import text

from pipeline.store.schema import metadata

config = context.config
engine = config.attributes.get("engine")
if engine is None:  # plain `alembic` command line: URL from the config
    from pipeline.store import make_engine
    engine = make_engine(config.get_main_option("sqlalchemy.url"))

with engine.connect() as connection:
    if connection.dialect.name == "postgresql":
        # Two processes starting at once must not both create the tables.
        connection.execute(text("SELECT pg_advisory_xact_lock(7400100)"))
    context.configure(connection=connection, target_metadata=metadata,
                      render_as_batch=connection.dialect.name == "sqlite",
                      compare_type=True)
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
