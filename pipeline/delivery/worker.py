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
import logging
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from sqlalchemy import func, select

from pipeline.config import Settings
from pipeline.store.schema import deliveries
from pipeline.timeutil import utcnow
from pipeline.delivery import channel_factory, outbox, record

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 5.0


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
    seconds: float = 0.0

    def add(self, counts: dict[str, int]) -> None:
        for status, n in counts.items():
            attr = "released" if status == "release" else status
            setattr(self, attr, getattr(self, attr) + n)

    def merge(self, other: "DrainReport") -> None:
        for field in dataclasses.fields(self):
            if field.name != "seconds":
                setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def finished(self) -> int:
        return self.sent + self.failed + self.suppressed + self.dead


def due_count(engine, channels=None) -> int:
    now = utcnow()
    q = select(func.count()).select_from(deliveries).where(
        deliveries.c.state.in_(outbox.DUE_STATES), deliveries.c.next_attempt_at <= now)
    if channels:
        q = q.where(deliveries.c.channel.in_(list(channels)))
    with engine.connect() as conn:
        return conn.execute(q).scalar_one()


def due_by_channel(engine) -> dict[str, int]:
    now = utcnow()
    with engine.connect() as conn:
        rows = conn.execute(select(deliveries.c.channel, func.count())
                            .where(deliveries.c.state.in_(outbox.DUE_STATES), deliveries.c.next_attempt_at <= now)
                            .group_by(deliveries.c.channel))
        return {c: n for c, n in rows}


def _channels_to_claim(engine, wanted) -> list[str] | None:
    """The channels to claim from; None means all (no filter in the claim query)."""
    from pipeline.delivery.channels import paused_channels

    paused = paused_channels(engine)
    if not wanted and not paused:
        return None
    base = list(wanted) if wanted else list(outbox.CHANNELS)
    return [c for c in base if c not in paused]


def drain(settings: Settings, engine, *, limit: int | None = None, channels=None, batch_size: int | None = None,
          worker: str | None = None, progress: Callable[[DrainReport], None] | None = None,
          should_stop: Callable[[], bool] | None = None) -> DrainReport:
    """Claim and send due rows until none are due (or `limit` rows were handled, or
    `should_stop()` says so between batches)."""
    from pipeline.delivery import workers
    from pipeline.delivery.journal import journal_dir, recover

    worker = worker or outbox.worker_id()
    batch_size = batch_size or settings.delivery.batch_size
    lease = settings.delivery.lease_seconds
    rate = settings.delivery.rate_per_second
    if rate > 0:
        # a rate-limited batch must be sent well within its lease (two are in the air)
        batch_size = max(1, min(batch_size, int(rate * lease / 4)))
    report = DrainReport()
    handlers: dict[str, object] = {}
    started = time.monotonic()
    report.recovered = recover(journal_dir(settings), engine)
    workers.register(engine, worker)
    beat = [time.monotonic(), 0, 0]  # last heartbeat, sent and failed since
    # A handler with prepare()/deliver() (email) sends batch n on a background thread
    # while this thread claims and prepares batch n+1; outcomes are still recorded
    # strictly batch by batch, in order.
    background = ThreadPoolExecutor(1, thread_name_prefix="deliver")
    in_flight: list = []  # [(handler, future)] at most one

    def finish() -> None:
        handler, future = in_flight.pop()
        _record(handler, future.result())

    def _record(handler, outcomes) -> None:
        counts = record(engine, outcomes, worker)
        committed = getattr(handler, "committed", None)
        if committed:
            committed()
        report.add(counts)
        beat[1] += counts.get("sent", 0)
        beat[2] += sum(counts.get(k, 0) for k in ("failed", "dead", "retry"))

    try:
        while limit is None or report.claimed < limit:
            if should_stop and should_stop():
                break
            wanted = _channels_to_claim(engine, channels)
            if wanted is not None and not wanted:
                break  # every channel asked for is paused
            size = batch_size if limit is None else min(batch_size, limit - report.claimed)
            if in_flight:
                # the batch in the air must not look abandoned while we claim the next
                outbox.renew_leases(engine, worker=worker, lease_seconds=lease)
            rows = outbox.claim_due(engine, worker=worker, channels=wanted, limit=size, lease_seconds=lease)
            if not rows:
                break
            report.claimed += len(rows)
            by_channel: dict[str, list[dict]] = {}
            for row in rows:
                by_channel.setdefault(row["channel"], []).append(row)
            for channel, batch in by_channel.items():
                handler = handlers.get(channel)
                if handler is None:
                    handler = handlers[channel] = channel_factory(channel)(settings, engine)
                if hasattr(handler, "prepare") and hasattr(handler, "deliver"):
                    prepared = handler.prepare(batch)
                    if in_flight:
                        finish()
                    in_flight.append((handler, background.submit(handler.deliver, prepared)))
                else:
                    if in_flight:
                        finish()
                    _record(handler, handler.send(batch))
            if progress:
                progress(report)
            if time.monotonic() - beat[0] > HEARTBEAT_SECONDS:
                workers.heartbeat(engine, worker, sent=beat[1], failed=beat[2])
                beat[:] = [time.monotonic(), 0, 0]
            if report.released and report.released >= report.claimed:
                break  # everything claimed was handed back (paused, capped): stop, do not spin
        if in_flight:
            finish()
            if progress:
                progress(report)
    finally:
        if in_flight:  # an error above: let the batch in the air finish and record it
            try:
                finish()
            except Exception:  # the original error matters more; the lease brings these back
                log.debug("recording the last batch failed", exc_info=True)
        background.shutdown(wait=True)
        for handler in handlers.values():
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
            log.warning("sending %d %s deliveries at once failed; the workers will retry them", len(batch), channel,
                        exc_info=log.isEnabledFor(logging.DEBUG))
            with engine.begin() as conn:
                for row in batch:
                    outbox.release(conn, row["id"], worker=worker)
        finally:
            if handler is not None:
                handler.close()
    report.seconds = time.monotonic() - started
    return report


