"""`syndicate status` as data: one snapshot of what an operator needs to look at.

Every table a panel reads is part of the schema (the database is at the current
migration before any command reads it), so panels read `pipeline.store.schema`
directly. A panel that fails at run time (a broken schedule file, a lost connection)
is reported as unavailable with the reason instead of failing the whole screen.
"""

from __future__ import annotations

import datetime as dt
import logging
from zoneinfo import ZoneInfo

from sqlalchemy import func, select

from pipeline.delivery.channels import health as delivery_health
from pipeline.ops import jobstate
from pipeline.store.schema import (
    articles,
    bounce_events,
    deliveries,
    delivery_workers,
    revisions,
    source_state,
    suppressions,
)
from pipeline.timeutil import as_utc, utcnow

log = logging.getLogger(__name__)

PARTNER_CHANNELS = ("webhook", "micropub", "websub", "events")  # events: outgoing-event endpoints


def review_panel(conn) -> dict:
    waiting = revisions.c.state == "submitted"
    total = conn.execute(select(func.count()).select_from(revisions).where(waiting)).scalar_one()
    rows = (
        conn.execute(
            select(articles.c.slug, revisions.c.number, revisions.c.title, revisions.c.flags, revisions.c.created_at)
            .join(articles, articles.c.id == revisions.c.article_id)
            .where(waiting)
            .order_by(revisions.c.created_at)
            .limit(5)
        )
        .mappings()
        .all()
    )
    items = [
        {
            "slug": r["slug"],
            "revision": r["number"],
            "title": r["title"],
            "flags": [f.get("rule", "?") for f in (r["flags"] or []) if isinstance(f, dict)],
            "waiting_since": r["created_at"],
        }
        for r in rows
    ]
    return {"waiting": total, "oldest": items}


def outbox_panel(conn) -> dict:
    rows = conn.execute(
        select(deliveries.c.channel, deliveries.c.state, func.count()).group_by(
            deliveries.c.channel, deliveries.c.state
        )
    ).all()
    by: dict[str, dict[str, int]] = {}
    for channel, state, n in rows:
        by.setdefault(channel, {})[state] = n
    now = utcnow()
    due = conn.execute(
        select(func.count())
        .select_from(deliveries)
        .where(deliveries.c.state.in_(("queued", "retry")), deliveries.c.next_attempt_at <= now)
    ).scalar_one()
    return {"by_channel": by, "due_now": due}


def partners_panel(conn) -> list[dict]:
    failing = deliveries.c.state.in_(("retry", "failed", "dead"))
    rows = conn.execute(
        select(
            deliveries.c.target,
            deliveries.c.channel,
            deliveries.c.state,
            func.count(),
            func.max(deliveries.c.updated_at),
        )
        .where(deliveries.c.channel.in_(PARTNER_CHANNELS), failing)
        .group_by(deliveries.c.target, deliveries.c.channel, deliveries.c.state)
    ).all()
    partners: dict[tuple, dict] = {}
    for target, channel, state, n, last in rows:
        p = partners.setdefault(
            (target, channel), {"partner": target, "channel": channel, "states": {}, "last_at": last}
        )
        p["states"][state] = n
        if last and (p["last_at"] is None or last > p["last_at"]):
            p["last_at"] = last
    for p in partners.values():
        p["last_error"] = conn.execute(
            select(deliveries.c.last_error)
            .where(deliveries.c.target == p["partner"], deliveries.c.channel == p["channel"], failing)
            .order_by(deliveries.c.updated_at.desc())
            .limit(1)
        ).scalar()
    return sorted(partners.values(), key=lambda p: (-sum(p["states"].values()), p["partner"]))


def suppressions_panel(conn, tz: str) -> dict:
    local_midnight = dt.datetime.combine(utcnow().astimezone(ZoneInfo(tz)).date(), dt.time(), ZoneInfo(tz))
    since = local_midnight.astimezone(dt.UTC)
    today = suppressions.c.created_at >= since
    total = conn.execute(select(func.count()).select_from(suppressions).where(today)).scalar_one()
    by_reason = {
        r or "": n
        for r, n in conn.execute(
            select(suppressions.c.reason, func.count()).where(today).group_by(suppressions.c.reason)
        ).all()
    }
    return {"today": total, "by_reason": by_reason, "since": since}


