"""What `/metrics` and `/healthz` report, read from the database at scrape time.

Every process (web, scheduler, workers) writes its state to the database, so one
scrape of any web instance sees the whole installation. `render_metrics` builds a
fresh registry per call from a custom collector; nothing here keeps counters in memory.

Metrics (Prometheus text format, via prometheus-client):

    syndicate_deliveries{channel,state}                    outbox rows per channel and state
    syndicate_partner_failures{partner,channel,state}      failed/dead pushes per partner
    syndicate_delivery_channel_paused{channel}             1 while paused
    syndicate_delivery_channel_outage{channel}             1 while its server cannot be reached
    syndicate_delivery_rate_factor{channel,domain}         the rate divisor after 421s (domain "*": channel)
    syndicate_job_runs_total{job,status}                   job runs recorded, by outcome
    syndicate_job_duration_seconds{job}                    summary (count, sum) of finished runs
    syndicate_job_last_duration_seconds{job}               duration of the latest finished run
    syndicate_job_last_success_timestamp_seconds{job}      end of the latest ok run (Unix time)
    syndicate_scheduler_heartbeat_age_seconds              seconds since the leader's heartbeat
    syndicate_database_up                                  1 when the database answered
    syndicate_bounces_total{kind}                          bounce decisions recorded, by kind (BNC-3)
"""

from __future__ import annotations

import logging

from sqlalchemy import func, select, text

from pipeline.delivery.channels import health as delivery_health
from pipeline.store.schema import bounce_events, deliveries, job_runs
from pipeline.timeutil import utcnow

log = logging.getLogger(__name__)

PARTNER_CHANNELS = ("webhook", "micropub")
PARTNER_FAILED_STATES = ("failed", "dead")


def _epoch(value) -> float:
    return value.timestamp()


