"""`type = "feed"`: RSS 0.9x/1.0/2.0 and Atom through feedparser, JSON Feed 1.x with
the standard library.

Items are keyed by id/guid, else link, else a hash of title + date. The feed is a
window: an item that leaves it is not retracted unless `retract_missing = true`. The
cursor keeps the ETag and Last-Modified for the next conditional GET and the URL a 301
moved the feed to; a 304 stores nothing.
"""

from __future__ import annotations

import calendar
import datetime as dt
import hashlib
import json
import logging
from urllib.parse import urljoin

import feedparser

from pipeline.content.sources import http
from pipeline.content.sources.base import Fetched, ItemProblem, Source, SourceError, SourceItem
from pipeline.timeutil import parse_datetime, utcnow

log = logging.getLogger(__name__)

JSON_FEED_VERSIONS = ("https://jsonfeed.org/version/1", "https://jsonfeed.org/version/1.1")


class FeedSource(Source):
    type = "feed"

    def fetch(self, cursor: dict) -> Fetched:
        url = cursor.get("url") or self.config["url"]
        session = http.make_session(self.config, self.settings.site.base_url)
        resp = http.get(session, self.config, url, headers=http.conditional_headers(cursor))
        new_cursor = dict(cursor)
        out = Fetched(cursor=new_cursor, requests=1)
        if resp.moved_to:
            new_cursor["url"] = resp.moved_to
            out.notes.append(f"moved permanently to {resp.moved_to}; remembered")
        if resp.status == 304:
            out.not_modified = True
            return out
        new_cursor["etag"] = resp.header("etag")
        new_cursor["last_modified"] = resp.header("last-modified")
        if _looks_like_json(resp):
            items, problems = parse_json_feed(self.name, resp.body, resp.url)
        else:
            items, problems = parse_xml_feed(self.name, resp.body, resp.url, resp.header("content-type"))
        limit = int(self.config.get("max_items") or 1000)
        out.items, out.problems = _dedupe(items, problems)
        if len(out.items) > limit:
            out.problems.append(
                ItemProblem(
                    "(feed)",
                    f"{len(out.items):,} items, over max_items {limit:,}: "
                    f"the first {limit:,} were read, the rest skipped",
                )
            )
            out.items = out.items[:limit]
        _clamp_future(out)
        if self.config.get("retract_missing"):
            out.present_keys = {i.key for i in out.items} | {p.key for p in out.problems}
        return out


def _looks_like_json(resp: http.Response) -> bool:
    ctype = resp.header("content-type").split(";")[0].strip().lower()
    return ctype in ("application/feed+json", "application/json") or resp.body.lstrip()[:1] == b"{"


def _dedupe(items: list[SourceItem], problems: list[ItemProblem]):
    seen: set[str] = set()
    kept = []
    for item in items:
        if item.key in seen:
            problems.append(ItemProblem(item.key, "duplicate id in the feed: only the first item with it was read"))
            continue
        seen.add(item.key)
        kept.append(item)
    return kept, problems


def _clamp_future(out: Fetched) -> None:
    """A date in the future (a wrong clock, a scheduled post leaking) is read as now."""
    now = utcnow()
    for item in out.items:
        if item.published_at and item.published_at > now + dt.timedelta(minutes=5):
            out.notes.append(f"{item.key}: date {item.published_at.isoformat()} is in the future; read as now")
            item.published_at = now
        if item.updated_at and item.updated_at > now + dt.timedelta(minutes=5):
            item.updated_at = None


def _key(*parts: str) -> str:
    return "sha256:" + hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()[:32]


def _struct_time(value) -> dt.datetime | None:
    if not value:
        return None
    try:
        return dt.datetime.fromtimestamp(calendar.timegm(value), dt.UTC)
    except (OverflowError, ValueError, TypeError):
        return None


def parse_xml_feed(
    name: str, body: bytes, url: str, content_type: str = ""
) -> tuple[list[SourceItem], list[ItemProblem]]:
    headers = {"content-location": url}
    if content_type:
        headers["content-type"] = content_type
    parsed = feedparser.parse(body, response_headers=headers, sanitize_html=False, resolve_relative_uris=True)
    if not parsed.entries and (parsed.bozo or not parsed.get("version")):
        reason = parsed.get("bozo_exception") or "no RSS, Atom or JSON Feed found"
        raise SourceError(
            name,
            "not-a-feed",
            f"{url}: {str(reason)[:200]}",
            hint="Check that the url is the feed itself, not the site's home page.",
        )
    problems: list[ItemProblem] = []
    if parsed.bozo:
        # Recoverable trouble (a wrong encoding declared, a bad entity): say so, keep the items.
        problems.append(
            ItemProblem("(feed)", f"feed is malformed but readable: {str(parsed.get('bozo_exception'))[:200]}")
        )
    items = []
    for entry in parsed.entries:
        try:
            items.append(_xml_item(entry, url))
        except ValueError as exc:
            problems.append(ItemProblem(entry.get("id") or entry.get("link") or entry.get("title", "(item)"), str(exc)))
    return items, problems


