"""Operators: the status dashboard with charts, the outbox, jobs, subscribers.

Each action calls the same function the CLI command does (`deliveries retry`,
`deliveries pause|resume`, `jobs run|pause|resume`, `suppressions add`,
`subscribers export`) and writes an audit row.
"""

from __future__ import annotations

import io

from markupsafe import Markup
from sqlalchemy import or_, select
from starlette.responses import Response

from pipeline.delivery import outbox
from pipeline.errors import NotFound, SyndicateError
from pipeline.store.schema import deliveries, subscribers

from . import charts
from .core import HEADERS, Ctx, db, read


def dashboard(c: Ctx) -> Response:
    from pipeline.ops.status import snapshot

    panels = snapshot(c.desk.app)
    with read(c) as conn:
        series = charts.daily_series(conn)
    svgs = [
        Markup(charts.bar_chart("Confirmed subscribers", *series["subscribers"], color="#2e7d32")),
        Markup(charts.bar_chart("Messages sent per day", *series["sends"])),
        Markup(charts.bar_chart("Failed deliveries per day", *series["failures"], color="#b3261e")),
    ]
    return c.page("ops.html", panels=panels, charts=svgs)


def outbox_page(c: Ctx) -> Response:
    from pipeline.delivery import channels

    q = c.request.query_params
    state, channel = q.get("state", ""), q.get("channel", "")
    stmt = select(deliveries).order_by(deliveries.c.updated_at.desc(), deliveries.c.id.desc()).limit(100)
    if state in outbox.STATES:
        stmt = stmt.where(deliveries.c.state == state)
    if channel in outbox.CHANNELS:
        stmt = stmt.where(deliveries.c.channel == channel)
    with read(c) as conn:
        counts = outbox.counts_by_state(conn)
        rows = [dict(r._mapping) for r in conn.execute(stmt)]
    states = {s.channel: s for s in channels.all_states(c.engine)}
    return c.page(
        "outbox.html",
        counts=counts,
        rows=rows,
        state=state,
        channel=channel,
        all_states=outbox.STATES,
        all_channels=outbox.CHANNELS,
        channel_states=states,
    )


def outbox_retry(c: Ctx) -> Response:
    ids = [int(i) for i in c.texts("ids") if i.isdigit()]
    if not ids:
        raise SyndicateError("choose the deliveries to retry", hint="Tick them in the list.")
    with db(c) as conn:
        n = outbox.requeue(conn, ids=ids)
        c.audit(conn, "delivery.retry", ",".join(map(str, ids))[:400], requeued=n)
    return c.redirect("/ops/outbox", f"{n} delivery(ies) queued again.")


def _channel(c: Ctx) -> str:
    name = c.params["channel"]
    if name not in outbox.CHANNELS:
        raise NotFound(f"no channel {name!r}")
    return name


def channel_pause(c: Ctx) -> Response:
    from pipeline.delivery import channels

    name = _channel(c)
    reason = c.text("reason", 500).strip() or f"paused in the desk by {c.user.email}"
    channels.pause(c.engine, name, reason)
    with db(c) as conn:
        c.audit(conn, "channel.pause", name, reason=reason)
    return c.redirect("/ops/outbox", f"Channel {name} paused.")


def channel_resume(c: Ctx) -> Response:
    from pipeline.delivery import channels

    name = _channel(c)
    channels.resume(c.engine, name)
    with db(c) as conn:
        c.audit(conn, "channel.resume", name)
    return c.redirect("/ops/outbox", f"Channel {name} resumed.")


def jobs_page(c: Ctx) -> Response:
    from pipeline.ops import jobstate
    from pipeline.ops.status import jobs_panel

    return c.page(
        "jobs.html",
        jobs=jobs_panel(c.desk.app),
        history=jobstate.history(c.engine, limit=30),
        paused=jobstate.paused_jobs(c.engine),
    )


def _job(c: Ctx):
    from pipeline.ops.schedules import find_job, schedules_for

    return find_job(schedules_for(c.settings), c.params["job_id"])


def job_run(c: Ctx) -> Response:
    from pipeline.ops.scheduler import execute

    spec = _job(c)
    with db(c) as conn:
        c.audit(conn, "job.run", spec.id)
    try:
        counts = execute(c.desk.app, spec.id, spec.stage, spec.args, trigger="manual")
    except Exception as exc:  # recorded in the job history; the page says so
        return c.redirect("/ops/jobs", f"Job {spec.id} failed: {exc}"[:300])
    done = ", ".join(f"{k} {v}" for k, v in counts.items() if v) or "nothing to do"
    return c.redirect("/ops/jobs", f"Job {spec.id} ran: {done}.")


def _pause_job(c: Ctx, paused: bool) -> Response:
    from pipeline.ops import jobstate

    spec = _job(c)
    jobstate.set_paused(c.engine, spec.id, paused, note=c.text("note", 500), by=c.user.email)
    with db(c) as conn:
        c.audit(conn, "job.pause" if paused else "job.resume", spec.id, note=c.text("note", 500))
    return c.redirect("/ops/jobs", f"Job {spec.id} {'paused' if paused else 'resumed'}.")


