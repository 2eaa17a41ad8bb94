"""The suppression list (`suppressions`): addresses that get no mail at all.

Written by hard bounces (SMTP 5.1.x at send time, or a DSN), repeated soft bounces,
complaints and the operator; read at send time (BULK-4). When pipeline.subscribers.state
is present the subscriber's own state and consent log are kept in step.
"""

from __future__ import annotations

import logging

from sqlalchemy import delete, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from pipeline.timeutil import utcnow
from pipeline.store.schema import suppressions

log = logging.getLogger(__name__)

REASONS = ("unsubscribed", "hard_bounce", "soft_bounces", "complaint", "manual")


def _subscribers_module():
    try:
        from pipeline import subscribers
    except ImportError:
        return None
    return subscribers


def suppressed_among(conn: Connection, emails: list[str]) -> dict[str, str]:
    """{lower-case email: reason} for those of `emails` on the list (one query)."""
    wanted = sorted({e.lower() for e in emails})
    out: dict[str, str] = {}
    for i in range(0, len(wanted), 500):
        chunk = wanted[i:i + 500]
        out.update(conn.execute(select(suppressions.c.email, suppressions.c.reason)
                                .where(suppressions.c.email.in_(chunk))).all())
    return out


def suppress(conn: Connection, settings, email: str, *, reason: str, source: str, detail: str = "") -> bool:
    """Add `email` to the list (True when it was not on it yet)."""
    email = email.strip().lower()
    ins = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(suppressions)
    added = conn.execute(ins.values(email=email, reason=reason, source=source[:200], created_at=utcnow(),
                                    detail=detail[:4000]).on_conflict_do_nothing(index_elements=["email"])
                         .returning(suppressions.c.id)).first() is not None
    subs = _subscribers_module()
    if subs is not None and settings is not None:
        try:
            subs.mark_suppressed(conn, settings, email, reason=reason, source=source)
        except Exception:  # the subscriber side is best effort; the list is what counts
            log.debug("could not mark subscriber %s suppressed", email, exc_info=True)
    if added:
        log.info("suppressed %s (%s, %s)", email, reason, source)
    return added


def unsuppress(conn: Connection, settings, email: str, *, source: str = "operator") -> bool:
    email = email.strip().lower()
    removed = conn.execute(delete(suppressions).where(suppressions.c.email == email)).rowcount == 1
    subs = _subscribers_module()
    if removed and subs is not None and settings is not None:
        try:
            subs.lift_suppression(conn, settings, email, source=source)
        except Exception:  # best effort, as above
            log.debug("could not lift subscriber suppression for %s", email, exc_info=True)
    return removed


def list_suppressions(conn: Connection, *, limit: int = 1000) -> list[dict]:
    rows = conn.execute(select(suppressions).order_by(suppressions.c.created_at.desc(), suppressions.c.id.desc())
                        .limit(limit)).mappings().all()
    return [dict(r) for r in rows]


def subscriber_id_for(conn: Connection, email: str) -> int | None:
    try:
        from pipeline.store.schema import subscribers
    except ImportError:
        return None
    row = conn.execute(select(subscribers.c.id).where(subscribers.c.email == email.lower())).first()
    return row[0] if row else None


def log_subscriber_event(conn: Connection, subscriber_id: int | None, kind: str, *, source: str,
                         detail: dict) -> bool:
    """Append to the subscriber's history (`subscriber_events`) when that table exists;
    otherwise the decision is only logged."""
    log.info("subscriber %s: %s (%s) %s", subscriber_id, kind, source, detail)
    if subscriber_id is None:
        return False
    try:
        from pipeline.store.schema import subscriber_events
    except ImportError:
        return False
    conn.execute(insert(subscriber_events).values(subscriber_id=subscriber_id, kind=kind, at=utcnow(),
                                                  source=source[:300], detail=detail))
    return True
