"""`syndicate scheduler`: schedules/*.toml -> APScheduler 3 jobs, one leader per database.

* The job store is APScheduler's `SQLAlchemyJobStore` in the project's database; jobs
  are the importable reference `pipeline.ops.scheduler:run_job` with the schedule's job id
  (stable) and `replace_existing`. The scheduler runs in UTC; cron triggers carry the
  job's own timezone (SCHED-2). Defaults: `coalesce`, `max_instances=1`, a real
  misfire grace time (SCHED-1).
* The files are the source of truth: at start-up (and on SIGHUP) `sync_jobs` adds new
  jobs, replaces changed ones and removes the rest. An unchanged job keeps its stored
  next run time, so a slot missed while no scheduler ran still runs once (coalesced)
  if it is within its grace time, and is recorded as `missed` if not.
* One active scheduler per database (`pipeline.ops.leader`); others wait as standbys.
  The leader holds no transaction while jobs run: each state change is its own short
  transaction.
* SIGTERM/SIGINT: no new runs start, running jobs finish, the process exits 0.
* Runs of one stage are serialised in the process (feed builds must never overlap,
  SCHED-3), and a slot that already ran (a leader change mid-slot) is not run again.
* `jobs pause` is persisted in `job_state`; the leader applies it every
  scheduler.heartbeat_seconds, and `run_job` checks it again right before a run.
"""

from __future__ import annotations

import collections
import logging
import os
import secrets
import signal
import socket
import threading
import time
from datetime import UTC

from pipeline.app import App
from pipeline.errors import SyndicateError
from pipeline.ops import jobstate
from pipeline.ops.runs import record_run
from pipeline.ops.schedules import JobSpec, check_stages, resolve_stage, schedules_for

log = logging.getLogger(__name__)

JOB_FUNC = "pipeline.ops.scheduler:run_job"
JOB_DEFAULTS = {"coalesce": True, "max_instances": 1, "misfire_grace_time": 300}

_current: SchedulerService | None = None
_slot = threading.local()
_stage_locks: dict[str, threading.Lock] = collections.defaultdict(threading.Lock)
_stage_locks_guard = threading.Lock()


def _stage_lock(stage: str) -> threading.Lock:
    with _stage_locks_guard:
        return _stage_locks[stage]


def _as_counts(result) -> dict:
    if result is None:
        return {}
    if hasattr(result, "as_dict"):
        result = result.as_dict()
    if not isinstance(result, dict):
        return {"result": str(result)}
    return {str(k): (v if isinstance(v, (int, float, str, bool)) or v is None else str(v)) for k, v in result.items()}


def execute(
    app: App,
    job_id: str,
    stage: str,
    args: dict | None = None,
    *,
    trigger: str = "manual",
    scheduled_for=None,
    dry_run: bool = False,
) -> dict:
    """Run one job now and record it in job_runs; returns the stage's counts.

    The scheduler and `syndicate jobs run` both come through here, so a run by hand
    is recorded exactly like a scheduled one. Failures are recorded, then raised.
    """
    with _stage_lock(stage):
        with record_run(app, job_id, trigger=trigger, scheduled_for=scheduled_for, dry_run=dry_run) as counts:
            func = resolve_stage(stage)
            counts.update(_as_counts(func(app, dry_run=dry_run, **(args or {}))))
    return counts


def run_job(job_id: str, stage: str, args: dict | None = None) -> None:
    """The function every stored APScheduler job references (`pipeline.ops.scheduler:run_job`)."""
    service = _current
    if service is None:
        raise SyndicateError(
            f"job {job_id!r} ran outside `syndicate scheduler`", hint="Run it by hand with `syndicate jobs run ID`."
        )
    service.run_scheduled(job_id, stage, args or {}, getattr(_slot, "scheduled_for", None))


