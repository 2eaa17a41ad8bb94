"""The `partners` stage: approved revisions and retractions -> outbox rows per partner.

For every enabled webhook or Micropub partner and every approved article its filters
match, the stage compares what the partner was already sent (the outbox rows for that
partner and article) with the article now:

- never sent, or retracted since       -> `article.published`
- sent, and a newer revision approved   -> `article.updated`
- retracted, and sent before            -> `article.retracted`

The outbox idempotency key is partner + article + revision (plus the event and a
counter of earlier retractions, so a restored article can be published again), so
running the stage twice queues nothing new. Rows for one partner and article share an
`ordering_key` with increasing `sequence`: the outbox never lets an update overtake
its publish. The event body is frozen into the row when it is queued, so every retry
sends the same bytes.
"""

from __future__ import annotations

import dataclasses
import html
import logging
import uuid

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from pipeline.content.editorial import ApprovedArticle, approved_articles, retracted_articles
from pipeline.delivery import outbox
from pipeline.partners.config import Partner, partners
from pipeline.store import transaction
from pipeline.store.schema import deliveries
from pipeline.timeutil import rfc3339, utcnow

log = logging.getLogger(__name__)

EVENT_TYPES = ("article.published", "article.updated", "article.retracted")
REPLAY_PREFIX = "replay:"


def ordering_key(partner: str, article_id: int) -> str:
    return f"partner:{partner}:article:{article_id}"


def outbox_key(partner: str, article_id: int, revision_id: int, *, retraction: bool = False, epoch: int = 0) -> str:
    key = f"partner:{partner}:article:{article_id}:rev:{revision_id}"
    if retraction:
        key += ":retracted"
    if epoch:
        key += f":epoch:{epoch}"
    return key


