"""Job run history: every stage run, scheduled or by hand, is a row in `job_runs`."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time

from sqlalchemy import insert, update

from pipeline.errors import SyndicateError
from pipeline.store.schema import job_runs
from pipeline.timeutil import utcnow

log = logging.getLogger(__name__)


@contextlib.contextmanager
def record_run(app, job_id: str, *, trigger: str = "scheduled", scheduled_for=None, dry_run: bool = False):
    """Record a run of `job_id`; yields a dict the stage's counts go into.

    The row is written as `running` first, so a run that dies with its process is
    visible as one that never finished; it ends as ok or failed with the error.
    """
    counts: dict = {}
    started = utcnow()
    t0 = time.monotonic()
    with app.engine.begin() as conn:
        run_id = conn.execute(
            insert(job_runs).values(
                job_id=job_id,
                trigger=trigger,
                scheduled_for=scheduled_for,
                started_at=started,
                status="running",
                counts={},
                host=socket.gethostname(),
                pid=os.getpid(),
                dry_run=dry_run,
            )
        ).inserted_primary_key[0]
    status, error = "ok", None
    try:
        yield counts
    except BaseException as exc:
        status = "failed"
        error = exc.message if isinstance(exc, SyndicateError) else f"{type(exc).__name__}: {exc}"
        raise
    finally:
        with app.engine.begin() as conn:
            conn.execute(
                update(job_runs)
                .where(job_runs.c.id == run_id)
                .values(ended_at=utcnow(), status=status, counts=counts, error=error)
            )
        log.info(
            "job %s %s in %.2fs %s",
            job_id,
            status,
            time.monotonic() - t0,
            counts,
            extra={"job_id": job_id, "status": status, "counts": counts, "duration": round(time.monotonic() - t0, 3)},
        )
