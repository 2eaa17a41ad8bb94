"""Schedule files, syncing them into the job store, and the scheduler in-process (SCHED-1, SCHED-2).

The scheduler runs here in a thread of the test process (its `run()` is the same code
`syndicate scheduler` runs); tests/test_scheduler_process.py drives real processes.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from pipeline.errors import ConfigError
from pipeline.ops import jobstate
from pipeline.ops.scheduler import SchedulerService, make_scheduler, sync_jobs
from pipeline.ops.schedules import check_stages, cron_trigger, load_schedules, parse_interval, parse_schedule
from pipeline.store.schema import job_runs
from pipeline.timeutil import utcnow

REPO = Path(__file__).resolve().parent.parent
FAST = "tests.stage_fixtures:sleepy"


def write_schedule(app, text: str, name: str = "test.toml") -> Path:
    folder = app.settings.path("paths.schedules")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def fast(app):
    """Heartbeats and standby polls fast enough for tests."""
    values = app.settings._values["scheduler"]
    values["heartbeat_seconds"] = 0.2
    values["standby_poll_seconds"] = 0.2
    return app


def runs(app, job_id: str | None = None) -> list[dict]:
    q = select(job_runs).order_by(job_runs.c.id)
    if job_id:
        q = q.where(job_runs.c.job_id == job_id)
    with app.engine.connect() as conn:
        return [dict(r) for r in conn.execute(q).mappings()]


def wait_for(predicate, timeout: float = 15.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


class ServiceThread:
    """SchedulerService.run() in a thread; stop() is what SIGTERM does."""

    def __init__(self, app):
        self.service = SchedulerService(app)
        self.result: dict = {}
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        try:
            self.result["code"] = self.service.run()
        except BaseException as exc:  # surfaced by stop()
            self.result["error"] = exc

    def __enter__(self):
        self.thread.start()
        return self

    def stop(self):
        self.service.request_stop("test")
        self.thread.join(15)
        assert not self.thread.is_alive(), "the scheduler did not stop"
        if "error" in self.result:
            raise self.result["error"]
        return self.result.get("code")

    def __exit__(self, *exc):
        if self.thread.is_alive():
            self.stop()


# --- schedule files --------------------------------------------------------------------


def test_default_schedule_has_the_issue_defaults():
    specs = {s.id: s for s in load_schedules(REPO / "schedules", default_timezone="Europe/Berlin")}
    assert specs["ingest"].interval == 600 and specs["build"].interval == 600
    assert specs["partners"].interval == 300 and specs["deliver"].interval == 60
    assert specs["bounces"].interval == 3600
    daily, weekly = specs["digest-daily"], specs["digest-weekly"]
    assert (daily.stage, daily.args, daily.timezone) == ("digest", {"frequency": "daily"}, "Europe/Berlin")
    # issue 16 item 21: every 15 minutes, so each time-zone slot is composed when its
    # local daily_hour / weekly_hour comes (pipeline.digests.editions.slots)
    assert daily.interval == weekly.interval == 900
    assert specs["purge"].cron and all(s.misfire_grace_time >= 60 for s in specs.values())


@pytest.mark.parametrize(
    "body, field, words",
    [
        ('[[jobs]]\nstage = "ingest"\ninterval = 5', "id", "missing"),
        ('[[jobs]]\nid = "a"\ninterval = 5', "stage", "missing"),
        ('[[jobs]]\nid = "a"\nstage = "ingest"', "interval", "exactly one"),
        ('[[jobs]]\nid = "a"\nstage = "ingest"\ninterval = 5\ncron = "* * * * *"', "cron", "exactly one"),
        ('[[jobs]]\nid = "a"\nstage = "ingest"\ninterval = "ten minutes"', "interval", "not a duration"),
        ('[[jobs]]\nid = "a"\nstage = "ingest"\ncron = "61 * * * *"', "cron", "not valid"),
        ('[[jobs]]\nid = "a"\nstage = "ingest"\ncron = "0 7 * *"', "cron", "5 fields"),
        ('[[jobs]]\nid = "a"\nstage = "ingest"\ninterval = 5\ntimezone = "Mars/Olympus"', "timezone", "IANA"),
        ('[[jobs]]\nid = "a"\nstage = "ingest"\ninterval = 5\nmisfire_grace_time = 0', "misfire_grace_time", ">= 1"),
        ('[[jobs]]\nid = "a"\nstage = "ingest"\ninterval = 5\nenabled = "yes"', "enabled", "true or false"),
        ('[[jobs]]\nid = "a"\nstage = "ingest"\ninterval = 5\nintervall = 6', "intervall", "unknown field"),
        (
            '[[jobs]]\nid = "a"\nstage = "ingest"\ninterval = 5\n[[jobs]]\nid = "a"\nstage = "ingest"\ninterval = 5',
            "id",
            "twice",
        ),
    ],
)
def test_bad_schedule_names_file_job_and_field(body, field, words):
    with pytest.raises(ConfigError) as info:
        parse_schedule(body, "schedules/bad.toml")
    message = info.value.message
    assert message.startswith("schedules/bad.toml: job ")
    assert f": {field}: " in message and words in message
    assert info.value.hint


def test_bad_toml_and_duplicate_ids_across_files(tmp_path):
    (tmp_path / "a.toml").write_text('[[jobs]]\nid = "x"\nstage = "ingest"\ninterval = 5\n')
    (tmp_path / "b.toml").write_text('[[jobs]]\nid = "x"\nstage = "ingest"\ninterval = 5\n')
    with pytest.raises(ConfigError, match=r"b\.toml: job 'x': id: is already defined in .*a\.toml"):
        load_schedules(tmp_path)
    (tmp_path / "b.toml").write_text("[[jobs]\n")
    with pytest.raises(ConfigError, match=r"b\.toml: not valid TOML"):
        load_schedules(tmp_path)


def test_a_schedule_folder_that_cannot_be_listed_is_an_error_not_an_empty_schedule(tmp_path, unlistable):
    """A schedule folder that exists but cannot be listed (permissions, an I/O error)
    is a ConfigError naming it. Before, globbing it gave no files: no schedules, and
    the scheduler's sync would have removed every job from its store."""
    (tmp_path / "a.toml").write_text('[[jobs]]\nid = "x"\nstage = "ingest"\ninterval = 5\n')
    assert [s.id for s in load_schedules(tmp_path)] == ["x"]
    unlistable(tmp_path)
    with pytest.raises(ConfigError, match="cannot be listed: Permission denied") as info:
        load_schedules(tmp_path)
    assert str(tmp_path) in info.value.message and "permissions" in info.value.hint


