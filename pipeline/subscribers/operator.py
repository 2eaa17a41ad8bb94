"""What the operator does to the list: add one address, remove (withdraw or erase)
one, and purge sign-ups never confirmed (GDPR-2, Art. 5(1)(e)). The CLI's verbs, as
plain functions over a connection.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import and_, delete, func, insert, select
from sqlalchemy.engine import Connection

from pipeline.config import Settings
from pipeline.errors import SyndicateError
from pipeline.store.schema import confirm_tokens, subscribe_attempts, subscriber_events, subscribers
from pipeline.subscribers.addresses import InvalidInput, normalise_email, smtputf8_enabled
from pipeline.subscribers.consent import Client, record_event
from pipeline.subscribers.fields import clean_frequency, clean_name, clean_timezone, clean_topics
from pipeline.subscribers.state import (
    get,
    get_by_id,
    is_suppressed_address,
    issue_confirmation,
    mark_confirmed,
    require_subscriber,
    unsubscribe,
)
from pipeline.timeutil import utcnow


def add(
    conn: Connection,
    settings: Settings,
    email: str,
    *,
    name=None,
    frequency=None,
    topics=None,
    timezone=None,
    confirmed: bool = False,
    source: str = "operator",
    now: dt.datetime | None = None,
) -> tuple[dict, str]:
    """Add one address by hand. Without `confirmed`, a confirmation email is queued
    (double opt-in). Returns (subscriber, what happened)."""
    now = now or utcnow()
    address = normalise_email(email, smtputf8=smtputf8_enabled(settings))
    prefs = {
        "name": clean_name(name),
        "frequency": clean_frequency(frequency, settings),
        "topics": clean_topics(topics, None),
        "timezone": clean_timezone(timezone),
    }
    existing = get(conn, address)
    suppression = is_suppressed_address(conn, address)
    if existing and existing["state"] in ("unsubscribed", "suppressed"):
        raise SyndicateError(
            f"{address} is {existing['state']}; not re-subscribing it",
            hint="People who left must sign up again themselves (a suppression: "
            "`syndicate suppressions remove` first, if the cause is gone).",
        )
    if suppression:
        raise SyndicateError(
            f"{address} is on the suppression list ({suppression})",
            hint="`syndicate suppressions remove EMAIL` first, if the cause is gone.",
        )
    client = Client(source=source, wording_version="operator")
    if existing is None:
        sid = conn.execute(
            insert(subscribers).values(
                email=address, state="unconfirmed", source=source[:200], created_at=now, updated_at=now, **prefs
            )
        ).inserted_primary_key[0]
        record_event(
            conn,
            settings,
            sid,
            "signup",
            client=client,
            now=now,
            wording="operator",
            detail={"requested": prefs, "by": "operator"},
        )
        sub = get_by_id(conn, sid)
        action = "added"
    elif existing["state"] == "unconfirmed" and confirmed:
        sub, action = existing, "already on the list"
    else:
        raise SyndicateError(
            f"{address} is already on the list ({existing['state']})",
            hint="Preferences are the subscriber's to change (the link in every email); "
            "`syndicate subscribers show EMAIL` shows them.",
        )
    if sub["state"] == "unconfirmed":
        if confirmed:
            mark_confirmed(conn, settings, sub["id"], source=source, now=now, detail={"by": "operator"})
            action += ", confirmed"
        else:
            issue_confirmation(conn, settings, sub, client, now)
            action += ", confirmation queued"
    return get_by_id(conn, sub["id"]), action


def remove(
    conn: Connection, settings: Settings, email: str, *, erase: bool = False, now: dt.datetime | None = None
) -> str:
    """Operator removal: by default a withdrawal (history kept); `erase` deletes the
    subscriber and its whole history (right to erasure)."""
    sub = require_subscriber(conn, email)
    if erase:
        conn.execute(delete(subscriber_events).where(subscriber_events.c.subscriber_id == sub["id"]))
        conn.execute(delete(confirm_tokens).where(confirm_tokens.c.subscriber_id == sub["id"]))
        conn.execute(delete(subscribers).where(subscribers.c.id == sub["id"]))
        return "erased"
    changed = unsubscribe(conn, settings, sub["id"], client=Client(source="operator"), now=now)
    return "unsubscribed" if changed else f"already {sub['state']}"


def purge_unconfirmed(
    conn: Connection,
    settings: Settings,
    *,
    days: int | None = None,
    dry_run: bool = False,
    now: dt.datetime | None = None,
) -> dict[str, int]:
    """Delete sign-ups never confirmed whose last request is older than `days`, with
    their tokens and events, plus rate-limit rows older than a day."""
    now = now or utcnow()
    days = settings.subscribers.purge_unconfirmed_days if days is None else days
    if days < 1:
        raise InvalidInput("days", "the purge age must be at least 1 day")
    cutoff = now - dt.timedelta(days=days)
    stale = select(subscribers.c.id).where(
        subscribers.c.state == "unconfirmed", subscribers.c.confirmed_at.is_(None), subscribers.c.updated_at < cutoff
    )
    ids = [r[0] for r in conn.execute(stale)]
    old_attempts = conn.execute(
        select(func.count()).select_from(subscribe_attempts).where(subscribe_attempts.c.at < now - dt.timedelta(days=1))
    ).scalar_one()
    if not dry_run:
        for chunk in (ids[i : i + 500] for i in range(0, len(ids), 500)):
            conn.execute(delete(subscriber_events).where(subscriber_events.c.subscriber_id.in_(chunk)))
            conn.execute(delete(confirm_tokens).where(confirm_tokens.c.subscriber_id.in_(chunk)))
            conn.execute(delete(subscribers).where(subscribers.c.id.in_(chunk)))
        conn.execute(delete(subscribe_attempts).where(subscribe_attempts.c.at < now - dt.timedelta(days=1)))
        # Expired, unused links of people who did confirm or left are no use to anyone.
        conn.execute(
            delete(confirm_tokens).where(and_(confirm_tokens.c.used_at.is_(None), confirm_tokens.c.expires_at < cutoff))
        )
    from pipeline.subscribers.imports import purge_import_notes

    notes = purge_import_notes(conn, dry_run=dry_run, now=now)
    return {"purged_unconfirmed": len(ids), "rate_limit_rows": old_attempts, "import_notes": notes}


def purge_stage(app, *, dry_run: bool = False, days: int | None = None, **_options) -> dict:
    """The `purge` stage: delete never-confirmed sign-ups older than N days."""
    with app.engine.begin() as conn:
        return purge_unconfirmed(conn, app.settings, days=days, dry_run=dry_run)


__all__ = ["add", "remove", "purge_unconfirmed", "purge_stage"]
