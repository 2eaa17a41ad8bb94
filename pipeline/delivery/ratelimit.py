"""Keeping under a provider's limits (SMTP-6): a token bucket for messages per second,
and sliding windows for messages per hour and per day.

The token bucket lives in the process (`TokenBucket`, with an injectable clock so
tests can freeze time); live workers share the configured rate (each takes
rate / live workers). The hour and day caps must hold across processes and
restarts, so they are kept in the database: `delivery_send_log` counts messages per
channel and minute, and `reserve()` takes quota *before* sending in one short
transaction (PostgreSQL: the channel row is locked FOR UPDATE; SQLite: BEGIN
IMMEDIATE already serialises writers). Unused quota is given back with `refund()`.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from pipeline.store.schema import delivery_channels, delivery_send_log
from pipeline.timeutil import utcnow


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved up. `take()` blocks (through the
    injected `sleep`) until a token is there. rate <= 0 means unlimited."""

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.clock = clock
        self.sleep = sleep
        self.lock = threading.Lock()
        self.factor = 1
        self.set_rate(rate, burst)
        self.tokens = self.burst
        self.stamp = clock()

    def set_rate(self, rate: float, burst: float | None = None) -> None:
        self.base_rate = float(rate)
        self.burst = float(burst) if burst is not None else max(1.0, self.base_rate)

    @property
    def rate(self) -> float:
        return self.base_rate / self.factor if self.base_rate > 0 else 0.0

    def slow_down(self, factor: int) -> None:
        self.factor = max(1, int(factor))

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now

    def wait_time(self) -> float:
        """Seconds until a token is available (0 when one is)."""
        if self.rate <= 0:
            return 0.0
        with self.lock:
            self._refill(self.clock())
            return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate

    def try_take(self) -> bool:
        if self.rate <= 0:
            return True
        with self.lock:
            self._refill(self.clock())
            if self.tokens >= 1:
                self.tokens -= 1
                return True
            return False

    def take(self) -> None:
        while not self.try_take():
            self.sleep(max(self.wait_time(), 0.001))


def _minute(now: dt.datetime) -> dt.datetime:
    return now.replace(second=0, microsecond=0)


def _ensure_channel_row(conn, channel: str, now: dt.datetime) -> None:
    ins = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(delivery_channels)
    conn.execute(
        ins.values(
            channel=channel, paused=False, paused_reason="", consecutive_failures=0, rate_factor=1, updated_at=now
        ).on_conflict_do_nothing(index_elements=["channel"])
    )


def window_counts(conn, channel: str, now: dt.datetime | None = None) -> tuple[int, int]:
    """Messages in the last hour and the last day (minute granularity)."""
    now = now or utcnow()
    m = _minute(now)
    q = select(func.coalesce(func.sum(delivery_send_log.c.count), 0)).where(delivery_send_log.c.channel == channel)
    hour = conn.execute(q.where(delivery_send_log.c.minute > m - dt.timedelta(hours=1))).scalar_one()
    day = conn.execute(q.where(delivery_send_log.c.minute > m - dt.timedelta(days=1))).scalar_one()
    return int(hour), int(day)


def reserve(
    engine: Engine, channel: str, wanted: int, *, per_hour: int, per_day: int, now: dt.datetime | None = None
) -> tuple[int, dt.datetime | None]:
    """Take up to `wanted` messages of quota now. Returns (granted, retry_at): when less
    than wanted was granted, retry_at is when the window will have room again."""
    if wanted <= 0:
        return 0, None
    if per_hour <= 0 and per_day <= 0:
        return wanted, None
    now = now or utcnow()
    m = _minute(now)
    with engine.begin() as conn:
        _ensure_channel_row(conn, channel, now)
        if conn.dialect.name == "postgresql":
            conn.execute(
                select(delivery_channels.c.channel).where(delivery_channels.c.channel == channel).with_for_update()
            )
        hour, day = window_counts(conn, channel, now)
        room = wanted
        if per_hour > 0:
            room = min(room, per_hour - hour)
        if per_day > 0:
            room = min(room, per_day - day)
        room = max(room, 0)
        if room:
            _add(conn, channel, m, room)
        # prune buckets nobody will sum again
        conn.execute(
            delivery_send_log.delete().where(
                delivery_send_log.c.channel == channel, delivery_send_log.c.minute < m - dt.timedelta(days=2)
            )
        )
    retry_at = None
    if room < wanted:
        with engine.connect() as conn:
            retry_at = _window_frees_at(conn, channel, m, per_hour, per_day, hour + room, day + room)
    return room, retry_at


def _window_frees_at(conn, channel, m, per_hour, per_day, hour, day) -> dt.datetime:
    """When the oldest counted minute of a full window falls out of it."""
    candidates = []
    for cap, used, span in ((per_hour, hour, dt.timedelta(hours=1)), (per_day, day, dt.timedelta(days=1))):
        if cap > 0 and used >= cap:
            oldest = conn.execute(
                select(func.min(delivery_send_log.c.minute)).where(
                    delivery_send_log.c.channel == channel,
                    delivery_send_log.c.minute > m - span,
                    delivery_send_log.c.count > 0,
                )
            ).scalar_one()
            oldest = oldest or m
            candidates.append(oldest + span + dt.timedelta(minutes=1))
    return max(candidates) if candidates else m + dt.timedelta(minutes=1)


def _add(conn, channel: str, minute: dt.datetime, n: int) -> None:
    ins = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(delivery_send_log)
    stmt = ins.values(channel=channel, minute=minute, count=n)
    conn.execute(
        stmt.on_conflict_do_update(index_elements=["channel", "minute"], set_={"count": delivery_send_log.c.count + n})
    )


def refund(engine: Engine, channel: str, n: int, *, now: dt.datetime | None = None) -> None:
    """Give back quota reserved but not used (the batch stopped early)."""
    if n <= 0:
        return
    now = now or utcnow()
    with engine.begin() as conn:
        conn.execute(
            update(delivery_send_log)
            .where(
                delivery_send_log.c.channel == channel,
                delivery_send_log.c.minute
                == select(func.max(delivery_send_log.c.minute))
                .where(delivery_send_log.c.channel == channel)
                .scalar_subquery(),
            )
            .values(
                count=func.max(delivery_send_log.c.count - n, 0)
                if conn.dialect.name == "sqlite"
                else func.greatest(delivery_send_log.c.count - n, 0)
            )
        )