class _DatabaseCollector:
    def __init__(self, app):
        self.app = app

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily

        up = GaugeMetricFamily("syndicate_database_up", "1 when the database answered this scrape.")
        try:
            engine = self.app.engine
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
                delivery_rows = conn.execute(
                    select(deliveries.c.channel, deliveries.c.state, func.count()).group_by(
                        deliveries.c.channel, deliveries.c.state
                    )
                ).all()
                partner_rows = conn.execute(
                    select(deliveries.c.target, deliveries.c.channel, deliveries.c.state, func.count())
                    .where(deliveries.c.channel.in_(PARTNER_CHANNELS), deliveries.c.state.in_(PARTNER_FAILED_STATES))
                    .group_by(deliveries.c.target, deliveries.c.channel, deliveries.c.state)
                ).all()
                run_rows = conn.execute(
                    select(job_runs.c.job_id, job_runs.c.status, func.count()).group_by(
                        job_runs.c.job_id, job_runs.c.status
                    )
                ).all()
                finished = conn.execute(
                    select(job_runs.c.job_id, job_runs.c.status, job_runs.c.started_at, job_runs.c.ended_at)
                    .where(
                        job_runs.c.started_at.is_not(None),
                        job_runs.c.ended_at.is_not(None),
                        job_runs.c.status.in_(("ok", "failed")),
                    )
                    .order_by(job_runs.c.id)
                ).all()
                bounce_rows = conn.execute(
                    select(bounce_events.c.kind, func.count()).group_by(bounce_events.c.kind)
                ).all()
            channel_health = delivery_health(engine)
        except Exception as exc:  # report down, not a 500: the scrape itself is the alert
            log.warning("metrics: the database did not answer: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up

        g = GaugeMetricFamily("syndicate_deliveries", "Outbox rows by channel and state.", labels=["channel", "state"])
        for channel, state, n in delivery_rows:
            g.add_metric([channel, state], n)
        yield g

        paused = GaugeMetricFamily(
            "syndicate_delivery_channel_paused", "1 while a channel is paused (operator or policy).", labels=["channel"]
        )
        outage = GaugeMetricFamily(
            "syndicate_delivery_channel_outage",
            "1 while a channel cannot reach its server (sending paused for a backoff).",
            labels=["channel"],
        )
        rate = GaugeMetricFamily(
            "syndicate_delivery_rate_factor",
            'The send rate is divided by this (421 / 4.7.x); domain "*" is the whole channel.',
            labels=["channel", "domain"],
        )
        for ch in channel_health:
            paused.add_metric([ch["channel"]], int(ch["paused"]))
            outage.add_metric([ch["channel"]], int(bool(ch["outage"])))
            rate.add_metric([ch["channel"], "*"], ch["rate_factor"])
            for d in ch["throttled_domains"]:
                rate.add_metric([ch["channel"], d["domain"]], d["rate_factor"])
        yield paused
        yield outage
        yield rate

        g = GaugeMetricFamily(
            "syndicate_partner_failures",
            "Partner pushes that failed for good (failed or dead), per partner.",
            labels=["partner", "channel", "state"],
        )
        for partner, channel, state, n in partner_rows:
            g.add_metric([partner, channel, state], n)
        yield g

        c = CounterMetricFamily(
            "syndicate_job_runs", "Job runs recorded in job_runs, by outcome.", labels=["job", "status"]
        )
        for job, status, n in run_rows:
            c.add_metric([job, status], n)
        yield c

        c = CounterMetricFamily(
            "syndicate_bounces", "Bounce decisions recorded (bounce_events), by kind.", labels=["kind"]
        )
        for kind, n in sorted(bounce_rows):
            c.add_metric([kind], n)
        yield c

        totals: dict[str, list[float]] = {}
        last: dict[str, float] = {}
        last_ok: dict[str, float] = {}
        for job, status, started, ended in finished:
            seconds = max(0.0, (ended - started).total_seconds())
            entry = totals.setdefault(job, [0, 0.0])
            entry[0] += 1
            entry[1] += seconds
            last[job] = seconds
            if status == "ok":
                last_ok[job] = _epoch(ended)
        s = SummaryMetricFamily("syndicate_job_duration_seconds", "Durations of finished job runs.", labels=["job"])
        for job, (count, total) in sorted(totals.items()):
            s.add_metric([job], count_value=count, sum_value=total)
        yield s
        g = GaugeMetricFamily(
            "syndicate_job_last_duration_seconds", "Duration of the latest finished run.", labels=["job"]
        )
        for job, seconds in sorted(last.items()):
            g.add_metric([job], seconds)
        yield g
        g = GaugeMetricFamily(
            "syndicate_job_last_success_timestamp_seconds",
            "When the latest successful run ended (Unix time).",
            labels=["job"],
        )
        for job, when in sorted(last_ok.items()):
            g.add_metric([job], when)
        yield g

        age = _heartbeat_age(engine)
        if age is not None:
            g = GaugeMetricFamily(
                "syndicate_scheduler_heartbeat_age_seconds", "Seconds since the leading scheduler's last heartbeat."
            )
            g.add_metric([], age)
            yield g


def _heartbeat_age(engine) -> float | None:
    from pipeline.ops import jobstate

    try:
        leader = jobstate.leader(engine)
    except Exception:
        return None
    return None if leader is None else round(leader["age"], 3)


def render_metrics(app) -> tuple[bytes, str]:
    """(body, content type) of the Prometheus text exposition for this installation."""
    from prometheus_client import CollectorRegistry, generate_latest

    # The classic 0.0.4 text format: what every Prometheus version and agent scrapes.
    content_type = "text/plain; version=0.0.4; charset=utf-8"
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_DatabaseCollector(app))
    return generate_latest(registry), content_type


def health(app) -> dict:
    """{"ok", "database": {...}, "scheduler": {...}, "checked_at"}; ok means the database answers.

    The scheduler is reported, not required (a web-only host has none): its `ok` is
    whether a leader's heartbeat is younger than scheduler.stale_after_seconds.
    """
    from pipeline.ops import jobstate

    out: dict = {"checked_at": utcnow().isoformat()}
    try:
        with app.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        out["database"] = {"ok": True, "backend": app.engine.dialect.name}
    except Exception as exc:
        # Only the error's type: /healthz is public and a driver message can name hosts and users.
        out["database"] = {"ok": False, "error": type(exc).__name__}
        out["scheduler"] = {"ok": False, "state": "unknown"}
        out["ok"] = False
        return out
    stale_after = app.settings.scheduler.stale_after_seconds
    try:
        leader = jobstate.leader(app.engine)
    except Exception as exc:
        leader, out["scheduler"] = None, {"ok": False, "state": "unknown", "error": type(exc).__name__}
    if "scheduler" not in out:
        if leader is None:
            out["scheduler"] = {"ok": False, "state": "never started", "heartbeat_age_seconds": None}
        else:
            state = (
                "stopped" if leader["role"] == "stopped" else ("stale" if leader["age"] > stale_after else "running")
            )
            out["scheduler"] = {
                "ok": state == "running",
                "state": state,
                "heartbeat_age_seconds": round(leader["age"], 3),
            }
    out["ok"] = out["database"]["ok"]
    return out
