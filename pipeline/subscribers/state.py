"""The subscription state machine. No HTTP and no click in here.

States (closed set): ``unconfirmed -> confirmed -> unsubscribed``, plus ``suppressed``
(hard bounce, complaint, operator). Double opt-in (DOI-1): a sign-up creates an
unconfirmed row and queues a confirmation email through the outbox; only the
confirmation link, POSTed, makes the row ``confirmed``. An unsubscribed or suppressed
address is never silently re-subscribed: signing up again sends a new confirmation
(the person must confirm again) and a suppressed address gets nothing at all.

Every transition is recorded in the consent log (pipeline.subscribers.consent); the
links and their tokens are pipeline.subscribers.links.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Iterable

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from pipeline import tokens
from pipeline.config import Settings
from pipeline.errors import NotFound, TokenError
from pipeline.states import SubscriberState
from pipeline.store.schema import confirm_tokens, subscriber_events, subscribers
from pipeline.subscribers.addresses import InvalidInput, normalise_email, smtputf8_enabled
from pipeline.subscribers.consent import Client, attempt_key, check_rate, record_event
from pipeline.subscribers.fields import (
    available_topics,
    clean_frequency,
    clean_name,
    clean_timezone,
    clean_topics,
    wording_version,
)
from pipeline.subscribers.links import confirm_token
from pipeline.subscribers.suppression_list import drop_withdrawal, reason_for
from pipeline.timeutil import rfc3339, utcnow

log = logging.getLogger(__name__)

STATES = tuple(SubscriberState)  # closed: pipeline.states, a CHECK in the schema


class LinkExpired(TokenError):
    """A confirmation link older than its time to live."""


class LinkUsed(TokenError):
    """A single-use confirmation link that was used already."""


@dataclasses.dataclass
class SignupResult:
    """What a sign-up did. Never shown to the requester (DOI-2: same answer for all)."""

    subscriber_id: int | None
    action: str  # confirm_sent | notice_sent | ignored_suppressed
    # The idempotency key of the email queued, if any: the web service sends that row at
    # once (after its commit) so the reader need not wait for the next `deliver`.
    outbox_key: str | None = None


def get(conn: Connection, email: str) -> dict | None:
    row = conn.execute(select(subscribers).where(subscribers.c.email == email.strip().lower())).mappings().first()
    return dict(row) if row else None


def get_by_id(conn: Connection, subscriber_id: int) -> dict | None:
    row = conn.execute(select(subscribers).where(subscribers.c.id == subscriber_id)).mappings().first()
    return dict(row) if row else None


def require_subscriber(conn: Connection, email: str) -> dict:
    try:
        key = normalise_email(email, smtputf8=True)
    except InvalidInput:
        key = email.strip().lower()
    sub = get(conn, key)
    if sub is None:
        raise NotFound(f"no subscriber {email!r}", hint="`syndicate subscribers list` shows who is on the list.")
    return sub


def history(conn: Connection, subscriber_id: int) -> list[dict]:
    """The subscriber's events, oldest first (the consent record)."""
    rows = conn.execute(
        select(subscriber_events)
        .where(subscriber_events.c.subscriber_id == subscriber_id)
        .order_by(subscriber_events.c.at, subscriber_events.c.id)
    ).mappings()
    return [dict(r) for r in rows]


def list_subscribers(
    conn: Connection, *, state: str | None = None, frequency: str | None = None, limit: int | None = None
) -> list[dict]:
    q = select(subscribers).order_by(subscribers.c.id)
    if state:
        q = q.where(subscribers.c.state == state)
    if frequency:
        q = q.where(subscribers.c.frequency == frequency)
    if limit:
        q = q.limit(limit)
    return [dict(r) for r in conn.execute(q).mappings()]


def counts_by_state(conn: Connection) -> dict[str, int]:
    return {
        state: n for state, n in conn.execute(select(subscribers.c.state, func.count()).group_by(subscribers.c.state))
    }


def is_suppressed_address(conn: Connection, email: str) -> str | None:
    """The suppression list's reason for `email` (pipeline.subscribers.suppression owns that table)."""
    return reason_for(conn, email)


def _blocking_suppression(conn: Connection, email: str) -> str | None:
    """A suppression that stops even a confirmation email: everything but a recorded
    unsubscribe (which a new, confirmed opt-in overrides)."""
    reason = is_suppressed_address(conn, email)
    return reason if reason and reason != "unsubscribed" else None


