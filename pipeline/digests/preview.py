"""What a subscriber's next digest will be (`syndicate digest preview`): the exact HTML
and text, rendered the way compose will render it."""

from __future__ import annotations

import dataclasses
import datetime as dt

from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine

from pipeline.config import Settings
from pipeline.content.editorial import approved_articles
from pipeline.digests import render
from pipeline.digests.builder import personal
from pipeline.digests.compose import _due_subscribers
from pipeline.digests.editions import KINDS, _check_frequency, get_edition, next_period, period, web_path
from pipeline.digests.parts import PartRenderer, _image_sizes
from pipeline.digests.selection import Selection, Selector
from pipeline.errors import ConfigError, NotFound
from pipeline.store.schema import deliveries, digest_parts, subscribers
from pipeline.timeutil import utcnow


@dataclasses.dataclass
class Preview:
    subject: str
    html: str
    text: str
    recipient: str
    source: str  # what the preview shows: "next digest", "last digest sent", "sample"
    articles: int


def preview(
    engine: Engine,
    settings: Settings,
    *,
    frequency: str | None = None,
    email: str | None = None,
    now: dt.datetime | None = None,
) -> Preview:
    """The exact HTML and text a subscriber would get: their next digest (what the next
    edition of their time-zone slot holds for them, approvals since their last digest
    included), else, when nothing is new yet, the last one queued for them; without a
    subscriber, a sample of the frequency's next edition for everyone (all topics)."""
    site = render.site_for_email(settings)
    now = now or utcnow()
    with engine.connect() as conn:
        sub = None
        if email:
            sub = (
                conn.execute(select(subscribers).where(subscribers.c.email == email.strip().lower())).mappings().first()
            )
            if sub is None:
                raise NotFound(
                    f"no subscriber {email!r}", hint="`syndicate subscribers list` shows who is on the list."
                )
            sub = dict(sub)
            frequency = frequency or sub["frequency"]
        if frequency is None:
            raise ConfigError("name a frequency or a subscriber", hint="e.g. --frequency weekly")
        _check_frequency(frequency)
        if sub is None:
            first = (
                conn.execute(
                    select(subscribers).where(_due_subscribers(frequency, now)).order_by(subscribers.c.id).limit(1)
                )
                .mappings()
                .first()
            )
            sub = dict(first) if first else None
        if sub is not None:
            result = _preview_next(conn, settings, site, sub, frequency, now)
            if result is None:
                result = _preview_last(conn, settings, site, sub)
                if result is not None:
                    result.source = "last digest sent (nothing new for the next one yet)"
            if result is not None:
                return result
        return _preview_sample(conn, settings, site, frequency, now, sub)


def _fill(settings, site, sub: dict, subject: str, html: str, text: str, source: str, n: int) -> Preview:
    p = personal(settings, site, sub, {"idempotency_key": "preview", "payload": {}})
    return Preview(subject, render.fill_preview(html, p), render.fill_preview(text, p), sub["email"], source, n)


def next_edition_for(
    conn: Connection, settings: Settings, sub: dict, frequency: str, now: dt.datetime
) -> tuple[str, dt.datetime]:
    """(edition key, cutoff so far) of the next daily/weekly edition that will hold
    something for `sub`: the current period's edition of their time-zone slot while
    they are not handled in it yet, else the next period's, with everything approved
    up to `now` (issue 16 item 20)."""
    key, _start = period(settings, frequency, now, sub.get("timezone"))
    edition = get_edition(conn, key)
    if edition is None:
        return key, now
    watermark = sub["last_digest_at"] or sub["confirmed_at"]
    if watermark < edition["cutoff"] and sub["confirmed_at"] <= edition["cutoff"] and edition["completed_at"] is None:
        return key, edition["cutoff"]
    return next_period(settings, frequency, now, sub.get("timezone"))[0], now


def _preview_next(conn, settings, site, sub, frequency, now) -> Preview | None:
    if sub["state"] != "confirmed" or not sub["confirmed_at"]:
        return None
    if frequency == "instant":
        key, cutoff = "instant-preview", now
    else:
        key, cutoff = next_edition_for(conn, settings, sub, frequency, now)
    watermark = sub["last_digest_at"] or sub["confirmed_at"]
    if watermark >= cutoff:
        return None
    welcome = settings.digests.welcome_latest if frequency != "instant" else 0
    candidates = approved_articles(
        conn,
        settings,
        approved_since=None if welcome and not sub["last_digest_at"] else watermark,
        approved_until=cutoff,
    )
    selector = Selector(candidates, cap=settings.digests.max_articles, welcome=welcome)
    sel = selector.select(sub["topics"], watermark, first=sub["last_digest_at"] is None)
    if not sel.article_ids:
        return None
    if frequency == "instant":
        sel = Selection((sel.article_ids[-1],), 0)
        key = f"instant-{sel.article_ids[0]}"
    fake = {"id": 0, "key": key, "frequency": frequency, "cutoff": cutoff}
    web_url = selector.by_id[sel.article_ids[0]].url if frequency == "instant" else f"{site.base_url}/{web_path(key)}"
    part = PartRenderer(settings, site, fake, selector.by_id, _image_sizes(conn, candidates), web_url).render(sel)
    r = part["rendered"]
    source = "next digest" if frequency == "instant" else f"next digest, edition {key}"
    return _fill(settings, site, sub, r.subject, r.html, r.text, source, len(part["article_ids"]))


def _preview_last(conn, settings, site, sub) -> Preview | None:
    row = conn.execute(
        select(deliveries.c.payload)
        .where(deliveries.c.subscriber_id == sub["id"], deliveries.c.kind.in_(list(set(KINDS.values()))))
        .order_by(deliveries.c.id.desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    part = conn.execute(select(digest_parts).where(digest_parts.c.id == int(row.payload["part"]))).mappings().first()
    if part is None:
        return None
    import email as email_lib
    import email.policy

    msg = email_lib.message_from_string(
        part["headers"] + "\r\n" + part["text_part"] + part["html_part"], policy=email.policy.default
    )
    html = msg.get_body(("html",)).get_content()
    text = msg.get_body(("plain",)).get_content()
    return _fill(settings, site, sub, part["subject"], html, text, "last digest sent", len(part["article_ids"]))


def _preview_sample(conn, settings, site, frequency, now, sub) -> Preview:
    candidates = approved_articles(conn, settings, approved_until=now, limit=max(settings.digests.max_articles * 3, 20))
    if not candidates:
        raise NotFound(
            "there are no approved articles to preview a digest with",
            hint="Ingest and approve articles first: `syndicate ingest`, `syndicate approve --all`.",
        )
    if frequency == "instant":
        candidates = candidates[:1]
        key = f"instant-{candidates[0].article_id}"
    else:
        key = period(settings, frequency, now)[0]
    selector = Selector(candidates, cap=settings.digests.max_articles, welcome=0)
    sel = selector.select(None, dt.datetime.min.replace(tzinfo=dt.UTC))
    fake = {"id": 0, "key": key, "frequency": frequency, "cutoff": now}
    web_url = candidates[0].url if frequency == "instant" else f"{site.base_url}/{web_path(key)}"
    part = PartRenderer(settings, site, fake, selector.by_id, _image_sizes(conn, candidates), web_url).render(sel)
    r = part["rendered"]
    reader = sub or {"id": 0, "email": "reader@example.com", "name": "Reader"}
    return _fill(settings, site, reader, r.subject, r.html, r.text, "sample", len(part["article_ids"]))
