"""Click counts for edition reports: signed redirect links, counted in aggregate (CLK-1..5).

With `[digests] track_clicks` on, every article link in a digest or instant email
points at `/r/<token>`, where the token is the pair (edition id, article id) signed
with the `click` purpose (pipeline.tokens, HMAC-SHA256). Following it adds one to the
(edition, article) counter and redirects to the article's own URL, which is looked up
here and never read from the link: a tampered token is refused (CLK-1), a token for
an article that edition did not carry is refused (CLK-3), so no one can turn the
redirect into an open redirect.

What is counted is the edition and the article, nothing about the person: the token
is the same for every recipient of an edition, and no table has a subscriber column
(CLK-2). There is no open-tracking pixel: mail privacy proxies (Apple Mail Privacy
Protection, Gmail's image proxy) fetch every image on delivery, so "opens" measure
the proxies, not readers, and a per-person pixel would be exactly the profile we do
not keep (CLK-4).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from pipeline import tokens
from pipeline.config import Settings
from pipeline.content.ingest import article_url
from pipeline.errors import NotFound, TokenError
from pipeline.store.schema import articles, digest_editions, digest_parts, edition_clicks
from pipeline.timeutil import utcnow

PURPOSE = "click"


class NotInEdition(TokenError):
    """A validly signed link for an article that edition did not carry."""


def click_token(settings: Settings, edition_id: int, article_id: int) -> str:
    return tokens.sign(settings, PURPOSE, [int(edition_id), int(article_id)])


def click_url(settings: Settings, edition_id: int, article_id: int) -> str:
    return f"{settings.site.base_url.rstrip('/')}/r/{click_token(settings, edition_id, article_id)}"


def read_token(settings: Settings, token: str) -> tuple[int, int]:
    """(edition id, article id), or TokenError for anything not signed by us for clicks."""
    value = tokens.verify(settings, PURPOSE, token)
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) for v in value)):
        raise TokenError("this link is not valid", hint="Check that the whole link was copied.")
    return value[0], value[1]


def edition_article_ids(conn: Connection, edition_id: int) -> set[int]:
    """Every article any recipient of the edition was sent: the web version's list and
    each variant's (a first digest may also carry older 'welcome' articles)."""
    row = conn.execute(select(digest_editions.c.article_ids).where(digest_editions.c.id == edition_id)).first()
    if row is None:
        return set()
    ids = {int(i) for i in row[0] or []}
    for (part_ids,) in conn.execute(select(digest_parts.c.article_ids).where(digest_parts.c.edition_id == edition_id)):
        ids.update(int(i) for i in part_ids or [])
    return ids


def follow(conn: Connection, settings: Settings, token: str, *, count: bool = True) -> str:
    """The article URL a click link stands for, counting the click (CLK-1..3).
    TokenError when the link is forged or tampered, NotInEdition when the article was
    not in that edition, NotFound when the article is gone."""
    edition_id, article_id = read_token(settings, token)
    if article_id not in edition_article_ids(conn, edition_id):
        raise NotInEdition("this link is not valid", hint="Use the link in the email you received.")
    slug = conn.execute(select(articles.c.slug).where(articles.c.id == article_id)).scalar()
    if slug is None:
        raise NotFound("this article is no longer available")
    if count:
        record_click(conn, edition_id, article_id)
    return article_url(settings, slug)


def record_click(conn: Connection, edition_id: int, article_id: int) -> None:
    """One more click on (edition, article): a single upsert, safe under concurrency."""
    now = utcnow()
    ins = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(edition_clicks)
    stmt = ins.values(edition_id=edition_id, article_id=article_id, count=1, first_at=now, last_at=now)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["edition_id", "article_id"],
            set_={"count": edition_clicks.c.count + 1, "last_at": now},
        )
    )


def clicks_by_article(conn: Connection, edition_id: int) -> dict[int, int]:
    return {
        r.article_id: int(r.count)
        for r in conn.execute(
            select(edition_clicks.c.article_id, edition_clicks.c.count).where(edition_clicks.c.edition_id == edition_id)
        )
    }


__all__ = [
    "PURPOSE",
    "NotInEdition",
    "click_token",
    "click_url",
    "read_token",
    "edition_article_ids",
    "follow",
    "record_click",
    "clicks_by_article",
]
