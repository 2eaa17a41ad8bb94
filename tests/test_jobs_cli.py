"""`syndicate jobs ...` and `syndicate status` through click's CliRunner, on both databases."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import select

from pipeline.cli import main
from pipeline.delivery import outbox
from pipeline.ops import jobstate
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
    return CliRunner().invoke(
        main, ["--config", str(root / "syndicate.toml"), *args], catch_exceptions=False, env={"COLUMNS": "200"}
    )


def runs(app, job_id):
    with app.engine.connect() as conn:
        return [
            dict(r)
            for r in conn.execute(
                select(job_runs).where(job_runs.c.job_id == job_id).order_by(job_runs.c.id)
            ).mappings()
        ]


def test_jobs_run_is_recorded_like_a_scheduled_run(app):
    root = setup(app)
    r = invoke(root, "jobs", "run", "tick")
    assert r.exit_code == 0, r.output
    assert "job tick ok: slept 0, dry_run 0" in r.output
    r = invoke(root, "jobs", "run", "tick", "--dry-run")
    assert r.exit_code == 0 and "(dry run)" in r.output and "dry_run 1" in r.output
    rows = runs(app, "tick")
    assert [(x["status"], x["trigger"], x["dry_run"]) for x in rows] == [
        ("ok", "manual", False),
        ("ok", "manual", True),
    ]
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


def test_status_shows_every_panel_and_survives_a_failing_one(app):
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

        conn.execute(
            deliveries.update()
            .where(deliveries.c.idempotency_key == "k2")
            .values(state="dead", last_error="HTTP 500 from partner", updated_at=now)
        )
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
    assert "unavailable" not in data["suppressions"]
    # A panel that fails at run time says why; the rest still shows. (Every table is part
    # of the migrated schema, so the failure here is forced by dropping one.)
    from sqlalchemy import text

    with app.engine.begin() as conn:
        conn.execute(text("DROP TABLE suppressions"))
    r = invoke(root, "status")
    assert r.exit_code == 0 and "vote-now" in r.output
    assert "no such table: suppressions" in r.output or 'relation "suppressions" does not exist' in r.output


def test_status_reads_suppressions_and_workers_from_the_delivery_tables(app):
    """Suppressions added today and workers with their claimed rows (tables owned by pipeline.delivery)."""
    import datetime as dt

    import pytest

    from pipeline.store import schema

    if "suppressions" not in schema.metadata.tables or "delivery_workers" not in schema.metadata.tables:
        pytest.skip("the delivery tables are not declared yet")
    root = setup(app)
    now = utcnow()
    sup, workers, deliveries = (schema.metadata.tables[n] for n in ("suppressions", "delivery_workers", "deliveries"))
    with app.engine.begin() as conn:
        conn.execute(
            sup.insert(),
            [
                {"email": "a@example.com", "reason": "hard_bounce", "source": "test", "created_at": now, "detail": ""},
                {"email": "b@example.com", "reason": "complaint", "source": "test", "created_at": now, "detail": ""},
                {
                    "email": "c@example.com",
                    "reason": "manual",
                    "source": "test",
                    "detail": "",
                    "created_at": now - dt.timedelta(days=3),
                },
            ],
        )
        conn.execute(
            workers.insert(),
            [
                {
                    "worker": "box:11",
                    "host": "box",
                    "pid": 11,
                    "started_at": now,
                    "heartbeat_at": now,
                    "state": "running",
                    "sent": 5,
                    "failed": 1,
                },
                {
                    "worker": "box:12",
                    "host": "box",
                    "pid": 12,
                    "started_at": now - dt.timedelta(hours=1),
                    "heartbeat_at": now - dt.timedelta(minutes=10),
                    "state": "running",
                    "sent": 0,
                    "failed": 0,
                },
            ],
        )
        outbox.enqueue(conn, channel="email", target="d@example.com", kind="digest", key="k1", payload={})
        conn.execute(deliveries.update().values(state="sending", claimed_by="box:11", lease_until=now))
    data = json.loads(invoke(root, "status", "--json").output)
    assert data["suppressions"]["today"] == 2
    assert data["suppressions"]["by_reason"] == {"hard_bounce": 1, "complaint": 1}
    by_worker = {w["worker"]: w for w in data["workers"]}
    assert by_worker["box:11"]["claimed"] == 1 and by_worker["box:11"]["state"] == "running"
    assert by_worker["box:12"]["state"] == "stale" and by_worker["box:12"]["claimed"] == 0
    out = invoke(root, "status").output
    assert "Suppressions added today" in out and "hard_bounce 1" in out
    assert "box:11" in out and "claimed 1" in out and "stale" in out


def test_one_json_log_line_per_job_run(app):
    root = setup(app)
    r = CliRunner().invoke(
        main,
        ["--config", str(root / "syndicate.toml"), "--log-format", "json", "jobs", "run", "tick"],
        catch_exceptions=False,
    )
    assert r.exit_code == 0
    lines = [json.loads(line) for line in r.stderr.splitlines() if line.startswith("{")]
    (line,) = [x for x in lines if x.get("job_id") == "tick"]
    assert line["status"] == "ok" and line["counts"] == {"slept": 0, "dry_run": 0} and "duration" in line


def test_jobs_history_fits_80_columns_with_its_counts_readable(app):
    """At 80 columns six unwrappable columns left 'counts / error' 2 characters wide (its
    header read 'co' / 'un' / 'ts' ... down the page); 'started' now wraps instead."""
    root = setup(app)
    invoke(root, "jobs", "run", "tick")
    invoke(root, "jobs", "run", "boom")
    r = CliRunner().invoke(
        main,
        ["--config", str(root / "syndicate.toml"), "jobs", "history"],
        catch_exceptions=False,
        env={"COLUMNS": "80"},
    )
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert all(len(line) <= 80 for line in lines)
    header = next(line for line in lines if line.startswith("┃ id"))
    assert "┃ counts / error" in header and header.endswith("┃")  # whole, and the table is not cut off
    assert any("│ slept 0, dry_run" in line for line in lines) and any("RuntimeError" in line for line in lines)


def test_status_says_what_to_do_about_a_panel_it_cannot_show(app):
    """Without a schedules/ folder the Next jobs panel named the ConfigError but not its
    hint; the hint is what an operator needs."""
    root = app.settings.root  # no schedules/ here
    app.engine.connect().close()
    r = invoke(root, "status")
    assert r.exit_code == 0, r.output
    assert "Next jobs  (ConfigError: schedule folder" in r.output
    assert "hint: Set paths.schedules to a folder of *.toml schedule files" in r.output
