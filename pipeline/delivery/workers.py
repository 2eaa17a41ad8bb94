"""Live delivery processes (`delivery_workers`): who is draining, with a heartbeat.

Used to share the per-second rate among live workers and shown by
`syndicate deliveries list`. A worker whose heartbeat is older than STALE_SECONDS
is not live (it died; its claims come back when their lease runs out).
"""

from __future__ import annotations

import datetime as dt
import os
import socket

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from pipeline.store.schema import delivery_workers
from pipeline.timeutil import utcnow

STALE_SECONDS = 60


def register(engine, worker: str) -> None:
    now = utcnow()
    with engine.begin() as conn:
        ins = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(delivery_workers)
        values = dict(
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=now,
            heartbeat_at=now,
            state="running",
            sent=0,
            failed=0,
        )
        conn.execute(ins.values(worker=worker, **values).on_conflict_do_update(index_elements=["worker"], set_=values))
        # forget workers gone for a day (each process start has its own id)
        conn.execute(delete(delivery_workers).where(delivery_workers.c.heartbeat_at < now - dt.timedelta(days=1)))


def heartbeat(engine, worker: str, *, sent: int = 0, failed: int = 0, state: str = "running") -> None:
    with engine.begin() as conn:
        conn.execute(
            update(delivery_workers)
            .where(delivery_workers.c.worker == worker)
            .values(
                heartbeat_at=utcnow(),
                state=state,
                sent=delivery_workers.c.sent + sent,
                failed=delivery_workers.c.failed + failed,
            )
        )


def live_worker_count(engine, now: dt.datetime | None = None) -> int:
    now = now or utcnow()
    with engine.connect() as conn:
        return conn.execute(
            select(func.count())
            .select_from(delivery_workers)
            .where(
                delivery_workers.c.state == "running",
                delivery_workers.c.heartbeat_at > now - dt.timedelta(seconds=STALE_SECONDS),
            )
        ).scalar_one()


def list_workers(engine) -> list[dict]:
    with engine.connect() as conn:
        return [
            dict(r)
            for r in conn.execute(
                select(delivery_workers).order_by(delivery_workers.c.heartbeat_at.desc()).limit(50)
            ).mappings()
        ]