def _xml_item(entry, feed_url: str) -> SourceItem:
    link = entry.get("link") or ""
    title = entry.get("title") or ""
    published = _struct_time(entry.get("published_parsed")) or _struct_time(entry.get("updated_parsed"))
    updated = _struct_time(entry.get("updated_parsed"))
    key = entry.get("id") or link or _key(title, entry.get("published") or entry.get("updated") or "")
    body = ""
    for content in entry.get("content") or []:
        if content.get("type") in ("text/html", "application/xhtml+xml") or not body:
            body = content.get("value") or ""
            if content.get("type") == "text/plain":  # plain text: paragraphs, not markup
                body = _paragraphs(body)
    summary = entry.get("summary") or ""
    if not body:
        body = summary
    if not title.strip() and not body.strip():
        raise ValueError("item has neither a title nor content")
    detail = entry.get("author_detail") or {}
    image, alt = "", ""
    for media in (entry.get("media_content") or []) + (entry.get("media_thumbnail") or []):
        if media.get("url") and (media.get("medium") == "image" or "image" in (media.get("type") or "image")):
            image = media["url"]
            break
    if not image:
        for enc in entry.get("enclosures") or []:
            if (enc.get("type") or "").startswith("image/") and enc.get("href"):
                image = enc["href"]
                break
    base = (entry.get("content") or [{}])[0].get("base") or link or feed_url
    return SourceItem(
        key=str(key),
        title=title,
        body_html=body,
        link=link,
        summary=summary if summary != body else "",
        published_at=published,
        updated_at=updated if updated and updated != published else None,
        author_name=detail.get("name") or entry.get("author") or "",
        author_email=detail.get("email") or "",
        author_uri=detail.get("href") or "",
        tags=[t.get("term") or "" for t in entry.get("tags") or [] if t.get("term")],
        image=urljoin(base, image) if image else "",
        image_alt=alt,
        base_url=base,
    )


def parse_json_feed(name: str, body: bytes, url: str) -> tuple[list[SourceItem], list[ItemProblem]]:
    """JSON Feed 1.0/1.1 (https://www.jsonfeed.org/version/1.1/)."""
    try:
        doc = json.loads(body.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SourceError(
            name, "not-a-feed", f"{url}: not valid JSON ({exc})", hint="Check that the url is the JSON Feed itself."
        ) from None
    if not isinstance(doc, dict) or not str(doc.get("version", "")).startswith("https://jsonfeed.org/version/1"):
        raise SourceError(
            name,
            "not-a-feed",
            f"{url}: JSON without a JSON Feed version",
            hint="Check that the url is a JSON Feed (version https://jsonfeed.org/version/1.1).",
        )
    base = doc.get("feed_url") or url
    feed_authors = doc.get("authors") or ([doc["author"]] if isinstance(doc.get("author"), dict) else [])
    items, problems = [], []
    for raw in doc.get("items") or []:
        if not isinstance(raw, dict):
            problems.append(ItemProblem("(item)", "item is not an object"))
            continue
        key = str(raw.get("id") or raw.get("url") or "") or _key(
            str(raw.get("title", "")), str(raw.get("date_published", ""))
        )
        try:
            published = _json_date(raw.get("date_published"))
            updated = _json_date(raw.get("date_modified"))
        except ValueError as exc:
            problems.append(ItemProblem(key, str(exc)))
            continue
        body = raw.get("content_html") or ""
        if not body and raw.get("content_text"):
            body = _paragraphs(str(raw["content_text"]))
        title = str(raw.get("title") or "")
        if not title.strip() and not body.strip():
            problems.append(ItemProblem(key, "item has neither a title nor content"))
            continue
        authors = raw.get("authors") or ([raw["author"]] if isinstance(raw.get("author"), dict) else feed_authors)
        author = authors[0] if authors and isinstance(authors[0], dict) else {}
        link = urljoin(base, str(raw.get("url") or "")) if raw.get("url") else ""
        image = raw.get("image") or raw.get("banner_image") or ""
        items.append(
            SourceItem(
                key=key,
                title=title,
                body_html=body,
                link=link,
                summary=str(raw.get("summary") or ""),
                published_at=published or updated,
                updated_at=updated if published else None,
                author_name=str(author.get("name") or ""),
                author_uri=str(author.get("url") or ""),
                tags=[str(t) for t in raw.get("tags") or [] if isinstance(t, (str, int))],
                image=urljoin(base, str(image)) if image else "",
                base_url=link or base,
            )
        )
    return items, problems


def _paragraphs(text: str) -> str:
    """Plain text -> <p> paragraphs (blank lines separate them), escaped."""
    from html import escape

    return "".join(f"<p>{escape(p.strip())}</p>" for p in text.replace("\r\n", "\n").split("\n\n") if p.strip())


def _json_date(value) -> dt.datetime | None:
    if not value:
        return None
    try:
        return parse_datetime(str(value))
    except (ValueError, TypeError):
        raise ValueError(f"date {value!r} is not RFC 3339") from None