def may_receive(conn: Connection, subscriber_id: int) -> bool:
    """True when a digest may go to this subscriber *now* (checked at send time, BULK-4):
    confirmed, and not on the suppression list."""
    sub = get_by_id(conn, subscriber_id)
    return bool(sub and sub["state"] == "confirmed" and not is_suppressed_address(conn, sub["email"]))


def issue_confirmation(conn: Connection, settings: Settings, sub: dict, client: Client, now: dt.datetime) -> str:
    """A new single-use confirmation token: stored as a hash, queued as an email.
    Returns the email's idempotency key."""
    from pipeline.delivery import outbox

    nonce = tokens.random_token()
    token = confirm_token(settings, nonce)
    token_h = tokens.token_hash(token)
    expires = now + dt.timedelta(hours=settings.subscribers.confirm_ttl_hours)
    conn.execute(
        insert(confirm_tokens).values(
            subscriber_id=sub["id"], token_hash=token_h, created_at=now, expires_at=expires, used_at=None
        )
    )
    key = f"confirm:{sub['id']}:{token_h[:32]}"
    outbox.enqueue(
        conn,
        channel="email",
        target=sub["email"],
        kind="confirm",
        key=key,
        subscriber_id=sub["id"],
        payload={"subscriber_id": sub["id"], "nonce": nonce, "expires_at": expires.isoformat()},
    )
    record_event(
        conn,
        settings,
        sub["id"],
        "confirm_sent",
        client=client,
        token_hash=token_h,
        now=now,
        detail={"expires_at": expires.isoformat()},
    )
    return key


def request_subscription(
    conn: Connection,
    settings: Settings,
    email: str,
    *,
    name=None,
    frequency=None,
    topics=None,
    timezone=None,
    client: Client | None = None,
    known_topics: Iterable[str] | None = None,
    now: dt.datetime | None = None,
) -> SignupResult:
    """Handle a sign-up request; the caller answers the same whatever happened.

    Validates (InvalidInput), rate-limits per client and per address (RateLimited),
    then: a new or never-confirmed address gets a confirmation email; an unsubscribed
    one too (it stays unsubscribed until it confirms again); a confirmed one gets a
    notice with its preferences link instead; a suppressed one gets nothing.
    """
    now = now or utcnow()
    client = client or Client(source="api")
    address = normalise_email(email, smtputf8=smtputf8_enabled(settings))
    prefs = {
        "name": clean_name(name),
        "frequency": clean_frequency(frequency, settings),
        "topics": clean_topics(topics, known_topics if known_topics is not None else available_topics(conn, settings)),
        "timezone": clean_timezone(timezone),
    }
    if client.ip:
        check_rate(
            conn, attempt_key("ip", client.ip), settings.subscribers.max_signups_per_client, now, "from your network"
        )
    check_rate(
        conn, attempt_key("addr", address), settings.subscribers.max_signups_per_address, now, "for this address"
    )
    wording = client.wording_version or wording_version(settings)
    sub = get(conn, address)
    suppression = _blocking_suppression(conn, address)
    if sub is None:
        if suppression:
            log.info("sign-up for a suppressed address ignored (%s)", suppression)
            return SignupResult(None, "ignored_suppressed")
        try:
            with conn.begin_nested():  # a concurrent sign-up for the same address may win the insert
                sid = conn.execute(
                    insert(subscribers).values(
                        email=address,
                        state="unconfirmed",
                        source=client.source[:200],
                        created_at=now,
                        updated_at=now,
                        **prefs,
                    )
                ).inserted_primary_key[0]
        except IntegrityError:
            sid = get(conn, address)["id"]
        sub = get_by_id(conn, sid)
        state_before = None
    else:
        state_before = sub["state"]
        if sub["state"] in ("unconfirmed", "unsubscribed") and not suppression:
            # Not receiving anything now: the new choices apply once (re)confirmed.
            conn.execute(update(subscribers).where(subscribers.c.id == sub["id"]).values(updated_at=now, **prefs))
    record_event(
        conn,
        settings,
        sub["id"],
        "signup",
        client=client,
        now=now,
        wording=wording,
        detail={"requested": prefs, "state_before": state_before},
    )
    if suppression or sub["state"] == "suppressed":
        return SignupResult(sub["id"], "ignored_suppressed")
    if sub["state"] == "confirmed":
        from pipeline.delivery import outbox

        key = f"notice:{sub['id']}:{tokens.random_token()[:24]}"
        outbox.enqueue(
            conn,
            channel="email",
            target=address,
            kind="subscribed_notice",
            key=key,
            subscriber_id=sub["id"],
            payload={"subscriber_id": sub["id"]},
        )
        record_event(conn, settings, sub["id"], "notice_sent", client=client, now=now)
        return SignupResult(sub["id"], "notice_sent", key)
    return SignupResult(sub["id"], "confirm_sent", issue_confirmation(conn, settings, sub, client, now))


