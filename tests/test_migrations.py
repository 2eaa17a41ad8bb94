"""The migrations create exactly the schema the code declares, on every database."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from pipeline.errors import SyndicateError
from pipeline.store import current_revision, get_engine, upgrade
from pipeline.store.schema import metadata


def test_migrated_database_matches_the_declared_schema(db_url):
    engine = get_engine(db_url)
    upgrade(engine)  # a second run is a no-op
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
    assert diff == [], "schema.py changed without a migration: run `make migration MESSAGE=...`"
    assert current_revision(engine) is not None


# --- the fresh-database path (STORE-1) ------------------------------------------------


def _normalised_sql(sql: str | None) -> str:
    return " ".join((sql or "").split())


def schema_snapshot(engine) -> dict:
    """Everything the database says about its schema, from the inspector (both backends)
    and, on SQLite, from sqlite_master too: tables, columns (type, nullability, server
    default), primary keys, foreign keys (with ON DELETE), indexes (name, columns,
    uniqueness), unique constraints and CHECK constraints (name and expression)."""
    from sqlalchemy import inspect, text

    snap: dict = {}
    with engine.connect() as conn:
        insp = inspect(conn)
        for table in sorted(insp.get_table_names()):
            snap[(table, "columns")] = [
                (c["name"], str(c["type"]), c["nullable"], c.get("default"), c.get("comment"))
                for c in insp.get_columns(table)
            ]
            snap[(table, "pk")] = insp.get_pk_constraint(table)
            snap[(table, "fks")] = sorted(
                (
                    fk["name"],
                    tuple(fk["constrained_columns"]),
                    fk["referred_table"],
                    tuple(fk["referred_columns"]),
                    tuple(sorted((fk.get("options") or {}).items())),
                )
                for fk in insp.get_foreign_keys(table)
            )
            snap[(table, "indexes")] = sorted(
                (ix["name"], tuple(ix["column_names"]), bool(ix["unique"])) for ix in insp.get_indexes(table)
            )
            snap[(table, "uniques")] = sorted(
                (uq["name"], tuple(uq["column_names"])) for uq in insp.get_unique_constraints(table)
            )
            snap[(table, "checks")] = sorted(
                (ck["name"], _normalised_sql(ck["sqltext"])) for ck in insp.get_check_constraints(table)
            )
        if conn.dialect.name == "sqlite":
            # The CREATE statements themselves, each clause on its own and sorted: batch
            # migrations quote the table name and reorder constraints, which means nothing.
            for kind, name, sql in conn.execute(
                text("SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'")
            ):
                body = _normalised_sql(sql).replace(f'CREATE TABLE "{name}"', f"CREATE TABLE {name}")
                head, _, rest = body.partition("(")
                clauses = sorted(c.strip() for c in rest.rstrip(")").split(", ") if c.strip())
                snap[("sqlite_master", kind, name)] = (head.strip(), clauses)
    return snap


def _second_url(db_url: str, tmp_path) -> str:
    if db_url.startswith("sqlite"):
        return f"sqlite:///{tmp_path / 'var' / 'replayed.db'}"
    from tests.conftest import new_pg_schema

    return new_pg_schema()


def test_a_fresh_database_gets_the_schema_the_migrations_build(db_url, tmp_path):
    """STORE-1: the fast path (create_all + stamp) and replaying every migration give
    the same tables, columns, defaults, indexes and constraints, and the same revision."""
    from pipeline.store import dispose_engines, head_revision, make_engine

    fresh = make_engine(db_url)
    replayed = make_engine(_second_url(db_url, tmp_path))
    try:
        upgrade(fresh)
        upgrade(replayed, replay=True)
        a, b = schema_snapshot(fresh), schema_snapshot(replayed)
        assert a.keys() == b.keys()
        different = {key: (a[key], b[key]) for key in a if a[key] != b[key]}
        assert different == {}
        assert current_revision(fresh) == current_revision(replayed) == head_revision()
        upgrade(fresh)  # at head: nothing to do
        assert schema_snapshot(fresh) == a
    finally:
        fresh.dispose()
        replayed.dispose()
        dispose_engines()


@pytest.mark.xdist_group("processes")
def test_the_fresh_database_path_creates_the_schema_once_when_processes_start_together(db_url, tmp_path):
    """STORE-1: several processes opening an empty database at once: one creates the
    schema, the others wait for its lock, then find it there (no error, one revision row).
    Processes, not threads: Alembic's `context` is module state, one migration per process."""
    import subprocess
    import sys
    import time

    from sqlalchemy import text

    from pipeline.store import head_revision, make_engine

    go = tmp_path / "go"
    script = (
        "import pathlib, sys, time\n"
        "from pipeline.store import make_engine, upgrade\n"
        "engine = make_engine(sys.argv[1])\n"
        "pathlib.Path(sys.argv[3]).touch()\n"
        "while not pathlib.Path(sys.argv[2]).exists():\n"
        "    time.sleep(0.005)\n"
        "upgrade(engine)\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, db_url, str(go), str(tmp_path / f"ready-{n}")],
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(3)
    ]
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("ready-*"))) < len(procs) and time.monotonic() < deadline:
        time.sleep(0.01)  # every process imported and waits at the start line
    go.touch()
    results = [(p.wait(timeout=120), p.stderr.read() if p.stderr else "") for p in procs]
    assert results == [(0, "")] * len(procs)
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [head_revision()]
    finally:
        engine.dispose()


