"""Partner state (circuit breaker, 410 disabling, alerts), the attempt log and the
Micropub syndication table. Each write is its own short transaction, made right after
the HTTP exchange it records."""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from pipeline.store.schema import partner_attempts, partner_state, partner_syndications
from pipeline.timeutil import utcnow

log = logging.getLogger(__name__)


def get_state(conn: Connection, name: str) -> dict:
    row = conn.execute(select(partner_state).where(partner_state.c.name == name)).mappings().first()
    if row:
        return dict(row)
    return {
        "name": name,
        "state": "active",
        "reason": "",
        "paused_until": None,
        "throttled_until": None,
        "consecutive_failures": 0,
        "last_success_at": None,
        "last_failure_at": None,
        "last_error": "",
        "alert": "",
        "updated_at": None,
    }


def _save(conn: Connection, name: str, **values) -> None:
    """Update the partner's row, creating it first if needed (two workers may race to
    create it: the insert ignores a conflict)."""
    values["updated_at"] = utcnow()
    if conn.execute(update(partner_state).where(partner_state.c.name == name).values(**values)).rowcount:
        return
    base = get_state(conn, name)
    base["updated_at"] = values["updated_at"]
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    conn.execute(insert(partner_state).values(**base).on_conflict_do_nothing(index_elements=["name"]))
    conn.execute(update(partner_state).where(partner_state.c.name == name).values(**values))


def gate(state: dict, now: dt.datetime) -> tuple[str, dt.datetime | None]:
    """May we send to this partner now? ("go", None) or (why not, until when)."""
    if state["state"] == "disabled":
        return "disabled", None
    if state["state"] == "paused" and state["paused_until"] and state["paused_until"] > now:
        return "paused", state["paused_until"]
    if state["throttled_until"] and state["throttled_until"] > now:
        return "throttled", state["throttled_until"]
    return "go", None


def record_success(engine: Engine, name: str) -> None:
    now = utcnow()
    with engine.begin() as conn:
        _save(
            conn,
            name,
            state=_unless_disabled(conn, name, "active"),
            paused_until=None,
            consecutive_failures=0,
            last_success_at=now,
            reason="",
        )


def _unless_disabled(conn: Connection, name: str, wanted: str) -> str:
    return "disabled" if get_state(conn, name)["state"] == "disabled" else wanted


def record_failure(engine: Engine, name: str, error: str, *, threshold: int, pause: dt.timedelta) -> bool:
    """Count a transient failure; True when the circuit breaker opened (partner paused)."""
    now = utcnow()
    with engine.begin() as conn:
        st = get_state(conn, name)
        failures = st["consecutive_failures"] + 1
        values = dict(consecutive_failures=failures, last_failure_at=now, last_error=error[:2000])
        opened = bool(threshold) and failures >= threshold and st["state"] != "disabled"
        if opened:
            values.update(
                state="paused",
                paused_until=now + pause,
                reason=f"{failures} failures in a row; paused until {(now + pause):%Y-%m-%d %H:%M} UTC",
            )
        _save(conn, name, **values)
    if opened:
        log.warning(
            "partner %s paused after %d failures in a row (last: %s); one trial push after %s",
            name,
            failures,
            error,
            pause,
        )
    return opened


def record_throttle(engine: Engine, name: str, until: dt.datetime) -> None:
    with engine.begin() as conn:
        _save(conn, name, throttled_until=until)


def disable(engine: Engine, name: str, reason: str) -> None:
    """410 Gone (SW-4) or the operator: nothing is sent until `partners resume`."""
    with engine.begin() as conn:
        _save(conn, name, state="disabled", reason=reason, alert=reason, last_failure_at=utcnow())
    log.error(
        "partner %s disabled: %s. Its events stay queued; fix it and run `syndicate partners resume %s`",
        name,
        reason,
        name,
    )


def alert(engine: Engine, name: str, message: str) -> None:
    """Something only the operator can fix (401 insufficient_scope, a missing secret)."""
    with engine.begin() as conn:
        _save(conn, name, alert=message[:2000], last_failure_at=utcnow(), last_error=message[:2000])
    log.error("partner %s needs attention: %s", name, message)


def resume(conn: Connection, name: str) -> dict:
    """Lift a pause or a 410 disabling and clear the alert; returns the previous state."""
    before = get_state(conn, name)
    _save(
        conn, name, state="active", reason="", paused_until=None, throttled_until=None, consecutive_failures=0, alert=""
    )
    return before


def log_attempt(
    engine: Engine,
    *,
    partner: str,
    kind: str,
    outcome: str,
    answer=None,
    delivery_id=None,
    message_id: str = "",
    article_id=None,
    error: str = "",
) -> None:
    with engine.begin() as conn:
        conn.execute(
            partner_attempts.insert().values(
                partner=partner,
                delivery_id=delivery_id,
                kind=kind,
                message_id=message_id,
                article_id=article_id,
                attempted_at=utcnow(),
                status_code=getattr(answer, "status_code", None),
                outcome=outcome,
                error=(error or (answer.summary() if answer is not None and not answer.ok else ""))[:4000],
                response=(answer.saved() if answer is not None else "")[:2000],
                duration_ms=getattr(answer, "duration_ms", 0),
            )
        )


def recent_attempts(conn: Connection, name: str, limit: int = 20) -> list[dict]:
    rows = (
        conn.execute(
            select(partner_attempts)
            .where(partner_attempts.c.partner == name)
            .order_by(partner_attempts.c.attempted_at.desc(), partner_attempts.c.id.desc())
            .limit(limit)
        )
        .mappings()
        .all()
    )
    return [dict(r) for r in rows]


# --- Micropub: where our article lives on the partner's site --------------------------


def syndication(conn: Connection, partner: str, article_id: int) -> dict | None:
    row = (
        conn.execute(
            select(partner_syndications).where(
                partner_syndications.c.partner == partner, partner_syndications.c.article_id == article_id
            )
        )
        .mappings()
        .first()
    )
    return dict(row) if row else None


def save_syndication(engine: Engine, partner: str, article_id: int, location: str, revision_id: int | None) -> None:
    now = utcnow()
    with engine.begin() as conn:
        if syndication(conn, partner, article_id):
            conn.execute(
                update(partner_syndications)
                .where(partner_syndications.c.partner == partner, partner_syndications.c.article_id == article_id)
                .values(location=location, revision_id=revision_id, updated_at=now, deleted_at=None)
            )
        else:
            conn.execute(
                partner_syndications.insert().values(
                    partner=partner,
                    article_id=article_id,
                    location=location,
                    revision_id=revision_id,
                    created_at=now,
                    updated_at=now,
                )
            )


def mark_syndication(engine: Engine, partner: str, article_id: int, *, revision_id=None, deleted: bool = False) -> None:
    now = utcnow()
    values = {"updated_at": now}
    if deleted:
        values["deleted_at"] = now
    if revision_id is not None:
        values["revision_id"] = revision_id
    with engine.begin() as conn:
        conn.execute(
            update(partner_syndications)
            .where(partner_syndications.c.partner == partner, partner_syndications.c.article_id == article_id)
            .values(**values)
        )