def _token_row(conn: Connection, settings: Settings, token: str) -> dict:
    tokens.verify(settings, "confirm", token)  # TokenError when tampered or for another purpose
    row = (
        conn.execute(select(confirm_tokens).where(confirm_tokens.c.token_hash == tokens.token_hash(token)))
        .mappings()
        .first()
    )
    if row is None:
        raise TokenError(
            "this confirmation link is not valid (or the sign-up was deleted)", hint="Sign up again on the home page."
        )
    return dict(row)


def check_confirm_token(conn: Connection, settings: Settings, token: str, now: dt.datetime | None = None) -> dict:
    """Read-only check for the GET page: the subscriber, or TokenError / LinkUsed / LinkExpired."""
    now = now or utcnow()
    row = _token_row(conn, settings, token)
    if row["used_at"] is not None:
        raise LinkUsed(
            "this confirmation link was used already",
            hint="If you confirmed, you are subscribed; every digest has a link to your preferences.",
        )
    if row["expires_at"] <= now:
        raise LinkExpired("this confirmation link has expired", hint="Ask for a new one below.")
    sub = get_by_id(conn, row["subscriber_id"])
    if sub is None:
        raise TokenError("this confirmation link is not valid", hint="Sign up again on the home page.")
    return sub


def confirm(
    conn: Connection, settings: Settings, token: str, *, client: Client | None = None, now: dt.datetime | None = None
) -> dict:
    """Use a confirmation token (single use): the subscriber becomes confirmed."""
    now = now or utcnow()
    client = client or Client(source="web")
    sub = check_confirm_token(conn, settings, token, now)
    token_h = tokens.token_hash(token)
    used = conn.execute(
        update(confirm_tokens)
        .where(confirm_tokens.c.token_hash == token_h, confirm_tokens.c.used_at.is_(None))
        .values(used_at=now)
    ).rowcount
    if used != 1:  # a concurrent request used it first
        raise LinkUsed("this confirmation link was used already")
    if sub["state"] == "suppressed" or _blocking_suppression(conn, sub["email"]):
        # The address bounced or complained meanwhile: confirmed consent, but no mail.
        record_event(
            conn,
            settings,
            sub["id"],
            "confirmed",
            client=client,
            token_hash=token_h,
            now=now,
            wording=_signup_wording(conn, sub["id"]),
            detail={"state_before": sub["state"], "suppressed": True},
        )
        return get_by_id(conn, sub["id"])
    drop_withdrawal(conn, sub["email"])  # a confirmed opt-in ends an earlier withdrawal
    conn.execute(
        update(subscribers)
        .where(subscribers.c.id == sub["id"])
        .values(state="confirmed", confirmed_at=now, unsubscribed_at=None, updated_at=now)
    )
    # Older links for the same sign-up are spent too.
    conn.execute(
        update(confirm_tokens)
        .where(confirm_tokens.c.subscriber_id == sub["id"], confirm_tokens.c.used_at.is_(None))
        .values(used_at=now)
    )
    record_event(
        conn,
        settings,
        sub["id"],
        "confirmed",
        client=client,
        token_hash=token_h,
        now=now,
        wording=_signup_wording(conn, sub["id"]),
        detail={"state_before": sub["state"]},
    )
    _announce(conn, settings, "subscriber.confirmed", sub, now, client.source)
    if settings.subscribers.welcome_email:
        from pipeline.subscribers.emails import queue_welcome

        queue_welcome(conn, settings, sub, now)
    return get_by_id(conn, sub["id"])