def http_idempotency_key(key: str) -> str:
    """IDEM-1: a UUID derived from (partner, article, revision[, event]); the same on
    every retry and replay of one logical push, a new one for a new revision."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "syndicate:" + key))


def new_message_id() -> str:
    """A webhook-id (SW-1): unique per message, without '.'."""
    return "msg_" + uuid.uuid4().hex


def backlink_html(settings, canonical_url: str) -> str:
    """CANON-1: the visible back-link every syndicated copy carries."""
    return (
        f'<p class="syndication-source">Originally published at '
        f'<a href="{html.escape(canonical_url, quote=True)}">{html.escape(settings.site.title)}</a>.</p>'
    )


def article_data(settings, partner: Partner, a: ApprovedArticle) -> dict:
    """The article as partners get it (webhook `data`, Micropub properties)."""
    return {
        "article_id": a.article_id,
        "revision": a.revision_number,
        "slug": a.slug,
        "title": a.title,
        "summary": a.summary,
        "content_html": a.body_html + "\n" + backlink_html(settings, a.canonical_url),
        "author": {"name": a.author_name, "slug": a.author_slug, "url": a.author_url},
        "tags": list(a.tags),
        "category": a.category,
        "image": a.image or None,
        "published_at": rfc3339(a.published_at),
        "updated_at": rfc3339(a.updated_at),
        "url": a.url,
        "canonical_url": a.canonical_url,
        "noindex": partner.noindex,  # CANON-2
    }


def build_event(settings, partner: Partner, event_type: str, a: ApprovedArticle, *, at=None) -> dict:
    at = at or utcnow()
    if event_type == "article.retracted":
        data = {
            "article_id": a.article_id,
            "revision": a.revision_number,
            "slug": a.slug,
            "title": a.title,
            "url": a.url,
            "canonical_url": a.canonical_url,
            "retracted_at": rfc3339(at),
        }
    else:
        data = article_data(settings, partner, a)
    return {
        "type": event_type,
        "timestamp": rfc3339(at),
        "data": data,
        "meta": {
            "site": settings.site.title,
            "site_url": settings.site.base_url,
            "canonical_url": a.canonical_url,
            "require_partner_noindex": partner.noindex,
        },
    }


def ping_event(settings) -> dict:
    return {
        "type": "ping",
        "timestamp": rfc3339(utcnow()),
        "data": {"message": f"test event from {settings.site.title}"},
        "meta": {"site": settings.site.title, "site_url": settings.site.base_url},
    }


@dataclasses.dataclass
class _History:
    """What one partner was sent about one article (replays excluded)."""

    last_kind: str | None = None
    last_revision_id: int | None = None
    retractions: int = 0
    max_sequence: int = 0


def _histories(conn: Connection, partner: Partner) -> dict[int, _History]:
    rows = conn.execute(
        select(
            deliveries.c.article_id,
            deliveries.c.kind,
            deliveries.c.revision_id,
            deliveries.c.sequence,
            deliveries.c.idempotency_key,
        )
        .where(
            deliveries.c.channel == partner.kind,
            deliveries.c.target == partner.name,
            deliveries.c.article_id.is_not(None),
        )
        .order_by(deliveries.c.article_id, deliveries.c.sequence, deliveries.c.id)
    )
    out: dict[int, _History] = {}
    for r in rows:
        h = out.setdefault(r.article_id, _History())
        h.max_sequence = max(h.max_sequence, r.sequence)
        if r.idempotency_key.startswith(REPLAY_PREFIX) or r.kind not in EVENT_TYPES:
            continue
        h.last_kind, h.last_revision_id = r.kind, r.revision_id
        if r.kind == "article.retracted":
            h.retractions += 1
    return out


def plan_events(
    conn: Connection, settings, partner: Partner, approved: list[ApprovedArticle], retracted: list[ApprovedArticle]
) -> list[dict]:
    """The outbox rows (enqueue keyword dicts) this partner is owed now."""
    history = _histories(conn, partner)
    now = utcnow()
    rows = []

    def row(event_type: str, a: ApprovedArticle, key: str, h: _History) -> dict:
        h.max_sequence += 1
        return dict(
            channel=partner.kind,
            target=partner.name,
            kind=event_type,
            key=key,
            article_id=a.article_id,
            revision_id=a.revision_id,
            ordering_key=ordering_key(partner.name, a.article_id),
            sequence=h.max_sequence,
            payload={
                "partner": partner.name,
                "message_id": new_message_id(),
                "idempotency_key": http_idempotency_key(key),
                "event": build_event(settings, partner, event_type, a, at=now),
            },
        )

    for a in approved:
        if not partner.matches(a):
            continue
        h = history.get(a.article_id) or _History()
        if h.last_kind is None or h.last_kind == "article.retracted":
            kind = "article.published"
        elif h.last_revision_id != a.revision_id:
            kind = "article.updated"
        else:
            continue
        rows.append(row(kind, a, outbox_key(partner.name, a.article_id, a.revision_id, epoch=h.retractions), h))
    for a in retracted:
        h = history.get(a.article_id)
        if h is None or h.last_kind in (None, "article.retracted"):
            continue  # never sent to this partner: nothing to take back
        rows.append(
            row(
                "article.retracted",
                a,
                outbox_key(partner.name, a.article_id, a.revision_id, retraction=True, epoch=h.retractions),
                h,
            )
        )
    return rows


def queue_partner_events(app, *, dry_run: bool = False) -> dict[str, int]:
    """Queue what every enabled partner is owed; returns counts by event type."""
    settings = app.settings
    counts = {"partners": 0, "queued": 0, "article.published": 0, "article.updated": 0, "article.retracted": 0}
    targets = [p for p in partners(settings) if p.pushes_articles and p.enabled]
    if not targets:
        return counts
    with transaction(app.engine, dry_run=dry_run) as conn:
        approved = approved_articles(conn, settings)
        approved.sort(key=lambda a: (a.approved_at, a.article_id))  # oldest first: partners get them in order
        retracted = retracted_articles(conn, settings)
        for partner in targets:
            counts["partners"] += 1
            rows = plan_events(conn, settings, partner, approved, retracted)
            new = 0
            for r in rows:
                if dry_run or outbox.enqueue(conn, **r):
                    new += 1
                    counts[r["kind"]] += 1
            counts["queued"] += new
            if new:
                log.info("partner %s: %d event(s) queued", partner.name, new)
    return counts


def partners_stage(app, *, dry_run: bool = False, **_options) -> dict:
    """Stage entry point (pipeline.ops.stages): queue partner events."""
    return queue_partner_events(app, dry_run=dry_run)


def next_sequence(conn: Connection, key: str) -> int:
    return (
        conn.execute(select(func.max(deliveries.c.sequence)).where(deliveries.c.ordering_key == key)).scalar() or 0
    ) + 1
