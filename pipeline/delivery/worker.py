"""Draining the outbox once (`syndicate deliver`) or continuously (`syndicate worker`)."""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Callable

from sqlalchemy import func, select

from ..config import Settings
from ..store.schema import deliveries
from ..timeutil import utcnow
from . import channel_factory, outbox, record

log = logging.getLogger(__name__)


@dataclasses.dataclass
class DrainReport:
    claimed: int = 0
    sent: int = 0
    retry: int = 0
    failed: int = 0
    suppressed: int = 0
    dead: int = 0
    released: int = 0
    seconds: float = 0.0

    def add(self, counts: dict[str, int]) -> None:
        for status, n in counts.items():
            attr = "released" if status == "release" else status
            setattr(self, attr, getattr(self, attr) + n)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def due_count(engine, channels=None) -> int:
    now = utcnow()
    q = select(func.count()).select_from(deliveries).where(
        deliveries.c.state.in_(outbox.DUE_STATES), deliveries.c.next_attempt_at <= now)
    if channels:
        q = q.where(deliveries.c.channel.in_(list(channels)))
    with engine.connect() as conn:
        return conn.execute(q).scalar_one()


def drain(settings: Settings, engine, *, limit: int | None = None, channels=None, batch_size: int = 100,
          worker: str | None = None, progress: Callable[[DrainReport], None] | None = None) -> DrainReport:
    """Claim and send due rows until none are due (or `limit` rows were handled)."""
    worker = worker or outbox.worker_id()
    report = DrainReport()
    handlers: dict[str, object] = {}
    started = time.monotonic()
    try:
        while limit is None or report.claimed < limit:
            size = batch_size if limit is None else min(batch_size, limit - report.claimed)
            rows = outbox.claim_due(engine, worker=worker, channels=channels, limit=size)
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
                outcomes = handler.send(batch)
                report.add(record(engine, outcomes, worker))
            if progress:
                progress(report)
    finally:
        for handler in handlers.values():
            handler.close()
        report.seconds = time.monotonic() - started
    return report