def _announce(conn: Connection, settings: Settings, event_type: str, sub: dict, now: dt.datetime, source: str) -> None:
    """Outgoing event for a transition, queued in this transaction (EVT-2). The key is
    the subscriber and the moment, so a later confirmation is a new event."""
    from pipeline.delivery import emit_event

    emit_event(
        conn,
        settings,
        event_type,
        {
            "subscriber_id": sub["id"],
            "email": sub["email"],
            "state_before": sub["state"],
            "source": source,
            "at": rfc3339(now),
        },
        key=f"subscriber:{sub['id']}:{now.isoformat()}",
    )


def _signup_wording(conn: Connection, subscriber_id: int) -> str:
    """The wording version of the sign-up being confirmed (its latest 'signup' event)."""
    row = conn.execute(
        select(subscriber_events.c.wording_version)
        .where(subscriber_events.c.subscriber_id == subscriber_id, subscriber_events.c.kind.in_(("signup", "imported")))
        .order_by(subscriber_events.c.at.desc(), subscriber_events.c.id.desc())
        .limit(1)
    ).first()
    return row[0] if row else ""


def resend_confirmation(
    conn: Connection, settings: Settings, token: str, *, client: Client | None = None, now: dt.datetime | None = None
) -> SignupResult:
    """'Send it again' from an expired (or lost) link: a new token, if still unconfirmed."""
    now = now or utcnow()
    client = client or Client(source="web:resend")
    row = _token_row(conn, settings, token)
    sub = get_by_id(conn, row["subscriber_id"])
    if sub is None:
        raise TokenError("this confirmation link is not valid", hint="Sign up again on the home page.")
    if client.ip:
        check_rate(
            conn, attempt_key("ip", client.ip), settings.subscribers.max_signups_per_client, now, "from your network"
        )
    check_rate(
        conn, attempt_key("addr", sub["email"]), settings.subscribers.max_signups_per_address, now, "for this address"
    )
    if sub["state"] in ("confirmed", "suppressed") or _blocking_suppression(conn, sub["email"]):
        return SignupResult(sub["id"], "ignored_suppressed" if sub["state"] != "confirmed" else "noop")
    return SignupResult(sub["id"], "confirm_sent", issue_confirmation(conn, settings, sub, client, now))


def update_preferences(
    conn: Connection,
    settings: Settings,
    subscriber_id: int,
    *,
    name=None,
    frequency=None,
    topics=None,
    timezone=None,
    client: Client | None = None,
    known_topics: Iterable[str] | None = None,
    now: dt.datetime | None = None,
) -> dict:
    """Change what and how often; returns {field: [old, new]} for what changed."""
    now = now or utcnow()
    sub = get_by_id(conn, subscriber_id)
    if sub is None:
        raise NotFound("this subscription no longer exists", hint="Sign up again on the home page.")
    if topics is not None:
        known = list(known_topics) if known_topics is not None else available_topics(conn, settings)
        if known:  # what they have already stays choosable, offered or not
            known += list(sub["topics"] or [])
    new = {
        "name": clean_name(name) if name is not None else sub["name"],
        "frequency": clean_frequency(frequency, settings) if frequency is not None else sub["frequency"],
        "topics": clean_topics(topics, known) if topics is not None else list(sub["topics"] or []),
        "timezone": clean_timezone(timezone) if timezone is not None else sub["timezone"],
    }
    changes = {
        k: [sub[k] if k != "topics" else list(sub["topics"] or []), v]
        for k, v in new.items()
        if (list(sub["topics"] or []) if k == "topics" else sub[k]) != v
    }
    if changes:
        conn.execute(update(subscribers).where(subscribers.c.id == subscriber_id).values(updated_at=now, **new))
        record_event(conn, settings, subscriber_id, "preferences", client=client, now=now, detail={"changes": changes})
    return changes