def test_a_new_sqlite_file_waits_for_the_process_holding_its_write_lock(tmp_path):
    """STORE-1, found by CI: three processes opened a new database at once, and one
    failed with "database is locked" in `PRAGMA journal_mode=WAL`. The switch reads the
    header, then writes it; when another connection holds the write lock, SQLite does not
    wait (the busy timeout is skipped to avoid a deadlock). Here a plain connection holds
    the write lock of a new file in rollback mode for a moment, as the other process did."""
    import sqlite3
    import threading
    import time

    from sqlalchemy import text

    from pipeline.store import make_engine

    path = tmp_path / "new.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE t (x)")  # a real file, still in rollback mode
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO t VALUES (1)")
    committing = threading.Event()

    def release() -> None:
        time.sleep(0.3)
        committing.set()  # before the COMMIT: the lock is held until it runs
        holder.execute("COMMIT")

    thread = threading.Thread(target=release)
    thread.start()
    engine = make_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            assert committing.is_set()  # it waited for the lock instead of failing
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("SELECT x FROM t")).scalars().all() == [1]
    finally:
        engine.dispose()
        thread.join()
        holder.close()


def test_a_database_with_tables_but_no_schema_is_not_taken_for_an_empty_one(db_url):
    """STORE-1: the fast path is for an empty database only: anything else goes through
    the migrations (which fail loudly on a table that is in the way)."""
    from sqlalchemy import text

    from pipeline.store import make_engine

    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE subscribers (id INTEGER PRIMARY KEY)"))
        with pytest.raises(SyndicateError):
            upgrade(engine)
    finally:
        engine.dispose()


def test_the_head_read_from_the_files_is_alembics_head():
    """STORE-1: the fast path stamps the head it reads from migrations/versions itself
    (no Alembic import); it must be the head Alembic computes."""
    from pipeline.store import declared_head, head_revision

    assert declared_head() == head_revision() is not None


def test_a_database_behind_head_is_migrated_not_taken_as_current(db_url, tmp_path):
    """STORE-1: only an empty database takes the fast path; one at an older revision
    is migrated by Alembic and ends with the same schema as a fresh one."""
    from pipeline.store import dispose_engines, head_revision, make_engine

    older = make_engine(db_url)
    fresh = make_engine(_second_url(db_url, tmp_path))
    try:
        upgrade(older, "0008")
        assert current_revision(older) == "0008"
        upgrade(older)
        upgrade(fresh)
        assert current_revision(older) == head_revision()
        assert schema_snapshot(older) == schema_snapshot(fresh)
    finally:
        older.dispose()
        fresh.dispose()
        dispose_engines()
