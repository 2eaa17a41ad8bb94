"""The scheduler's state in the database: pauses, heartbeats, and queries over job history.

Every function opens its own short transaction: the scheduler calls these between
and around job runs and must never keep a transaction open while a job runs.
"""

from __future__ import annotations

import datetime as dt
import os
import socket

from sqlalchemy import Column, Float, MetaData, String, Table, and_, func, insert, select, update
from sqlalchemy.engine import Engine

from pipeline.store import has_table
from pipeline.store.schema import job_runs, job_state, scheduler_instances
from pipeline.timeutil import utcnow

JOBSTORE_TABLE = "apscheduler_jobs"
_apscheduler_jobs = Table(
    JOBSTORE_TABLE, MetaData(), Column("id", String(191), primary_key=True), Column("next_run_time", Float(25))
)


def who() -> str:
    return f"{os.environ.get('USER') or os.environ.get('LOGNAME') or 'unknown'}@{socket.gethostname()}"


# --- pause / resume -----------------------------------------------------------------


def set_paused(engine: Engine, job_id: str, paused: bool, *, note: str = "", by: str | None = None) -> bool:
    """Persist the pause flag; returns whether it changed."""
    now = utcnow()
    with engine.begin() as conn:
        row = conn.execute(select(job_state.c.paused).where(job_state.c.job_id == job_id)).first()
        if row is None:
            conn.execute(
                insert(job_state).values(
                    job_id=job_id, paused=paused, note=note, changed_by=by or who(), updated_at=now
                )
            )
            return paused
        if bool(row.paused) == paused:
            return False
        conn.execute(
            update(job_state)
            .where(job_state.c.job_id == job_id)
            .values(paused=paused, note=note, changed_by=by or who(), updated_at=now)
        )
        return True


def paused_jobs(engine: Engine) -> dict[str, dict]:
    with engine.connect() as conn:
        rows = conn.execute(select(job_state).where(job_state.c.paused.is_(True))).mappings().all()
    return {r["job_id"]: dict(r) for r in rows}


def is_paused(engine: Engine, job_id: str) -> bool:
    with engine.connect() as conn:
        return bool(conn.execute(select(job_state.c.paused).where(job_state.c.job_id == job_id)).scalar())


# --- scheduler instances and heartbeats ---------------------------------------------


def register_instance(engine: Engine, instance: str) -> None:
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(
            insert(scheduler_instances).values(
                instance=instance,
                host=socket.gethostname(),
                pid=os.getpid(),
                role="standby",
                started_at=now,
                heartbeat_at=now,
            )
        )


def heartbeat(engine: Engine, instance: str, *, role: str | None = None) -> None:
    now = utcnow()
    values: dict = {"heartbeat_at": now}
    if role:
        values["role"] = role
        if role == "leader":
            values["leader_since"] = now
        if role == "stopped":
            values["stopped_at"] = now
    with engine.begin() as conn:
        conn.execute(update(scheduler_instances).where(scheduler_instances.c.instance == instance).values(**values))


def retire_others(engine: Engine, instance: str, stale_after: float) -> int:
    """At takeover: earlier leaders (dead, since we hold the lock) and silent standbys are stopped."""
    now = utcnow()
    with engine.begin() as conn:
        return conn.execute(
            update(scheduler_instances)
            .where(
                scheduler_instances.c.instance != instance,
                scheduler_instances.c.role != "stopped",
                (scheduler_instances.c.role == "leader")
                | (scheduler_instances.c.heartbeat_at < now - dt.timedelta(seconds=stale_after)),
            )
            .values(role="stopped", stopped_at=now)
        ).rowcount


def prune_instances(engine: Engine, older_than: dt.timedelta = dt.timedelta(days=7)) -> None:
    with engine.begin() as conn:
        conn.execute(
            scheduler_instances.delete().where(
                scheduler_instances.c.role == "stopped", scheduler_instances.c.heartbeat_at < utcnow() - older_than
            )
        )


def schedulers(engine: Engine, *, include_stopped: bool = False) -> list[dict]:
    """Scheduler processes, leader first, with `age` = seconds since their heartbeat."""
    q = select(scheduler_instances).order_by(scheduler_instances.c.heartbeat_at.desc())
    if not include_stopped:
        q = q.where(scheduler_instances.c.role != "stopped")
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(q).mappings()]
    now = utcnow()
    for r in rows:
        r["age"] = max(0.0, (now - r["heartbeat_at"]).total_seconds())
    rows.sort(key=lambda r: (r["role"] != "leader", r["age"]))
    return rows


