"""Edition reports: what each digest edition and instant send did (RPT-1..4).

Plain dicts, so the CLI (`syndicate editions list | report KEY`), the desk and the API
serve the same numbers. Everything is counted from rows that exist anyway - the
outbox (recipients, sent, failed), the bounce log, the consent log - plus the
aggregate click counters (pipeline.digests.clicks); nothing here names a person.

- recipients: messages queued for the edition (one per subscriber)
- sent / failed / suppressed / pending: the outbox states of those messages
  (failed counts permanent failures and dead letters)
- bounced hard / soft: bounce reports that name one of those messages
- unsubscribed_7d: recipients who withdrew within 7 days after their message was
  accepted (any way: link, one-click, mailto, operator)
- clicks per article: the edition's articles with their click counts (0 when clicks
  are not tracked or nobody clicked)
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import and_, func, literal, select, tuple_
from sqlalchemy.engine import Connection

from pipeline.digests.clicks import clicks_by_article, edition_article_ids
from pipeline.errors import NotFound
from pipeline.store.schema import articles, bounce_events, deliveries, digest_editions, revisions, subscriber_events
from pipeline.timeutil import rfc3339

UNSUBSCRIBE_WINDOW = dt.timedelta(days=7)
MAX_LIMIT = 500


def _when(value: dt.datetime | None) -> str | None:
    return rfc3339(value) if value is not None else None


def _edition_summary(row: Any) -> dict:
    return {
        "key": row.key,
        "frequency": row.frequency,
        "subject": row.subject,
        "created_at": _when(row.created_at),
        "completed_at": _when(row.completed_at),
        "articles": len(row.article_ids or []),
    }


def list_editions(conn: Connection, *, limit: int = 50, before: str | None = None) -> list[dict]:
    """The newest editions first, with their outbox counts. `before`: an edition key;
    only editions created before it (a stable cursor: pass the last key of a page to
    get the next page). `limit` is capped at MAX_LIMIT."""
    limit = max(1, min(int(limit), MAX_LIMIT))
    q = select(digest_editions).order_by(digest_editions.c.created_at.desc(), digest_editions.c.id.desc())
    if before:
        anchor = conn.execute(
            select(digest_editions.c.created_at, digest_editions.c.id).where(digest_editions.c.key == before)
        ).first()
        if anchor is None:
            raise NotFound(f"no edition {before!r}", hint="`syndicate editions list` shows the editions.")
        q = q.where(
            tuple_(digest_editions.c.created_at, digest_editions.c.id) < tuple_(anchor.created_at, anchor.id)
            if conn.dialect.name == "postgresql"
            else (digest_editions.c.created_at < anchor.created_at)
            | and_(digest_editions.c.created_at == anchor.created_at, digest_editions.c.id < anchor.id)
        )
    rows = conn.execute(q.limit(limit)).all()
    if not rows:
        return []
    counts = _state_counts(conn, [r.id for r in rows])
    out = []
    for r in rows:
        c = counts.get(r.id, {})
        out.append(_edition_summary(r) | _delivery_numbers(c))
    return out


def _state_counts(conn: Connection, edition_ids: list[int]) -> dict[int, dict[str, int]]:
    out: dict[int, dict[str, int]] = {}
    for edition_id, state, n in conn.execute(
        select(deliveries.c.edition_id, deliveries.c.state, func.count())
        .where(deliveries.c.edition_id.in_(edition_ids))
        .group_by(deliveries.c.edition_id, deliveries.c.state)
    ):
        out.setdefault(edition_id, {})[state] = int(n)
    return out


def _delivery_numbers(by_state: dict[str, int]) -> dict:
    return {
        "recipients": sum(by_state.values()),
        "sent": by_state.get("sent", 0),
        "failed": by_state.get("failed", 0) + by_state.get("dead", 0),
        "suppressed": by_state.get("suppressed", 0),
        "cancelled": by_state.get("cancelled", 0),
        "pending": sum(by_state.get(s, 0) for s in ("queued", "sending", "retry")),
    }


def _within_window(conn: Connection):
    """SQL for 'the withdrawal came within 7 days after the message was sent'."""
    if conn.dialect.name == "postgresql":
        return subscriber_events.c.at < deliveries.c.sent_at + literal(UNSUBSCRIBE_WINDOW)
    return func.julianday(subscriber_events.c.at) - func.julianday(deliveries.c.sent_at) < UNSUBSCRIBE_WINDOW.days


def edition_report(conn: Connection, key: str) -> dict:
    """Everything one edition did, as a plain dict (RPT-1). NotFound for an unknown key."""
    ed = conn.execute(select(digest_editions).where(digest_editions.c.key == key)).first()
    if ed is None:
        raise NotFound(f"no edition {key!r}", hint="`syndicate editions list` shows the editions.")
    # only digest and instant messages carry an edition id, so no kind filter: the
    # counts below are then read from the (edition_id, state, sent_at) index alone
    mine = deliveries.c.edition_id == ed.id
    numbers = _delivery_numbers(_state_counts(conn, [ed.id]).get(ed.id, {}))
    first_sent, last_sent = conn.execute(
        select(func.min(deliveries.c.sent_at), func.max(deliveries.c.sent_at)).where(mine)
    ).one()

    bounced = {"hard": 0, "soft": 0}
    for kind, n in conn.execute(
        select(bounce_events.c.kind, func.count(func.distinct(bounce_events.c.delivery_id)))
        .select_from(bounce_events.join(deliveries, deliveries.c.id == bounce_events.c.delivery_id))
        .where(mine, bounce_events.c.kind.in_(("hard", "soft")))
        .group_by(bounce_events.c.kind)
    ):
        bounced[kind] = int(n)

    unsubscribed = conn.execute(
        select(func.count(func.distinct(subscriber_events.c.subscriber_id)))
        .select_from(
            subscriber_events.join(deliveries, deliveries.c.subscriber_id == subscriber_events.c.subscriber_id)
        )
        .where(
            mine,
            deliveries.c.state == "sent",
            subscriber_events.c.kind == "unsubscribed",
            subscriber_events.c.at >= deliveries.c.sent_at,
            _within_window(conn),
        )
    ).scalar_one()

    ids = list(ed.article_ids or [])
    ids += sorted(edition_article_ids(conn, ed.id) - set(ids))
    clicks = clicks_by_article(conn, ed.id)
    info = {
        r.id: r
        for r in conn.execute(
            select(articles.c.id, articles.c.slug, revisions.c.title)
            .select_from(
                articles.outerjoin(
                    revisions,
                    revisions.c.id == func.coalesce(articles.c.approved_revision_id, articles.c.current_revision_id),
                )
            )
            .where(articles.c.id.in_(ids))
        )
    }
    per_article = [
        {
            "article_id": i,
            "slug": info[i].slug if i in info else None,
            "title": (info[i].title or info[i].slug) if i in info else "(deleted article)",
            "clicks": clicks.get(i, 0),
        }
        for i in ids
    ]
    sent = numbers["sent"]
    return (
        _edition_summary(ed)
        | numbers
        | {
            "first_sent_at": _when(first_sent),
            "last_sent_at": _when(last_sent),
            "bounced": bounced,
            "unsubscribed_7d": int(unsubscribed),
            "clicks": {
                "total": sum(clicks.values()),
                "per_article": per_article,
                # clicks per 100 messages sent; clicks are not per person (CLK-2)
                "per_100_sent": round(100 * sum(clicks.values()) / sent, 2) if sent else None,
            },
        }
    )


__all__ = ["list_editions", "edition_report", "UNSUBSCRIBE_WINDOW", "MAX_LIMIT"]