def unsubscribe(
    conn: Connection,
    settings: Settings,
    subscriber_id: int,
    *,
    client: Client | None = None,
    now: dt.datetime | None = None,
) -> bool:
    """Withdraw consent (idempotent): True when this call changed something."""
    now = now or utcnow()
    client = client or Client(source="web")
    sub = get_by_id(conn, subscriber_id)
    if sub is None or sub["state"] == "unsubscribed":
        return False
    if sub["state"] == "suppressed":
        # Stays suppressed; the withdrawal is still recorded, once.
        if sub["unsubscribed_at"] is not None:
            return False
        changed = conn.execute(
            update(subscribers)
            .where(subscribers.c.id == subscriber_id, subscribers.c.unsubscribed_at.is_(None))
            .values(unsubscribed_at=now, updated_at=now)
        ).rowcount
    else:
        changed = conn.execute(
            update(subscribers)
            .where(subscribers.c.id == subscriber_id, subscribers.c.state == sub["state"])
            .values(state="unsubscribed", unsubscribed_at=now, updated_at=now)
        ).rowcount
    if changed:
        # Pending confirmation links die with the withdrawal.
        conn.execute(
            update(confirm_tokens)
            .where(confirm_tokens.c.subscriber_id == subscriber_id, confirm_tokens.c.used_at.is_(None))
            .values(used_at=now)
        )
        record_event(
            conn, settings, subscriber_id, "unsubscribed", client=client, now=now, detail={"state_before": sub["state"]}
        )
        _announce(conn, settings, "subscriber.unsubscribed", sub, now, client.source)
    return bool(changed)


def mark_suppressed(
    conn: Connection,
    settings: Settings,
    email: str,
    *,
    reason: str,
    source: str = "operator",
    now: dt.datetime | None = None,
) -> bool:
    """Set a subscriber's state to suppressed (hard bounce, complaint, operator).
    The delivery helper's suppression list is the send-time check; this keeps the
    subscriber's own state and history in step. True when a row changed."""
    now = now or utcnow()
    sub = get(conn, email)
    if sub is None or sub["state"] == "suppressed":
        return False
    if reason == "unsubscribed":  # e.g. a mailto: unsubscribe: a withdrawal, not a bounce
        return unsubscribe(conn, settings, sub["id"], client=Client(source=source), now=now)
    conn.execute(update(subscribers).where(subscribers.c.id == sub["id"]).values(state="suppressed", updated_at=now))
    record_event(
        conn,
        settings,
        sub["id"],
        "suppressed",
        client=Client(source=source),
        now=now,
        detail={"reason": reason, "state_before": sub["state"]},
    )
    return True


def lift_suppression(
    conn: Connection, settings: Settings, email: str, *, source: str = "operator", now: dt.datetime | None = None
) -> bool:
    """Back from suppressed: to confirmed only if it was confirmed and never withdrew."""
    now = now or utcnow()
    sub = get(conn, email)
    if sub is None or sub["state"] != "suppressed":
        return False
    state = "unsubscribed" if sub["unsubscribed_at"] else "confirmed" if sub["confirmed_at"] else "unconfirmed"
    conn.execute(update(subscribers).where(subscribers.c.id == sub["id"]).values(state=state, updated_at=now))
    record_event(
        conn, settings, sub["id"], "unsuppressed", client=Client(source=source), now=now, detail={"state": state}
    )
    return True


def mark_confirmed(
    conn: Connection, settings: Settings, subscriber_id: int, *, source: str, now: dt.datetime, detail: dict
) -> None:
    # the state before, for the outgoing event; read only when an endpoint may want it
    before = get_by_id(conn, subscriber_id) if getattr(settings, "event_endpoints", None) else None
    conn.execute(
        update(subscribers)
        .where(subscribers.c.id == subscriber_id)
        .values(state="confirmed", confirmed_at=now, updated_at=now)
    )
    record_event(
        conn,
        settings,
        subscriber_id,
        "confirmed",
        client=Client(source=source),
        now=now,
        wording=f"stated by operator: {source}"[:80],
        detail=detail,
    )
    if before is not None:
        _announce(conn, settings, "subscriber.confirmed", before, now, source)


__all__ = [
    "STATES",
    "LinkExpired",
    "LinkUsed",
    "SignupResult",
    "get",
    "get_by_id",
    "require_subscriber",
    "list_subscribers",
    "counts_by_state",
    "is_suppressed_address",
    "may_receive",
    "issue_confirmation",
    "request_subscription",
    "check_confirm_token",
    "confirm",
    "resend_confirmation",
    "update_preferences",
    "unsubscribe",
    "mark_suppressed",
    "lift_suppression",
    "mark_confirmed",
    "InvalidInput",
]