def test_unknown_stage_fails_at_sync_check_naming_the_job():
    specs = parse_schedule('[[jobs]]\nid = "nightly"\nstage = "no-such-stage"\ninterval = 5\n', "s.toml")
    with pytest.raises(ConfigError, match=r"s\.toml: job 'nightly': stage: no stage named 'no-such-stage'"):
        check_stages(specs)
    specs = parse_schedule('[[jobs]]\nid = "x"\nstage = "tests.stage_fixtures:nope"\ninterval = 5\n', "s.toml")
    with pytest.raises(ConfigError, match="job 'x': stage: .* cannot be imported"):
        check_stages(specs)
    check_stages(parse_schedule(f'[[jobs]]\nid = "ok"\nstage = "{FAST}"\ninterval = 5\n', "s.toml"))
    # a disabled job may name a stage that is not installed
    check_stages(parse_schedule('[[jobs]]\nid = "x"\nstage = "later"\ninterval = 5\nenabled = false\n', "s.toml"))


def test_intervals_and_crontab_weekdays():
    assert parse_interval(90) == 90 and parse_interval("10m") == 600 and parse_interval("1h30m") == 5400
    assert parse_interval("1d") == 86400 and parse_interval("2.5") == 2.5
    utc = ZoneInfo("UTC")
    # Standard crontab numbering (0 and 7 = Sunday), not APScheduler 3's Monday = 0.
    assert "day_of_week='sun'" in str(cron_trigger("0 8 * * 0", utc))
    assert "day_of_week='sun'" in str(cron_trigger("0 8 * * 7", utc))
    assert "day_of_week='mon,tue,wed,thu,fri'" in str(cron_trigger("0 8 * * 1-5", utc))
    assert "day_of_week='*'" in str(cron_trigger("0 8 * * 0-7", utc))
    assert "day_of_week='mon'" in str(cron_trigger("0 8 * * mon", utc))