def _make_executor(max_workers: int):
    """APScheduler's thread pool, passing each run's slot time to `run_job` (for history)."""
    from apscheduler.executors.base import run_job as apscheduler_run_job
    from apscheduler.executors.pool import ThreadPoolExecutor

    def run_with_slot(job, jobstore_alias, run_times, logger_name):
        _slot.scheduled_for = run_times[-1] if run_times else None
        try:
            return apscheduler_run_job(job, jobstore_alias, run_times, logger_name)
        finally:
            _slot.scheduled_for = None

    class SlotThreadPoolExecutor(ThreadPoolExecutor):
        def _do_submit_job(self, job, run_times):
            def callback(f):
                exc = f.exception()
                if exc:
                    self._run_job_error(job.id, exc, getattr(exc, "__traceback__", None))
                else:
                    self._run_job_success(job.id, f.result())

            f = self._pool.submit(run_with_slot, job, job._jobstore_alias, run_times, self._logger.name)
            f.add_done_callback(callback)

    return SlotThreadPoolExecutor(max_workers)


def make_scheduler(app: App, cls=None):
    """The configured APScheduler: job store in the project's database, UTC, SCHED-1 defaults."""
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.base import STATE_STOPPED
    from apscheduler.schedulers.blocking import BlockingScheduler

    base = cls or BlockingScheduler

    class Scheduler(base):
        def _process_jobs(self):
            # APScheduler 3's main loop looks for due jobs once more after shutdown();
            # that would fail to submit and silently advance the job past its slot.
            if self.state == STATE_STOPPED:
                return None
            return super()._process_jobs()

    Scheduler.__name__ = Scheduler.__qualname__ = base.__name__
    return Scheduler(
        jobstores={"default": SQLAlchemyJobStore(engine=app.engine, tablename=jobstate.JOBSTORE_TABLE)},
        executors={"default": _make_executor(app.settings.scheduler.max_workers)},
        job_defaults=dict(JOB_DEFAULTS),
        timezone=UTC,
    )


def _same_job(job, spec: JobSpec, trigger) -> bool:
    return (
        type(job.trigger) is type(trigger)
        and str(job.trigger) == str(trigger)
        and str(job.trigger.timezone) == str(trigger.timezone)
        and job.kwargs == spec.job_kwargs()
        and job.misfire_grace_time == spec.misfire_grace_time
        and job.func_ref == JOB_FUNC
        and job.coalesce
        and job.max_instances == 1
    )


def sync_jobs(scheduler, specs: list[JobSpec]) -> dict[str, list[str]]:
    """Make the job store match the schedule files. Returns ids added/changed/removed/unchanged."""
    report: dict[str, list[str]] = {"added": [], "changed": [], "removed": [], "unchanged": []}
    existing = {job.id: job for job in scheduler.get_jobs(jobstore="default")}
    wanted = {spec.id: spec for spec in specs if spec.enabled}
    for job_id in sorted(set(existing) - set(wanted)):
        scheduler.remove_job(job_id, jobstore="default")
        report["removed"].append(job_id)
    for spec in wanted.values():
        trigger = spec.trigger()
        job = existing.get(spec.id)
        if job is not None and _same_job(job, spec, trigger):
            report["unchanged"].append(spec.id)
            continue
        scheduler.add_job(
            JOB_FUNC,
            trigger,
            id=spec.id,
            name=spec.id,
            kwargs=spec.job_kwargs(),
            jobstore="default",
            replace_existing=True,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=spec.misfire_grace_time,
        )
        report["changed" if job is not None else "added"].append(spec.id)
    return report


