"""The migrations create exactly the schema the code declares, on every database."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from pipeline.store import current_revision, get_engine, upgrade
from pipeline.store.schema import metadata


def test_migrated_database_matches_the_declared_schema(db_url):
    engine = get_engine(db_url)
    upgrade(engine)  # a second run is a no-op
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
    assert diff == [], "schema.py changed without a migration: run `make migration MESSAGE=...`"
    assert current_revision(engine) is not None