# --- the job store ---------------------------------------------------------------------


def test_scheduler_runs_in_utc_with_sched1_defaults(sqlite_app):
    """SCHED-1, SCHED-2: UTC, coalesce, max_instances=1, a real misfire grace time."""
    scheduler = make_scheduler(sqlite_app)
    assert scheduler.timezone == dt.UTC
    assert scheduler._job_defaults == {"coalesce": True, "max_instances": 1, "misfire_grace_time": 300}


def test_sync_adds_changes_removes_and_keeps_unchanged(app):
    from apscheduler.schedulers.background import BackgroundScheduler

    first = parse_schedule(
        f"""
[[jobs]]
id = "keep"
stage = "{FAST}"
interval = "1h"
[[jobs]]
id = "change"
stage = "{FAST}"
cron = "0 7 * * *"
[[jobs]]
id = "drop"
stage = "{FAST}"
interval = 60
""",
        "s.toml",
    )
    scheduler = make_scheduler(app, BackgroundScheduler)
    scheduler.start(paused=True)
    try:
        report = sync_jobs(scheduler, first)
        assert sorted(report["added"]) == ["change", "drop", "keep"]
        kept = scheduler.get_job("keep")
        assert kept.func_ref == "pipeline.ops.scheduler:run_job" and kept.kwargs["job_id"] == "keep"
        before = kept.next_run_time
        second = parse_schedule(
            f"""
[[jobs]]
id = "keep"
stage = "{FAST}"
interval = "1h"
[[jobs]]
id = "change"
stage = "{FAST}"
cron = "0 8 * * *"
[[jobs]]
id = "new"
stage = "{FAST}"
args = {{ seconds = 1 }}
interval = 60
[[jobs]]
id = "off"
stage = "{FAST}"
interval = 60
enabled = false
""",
            "s.toml",
        )
        time.sleep(0.01)
        report = sync_jobs(scheduler, second)
        assert report == {"added": ["new"], "changed": ["change"], "removed": ["drop"], "unchanged": ["keep"]}
        assert scheduler.get_job("keep").next_run_time == before  # not reset by the sync
        assert scheduler.get_job("change").next_run_time.hour == 8
        assert scheduler.get_job("new").kwargs["args"] == {"seconds": 1}
        assert scheduler.get_job("off") is None
        assert sync_jobs(scheduler, second)["unchanged"] == ["keep", "change", "new"]
    finally:
        scheduler.shutdown(wait=False)


# --- the scheduler in a thread --------------------------------------------------------


def _store_job_late(app, spec_text: str, job_id: str, late_by: float) -> dt.datetime:
    """Put the job in the store with its next run `late_by` seconds in the past."""
    from apscheduler.schedulers.background import BackgroundScheduler

    scheduler = make_scheduler(app, BackgroundScheduler)
    scheduler.start(paused=True)
    try:
        sync_jobs(scheduler, parse_schedule(spec_text, "s.toml"))
        slot = (utcnow() - dt.timedelta(seconds=late_by)).replace(microsecond=0)
        scheduler.modify_job(job_id, next_run_time=slot)
    finally:
        scheduler.shutdown(wait=False)
    return slot


def test_a_job_60s_late_still_runs_once_and_one_past_grace_is_recorded_missed(sqlite_app):
    """SCHED-1: with a real grace time a run 60 s late happens; one beyond it is `missed`."""
    app = fast(sqlite_app)
    text = f"""
[[jobs]]
id = "late"
stage = "{FAST}"
cron = "0 3 * * *"
misfire_grace_time = 300
[[jobs]]
id = "too-late"
stage = "{FAST}"
cron = "0 4 * * *"
misfire_grace_time = 300
"""
    write_schedule(app, text)
    late_slot = _store_job_late(app, text, "late", 60)
    missed_slot = _store_job_late(app, text, "too-late", 400)
    with ServiceThread(app) as svc:
        wait_for(lambda: [r for r in runs(app, "late") if r["status"] == "ok"], what="the late run")
        wait_for(lambda: runs(app, "too-late"), what="the missed record")
        assert svc.stop() == 0
    late = runs(app, "late")
    assert [(r["status"], r["trigger"], r["scheduled_for"]) for r in late] == [("ok", "scheduled", late_slot)]
    missed = runs(app, "too-late")
    assert [(r["status"], r["scheduled_for"]) for r in missed] == [("missed", missed_slot)]
    assert "misfire_grace_time (300s)" in missed[0]["error"]


