"""`syndicate status` as data: one snapshot of what an operator needs to look at.

Each panel is read on its own and defensively: a table another stage owns may not
exist yet (an older database, a stage not installed), and a panel that cannot be
read is reported as unavailable with the reason instead of failing the whole screen.
"""

from __future__ import annotations

import datetime as dt
import logging
from zoneinfo import ZoneInfo

from sqlalchemy import MetaData, Table, func, inspect, select

from pipeline.delivery.channels import health as delivery_health
from pipeline.ops import jobstate
from pipeline.timeutil import utcnow

log = logging.getLogger(__name__)

PARTNER_CHANNELS = ("webhook", "micropub", "websub")
TIME_COLUMNS = ("created_at", "added_at", "suppressed_at", "updated_at")
HEARTBEAT_COLUMNS = ("heartbeat_at", "last_heartbeat", "last_heartbeat_at", "seen_at", "updated_at")


class Unavailable(Exception):
    """A panel's table does not exist (yet)."""


def _table(conn, name: str) -> Table:
    """The table: ours from pipeline.store.schema (typed), another's by reflection."""
    if not inspect(conn).has_table(name):
        raise Unavailable(f"no {name} table in this database")
    from pipeline.store import schema

    known = schema.metadata.tables.get(name)
    return known if known is not None else Table(name, MetaData(), autoload_with=conn)


def _col(table: Table, *names: str):
    for name in names:
        if name in table.c:
            return table.c[name]
    return None


def review_panel(conn) -> dict:
    revisions = _table(conn, "revisions")
    articles = _table(conn, "articles")
    waiting = (revisions.c.state == "submitted")
    total = conn.execute(select(func.count()).select_from(revisions).where(waiting)).scalar_one()
    rows = conn.execute(
        select(articles.c.slug, revisions.c.number, revisions.c.title, revisions.c.flags, revisions.c.created_at)
        .join(articles, articles.c.id == revisions.c.article_id).where(waiting)
        .order_by(revisions.c.created_at).limit(5)).mappings().all()
    items = [{"slug": r["slug"], "revision": r["number"], "title": r["title"],
              "flags": [f.get("rule", "?") for f in (r["flags"] or []) if isinstance(f, dict)],
              "waiting_since": r["created_at"]} for r in rows]
    return {"waiting": total, "oldest": items}


def outbox_panel(conn) -> dict:
    deliveries = _table(conn, "deliveries")
    rows = conn.execute(select(deliveries.c.channel, deliveries.c.state, func.count())
                        .group_by(deliveries.c.channel, deliveries.c.state)).all()
    by: dict[str, dict[str, int]] = {}
    for channel, state, n in rows:
        by.setdefault(channel, {})[state] = n
    now = utcnow()
    due = conn.execute(select(func.count()).select_from(deliveries).where(
        deliveries.c.state.in_(("queued", "retry")), deliveries.c.next_attempt_at <= now)).scalar_one()
    return {"by_channel": by, "due_now": due}


def partners_panel(conn) -> list[dict]:
    deliveries = _table(conn, "deliveries")
    failing = deliveries.c.state.in_(("retry", "failed", "dead"))
    rows = conn.execute(
        select(deliveries.c.target, deliveries.c.channel, deliveries.c.state, func.count(),
               func.max(deliveries.c.updated_at))
        .where(deliveries.c.channel.in_(PARTNER_CHANNELS), failing)
        .group_by(deliveries.c.target, deliveries.c.channel, deliveries.c.state)).all()
    partners: dict[tuple, dict] = {}
    for target, channel, state, n, last in rows:
        p = partners.setdefault((target, channel), {"partner": target, "channel": channel, "states": {}, "last_at": last})
        p["states"][state] = n
        if last and (p["last_at"] is None or last > p["last_at"]):
            p["last_at"] = last
    for p in partners.values():
        p["last_error"] = conn.execute(
            select(deliveries.c.last_error).where(deliveries.c.target == p["partner"],
                                                  deliveries.c.channel == p["channel"], failing)
            .order_by(deliveries.c.updated_at.desc()).limit(1)).scalar()
    return sorted(partners.values(), key=lambda p: (-sum(p["states"].values()), p["partner"]))


def suppressions_panel(conn, tz: str) -> dict:
    table = _table(conn, "suppressions")
    when = _col(table, *TIME_COLUMNS)
    if when is None:
        raise Unavailable("the suppressions table has no time column")
    local_midnight = dt.datetime.combine(utcnow().astimezone(ZoneInfo(tz)).date(), dt.time(), ZoneInfo(tz))
    since = local_midnight.astimezone(dt.timezone.utc)
    from pipeline.store.schema import UTCDateTime

    if conn.dialect.name == "sqlite" and not isinstance(when.type, UTCDateTime):
        since = since.replace(tzinfo=None)  # a reflected column: stored naive UTC there
    today = when >= since
    total = conn.execute(select(func.count()).select_from(table).where(today)).scalar_one()
    reason = _col(table, "reason", "source", "kind")
    by_reason = {}
    if reason is not None:
        by_reason = {r or "": n for r, n in conn.execute(
            select(reason, func.count()).where(today).group_by(reason)).all()}
    return {"today": total, "by_reason": by_reason, "since": since}