class SchedulerService:
    """One `syndicate scheduler` process: standby until it holds the lock, then leader."""

    def __init__(self, app: App):
        self.app = app
        self.settings = app.settings
        self.instance = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.stopping = threading.Event()
        self.reload_requested = threading.Event()
        self.exit_code = 0
        self.scheduler = None
        self.lock = None
        self._startup_error: BaseException | None = None
        self._shutdown_thread: threading.Thread | None = None
        self._stop_guard = threading.RLock()
        self._specs: list[JobSpec] = []

    # --- life cycle -----------------------------------------------------------------

    def run(self) -> int:
        """Block until stopped; returns the exit status (0 after SIGTERM)."""
        from pipeline.ops.leader import lock_for

        self._specs = self._load_specs()  # a bad schedule fails here, before any waiting
        engine = self.app.engine
        self._install_signal_handlers()
        jobstate.register_instance(engine, self.instance)
        self.lock = lock_for(engine, self.settings.path("paths.var"))
        poll = self.settings.scheduler.standby_poll_seconds
        waited = False
        try:
            while not self.lock.try_acquire():
                if not waited:
                    log.info(
                        "scheduler %s is a standby: another scheduler holds the %s",
                        self.instance,
                        self.lock.description,
                    )
                    waited = True
                self._beat()
                if self.stopping.wait(poll):
                    log.info("standby scheduler %s stopped", self.instance)
                    return 0
            log.info("scheduler %s is the leader (%s)", self.instance, self.lock.description)
            self._beat("leader")
            orphans = jobstate.fail_orphaned_runs(engine)
            if orphans:
                log.warning("marked %d run(s) of a scheduler that died as failed", orphans)
            jobstate.retire_others(engine, self.instance, self.settings.scheduler.stale_after_seconds)
            jobstate.prune_instances(engine)
            self._run_scheduler()
        finally:
            if self.lock is not None:
                self.lock.release()
            try:
                jobstate.heartbeat(engine, self.instance, role="stopped")
            except Exception as exc:  # the database may be what failed
                log.warning("could not record the scheduler's stop: %s", exc)
        if self._startup_error is not None:
            raise self._startup_error
        return self.exit_code

    def _load_specs(self) -> list[JobSpec]:
        specs = schedules_for(self.settings)
        check_stages(specs)
        return specs

    def _run_scheduler(self) -> None:
        from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, EVENT_SCHEDULER_STARTED

        global _current
        scheduler = make_scheduler(self.app)
        scheduler.add_listener(self._on_started, EVENT_SCHEDULER_STARTED)
        scheduler.add_listener(self._on_missed, EVENT_JOB_MISSED)
        scheduler.add_listener(self._on_skipped, EVENT_JOB_MAX_INSTANCES)
        _current = self
        with self._stop_guard:
            self.scheduler = scheduler
            if self.stopping.is_set():
                return
        try:
            scheduler.start()  # blocks until shutdown() has waited for the running jobs
        finally:
            if self._shutdown_thread is not None:
                self._shutdown_thread.join()
            _current = None

    def _on_started(self, _event) -> None:
        # Runs in the main thread inside start(), before the first look for due jobs.
        try:
            report = sync_jobs(self.scheduler, self._specs)
            self._log_sync(report)
            self.apply_pauses()
        except BaseException as exc:  # APScheduler would only log an exception from a listener
            self._startup_error = exc
            self.exit_code = 1
            self.scheduler.pause()  # run nothing on the way out
            self.request_stop("the schedule could not be applied")
            return
        threading.Thread(target=self._maintain, name="scheduler-heartbeat", daemon=True).start()
        if self.stopping.is_set():
            self.scheduler.pause()
            self.request_stop("stop requested during start-up")

    def _log_sync(self, report: dict) -> None:
        parts = [f"{k} {', '.join(v)}" for k, v in report.items() if v and k != "unchanged"]
        log.info("schedule synced: %s (%d unchanged)", "; ".join(parts) or "no changes", len(report["unchanged"]))

    def _beat(self, role: str | None = None) -> None:
        try:
            jobstate.heartbeat(self.app.engine, self.instance, role=role)
        except Exception as exc:
            log.warning("scheduler heartbeat failed: %s", exc)

    def _maintain(self) -> None:
        """Heartbeat, check the lock, apply pauses and reloads; until stopping."""
        interval = self.settings.scheduler.heartbeat_seconds
        while not self.stopping.wait(interval):
            if not self.lock.healthy():
                log.error(
                    "scheduler %s lost its %s; stopping so a standby can take over",
                    self.instance,
                    self.lock.description,
                )
                self.exit_code = 3
                self.request_stop("lost the leader lock")
                return
            self._beat()
            try:
                if self.reload_requested.is_set():
                    self.reload_requested.clear()
                    self._specs = self._load_specs()
                    self._log_sync(sync_jobs(self.scheduler, self._specs))
                self.apply_pauses()
            except SyndicateError as exc:
                log.error("schedule not reloaded: %s (%s)", exc.message, exc.hint or "")
            except Exception as exc:
                log.warning("scheduler maintenance failed: %s", exc)

    def apply_pauses(self) -> None:
        paused = jobstate.paused_jobs(self.app.engine)
        for job in self.scheduler.get_jobs(jobstore="default"):
            if job.id in paused and job.next_run_time is not None:
                self.scheduler.pause_job(job.id, jobstore="default")
                log.info("job %s paused", job.id)
            elif job.id not in paused and job.next_run_time is None:
                self.scheduler.resume_job(job.id, jobstore="default")
                log.info("job %s resumed", job.id)

    # --- stopping -------------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        signal.signal(signal.SIGTERM, lambda *_: self.request_stop("SIGTERM"))
        signal.signal(signal.SIGINT, lambda *_: self.request_stop("SIGINT"))
        if hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, lambda *_: self.reload_requested.set())

    def request_stop(self, why: str) -> None:
        """Start no new runs; let running ones finish; then `run()` returns."""
        with self._stop_guard:
            first = not self.stopping.is_set()
            self.stopping.set()
            if first:
                log.info("scheduler %s stopping (%s); running jobs finish first", self.instance, why)
            scheduler = self.scheduler
            if scheduler is None or not scheduler.running or self._shutdown_thread is not None:
                return
            self._shutdown_thread = threading.Thread(target=self._shutdown, name="scheduler-shutdown")
            self._shutdown_thread.start()

    def _shutdown(self) -> None:
        from apscheduler.schedulers import SchedulerNotRunningError

        try:
            self.scheduler.shutdown(wait=True)
        except SchedulerNotRunningError:
            pass

    # --- running jobs ---------------------------------------------------------------

    def run_scheduled(self, job_id: str, stage: str, args: dict, scheduled_for) -> None:
        engine = self.app.engine
        if self.stopping.is_set():
            log.info("job %s not started: the scheduler is stopping", job_id)
            return
        if jobstate.is_paused(engine, job_id):
            log.info("job %s is paused; slot %s not run", job_id, scheduled_for)
            return
        if scheduled_for is not None and jobstate.slot_taken(engine, job_id, scheduled_for):
            log.info("job %s: slot %s already ran", job_id, scheduled_for)
            return
        try:
            execute(self.app, job_id, stage, args, trigger="scheduled", scheduled_for=scheduled_for)
        except SyndicateError as exc:
            log.warning("job %s failed: %s", job_id, exc.message)
        except Exception as exc:
            log.warning("job %s failed: %s: %s", job_id, type(exc).__name__, exc)
            log.debug("traceback of job %s", job_id, exc_info=True)

    def _on_missed(self, event) -> None:
        grace = next((s.misfire_grace_time for s in self._specs if s.id == event.job_id), None)
        log.warning("job %s missed its slot %s (more than %ss late)", event.job_id, event.scheduled_run_time, grace)
        jobstate.record_outcome(
            self.app.engine,
            event.job_id,
            "missed",
            scheduled_for=event.scheduled_run_time,
            error=f"not started: more than misfire_grace_time ({grace}s) after its slot",
        )

    def _on_skipped(self, event) -> None:
        slot = event.scheduled_run_times[-1] if event.scheduled_run_times else None
        log.warning("job %s skipped slot %s: its previous run is still going", event.job_id, slot)
        jobstate.record_outcome(
            self.app.engine,
            event.job_id,
            "skipped",
            scheduled_for=slot,
            error="not started: the previous run was still going (max_instances=1)",
        )


def next_fire_time(spec: JobSpec, now=None):
    """When a job would run next if scheduled now (for `jobs list` before the first start)."""
    from pipeline.timeutil import utcnow

    now = now or utcnow()
    return spec.trigger().get_next_fire_time(None, now)


def serve(app: App) -> int:
    """`syndicate scheduler`."""
    from sqlalchemy.exc import SQLAlchemyError

    started = time.monotonic()
    try:
        code = SchedulerService(app).run()
    except SQLAlchemyError as exc:
        raise SyndicateError(
            f"the scheduler lost its database: {str(exc).splitlines()[0]}",
            hint="Check database.url and that the server is up; systemd restarts the scheduler.",
        ) from exc
    log.info("scheduler exited after %.0fs with status %d", time.monotonic() - started, code)
    return code