def dry_run_report(settings: Settings, engine, *, channels=None, limit: int | None = None) -> dict:
    """What a drain would do, without claiming or sending anything."""
    from pipeline.delivery.channels import paused_channels

    due = due_by_channel(engine)
    if channels:
        due = {c: n for c, n in due.items() if c in channels}
    paused = paused_channels(engine)
    total = sum(n for c, n in due.items() if c not in paused)
    return {"would_send": min(total, limit) if limit else total,
            "paused_channels": sorted(paused & set(due)), "due_by_channel": due}


def deliver_stage(app, *, dry_run: bool = False, limit: int | None = None, **_options) -> dict:
    """The `deliver` stage of `syndicate run`: drain the outbox once."""
    if dry_run:
        report = dry_run_report(app.settings, app.engine, limit=limit)
        return {"would_send": report["would_send"]}
    report = drain(app.settings, app.engine, limit=limit)
    counts = {k: v for k, v in report.as_dict().items() if v and k != "seconds"}
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


def run_workers(settings: Settings, *, processes: int, continuous: bool, limit: int | None = None,
                channels=None, poll: float = 1.0, progress: Callable[[DrainReport], None] | None = None,
                stop: threading.Event | None = None) -> DrainReport:
    """Drain with `processes` worker processes; returns the summed report. With
    `continuous`, each keeps polling until `stop` is set (the caller's SIGTERM)."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    config = str(settings.source) if settings.source else None
    env = dict(os.environ)
    per_process = None if limit is None else max(1, -(-limit // processes))
    procs = [ctx.Process(target=_child, args=(config, env, per_process, channels, continuous, poll, queue),
                         daemon=False) for _ in range(processes)]
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
        raise DeliveryError(f"{len(crashed)} of {len(procs)} worker processes failed (exit codes "
                            f"{', '.join(map(str, crashed))}); {total.sent} sent before that",
                            hint="Their errors are in the log above; run `syndicate deliver -v` alone to see one. "
                                 "Nothing is lost: their claims come back after delivery.lease_seconds.")
    return total