def workers_panel(conn, stale_after: float) -> list[dict]:
    """Delivery workers (host, pid, heartbeat, state, claimed rows), live ones first.

    Reads `delivery_workers` (pipeline.delivery) when present; the claimed count is
    the outbox rows each worker holds a lease on right now. Workers that stopped more
    than an hour ago are left out.
    """
    now = utcnow()
    deliveries = _table(conn, "deliveries")
    claimed = {w: n for w, n in conn.execute(
        select(deliveries.c.claimed_by, func.count()).where(deliveries.c.state == "sending")
        .group_by(deliveries.c.claimed_by)).all()}
    out = []
    name = next((n for n in ("delivery_workers", "workers") if inspect(conn).has_table(n)), None)
    if name is not None:
        table = _table(conn, name)
        beat = _col(table, *HEARTBEAT_COLUMNS)
        ident = _col(table, "worker", "worker_id", "name", "id")
        q = select(table)
        if beat is not None:
            q = q.order_by(beat.desc())
        for r in conn.execute(q.limit(100)).mappings():
            row = dict(r)
            seen = row.get(beat.name) if beat is not None else None
            if isinstance(seen, str):
                seen = dt.datetime.fromisoformat(seen)
            if isinstance(seen, dt.datetime) and seen.tzinfo is None:
                seen = seen.replace(tzinfo=dt.timezone.utc)
            age = (now - seen).total_seconds() if isinstance(seen, dt.datetime) else None
            state = row.get("state") or row.get("status") or ""
            if state == "stopped" and (age is None or age > 3600):
                continue
            worker = row.get(ident.name) if ident is not None else None
            if state == "running" and age is not None and age > stale_after:
                state = "stale"
            out.append({"worker": worker, "host": row.get("host", ""), "pid": row.get("pid"), "heartbeat_at": seen,
                        "age": age, "state": state, "claimed": claimed.pop(worker, 0),
                        "sent": row.get("sent"), "failed": row.get("failed")})
    # Leases held by processes that never registered (or whose row is gone).
    for worker, n in claimed.items():
        host, _, pid = (worker or "?").rpartition(":")
        out.append({"worker": worker, "host": host or worker, "pid": pid, "heartbeat_at": None, "age": None,
                    "state": "unregistered", "claimed": n, "sent": None, "failed": None})
    return out


def jobs_panel(app) -> list[dict]:
    from pipeline.ops.schedules import schedules_for
    from pipeline.ops.scheduler import next_fire_time

    specs = schedules_for(app.settings)
    stored = jobstate.next_run_times(app.engine)
    paused = jobstate.paused_jobs(app.engine)
    last = jobstate.last_runs(app.engine)
    now = utcnow()
    out = []
    for spec in specs:
        if spec.id in paused:
            next_run, note = None, "paused"
        elif not spec.enabled:
            next_run, note = None, "disabled"
        elif spec.id in stored:
            next_run = stored[spec.id]
            overdue = next_run is not None and (now - next_run).total_seconds() > spec.misfire_grace_time
            note = "overdue: is a scheduler running?" if overdue else ""
        else:
            next_run, note = next_fire_time(spec), "not yet scheduled"
        out.append({"id": spec.id, "stage": spec.stage, "schedule": spec.schedule_text, "next_run": next_run,
                    "note": note, "last": last.get(spec.id)})
    far = dt.datetime.max.replace(tzinfo=dt.timezone.utc)
    out.sort(key=lambda j: (j["next_run"] or far, j["id"]))
    return out


def snapshot(app) -> dict:
    """Every panel: {"name": value} or {"name": {"unavailable": reason}}."""
    settings = app.settings
    engine = app.engine
    panels: dict = {}

    def panel(name, fn, *args):
        try:
            if args and args[0] == "conn":
                with engine.connect() as conn:
                    panels[name] = fn(conn, *args[1:])
            else:
                panels[name] = fn(*args)
        except Unavailable as exc:
            panels[name] = {"unavailable": str(exc)}
        except Exception as exc:  # one broken panel must not hide the others
            log.debug("status panel %s failed", name, exc_info=True)
            panels[name] = {"unavailable": f"{type(exc).__name__}: {exc}".splitlines()[0]}

    panel("review", review_panel, "conn")
    panel("outbox", outbox_panel, "conn")
    panel("partners", partners_panel, "conn")
    panel("suppressions", suppressions_panel, "conn", settings.site.timezone)
    panel("workers", workers_panel, "conn", settings.scheduler.stale_after_seconds)
    panel("delivery_channels", delivery_health, engine)  # paused, outage, current rates
    panel("schedulers", jobstate.schedulers, engine)
    panel("jobs", jobs_panel, app)
    panel("last_failure", jobstate.last_failure, engine)
    return panels
