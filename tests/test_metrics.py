"""/metrics (Prometheus text, parsed with prometheus-client's own parser) and /healthz data."""

from __future__ import annotations

import datetime as dt

from prometheus_client.parser import text_string_to_metric_families

from pipeline.delivery import outbox
from pipeline.ops import jobstate
from pipeline.ops.metrics import health, render_metrics
from pipeline.ops.runs import record_run
from pipeline.store.schema import deliveries, job_runs
from pipeline.timeutil import utcnow


def samples(app) -> dict[tuple, float]:
    body, content_type = render_metrics(app)
    assert content_type.startswith("text/plain; version=0.0.4")
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_parse_and_report_deliveries_jobs_and_partner_failures(app):
    now = utcnow()
    with app.engine.begin() as conn:
        for i in range(3):
            outbox.enqueue(conn, channel="email", target=f"r{i}@example.com", kind="digest", key=f"e{i}", payload={})
        outbox.enqueue(conn, channel="webhook", target="partner-news", kind="article.published", key="w1", payload={})
        outbox.enqueue(conn, channel="micropub", target="partner-blog", kind="article.published", key="m1", payload={})
        conn.execute(deliveries.update().where(deliveries.c.idempotency_key.in_(("w1", "m1"))).values(state="dead"))
        conn.execute(deliveries.update().where(deliveries.c.idempotency_key == "e0").values(state="sent", sent_at=now))
    with record_run(app, "deliver") as counts:
        counts["sent"] = 1
    try:
        with record_run(app, "build"):
            raise RuntimeError("disk full")
    except RuntimeError:
        pass
    with app.engine.begin() as conn:  # a run of known length, for the duration metrics
        conn.execute(
            job_runs.insert().values(
                job_id="digest-daily",
                trigger="scheduled",
                status="ok",
                counts={},
                started_at=now - dt.timedelta(seconds=12),
                ended_at=now,
                host="h",
            )
        )
    jobstate.record_outcome(app.engine, "digest-weekly", "missed", scheduled_for=now, error="late")

    m = samples(app)
    assert m[("syndicate_database_up", ())] == 1
    assert m[("syndicate_deliveries", (("channel", "email"), ("state", "queued")))] == 2
    assert m[("syndicate_deliveries", (("channel", "email"), ("state", "sent")))] == 1
    assert (
        m[("syndicate_partner_failures", (("channel", "webhook"), ("partner", "partner-news"), ("state", "dead")))] == 1
    )
    assert (
        m[("syndicate_partner_failures", (("channel", "micropub"), ("partner", "partner-blog"), ("state", "dead")))]
        == 1
    )
    assert not any(k[0] == "syndicate_partner_failures" and ("channel", "email") in k[1] for k in m)
    assert m[("syndicate_job_runs_total", (("job", "deliver"), ("status", "ok")))] == 1
    assert m[("syndicate_job_runs_total", (("job", "build"), ("status", "failed")))] == 1
    assert m[("syndicate_job_runs_total", (("job", "digest-weekly"), ("status", "missed")))] == 1
    assert m[("syndicate_job_duration_seconds_count", (("job", "digest-daily"),))] == 1
    assert abs(m[("syndicate_job_duration_seconds_sum", (("job", "digest-daily"),))] - 12) < 0.01
    assert abs(m[("syndicate_job_last_duration_seconds", (("job", "digest-daily"),))] - 12) < 0.01
    assert abs(m[("syndicate_job_last_success_timestamp_seconds", (("job", "digest-daily"),))] - now.timestamp()) < 1
    assert ("syndicate_job_last_success_timestamp_seconds", (("job", "build"),)) not in m  # never succeeded


def test_health_reports_database_and_scheduler_heartbeat(app):
    h = health(app)
    assert h["ok"] is True and h["database"]["ok"] is True
    assert h["scheduler"] == {"ok": False, "state": "never started", "heartbeat_age_seconds": None}
    jobstate.register_instance(app.engine, "host:1:abc")
    jobstate.heartbeat(app.engine, "host:1:abc", role="leader")
    h = health(app)
    assert h["scheduler"]["ok"] is True and h["scheduler"]["state"] == "running"
    assert 0 <= h["scheduler"]["heartbeat_age_seconds"] < 60
    m = samples(app)
    assert 0 <= m[("syndicate_scheduler_heartbeat_age_seconds", ())] < 60
    jobstate.heartbeat(app.engine, "host:1:abc", role="stopped")
    assert health(app)["scheduler"]["state"] == "stopped"


def test_health_and_metrics_when_the_database_is_down(make_app, tmp_path):
    app = make_app("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1")
    h = health(app)
    assert h["ok"] is False and h["database"]["ok"] is False and h["database"]["error"]
    body, _ = render_metrics(app)
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert families["syndicate_database_up"].samples[0].value == 0
