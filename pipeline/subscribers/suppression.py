"""The suppression list (`suppressions`): addresses that get no mail at all. Its one owner.

Written by hard bounces (SMTP 5.1.x at send time, or a DSN), repeated soft bounces,
complaints, mailto: unsubscribes and the operator; read at send time (BULK-4). Every
change to the list keeps the subscriber's own state and consent log in step, in the
same transaction: there is no "list only" path to forget.

pipeline.delivery needs this module but must not import the subscriber side (that
would be a cycle: subscribers queue their confirmation mail through delivery). So
delivery declares what it needs (`pipeline.delivery.Recipients`) and finds this module
through the `syndicate.hooks` entry point `recipients` in pyproject.toml.
"""

from __future__ import annotations

import logging

from sqlalchemy import delete, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from pipeline.config import Settings
from pipeline.states import SuppressionReason
from pipeline.store.schema import subscriber_events, subscribers, suppressions
from pipeline.subscribers import state
from pipeline.subscribers.consent import Client
from pipeline.subscribers.links import verify_list_token
from pipeline.subscribers.suppression_list import (  # noqa: F401  (re-exported: part of the hook)
    drop_withdrawal,
    list_suppressions,
    reason_for,
    suppressed_among,
)
from pipeline.timeutil import utcnow

log = logging.getLogger(__name__)

REASONS = tuple(SuppressionReason)


def suppress(conn: Connection, settings: Settings, email: str, *, reason: str, source: str, detail: str = "") -> bool:
    """Add `email` to the list and suppress its subscriber (True when it was not on the
    list yet). A failure on the subscriber side fails the whole change."""
    email = email.strip().lower()
    ins = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(suppressions)
    added = (
        conn.execute(
            ins.values(
                email=email,
                reason=SuppressionReason(reason),
                source=source[:200],
                created_at=utcnow(),
                detail=detail[:4000],
            )
            .on_conflict_do_nothing(index_elements=["email"])
            .returning(suppressions.c.id)
        ).first()
        is not None
    )
    state.mark_suppressed(conn, settings, email, reason=reason, source=source)
    if added:
        log.info("suppressed %s (%s, %s)", email, reason, source)
    return added


def unsuppress(conn: Connection, settings: Settings, email: str, *, source: str = "operator") -> bool:
    """Take `email` off the list and lift its subscriber's suppression (True when it was on it)."""
    email = email.strip().lower()
    removed = conn.execute(delete(suppressions).where(suppressions.c.email == email)).rowcount == 1
    if removed:
        state.lift_suppression(conn, settings, email, source=source)
    return removed


def subscriber_id_for(conn: Connection, email: str) -> int | None:
    return conn.execute(select(subscribers.c.id).where(subscribers.c.email == email.strip().lower())).scalar()


def log_subscriber_event(conn: Connection, subscriber_id: int | None, kind: str, *, source: str, detail: dict) -> bool:
    """Append to the subscriber's history; an address with no subscriber (a bounce for
    someone since erased) is only logged."""
    log.info("subscriber %s: %s (%s) %s", subscriber_id, kind, source, detail)
    if subscriber_id is None:
        return False
    conn.execute(
        insert(subscriber_events).values(
            subscriber_id=subscriber_id, kind=kind, at=utcnow(), source=source[:300], detail=detail
        )
    )
    return True


def verify_unsubscribe_token(settings: Settings, token: str) -> int:
    """The subscriber id a mailto: unsubscribe token names (TokenError when forged)."""
    return verify_list_token(settings, "unsubscribe", token)


def unsubscribe(conn: Connection, settings: Settings, subscriber_id: int, *, source: str) -> bool:
    """Withdraw consent, as the one-click link does (idempotent)."""
    return state.unsubscribe(conn, settings, subscriber_id, client=Client(source=source))
