"""`syndicate jobs ...` and `syndicate status` through click's CliRunner, on both databases."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import MetaData, Table, select

from pipeline import jobstate
from pipeline.cli import main
from pipeline.delivery import outbox
from pipeline.store.schema import job_runs
from pipeline.timeutil import utcnow

from .articles import write_article, write_author
from .test_editorial import POLITICAL

FAST = "tests.stage_fixtures:sleepy"
SCHEDULE = f"""
[[jobs]]
id = "tick"
stage = "{FAST}"
args = {{ seconds = 0 }}
interval = "10m"

[[jobs]]
id = "boom"
stage = "{FAST}"
args = {{ fail = true }}
cron = "0 7 * * 1"

[[jobs]]
id = "ingest"
stage = "ingest"
interval = "10m"
"""


def setup(app) -> Path:
    root = app.settings.root
    (root / "schedules").mkdir(exist_ok=True)
    (root / "schedules" / "test.toml").write_text(SCHEDULE)
    return root


def invoke(root: Path, *args):
    return CliRunner().invoke(main, ["--config", str(root / "syndicate.toml"), *args], catch_exceptions=False,
                              env={"COLUMNS": "200"})


def runs(app, job_id):
    with app.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(job_runs).where(job_runs.c.job_id == job_id)
                                               .order_by(job_runs.c.id)).mappings()]


def test_jobs_run_is_recorded_like_a_scheduled_run(app):
    root = setup(app)
    r = invoke(root, "jobs", "run", "tick")
    assert r.exit_code == 0, r.output
    assert "job tick ok: slept 0, dry_run 0" in r.output
    r = invoke(root, "jobs", "run", "tick", "--dry-run")
    assert r.exit_code == 0 and "(dry run)" in r.output and "dry_run 1" in r.output
    rows = runs(app, "tick")
    assert [(x["status"], x["trigger"], x["dry_run"]) for x in rows] == [("ok", "manual", False), ("ok", "manual", True)]
    assert rows[0]["started_at"] and rows[0]["ended_at"] and rows[0]["counts"] == {"slept": 0, "dry_run": 0}


def test_a_failing_job_exits_1_with_a_hint_and_is_recorded(app):
    root = setup(app)
    r = invoke(root, "jobs", "run", "boom")
    assert r.exit_code == 1
    assert "error: job boom failed: RuntimeError: sleepy was asked to fail" in r.output and "hint:" in r.output
    assert "Traceback" not in r.output
    (row,) = runs(app, "boom")
    assert row["status"] == "failed" and "asked to fail" in row["error"]
    r = invoke(root, "jobs", "history", "--failed")
    assert "boom" in r.output and "asked to fail" in r.output and "tick" not in r.output


def test_unknown_job_names_the_known_ones(app):
    root = setup(app)
    r = invoke(root, "jobs", "run", "nope")
    assert r.exit_code == 1 and "no job 'nope'" in r.output and "tick" in r.output


def test_jobs_list_history_pause_resume(app):
    root = setup(app)
    invoke(root, "jobs", "run", "tick")
    r = invoke(root, "jobs", "list")
    assert r.exit_code == 0, r.output
    assert "tick" in r.output and "every 10m" in r.output and "cron 0 7 * * 1 (UTC)" in r.output
    assert "ok" in r.output and "never run" in r.output and "not yet scheduled" in r.output
    r = invoke(root, "jobs", "pause", "tick", "--note", "maintenance")
    assert r.exit_code == 0 and "job tick paused" in r.output
    assert "already paused" in invoke(root, "jobs", "pause", "tick").output
    assert "paused" in invoke(root, "jobs", "list").output
    assert set(jobstate.paused_jobs(app.engine)) == {"tick"}
    assert jobstate.paused_jobs(app.engine)["tick"]["note"] == "maintenance"
    r = invoke(root, "jobs", "resume", "tick")
    assert r.exit_code == 0 and "job tick resumed" in r.output
    assert jobstate.paused_jobs(app.engine) == {}
    data = json.loads(invoke(root, "jobs", "history", "tick", "--json").output)
    assert data[0]["job_id"] == "tick" and data[0]["status"] == "ok"
    assert "ingest" in invoke(root, "jobs", "list", "--stages").output


def test_status_shows_every_panel_and_skips_missing_tables(app):
    root = setup(app)
    write_author(root)
    write_article(root, "vote-now", title="Vote Now", body=POLITICAL)
    assert invoke(root, "jobs", "run", "ingest").exit_code == 0  # a flagged revision waits for review
    invoke(root, "jobs", "run", "boom")
    now = utcnow()
    with app.engine.begin() as conn:
        outbox.enqueue(conn, channel="email", target="a@example.com", kind="digest", key="k1", payload={})
        outbox.enqueue(conn, channel="webhook", target="partner-news", kind="article.published", key="k2", payload={})
    with app.engine.begin() as conn:
        from pipeline.store.schema import deliveries

        conn.execute(deliveries.update().where(deliveries.c.idempotency_key == "k2").values(
            state="dead", last_error="HTTP 500 from partner", updated_at=now))
    r = invoke(root, "status")
    assert r.exit_code == 0, r.output
    out = r.output
    assert "Review queue" in out and "1 revision(s) waiting" in out and "vote-now" in out and "no-politics" in out
    assert "Outbox" in out and "email" in out and "queued" in out
    assert "Failing partners" in out and "partner-news" in out and "HTTP 500 from partner" in out
    assert "Next jobs" in out and "tick" in out
    assert "Last failure" in out and "boom" in out and "asked to fail" in out
    assert "Schedulers" in out and "no scheduler running" in out
    assert "Workers" in out
    data = json.loads(invoke(root, "status", "--json").output)
    assert data["outbox"]["by_channel"]["email"] == {"queued": 1}
    assert data["review"]["waiting"] == 1
    assert data["last_failure"]["job_id"] == "boom"
    if not app.engine.dialect.has_table(app.engine.connect(), "suppressions"):
        assert "unavailable" in data["suppressions"]


def test_status_reads_another_stages_tables_when_they_exist(app):
    """suppressions added today and workers, from tables other stages own (made up here if absent)."""
    from sqlalchemy import Column, DateTime, Integer, String, inspect

    root = setup(app)
    with app.engine.begin() as conn:
        existing = inspect(conn).has_table("suppressions")
    if not existing:
        md = MetaData()
        Table("suppressions", md, Column("id", Integer, primary_key=True), Column("email", String(200)),
              Column("reason", String(40)), Column("created_at", DateTime(timezone=True)))
        md.create_all(app.engine)
        sup = Table("suppressions", MetaData(), autoload_with=app.engine)
        stamp = utcnow() if app.engine.dialect.name != "sqlite" else utcnow().replace(tzinfo=None)
        with app.engine.begin() as conn:
            conn.execute(sup.insert(), [{"email": "a@example.com", "reason": "bounce", "created_at": stamp},
                                        {"email": "b@example.com", "reason": "complaint", "created_at": stamp}])
    data = json.loads(invoke(root, "status", "--json").output)
    assert "unavailable" not in data["suppressions"], data["suppressions"]
    if not existing:
        assert data["suppressions"]["today"] == 2
        assert data["suppressions"]["by_reason"] == {"bounce": 1, "complaint": 1}
        assert "Suppressions added today" in invoke(root, "status").output