def leader(engine: Engine) -> dict | None:
    """The most recent leader (possibly stopped or stale: check `role` and `age`)."""
    with engine.connect() as conn:
        row = (
            conn.execute(
                select(scheduler_instances)
                .where(scheduler_instances.c.leader_since.is_not(None))
                .order_by(scheduler_instances.c.heartbeat_at.desc())
                .limit(1)
            )
            .mappings()
            .first()
        )
    if row is None:
        return None
    out = dict(row)
    out["age"] = max(0.0, (utcnow() - out["heartbeat_at"]).total_seconds())
    return out


# --- job runs -----------------------------------------------------------------------


def record_outcome(engine: Engine, job_id: str, status: str, *, scheduled_for=None, error: str = "") -> None:
    """A run that did not start: `missed` (past its grace time) or `skipped` (still running)."""
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(
            insert(job_runs).values(
                job_id=job_id,
                trigger="scheduled",
                scheduled_for=scheduled_for,
                started_at=None,
                ended_at=now,
                status=status,
                counts={},
                error=error,
                host=socket.gethostname(),
                pid=os.getpid(),
                dry_run=False,
            )
        )


def slot_taken(engine: Engine, job_id: str, scheduled_for: dt.datetime) -> bool:
    """Whether this slot of the job already ran or is running (a second leader's view)."""
    with engine.connect() as conn:
        return (
            conn.execute(
                select(func.count())
                .select_from(job_runs)
                .where(
                    job_runs.c.job_id == job_id,
                    job_runs.c.trigger == "scheduled",
                    job_runs.c.scheduled_for == scheduled_for,
                    job_runs.c.status.in_(("ok", "running")),
                )
            ).scalar_one()
            > 0
        )


def fail_orphaned_runs(engine: Engine) -> int:
    """Scheduled runs left `running` by a scheduler that died: mark them failed.

    Called by a new leader before it starts: while it holds the lock no other
    scheduler runs scheduled jobs, so any such row belongs to a dead process.
    """
    with engine.begin() as conn:
        return conn.execute(
            update(job_runs)
            .where(job_runs.c.status == "running", job_runs.c.trigger == "scheduled")
            .values(
                status="failed",
                ended_at=utcnow(),
                error="interrupted: the scheduler running it stopped before it finished",
            )
        ).rowcount


def history(engine: Engine, job_id: str | None = None, *, limit: int = 20, status: str | None = None) -> list[dict]:
    q = select(job_runs).order_by(job_runs.c.id.desc()).limit(limit)
    if job_id:
        q = q.where(job_runs.c.job_id == job_id)
    if status:
        q = q.where(job_runs.c.status == status)
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(q).mappings()]


def last_runs(engine: Engine) -> dict[str, dict]:
    """The latest finished-or-running row per job id."""
    latest = select(job_runs.c.job_id, func.max(job_runs.c.id).label("id")).group_by(job_runs.c.job_id).subquery()
    q = select(job_runs).join(latest, and_(job_runs.c.id == latest.c.id))
    with engine.connect() as conn:
        return {r["job_id"]: dict(r) for r in conn.execute(q).mappings()}


def last_failure(engine: Engine) -> dict | None:
    rows = history(engine, limit=1, status="failed")
    return rows[0] if rows else None


def next_run_times(engine: Engine) -> dict[str, dt.datetime | None]:
    """Next run per job as the job store holds it (None: paused); {} before the first start."""
    if not has_table(engine, JOBSTORE_TABLE):
        return {}
    with engine.connect() as conn:
        rows = conn.execute(select(_apscheduler_jobs.c.id, _apscheduler_jobs.c.next_run_time)).all()
    return {
        r.id: (dt.datetime.fromtimestamp(r.next_run_time, dt.UTC) if r.next_run_time is not None else None)
        for r in rows
    }


def duration(row: dict) -> float | None:
    if row.get("started_at") and row.get("ended_at"):
        return (row["ended_at"] - row["started_at"]).total_seconds()
    return None