def job_pause(c: Ctx) -> Response:
    return _pause_job(c, True)


def job_resume(c: Ctx) -> Response:
    return _pause_job(c, False)


def subscribers_page(c: Ctx) -> Response:
    term = c.request.query_params.get("q", "").strip()[:200]
    state = c.request.query_params.get("state", "")
    stmt = select(subscribers).order_by(subscribers.c.id.desc()).limit(100)
    if term:
        like = f"%{term.lower().replace('%', '').replace('_', '')}%"
        stmt = stmt.where(or_(subscribers.c.email.like(like), subscribers.c.name.ilike(like)))
    if state:
        stmt = stmt.where(subscribers.c.state == state)
    with read(c) as conn:
        rows = [dict(r._mapping) for r in conn.execute(stmt)]
    return c.page("subscribers.html", rows=rows, q=term, state=state)


def _subscriber(conn, c: Ctx) -> dict:
    from pipeline import subscribers as subs

    raw = c.params["subscriber_id"]
    sub = subs.get_by_id(conn, int(raw)) if raw.isdigit() else None
    if sub is None:
        raise NotFound("no such subscriber")
    return sub


def subscriber_page(c: Ctx) -> Response:
    from pipeline import subscribers as subs

    with read(c) as conn:
        sub = _subscriber(conn, c)
        events = subs.history(conn, sub["id"])
        suppressed = subs.is_suppressed_address(conn, sub["email"])
    return c.page("subscriber.html", sub=sub, events=events, suppressed=suppressed)


def subscriber_suppress(c: Ctx) -> Response:
    from pipeline.subscribers import suppression

    with db(c) as conn:
        sub = _subscriber(conn, c)
        reason = c.text("detail", 500).strip()
        suppression.suppress(
            conn, c.settings, sub["email"], reason="manual", source=f"desk:{c.user.email}", detail=reason
        )
        c.audit(conn, "subscriber.suppress", sub["email"], detail=reason)
    return c.redirect(f"/ops/subscribers/{sub['id']}", "Suppressed: no more mail goes to this address.")


def subscribers_export(c: Ctx) -> Response:
    from pipeline import subscribers as subs

    buf = io.StringIO()
    with db(c) as conn:
        n = subs.export_csv(conn, buf)
        c.audit(conn, "subscribers.export", rows=n)
    return Response(
        buf.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={**HEADERS, "Content-Disposition": 'attachment; filename="subscribers.csv"'},
    )


def partners_page(c: Ctx) -> Response:
    from pipeline.partners.ops import overview

    return c.page("partners.html", partners=overview(c.desk.app))


def partner_resume(c: Ctx) -> Response:
    from pipeline.partners import state
    from pipeline.partners.config import partners
    from pipeline.partners.outgoing import endpoints

    name = c.params["name"]
    known = {p.name for p in partners(c.settings)} | {p.name for p, _types in endpoints(c.settings)}
    if name not in known:
        raise NotFound(f"no partner {name!r}", hint="Partners are [[partners]] entries in syndicate.toml.")
    with db(c) as conn:
        before = state.resume(conn, name)
        c.audit(conn, "partner.resume", name, was=before.get("state", ""))
    return c.redirect("/ops/partners", f"Partner {name} resumed.")


def editions_page(c: Ctx) -> Response:
    """Digest editions, newest first, with what their deliveries did."""
    from sqlalchemy import func

    from pipeline.store.schema import digest_editions

    with read(c) as conn:
        rows = [
            dict(r._mapping)
            for r in conn.execute(select(digest_editions).order_by(digest_editions.c.created_at.desc()).limit(50))
        ]
        counts: dict = {}
        if rows:
            for eid, st, n in conn.execute(
                select(deliveries.c.edition_id, deliveries.c.state, func.count())
                .where(deliveries.c.edition_id.in_([r["id"] for r in rows]))
                .group_by(deliveries.c.edition_id, deliveries.c.state)
            ):
                counts.setdefault(eid, {})[st] = n
    for r in rows:
        r["states"] = counts.get(r["id"], {})
    return c.page("editions.html", editions=rows)


def edition_report_page(c: Ctx) -> Response:
    """One edition's report (RPT-1) with a chart of clicks per article (CLK-2: counts only)."""
    from pipeline.digests.reports import edition_report

    with read(c) as conn:
        report = edition_report(conn, c.params["key"])
    per_article = report["clicks"]["per_article"]
    chart = Markup(
        charts.category_chart(
            "Clicks per article", [a["title"] for a in per_article], [a["clicks"] for a in per_article]
        )
    )
    return c.page("edition_report.html", report=report, chart=chart, tracking=c.settings.digests.track_clicks)
