"""Draining the outbox once (`syndicate deliver`) or continuously (`syndicate worker`).

A drain first replays the journals of dead workers (pipeline.delivery.journal), then
claims due rows of the channels that are not paused, hands each channel's rows to
its handler, commits the outcomes of the batch in one transaction and lets the
handler's journal forget them. `run_workers` runs the same loop in several processes
(`--concurrency`), each claiming its own batches; SIGTERM/SIGINT finish the batch in
hand, commit it, and stop.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import func, select

from pipeline.config import Settings
from pipeline.delivery import Outcome, channel_factory, outbox, record
from pipeline.store.schema import deliveries
from pipeline.timeutil import utcnow

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 5.0
BROKEN_BATCH_RETRY_SECONDS = 60


@dataclasses.dataclass
class DrainReport:
    claimed: int = 0
    sent: int = 0
    retry: int = 0
    failed: int = 0
    suppressed: int = 0
    dead: int = 0
    released: int = 0
    recovered: int = 0
    lost: int = 0  # claims another worker took over (our lease ran out); not sent by us
    seconds: float = 0.0
    outage: str = ""  # why a channel could not reach its server (sending paused for a backoff)

    def add(self, counts: dict[str, int]) -> None:
        for status, n in counts.items():
            attr = "released" if status == "release" else status
            setattr(self, attr, getattr(self, attr) + n)

    def merge(self, other: DrainReport) -> None:
        for field in dataclasses.fields(self):
            if field.name == "outage":
                self.outage = self.outage or other.outage
            elif field.name != "seconds":
                setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def finished(self) -> int:
        return self.sent + self.failed + self.suppressed + self.dead


def due_count(engine, channels=None) -> int:
    now = utcnow()
    q = (
        select(func.count())
        .select_from(deliveries)
        .where(deliveries.c.state.in_(outbox.DUE_STATES), deliveries.c.next_attempt_at <= now)
    )
    if channels:
        q = q.where(deliveries.c.channel.in_(list(channels)))
    with engine.connect() as conn:
        return conn.execute(q).scalar_one()


def due_by_channel(engine) -> dict[str, int]:
    now = utcnow()
    with engine.connect() as conn:
        rows = conn.execute(
            select(deliveries.c.channel, func.count())
            .where(deliveries.c.state.in_(outbox.DUE_STATES), deliveries.c.next_attempt_at <= now)
            .group_by(deliveries.c.channel)
        )
        return {c: n for c, n in rows}


def _channels_to_claim(engine, wanted) -> list[str] | None:
    """The channels to claim from; None means all (no filter in the claim query)."""
    from pipeline.delivery.channels import paused_channels

    paused = paused_channels(engine)
    if not wanted and not paused:
        return None
    base = list(wanted) if wanted else list(outbox.CHANNELS)
    return [c for c in base if c not in paused]


def drain(
    settings: Settings,
    engine,
    *,
    limit: int | None = None,
    channels=None,
    batch_size: int | None = None,
    worker: str | None = None,
    progress: Callable[[DrainReport], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> DrainReport:
    """Claim and send due rows until none are due (or `limit` rows were handled, or
    `should_stop()` says so between batches).

    Each channel's batch is sent on that channel's own thread, so a slow partner never
    holds up email (or the other way round); a channel with a batch in the air is not
    claimed from again until it is recorded, except a handler with prepare()/deliver()
    (email), which prepares batch n+1 while batch n is being sent. Outcomes are
    recorded per channel strictly in order. A `LeaseKeeper` renews the leases of every
    row in the air and the handlers check it before each message (issue 19, item 1).
    """
    from pipeline.delivery import workers
    from pipeline.delivery.journal import journal_dir, recover
    from pipeline.delivery.lease import LeaseKeeper

    worker = worker or outbox.worker_id()
    batch_size = batch_size or settings.delivery.batch_size
    lease = settings.delivery.lease_seconds
    rate = settings.delivery.rate_per_second
    if rate > 0:
        # a rate-limited batch should be sent well within its lease (two are in the air)
        batch_size = max(1, min(batch_size, int(rate * lease / 4)))
    report = DrainReport()
    handlers: dict[str, object] = {}
    started = time.monotonic()
    report.recovered = recover(journal_dir(settings), engine, settings=settings)
    workers.register(engine, worker)
    keeper = LeaseKeeper(engine, worker=worker, lease_seconds=lease).start()
    beat = [time.monotonic(), 0, 0]  # last heartbeat, sent and failed since
    threads: dict[str, ThreadPoolExecutor] = {}
    in_flight: dict[str, tuple] = {}  # channel -> (handler, future, rows)
    # how long the end of a drain may wait to take back rows it gave up (see below)
    give_up_at = time.monotonic() + 3 * lease + 5

    def finish(channel: str) -> None:
        handler, future, rows = in_flight.pop(channel)
        try:
            outcomes = future.result()
        except Exception as exc:  # the handler broke: the rows end visible, never stuck in `sending`
            log.error("the %s handler failed on a batch of %d: %s", channel, len(rows), exc)
            log.debug("handler failure", exc_info=True)
            outcomes = _broken_batch(rows, f"the {channel} handler failed: {exc!r}")
        _record(handler, outcomes, rows)

    def finish_done() -> None:
        for channel in [c for c, (_, f, _) in in_flight.items() if f.done()]:
            finish(channel)

    def wait_any() -> None:
        futures.wait([f for _, f, _ in in_flight.values()], return_when=futures.FIRST_COMPLETED)
        finish_done()

    def _record(handler, outcomes, rows) -> None:
        keeper.release(r["id"] for r in rows)  # before the write: a renewal must not see them finished
        with keeper.writing:
            counts = record(engine, outcomes, worker)
        committed = getattr(handler, "committed", None)
        if committed:
            committed()
        report.add(counts)
        beat[1] += counts.get("sent", 0)
        beat[2] += sum(counts.get(k, 0) for k in ("failed", "dead", "retry"))
        if progress:
            progress(report)

    def handler_for(channel: str):
        handler = handlers.get(channel)
        if handler is None:
            handler = handlers[channel] = channel_factory(channel)(settings, engine)
            if hasattr(handler, "holds_lease"):
                handler.holds_lease = keeper.holds
            threads[channel] = ThreadPoolExecutor(1, thread_name_prefix=f"deliver-{channel}")
        return handler

    try:
        while limit is None or report.claimed < limit:
            if should_stop and should_stop():
                break
            finish_done()
            wanted = _channels_to_claim(engine, channels)
            if wanted is not None and not wanted:
                break  # every channel asked for is paused
            busy = {c for c, (h, _, _) in in_flight.items() if not _pipelined(h)}
            if busy:
                wanted = [c for c in (wanted if wanted is not None else outbox.CHANNELS) if c not in busy]
                if not wanted:
                    wait_any()
                    continue
            size = batch_size if limit is None else min(batch_size, limit - report.claimed)
            since = time.monotonic()
            rows = outbox.claim_due(
                engine, worker=worker, channels=wanted, limit=size, lease_seconds=lease, include_own=not in_flight
            )
            if not rows:
                if in_flight:
                    wait_any()  # what is in the air may make more rows due (or pause a channel)
                    continue
                if report.lost and time.monotonic() < give_up_at and _wait_for_own_claims(engine, worker):
                    continue  # rows we gave up unsent are ours to take back now (include_own)
                break
            keeper.claimed((r["id"] for r in rows), since)
            log.debug("claimed %d rows (%d..%d)", len(rows), rows[0]["id"], rows[-1]["id"])
            report.claimed += len(rows)
            by_channel: dict[str, list[dict]] = {}
            for row in rows:
                by_channel.setdefault(row["channel"], []).append(row)
            for channel, batch in by_channel.items():
                handler = handler_for(channel)
                if _pipelined(handler):
                    try:
                        work = handler.prepare(batch)
                    except Exception as exc:
                        log.error("preparing a %s batch of %d failed: %s", channel, len(batch), exc)
                        keeper.release(r["id"] for r in batch)
                        with keeper.writing:
                            report.add(
                                record(engine, _broken_batch(batch, f"preparing the batch failed: {exc!r}"), worker)
                            )
                        continue
                    if channel in in_flight:
                        finish(channel)
                    in_flight[channel] = (handler, threads[channel].submit(handler.deliver, work), batch)
                else:
                    in_flight[channel] = (handler, threads[channel].submit(handler.send, batch), batch)
            if time.monotonic() - beat[0] > HEARTBEAT_SECONDS:
                workers.heartbeat(engine, worker, sent=beat[1], failed=beat[2])
                beat[:] = [time.monotonic(), 0, 0]
            if report.released and report.released >= report.claimed - sum(len(b) for *_, b in in_flight.values()):
                break  # everything claimed was handed back (paused, capped): stop, do not spin
        while in_flight:
            finish(next(iter(in_flight)))
    finally:
        for channel in list(in_flight):  # an error above: let the batches in the air finish and record them
            try:
                finish(channel)
            except Exception:  # the original error matters more; the lease brings these back
                log.debug("recording the last batch failed", exc_info=True)
        for pool in threads.values():
            pool.shutdown(wait=True)
        keeper.stop()
        for handler in handlers.values():
            outage = getattr(handler, "outage", "")
            if outage:
                report.outage = outage
            handler.close()
        try:
            workers.heartbeat(engine, worker, sent=beat[1], failed=beat[2], state="stopped")
        except Exception:  # reporting the stop must not mask the real error
            log.debug("could not record the worker's stop", exc_info=True)
        report.seconds = time.monotonic() - started
    return report


def deliver_now(settings: Settings, engine, keys) -> DrainReport:
    """Send the outbox rows with these idempotency keys at once, if still due: transactional
    email (a confirmation link) that a person is waiting for. The rows are ordinary outbox
    rows: claimed, sent by the channel's handler (pause, caps, suppression and journal as
    in a drain), and recorded; whatever this does not finish, a worker retries later."""
    worker = outbox.worker_id()
    report = DrainReport()
    started = time.monotonic()
    rows = outbox.claim_keys(engine, keys, worker=worker, lease_seconds=settings.delivery.lease_seconds)
    report.claimed = len(rows)
    by_channel: dict[str, list[dict]] = {}
    for row in rows:
        by_channel.setdefault(row["channel"], []).append(row)
    for channel, batch in by_channel.items():
        handler = None
        try:
            handler = channel_factory(channel)(settings, engine)
            report.add(record(engine, handler.send(batch), worker))
            committed = getattr(handler, "committed", None)
            if committed:
                committed()
        except Exception:  # the caller's request succeeded; hand the rows back to the workers
            log.warning(
                "sending %d %s deliveries at once failed; the workers will retry them",
                len(batch),
                channel,
                exc_info=log.isEnabledFor(logging.DEBUG),
            )
            with engine.begin() as conn:
                for row in batch:
                    outbox.release(conn, row["id"], worker=worker)
        finally:
            if handler is not None:
                handler.close()
    report.seconds = time.monotonic() - started
    return report


def _pipelined(handler) -> bool:
    return hasattr(handler, "prepare") and hasattr(handler, "deliver")


def _wait_for_own_claims(engine, worker: str) -> bool:
    """Rows this worker claimed and gave up unsent, because its local lease deadline
    passed before a renewal (a starved process, PostgreSQL slow to answer): they stay
    `sending` with our name until their lease runs out in the database, and nobody
    else may be running to take them. Wait until the first of them is free; -> True
    when there are any (the caller claims again, its own included), else False."""
    first = outbox.own_claims_free_at(engine, worker)
    if first is None:
        return False
    wait = (first - utcnow()).total_seconds()
    log.info("taking back claims this worker gave up when its lease ran out (in %.1fs)", max(0.0, wait))
    time.sleep(min(max(0.0, wait) + 0.05, 5.0))
    return True


def _broken_batch(rows: list[dict], error: str) -> list[Outcome]:
    """Outcomes for a batch whose handler raised: retry later, the attempt counted and
    the error on the row (issue 18, item 7), so nothing waits in `sending` for its lease."""
    later = utcnow() + dt.timedelta(seconds=BROKEN_BATCH_RETRY_SECONDS)
    return [Outcome(r["id"], "retry", error=error, next_attempt_at=later) for r in rows]


def dry_run_report(settings: Settings, engine, *, channels=None, limit: int | None = None) -> dict:
    """What a drain would do, without claiming or sending anything."""
    from pipeline.delivery.channels import paused_channels

    due = due_by_channel(engine)
    if channels:
        due = {c: n for c, n in due.items() if c in channels}
    paused = paused_channels(engine)
    total = sum(n for c, n in due.items() if c not in paused)
    return {
        "would_send": min(total, limit) if limit else total,
        "paused_channels": sorted(paused & set(due)),
        "due_by_channel": due,
    }


def deliver_stage(app, *, dry_run: bool = False, limit: int | None = None, **_options) -> dict:
    """The `deliver` stage of `syndicate run`: drain the outbox once."""
    if dry_run:
        report = dry_run_report(app.settings, app.engine, limit=limit)
        return {"would_send": report["would_send"]}
    report = drain(app.settings, app.engine, limit=limit)
    if report.outage:  # the job run fails with the cause: `status` shows it as the last failure
        from pipeline.errors import DeliveryError

        raise DeliveryError(
            f"{report.outage} ({report.sent} sent before that)",
            hint="Check email.smtp_host / email.smtp_port and that the server is up; the "
            "messages stay queued and are tried again after the backoff.",
        )
    counts = {k: v for k, v in report.as_dict().items() if v and k not in ("seconds", "outage")}
    return counts or {"sent": 0}


# --- several processes ---------------------------------------------------------------


def _child(config_path: str | None, env: dict, limit, channels, continuous: bool, poll: float, queue) -> None:
    from pipeline.config import load_settings
    from pipeline.store import dispose_engines, get_engine

    dispose_engines()  # never share the parent's pooled connections
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    settings = load_settings(config_path, env=env)
    engine = get_engine(settings.database_url)
    total = DrainReport()

    def progress(r: DrainReport) -> None:
        queue.put(("progress", os.getpid(), dataclasses.asdict(r)))

    while True:
        report = drain(settings, engine, limit=limit, channels=channels, should_stop=stop.is_set, progress=progress)
        total.merge(report)
        if not continuous or stop.is_set():
            break
        stop.wait(poll)
        if stop.is_set():
            break
    queue.put(("done", os.getpid(), dataclasses.asdict(total)))


def run_workers(
    settings: Settings,
    *,
    processes: int,
    continuous: bool,
    limit: int | None = None,
    channels=None,
    poll: float = 1.0,
    progress: Callable[[DrainReport], None] | None = None,
    stop: threading.Event | None = None,
) -> DrainReport:
    """Drain with `processes` worker processes; returns the summed report. With
    `continuous`, each keeps polling until `stop` is set (the caller's SIGTERM)."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    config = str(settings.source) if settings.source else None
    env = dict(os.environ)
    per_process = None if limit is None else max(1, -(-limit // processes))
    procs = [
        ctx.Process(target=_child, args=(config, env, per_process, channels, continuous, poll, queue), daemon=False)
        for _ in range(processes)
    ]
    for p in procs:
        p.start()
    latest: dict[int, DrainReport] = {}
    done = 0
    total = DrainReport()
    t0 = time.monotonic()
    signalled = False
    try:
        while done < len(procs):
            if stop is not None and stop.is_set() and not signalled:
                for p in procs:
                    if p.is_alive():
                        os.kill(p.pid, signal.SIGTERM)
                signalled = True
            try:
                kind, pid, data = queue.get(timeout=0.2)
            except Exception:  # queue.Empty: look at the children again
                if not any(p.is_alive() for p in procs) and queue.empty():
                    break
                continue
            report = DrainReport(**data)
            if kind == "progress":
                latest[pid] = report
                if progress:
                    agg = DrainReport()
                    for r in latest.values():
                        agg.merge(r)
                    agg.merge(total)
                    agg.seconds = time.monotonic() - t0
                    progress(agg)
            else:
                latest.pop(pid, None)
                total.merge(report)
                done += 1
    finally:
        for p in procs:
            p.join()
    total.seconds = time.monotonic() - t0
    crashed = [p.exitcode for p in procs if p.exitcode not in (0, None)]
    if crashed:
        from pipeline.errors import DeliveryError

        raise DeliveryError(
            f"{len(crashed)} of {len(procs)} worker processes failed (exit codes "
            f"{', '.join(map(str, crashed))}); {total.sent} sent before that",
            hint="Their errors are in the log above; run `syndicate deliver -v` alone to see one. "
            "Nothing is lost: their claims come back after delivery.lease_seconds.",
        )
    return total