def test_pause_is_honoured_by_a_running_scheduler_and_persists_across_restarts(sqlite_app):
    app = fast(sqlite_app)
    write_schedule(app, f'[[jobs]]\nid = "tick"\nstage = "{FAST}"\ninterval = 0.3\n')
    with ServiceThread(app) as svc:
        wait_for(lambda: len(runs(app, "tick")) >= 2, what="two runs")
        jobstate.set_paused(app.engine, "tick", True, note="test")
        time.sleep(0.5)  # > heartbeat: the scheduler has applied the pause
        count = len(runs(app, "tick"))
        time.sleep(0.7)
        assert len(runs(app, "tick")) == count
        svc.stop()
    assert jobstate.next_run_times(app.engine)["tick"] is None  # paused in the job store too
    with ServiceThread(app) as svc:  # restart: still paused
        time.sleep(0.7)
        assert len(runs(app, "tick")) == count
        jobstate.set_paused(app.engine, "tick", False)
        wait_for(lambda: len(runs(app, "tick")) > count, what="runs after resume")
        svc.stop()


def test_a_failing_job_is_recorded_and_the_scheduler_goes_on(sqlite_app):
    app = fast(sqlite_app)
    write_schedule(app, f'[[jobs]]\nid = "boom"\nstage = "{FAST}"\nargs = {{ fail = true }}\ninterval = 0.3\n')
    with ServiceThread(app) as svc:
        wait_for(lambda: len([r for r in runs(app, "boom") if r["status"] == "failed"]) >= 2, what="two failures")
        assert svc.stop() == 0
    row = runs(app, "boom")[0]
    assert row["error"] == "RuntimeError: sleepy was asked to fail" and row["scheduled_for"] is not None


def test_a_bad_stage_in_the_schedule_fails_start_up(sqlite_app):
    app = fast(sqlite_app)
    write_schedule(app, '[[jobs]]\nid = "x"\nstage = "not-a-stage"\ninterval = 5\n')
    with pytest.raises(ConfigError, match=r"test\.toml: job 'x': stage: no stage named 'not-a-stage'"):
        SchedulerService(app).run()


def test_reload_applies_an_edited_schedule_without_a_restart(sqlite_app):
    """SIGHUP (systemctl reload) re-reads the files: added jobs run, removed ones stop."""
    app = fast(sqlite_app)
    write_schedule(app, f'[[jobs]]\nid = "old"\nstage = "{FAST}"\ninterval = 0.3\n')
    with ServiceThread(app) as svc:
        wait_for(lambda: runs(app, "old"), what="the old job")
        write_schedule(app, f'[[jobs]]\nid = "new"\nstage = "{FAST}"\ninterval = 0.3\n')
        svc.service.reload_requested.set()  # what the SIGHUP handler does
        wait_for(lambda: runs(app, "new"), what="the new job")
        assert set(jobstate.next_run_times(app.engine)) == {"new"}
        svc.stop()


def test_runs_of_one_stage_are_serialised(sqlite_app):
    """SCHED-3: two jobs on the same stage (say, two feed builds) never run at once in a scheduler."""
    from pipeline.ops.scheduler import execute

    from . import stage_fixtures

    stage_fixtures._probe.update(running=0, max=0)
    probe = "tests.stage_fixtures:overlap_probe"
    threads = [threading.Thread(target=execute, args=(sqlite_app, f"build-{i}", probe)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert stage_fixtures._probe["max"] == 1
    assert [r["status"] for r in runs(sqlite_app)] == ["ok", "ok", "ok"]
