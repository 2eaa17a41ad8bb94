"""The database: engine creation, migrations, and the few helpers every stage shares.

SQLite is the default (WAL, a busy timeout, `BEGIN IMMEDIATE` so that two writers
queue instead of failing on a lock upgrade); PostgreSQL through psycopg 3 when one
machine is not enough. The same code runs on both.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Column, MetaData, PrimaryKeyConstraint, String, Table, create_engine, event, inspect, text
from sqlalchemy.engine import Connection, Engine

from pipeline.errors import ConfigError, SyndicateError
from pipeline.store import schema
from pipeline.store.schema import metadata

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")
_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()
_migrated: set[str] = set()


def normalise_url(url: str) -> str:
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def make_engine(url: str, **kwargs: Any) -> Engine:
    """A new engine for `url`, configured for concurrent use by several processes."""
    url = normalise_url(url)
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves, below
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA busy_timeout=60000")
            _switch_to_wal(cur)
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    if url.startswith("postgresql"):
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise ConfigError(
                "database.url points at PostgreSQL but psycopg is not installed",
                hint="pip install 'syndicate[postgres]'",
            ) from None
        kwargs.setdefault("pool_pre_ping", True)
        return create_engine(url, **kwargs)
    raise ConfigError(
        f"unsupported database URL {url!r}", hint="Use sqlite:///path/to/file.db or postgresql+psycopg://user@host/db."
    )


WAL_SWITCH_PATIENCE = 60.0  # seconds; the same as the busy timeout


def _switch_to_wal(cur: Any) -> None:
    """Put the database in WAL mode, waiting for a process that is doing the same.

    The busy timeout does not cover this. A new database file starts in rollback mode;
    the switch reads the header (a shared lock) and then writes it. When another
    process already holds the write lock (it is switching too, or creating the schema),
    SQLite answers "database is locked" at once instead of waiting, because waiting
    while holding the shared lock could deadlock. So the statement is retried; each
    failed try ends its read, so the other process can finish. A file already in WAL
    mode needs no write: only the first connections to a new file can ever retry.
    """
    import sqlite3  # the driver make_engine's SQLite URLs use; loaded by then anyway

    deadline = time.monotonic() + WAL_SWITCH_PATIENCE
    pause = 0.005
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.2)


def get_engine(url: str, *, migrate: bool = True) -> Engine:
    """The process-wide engine for `url`; migrations are applied on first use."""
    url = normalise_url(url)
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = make_engine(url)
    if migrate and url not in _migrated:
        upgrade(engine)
        _migrated.add(url)
    return engine


class DatabaseNotReady(SyndicateError):
    """The configured database is missing, empty or behind this version's schema."""


def _sqlite_path(url: str) -> Path | None:
    if not url.startswith("sqlite"):
        return None
    path = url.split("///", 1)[-1]
    return None if not path or path == ":memory:" else Path(path)


def open_existing(url: str) -> Engine:
    """The engine for a database that already holds Syndicate's current schema.

    For commands that only read (`status`, `review`, `... list`): they never create a
    file, a table or a migration, so a mistyped `database.url` or a maintenance
    database is reported instead of being turned into an empty, healthy-looking one.
    """
    url = normalise_url(url)
    shown = url.split("@")[-1] if "@" in url else url
    fix = (
        "`syndicate init` creates and migrates the database; `syndicate db upgrade` migrates an "
        "existing one. Check database.url if this is not the database you meant."
    )
    path = _sqlite_path(url)
    if path is not None and not path.is_file():
        raise DatabaseNotReady(f"no database at {path}", hint=fix)
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = make_engine(url)
    if url in _migrated:
        return engine
    try:
        revision = current_revision(engine)
    except Exception as exc:  # the driver's own error types differ per backend
        raise DatabaseNotReady(
            f"cannot open the database at {shown}: {exc}", hint="Check database.url and that the server is reachable."
        ) from exc
    head = head_revision()
    if revision is None:
        raise DatabaseNotReady(f"the database at {shown} holds no Syndicate schema", hint=fix)
    if revision != head:
        raise DatabaseNotReady(
            f"the database at {shown} is at schema revision {revision}; this version needs {head}",
            hint="Run `syndicate db upgrade` (back up the database first).",
        )
    _migrated.add(url)
    return engine


