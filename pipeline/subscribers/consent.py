"""The consent log and the sign-up rate limits (GDPR-1, DOI-2).

Every step of a subscription is an event in ``subscriber_events``: sign-up,
confirmation, preference changes, withdrawal, suppression, with time, source, consent
wording version, privacy notice version, the confirmation token's hash and
(optionally, ``subscribers.record_client``) IP and user agent. Append-only.

Sign-up requests are counted per client and per address in ``subscribe_attempts``
(hashed keys, in the database, so several server processes share the counts).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.engine import Connection

from pipeline.config import Settings
from pipeline.errors import SyndicateError
from pipeline.store.schema import subscribe_attempts, subscriber_events
from pipeline.timeutil import utcnow

RATE_WINDOW = dt.timedelta(hours=1)


class RateLimited(SyndicateError):
    """Too many sign-up requests for one address or from one client (DOI-2)."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message, hint=f"Try again in {max(1, retry_after // 60)} minute(s).")
        self.retry_after = max(1, int(retry_after))


@dataclasses.dataclass
class Client:
    """Who asked and how: the consent log's 'source' and optional IP / user agent."""

    source: str = ""
    ip: str | None = None
    user_agent: str | None = None
    wording_version: str = ""

    def for_log(self, settings: Settings) -> dict[str, Any]:
        keep = settings.subscribers.record_client
        return {
            "source": self.source[:300],
            "ip": (self.ip or None) if keep else None,
            "user_agent": (self.user_agent or "")[:400] or None if keep else None,
        }


def record_event(
    conn: Connection,
    settings: Settings,
    subscriber_id: int,
    kind: str,
    *,
    client: Client | None = None,
    token_hash: str | None = None,
    detail: dict[str, Any] | None = None,
    now: dt.datetime | None = None,
    wording: str | None = None,
) -> None:
    """Append one event. `wording` (the consent wording version) marks a consent event:
    those also record the privacy notice version in force."""
    client = client or Client(source="system")
    logged = client.for_log(settings)
    conn.execute(
        insert(subscriber_events).values(
            subscriber_id=subscriber_id,
            kind=kind,
            at=now or utcnow(),
            source=logged["source"],
            wording_version=(wording or "")[:80],
            privacy_version=settings.subscribers.privacy_version if wording is not None else "",
            token_hash=token_hash,
            ip=logged["ip"],
            user_agent=logged["user_agent"],
            detail=detail or {},
        )
    )


def history(conn: Connection, subscriber_id: int) -> list[dict[str, Any]]:
    """The subscriber's events, oldest first (the consent record)."""
    rows = conn.execute(
        select(subscriber_events)
        .where(subscriber_events.c.subscriber_id == subscriber_id)
        .order_by(subscriber_events.c.at, subscriber_events.c.id)
    ).mappings()
    return [dict(r) for r in rows]


def attempt_key(kind: str, value: str) -> str:
    return f"{kind}:" + hashlib.sha256(value.encode("utf-8")).hexdigest()[:64]


def check_rate(conn: Connection, key: str, limit: int, now: dt.datetime, what: str) -> None:
    """Count attempts for `key` in the last hour; RateLimited at `limit`, else record one."""
    if limit <= 0:
        return
    since = now - RATE_WINDOW
    n, oldest = conn.execute(
        select(func.count(), func.min(subscribe_attempts.c.at)).where(
            subscribe_attempts.c.key == key, subscribe_attempts.c.at > since
        )
    ).one()
    if n >= limit:
        oldest = oldest if oldest.tzinfo else oldest.replace(tzinfo=dt.UTC)
        retry = int((oldest + RATE_WINDOW - now).total_seconds()) + 1
        raise RateLimited(f"too many sign-up requests {what}", retry_after=retry)
    conn.execute(insert(subscribe_attempts).values(key=key, at=now))


__all__ = ["RATE_WINDOW", "RateLimited", "Client", "record_event", "history", "attempt_key", "check_rate"]
