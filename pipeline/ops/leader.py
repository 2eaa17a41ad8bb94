"""One active scheduler per database: leader election.

SQLite: an exclusive `flock` on a lock file next to the database file (SQLite lives
on one machine, so a file lock is exact; the kernel drops it when the process dies).

PostgreSQL: a session-level advisory lock (`pg_try_advisory_lock`) held on a dedicated
autocommit connection. Nothing else runs on that connection and it never opens a
transaction, so the leader holds no transaction while jobs run. The key is derived
from the database and schema, so two schemas on one server elect independently.
TCP keepalives and `tcp_user_timeout` on the lock session make the server drop a
vanished leader's session, and with it the lock, in about 20 s; a standby polling
every scheduler.standby_poll_seconds then takes over within 30 s.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import socket
from pathlib import Path

from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)


class LeaderLock:
    """try_acquire() -> bool; healthy() -> bool while held; release()."""

    description = ""

    def try_acquire(self) -> bool:
        raise NotImplementedError

    def healthy(self) -> bool:
        return True

    def release(self) -> None:
        raise NotImplementedError


class FileLock(LeaderLock):
    def __init__(self, path: Path):
        self.path = Path(path)
        self.description = f"lock file {self.path}"
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{socket.gethostname()} {os.getpid()}\n".encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def advisory_key(database: str, schema: str) -> int:
    digest = hashlib.sha256(f"syndicate.scheduler:{database}.{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class AdvisoryLock(LeaderLock):
    KEEPALIVE = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 5, "keepalives_count": 3}

    def __init__(self, engine: Engine):
        self.engine = engine
        self._conn = None
        self.key: int | None = None
        self.description = "PostgreSQL advisory lock"

    def _connect(self):
        import psycopg

        cargs, cparams = self.engine.dialect.create_connect_args(self.engine.url)
        params = {**cparams, **self.KEEPALIVE, "autocommit": True, "connect_timeout": 10}
        params.setdefault("application_name", "syndicate-scheduler-lock")
        conn = psycopg.connect(*cargs, **params)
        # The server side of the keepalives: a leader whose machine vanishes loses its
        # session (and the lock) in ~20 s instead of the OS default of hours.
        for name, value in (
            ("tcp_keepalives_idle", 5),
            ("tcp_keepalives_interval", 5),
            ("tcp_keepalives_count", 3),
            ("tcp_user_timeout", 15000),
        ):
            try:
                conn.execute(f"SET {name} = {int(value)}")
            except Exception:  # older servers, or a Unix socket: keep what works
                log.debug("could not set %s on the lock session", name, exc_info=True)
        return conn

    def try_acquire(self) -> bool:
        try:
            if self._conn is None or self._conn.closed:
                self._conn = self._connect()
                database, schema = self._conn.execute("SELECT current_database(), current_schema()").fetchone()
                self.key = advisory_key(database, schema or "public")
                self.description = f"PostgreSQL advisory lock {self.key} ({database}.{schema})"
            got = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()[0]
            return bool(got)
        except Exception as exc:  # the server is down or restarting: stay a standby, try again
            log.warning("could not try the scheduler lock: %s", exc)
            self._close()
            return False

    def healthy(self) -> bool:
        if self._conn is None or self._conn.closed:
            return False
        try:
            row = self._conn.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted "
                "AND objid = (%s::bigint & 4294967295)::oid",
                (self.key,),
            ).fetchone()
            return bool(row and row[0])
        except Exception as exc:
            log.error("lost the scheduler lock's database session: %s", exc)
            return False

    def _close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
            self._conn = None

    def release(self) -> None:
        if self._conn is not None and not self._conn.closed:
            try:
                self._conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
            except Exception:
                pass
        self._close()


def lock_for(engine: Engine, var_dir: Path) -> LeaderLock:
    """The right lock for this database."""
    if engine.dialect.name == "postgresql":
        return AdvisoryLock(engine)
    database = engine.url.database
    if database and database != ":memory:":
        db_path = Path(database)
        return FileLock(db_path.with_name(db_path.name + ".scheduler.lock"))
    return FileLock(Path(var_dir) / "scheduler.lock")