def head_revision() -> str | None:
    """The newest migration this version ships."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(None)).get_current_head()


def dispose_engines() -> None:
    """Close every pooled connection (tests, and after fork)."""
    with _engines_lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _migrated.clear()


def alembic_config(engine: Engine | None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


# The lock env.py takes on PostgreSQL around migrations; the fresh-database path takes the
# same one, so the two never run side by side.
MIGRATION_LOCK = 7400100


def declared_head() -> str | None:
    """The newest migration, read from the files in migrations/versions without importing
    Alembic (0.2 s of every process start); None when they do not name exactly one head
    (the caller then asks Alembic). tests/test_migrations.py holds it to head_revision()."""
    import ast

    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (MIGRATIONS / "versions").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        revision = re.search(r"^revision = (.+)$", text, re.M)
        down = re.search(r"^down_revision = (.+)$", text, re.M)
        if revision is None or down is None:
            continue
        try:
            name, parent = ast.literal_eval(revision.group(1)), ast.literal_eval(down.group(1))
        except (ValueError, SyntaxError):
            return None
        if not isinstance(name, str):
            return None
        revisions.add(name)
        if isinstance(parent, str):
            parents.add(parent)
        elif isinstance(parent, (tuple, list)):
            parents.update(parent)
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


# Alembic's own version table, as `alembic stamp` creates it.
_alembic_version = Table(
    "alembic_version",
    MetaData(),
    Column("version_num", String(32), nullable=False),
    PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
)


def _at_head_without_alembic(engine: Engine) -> bool:
    """True when the database is at the newest revision, made so here if it was empty.

    An empty database (no tables, no alembic_version) gets the declared schema with
    `create_all` and is stamped at head, in one transaction: Alembic's documented way for
    a new database (replaying every migration cost ~0.4 s, most of a small ingest). The
    stamp is the row `alembic stamp` writes, in the table it creates, so that neither
    needs Alembic imported. A database already at head is left as it is. Anything else
    returns False: Alembic migrates it.

    Safe from several processes at once, like the migrations: the transaction holds
    SQLite's write lock (`BEGIN IMMEDIATE`, see make_engine) or PostgreSQL's migration
    advisory lock before it looks, so a second process waits, then finds the schema.
    STORE-1: the result is the schema the migrations build (tests/test_migrations.py).
    """
    head = declared_head()
    if head is None:
        return False
    with engine.connect() as conn:
        with conn.begin():
            if is_postgres(conn):
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
            tables = inspect(conn).get_table_names()
            if not tables:
                metadata.create_all(conn)
                _alembic_version.create(conn)
                conn.execute(_alembic_version.insert().values(version_num=head))
                return True
            if "alembic_version" in tables:
                return list(conn.execute(_alembic_version.select()).scalars()) == [head]
    return False


def upgrade(engine: Engine, revision: str = "heads", *, replay: bool = False) -> None:
    """Apply every migration not yet applied (idempotent; safe from several processes).

    An empty database gets the declared schema at once (`_at_head_without_alembic`)
    instead of every migration in turn; `replay=True` runs the migrations anyway (the
    tests compare both).
    """
    try:
        if revision in ("head", "heads") and not replay and _at_head_without_alembic(engine):
            return
        from alembic import command

        command.upgrade(alembic_config(engine), revision)
    except SyndicateError:
        raise
    except Exception as exc:  # the driver's own error types differ per backend
        raise SyndicateError(
            f"could not migrate the database at {engine.url.render_as_string(hide_password=True)}: {exc}",
            hint="Check database.url and that the server is reachable; `syndicate db upgrade -v` shows details.",
        ) from exc


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


_DISCARD = "syndicate.discard"


@contextlib.contextmanager
def transaction(engine: Engine, *, dry_run: bool = False) -> Iterator[Connection]:
    """One transaction: committed when the block ends, rolled back when it raises, and
    rolled back anyway for a dry run (the block runs every query it would run, and
    the database is left as it was). `discard(conn)` inside the block asks for the
    rollback when the decision comes late (strict mode found a bad file)."""
    with engine.connect() as conn:
        trans = conn.begin()
        conn.info[_DISCARD] = dry_run
        try:
            yield conn
        except BaseException:
            if trans.is_active:
                trans.rollback()
            raise
        finally:
            discard_it = conn.info.pop(_DISCARD, False)
        if trans.is_active:
            if discard_it:
                trans.rollback()
            else:
                trans.commit()


def discard(conn: Connection) -> None:
    """Roll back, instead of committing, the `transaction()` block `conn` belongs to."""
    conn.info[_DISCARD] = True


def has_table(engine: Engine, name: str) -> bool:
    return inspect(engine).has_table(name)


def is_postgres(conn_or_engine: Connection | Engine) -> bool:
    return bool(conn_or_engine.dialect.name == "postgresql")


__all__ = [
    "schema",
    "metadata",
    "make_engine",
    "get_engine",
    "open_existing",
    "upgrade",
    "dispose_engines",
    "is_postgres",
    "DatabaseNotReady",
    "transaction",
    "discard",
]
