"""Channel state shared by every worker: paused (by the operator, by a 5.7.x answer,
or after N consecutive failures) and slowed down (after 421 / 4.7.x).

A paused channel's rows stay queued; nothing is lost. `syndicate deliveries resume
email` un-pauses it; `syndicate deliveries list` shows why it was paused.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging

from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from pipeline.store.schema import delivery_channels
from pipeline.timeutil import as_utc, utcnow
from pipeline.delivery.ratelimit import _ensure_channel_row

log = logging.getLogger(__name__)

MAX_RATE_FACTOR = 16


@dataclasses.dataclass
class ChannelState:
    channel: str
    paused: bool = False
    paused_reason: str = ""
    paused_at: dt.datetime | None = None
    consecutive_failures: int = 0
    rate_factor: int = 1
    throttled_until: dt.datetime | None = None
    throttle_base_per_minute: int | None = None

    def effective_rate_factor(self, now: dt.datetime | None = None) -> int:
        now = now or utcnow()
        if self.throttled_until and as_utc(self.throttled_until) > now:
            return max(1, self.rate_factor)
        return 1


def get_state(engine_or_conn, channel: str) -> ChannelState:
    def _read(conn):
        row = conn.execute(select(delivery_channels).where(delivery_channels.c.channel == channel)).mappings().first()
        if row is None:
            return ChannelState(channel)
        return ChannelState(channel, row["paused"], row["paused_reason"], as_utc(row["paused_at"]),
                            row["consecutive_failures"], row["rate_factor"], as_utc(row["throttled_until"]),
                            row["throttle_base_per_minute"])
    if isinstance(engine_or_conn, Engine):
        with engine_or_conn.connect() as conn:
            return _read(conn)
    return _read(engine_or_conn)


def all_states(engine: Engine) -> list[ChannelState]:
    with engine.connect() as conn:
        names = [r[0] for r in conn.execute(select(delivery_channels.c.channel).order_by(delivery_channels.c.channel))]
        return [get_state(conn, n) for n in names]


def paused_channels(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return {r[0] for r in conn.execute(select(delivery_channels.c.channel).where(delivery_channels.c.paused))}


def _set(engine: Engine, channel: str, **values) -> None:
    now = utcnow()
    with engine.begin() as conn:
        _ensure_channel_row(conn, channel, now)
        conn.execute(update(delivery_channels).where(delivery_channels.c.channel == channel)
                     .values(updated_at=now, **values))


def pause(engine: Engine, channel: str, reason: str) -> None:
    """Stop sending on `channel` until an operator resumes it; logged as an error so
    that whoever watches the logs is told."""
    log.error("delivery channel %s paused: %s. Fix the cause, then run "
              "`syndicate deliveries resume %s`.", channel, reason, channel)
    _set(engine, channel, paused=True, paused_reason=reason[:2000], paused_at=utcnow())


def resume(engine: Engine, channel: str) -> None:
    _set(engine, channel, paused=False, paused_reason="", paused_at=None, consecutive_failures=0)


def note_results(engine: Engine, channel: str, *, successes: int, failures_in_a_row: int,
                 pause_after: int) -> ChannelState:
    """Update the consecutive-failure counter after a batch: `failures_in_a_row` is the
    run of failures at the end of the batch (reset by any success in it)."""
    now = utcnow()
    with engine.begin() as conn:
        _ensure_channel_row(conn, channel, now)
        state = get_state(conn, channel)
        count = failures_in_a_row if successes else state.consecutive_failures + failures_in_a_row
        conn.execute(update(delivery_channels).where(delivery_channels.c.channel == channel)
                     .values(consecutive_failures=count, updated_at=now))
        state.consecutive_failures = count
    if pause_after > 0 and count >= pause_after and not state.paused:
        pause(engine, channel, f"{count} consecutive failures; the last batch's errors are on the failed rows")
        state.paused = True
    return state


def throttle(engine: Engine, channel: str, seconds: float, *, base_per_minute: int | None = None) -> ChannelState:
    """A 421 / 4.7.x: halve the channel's rate (up to 1/16) for `seconds`.
    `base_per_minute`: with no configured rate, the pace it was sending at."""
    now = utcnow()
    with engine.begin() as conn:
        _ensure_channel_row(conn, channel, now)
        state = get_state(conn, channel)
        factor = min(MAX_RATE_FACTOR, max(1, state.effective_rate_factor(now)) * 2)
        until = now + dt.timedelta(seconds=seconds)
        values = dict(rate_factor=factor, throttled_until=until, updated_at=now)
        if base_per_minute and not (state.effective_rate_factor(now) > 1 and state.throttle_base_per_minute):
            values["throttle_base_per_minute"] = max(1, int(base_per_minute))
        conn.execute(update(delivery_channels).where(delivery_channels.c.channel == channel).values(**values))
    log.warning("delivery channel %s throttled by the server: sending at 1/%d of the rate until %s",
                channel, factor, until.isoformat())
    state.rate_factor, state.throttled_until = factor, until
    return state