def bounces_panel(conn, days: int = 7) -> dict:
    """Bounce decisions by kind (hard, soft, policy, auto_reply, unclassified; BNC-3):
    all recorded, and within the last `days`."""
    since = utcnow() - dt.timedelta(days=days)
    by_kind = dict(conn.execute(select(bounce_events.c.kind, func.count()).group_by(bounce_events.c.kind)).all())
    recent = dict(
        conn.execute(
            select(bounce_events.c.kind, func.count())
            .where(bounce_events.c.created_at >= since)
            .group_by(bounce_events.c.kind)
        ).all()
    )
    return {"by_kind": by_kind, "recent": recent, "days": days}


def workers_panel(conn, stale_after: float) -> list[dict]:
    """Delivery workers (host, pid, heartbeat, state, claimed rows), live ones first.

    The claimed count is the outbox rows each worker holds a lease on right now.
    Workers that stopped more than an hour ago are left out.
    """
    now = utcnow()
    claimed = {
        w: n
        for w, n in conn.execute(
            select(deliveries.c.claimed_by, func.count())
            .where(deliveries.c.state == "sending")
            .group_by(deliveries.c.claimed_by)
        ).all()
    }
    out = []
    rows = conn.execute(select(delivery_workers).order_by(delivery_workers.c.heartbeat_at.desc()).limit(100)).mappings()
    for row in rows:
        seen = as_utc(row["heartbeat_at"])
        age = (now - seen).total_seconds()
        state = row["state"]
        if state == "stopped" and age > 3600:
            continue
        if state == "running" and age > stale_after:
            state = "stale"
        out.append(
            {
                "worker": row["worker"],
                "host": row["host"],
                "pid": row["pid"],
                "heartbeat_at": seen,
                "age": age,
                "state": state,
                "claimed": claimed.pop(row["worker"], 0),
                "sent": row["sent"],
                "failed": row["failed"],
            }
        )
    # Leases held by processes that never registered (or whose row is gone).
    for worker, n in claimed.items():
        host, _, pid = (worker or "?").rpartition(":")
        out.append(
            {
                "worker": worker,
                "host": host or worker,
                "pid": pid,
                "heartbeat_at": None,
                "age": None,
                "state": "unregistered",
                "claimed": n,
                "sent": None,
                "failed": None,
            }
        )
    return out


def sources_panel(conn, settings) -> list[dict]:
    """Each configured source: paused, failures in a row, last success, last error."""
    from pipeline.content.sources import configured

    rows = {r.name: r for r in conn.execute(select(source_state))}
    out = []
    for config in configured(settings):
        r = rows.get(config["name"])
        out.append(
            {
                "name": config["name"],
                "type": config["type"],
                "enabled": bool(config.get("enabled", True)),
                "paused": bool(r.paused) if r else False,
                "failures": r.failures if r else 0,
                "backing_off_until": r.next_attempt_at if r else None,
                "last_success_at": r.last_success_at if r else None,
                "last_error": r.last_error if r else None,
                "last_error_at": r.last_error_at if r else None,
                "last_counts": r.last_counts if r else {},
            }
        )
    return out


def jobs_panel(app) -> list[dict]:
    from pipeline.ops.scheduler import next_fire_time
    from pipeline.ops.schedules import schedules_for

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
        out.append(
            {
                "id": spec.id,
                "stage": spec.stage,
                "schedule": spec.schedule_text,
                "next_run": next_run,
                "note": note,
                "last": last.get(spec.id),
            }
        )
    far = dt.datetime.max.replace(tzinfo=dt.UTC)
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
        except Exception as exc:  # one broken panel must not hide the others
            log.debug("status panel %s failed", name, exc_info=True)
            panels[name] = {"unavailable": f"{type(exc).__name__}: {exc}".splitlines()[0]}
            hint = getattr(exc, "hint", "")  # what to do about it (a ConfigError says)
            if hint:
                panels[name]["hint"] = hint

    panel("review", review_panel, "conn")
    panel("sources", sources_panel, "conn", settings)
    panel("outbox", outbox_panel, "conn")
    panel("partners", partners_panel, "conn")
    panel("suppressions", suppressions_panel, "conn", settings.site.timezone)
    panel("bounces", bounces_panel, "conn")
    panel("workers", workers_panel, "conn", settings.scheduler.stale_after_seconds)
    panel("delivery_channels", delivery_health, engine)  # paused, outage, current rates
    panel("schedulers", jobstate.schedulers, engine)
    panel("jobs", jobs_panel, app)
    panel("last_failure", jobstate.last_failure, engine)
    return panels
