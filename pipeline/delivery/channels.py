"""Channel state shared by every worker: paused (by the operator, by a sender-level
5.7.x answer, or after N consecutive failures), in an outage (the server cannot be
reached: no sending for a backoff, then a new try), and slowed down (after 421 /
4.7.x: per destination domain, or the whole channel when the server itself refused
the connection).

A paused channel's rows stay queued; nothing is lost. `syndicate deliveries resume
email` un-pauses it; `syndicate deliveries list` shows why it was paused.

A throttle divides the rate by a factor (doubling per 421, up to 1/16) until the
throttle window ends, then the factor halves again every window: the rate comes
back gradually, not at once (issue 19, item 3).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging

from sqlalchemy import delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from pipeline.delivery.ratelimit import _ensure_channel_row
from pipeline.store.schema import delivery_channels, delivery_throttles
from pipeline.timeutil import as_utc, utcnow

log = logging.getLogger(__name__)

MAX_RATE_FACTOR = 16
MAX_OUTAGE_DOUBLINGS = 5  # the outage backoff grows to 32x delivery.outage_backoff_seconds


def recovering_factor(factor: int, until: dt.datetime | None, window: float, now: dt.datetime) -> int:
    """The divisor in force at `now`: `factor` until `until`, then halved once per
    `window` seconds after it (gradual recovery), never below 1."""
    if not until or factor <= 1:
        return 1
    until = as_utc(until)
    if now < until:
        return factor
    steps = 1 + int((now - until).total_seconds() // max(window, 0.001))
    return max(1, factor >> min(steps, 16))


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
    outage_until: dt.datetime | None = None
    outage_reason: str = ""
    outage_count: int = 0
    throttle_window: float = 60.0

    def effective_rate_factor(self, now: dt.datetime | None = None) -> int:
        return recovering_factor(self.rate_factor, self.throttled_until, self.throttle_window, now or utcnow())

    def in_outage(self, now: dt.datetime | None = None) -> bool:
        return bool(self.outage_until) and as_utc(self.outage_until) > (now or utcnow())


@dataclasses.dataclass
class DomainThrottle:
    """One slowed-down destination domain."""

    domain: str
    rate_factor: int
    throttled_until: dt.datetime
    window_seconds: int
    base_per_minute: int | None = None

    def factor(self, now: dt.datetime | None = None) -> int:
        return recovering_factor(self.rate_factor, self.throttled_until, self.window_seconds, now or utcnow())


def get_state(engine_or_conn, channel: str) -> ChannelState:
    def _read(conn):
        row = conn.execute(select(delivery_channels).where(delivery_channels.c.channel == channel)).mappings().first()
        if row is None:
            return ChannelState(channel)
        return ChannelState(
            channel,
            row["paused"],
            row["paused_reason"],
            as_utc(row["paused_at"]),
            row["consecutive_failures"],
            row["rate_factor"],
            as_utc(row["throttled_until"]),
            row["throttle_base_per_minute"],
            as_utc(row["outage_until"]),
            row["outage_reason"] or "",
            row["outage_count"] or 0,
        )

    if isinstance(engine_or_conn, Engine):
        with engine_or_conn.connect() as conn:
            return _read(conn)
    return _read(engine_or_conn)


def all_states(engine: Engine) -> list[ChannelState]:
    with engine.connect() as conn:
        names = [r[0] for r in conn.execute(select(delivery_channels.c.channel).order_by(delivery_channels.c.channel))]
        return [get_state(conn, n) for n in names]


def paused_channels(engine: Engine) -> set[str]:
    """Channels not to claim from: paused by the operator or a policy answer, or in an
    outage backoff."""
    now = utcnow()
    with engine.connect() as conn:
        return {
            r[0]
            for r in conn.execute(
                select(delivery_channels.c.channel).where(
                    or_(delivery_channels.c.paused, delivery_channels.c.outage_until > now)
                )
            )
        }


def _set(engine: Engine, channel: str, **values) -> None:
    now = utcnow()
    with engine.begin() as conn:
        _ensure_channel_row(conn, channel, now)
        conn.execute(
            update(delivery_channels).where(delivery_channels.c.channel == channel).values(updated_at=now, **values)
        )


def pause(engine: Engine, channel: str, reason: str) -> None:
    """Stop sending on `channel` until an operator resumes it; logged as an error so
    that whoever watches the logs is told."""
    log.error(
        "delivery channel %s paused: %s. Fix the cause, then run `syndicate deliveries resume %s`.",
        channel,
        reason,
        channel,
    )
    _set(engine, channel, paused=True, paused_reason=reason[:2000], paused_at=utcnow())


def resume(engine: Engine, channel: str) -> None:
    _set(
        engine,
        channel,
        paused=False,
        paused_reason="",
        paused_at=None,
        consecutive_failures=0,
        outage_until=None,
        outage_count=0,
    )


def outage(engine: Engine, channel: str, reason: str, *, backoff_seconds: float) -> ChannelState:
    """The server cannot be reached (issue 16, item 11): stop claiming for a backoff
    that doubles with every failed try, logged as an error with the cause. Nothing
    is lost: the rows stay queued; the first successful send clears it."""
    now = utcnow()
    with engine.begin() as conn:
        _ensure_channel_row(conn, channel, now)
        state = get_state(conn, channel)
        count = state.outage_count + 1
        wait = backoff_seconds * (2 ** min(count - 1, MAX_OUTAGE_DOUBLINGS))
        until = now + dt.timedelta(seconds=wait)
        conn.execute(
            update(delivery_channels)
            .where(delivery_channels.c.channel == channel)
            .values(outage_until=until, outage_reason=reason[:2000], outage_count=count, updated_at=now)
        )
    log.error(
        "delivery channel %s cannot reach its server: %s. Not sending for %.0fs (try %d), then "
        "trying again; nothing is lost.",
        channel,
        reason,
        wait,
        count,
    )
    state.outage_until, state.outage_reason, state.outage_count = until, reason, count
    return state


def clear_outage(engine: Engine, channel: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(delivery_channels)
            .where(delivery_channels.c.channel == channel, delivery_channels.c.outage_count > 0)
            .values(outage_until=None, outage_reason="", outage_count=0, updated_at=utcnow())
        )


def note_results(
    engine: Engine, channel: str, *, successes: int, failures_in_a_row: int, pause_after: int
) -> ChannelState:
    """Update the consecutive-failure counter after a batch: `failures_in_a_row` is the
    run of failures at the end of the batch (reset by any success in it)."""
    now = utcnow()
    with engine.begin() as conn:
        _ensure_channel_row(conn, channel, now)
        state = get_state(conn, channel)
        count = failures_in_a_row if successes else state.consecutive_failures + failures_in_a_row
        conn.execute(
            update(delivery_channels)
            .where(delivery_channels.c.channel == channel)
            .values(consecutive_failures=count, updated_at=now)
        )
        state.consecutive_failures = count
    if successes and state.outage_count:
        clear_outage(engine, channel)
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
    log.warning(
        "delivery channel %s throttled by the server: sending at 1/%d of the rate until %s",
        channel,
        factor,
        until.isoformat(),
    )
    state.rate_factor, state.throttled_until = factor, until
    return state


def throttle_domain(
    engine: Engine, channel: str, domain: str, seconds: float, *, base_per_minute: int | None = None
) -> DomainThrottle:
    """A 421 / 4.7.x for a recipient at `domain`: halve the rate towards that domain
    only (down to 1/16) for `seconds`; the rest of the list goes on at full pace."""
    now = utcnow()
    domain = domain.lower()
    window = max(1, int(round(seconds)))
    with engine.begin() as conn:
        _ensure_channel_row(conn, channel, now)  # so that `status` lists the channel with its domains
        row = (
            conn.execute(
                select(delivery_throttles).where(
                    delivery_throttles.c.channel == channel, delivery_throttles.c.domain == domain
                )
            )
            .mappings()
            .first()
        )
        current = (
            DomainThrottle(
                domain, row["rate_factor"], row["throttled_until"], row["window_seconds"], row["base_per_minute"]
            )
            if row
            else None
        )
        factor = min(MAX_RATE_FACTOR, (current.factor(now) if current else 1) * 2)
        base = (
            current.base_per_minute
            if current and current.factor(now) > 1 and current.base_per_minute
            else base_per_minute
        )
        values = dict(
            rate_factor=factor,
            throttled_until=now + dt.timedelta(seconds=seconds),
            window_seconds=window,
            base_per_minute=base,
            updated_at=now,
        )
        ins = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(delivery_throttles)
        conn.execute(
            ins.values(channel=channel, domain=domain, **values).on_conflict_do_update(
                index_elements=["channel", "domain"], set_=values
            )
        )
        # forget domains that recovered long ago
        conn.execute(
            delete(delivery_throttles).where(
                delivery_throttles.c.channel == channel,
                delivery_throttles.c.throttled_until < now - dt.timedelta(seconds=window * 8),
            )
        )
    log.warning(
        "delivery channel %s: %s asked us to slow down; sending to it at 1/%d of the rate for %.0fs, "
        "then recovering gradually",
        channel,
        domain,
        factor,
        seconds,
    )
    return DomainThrottle(domain, factor, values["throttled_until"], window, base)


def domain_throttles(engine_or_conn, channel: str, now: dt.datetime | None = None) -> dict[str, DomainThrottle]:
    """Destination domains still slowed down at `now` (factor > 1), by domain."""
    now = now or utcnow()

    def _read(conn):
        rows = conn.execute(select(delivery_throttles).where(delivery_throttles.c.channel == channel)).mappings()
        out = {}
        for r in rows:
            t = DomainThrottle(
                r["domain"], r["rate_factor"], as_utc(r["throttled_until"]), r["window_seconds"], r["base_per_minute"]
            )
            if t.factor(now) > 1:
                out[t.domain] = t
        return out

    if isinstance(engine_or_conn, Engine):
        with engine_or_conn.connect() as conn:
            return _read(conn)
    return _read(engine_or_conn)


def health(engine: Engine, now: dt.datetime | None = None) -> list[dict]:
    """Per channel with state: paused, outage, the current rate divisor of the channel
    and of each slowed-down domain, and a one-line summary for `syndicate status`
    (issue 16 item 11, issue 19 item 3). Read-only."""
    now = now or utcnow()
    out = []
    for state in all_states(engine):
        domains = []
        for t in sorted(domain_throttles(engine, state.channel, now).values(), key=lambda t: t.domain):
            factor = t.factor(now)
            domains.append(
                {
                    "domain": t.domain,
                    "rate_factor": factor,
                    "throttled_until": t.throttled_until,
                    "per_minute": (t.base_per_minute // factor) if t.base_per_minute else None,
                    "recovering": now >= t.throttled_until,
                }
            )
        factor = state.effective_rate_factor(now)
        outage = state.outage_reason if state.in_outage(now) else ""
        if state.paused:
            line = (
                f"{state.channel}: PAUSED: {state.paused_reason} (resume: syndicate deliveries resume {state.channel})"
            )
        elif outage:
            line = (
                f"{state.channel}: OUTAGE, not sending until {state.outage_until:%Y-%m-%d %H:%M:%S} UTC "
                f"(try {state.outage_count}): {outage}"
            )
        else:
            line = f"{state.channel}: sending" + (f" at 1/{factor} of the rate" if factor > 1 else " at full rate")
        for d in domains:
            pace = f", about {d['per_minute']}/min" if d["per_minute"] else ""
            when = "recovering" if d["recovering"] else f"until {d['throttled_until']:%H:%M:%S} UTC"
            line += f"; {d['domain']} at 1/{d['rate_factor']}{pace} ({when})"
        out.append(
            {
                "channel": state.channel,
                "paused": state.paused,
                "paused_reason": state.paused_reason,
                "outage": outage,
                "outage_until": state.outage_until if outage else None,
                "rate_factor": factor,
                "throttled_domains": domains,
                "line": line,
            }
        )
    return out
