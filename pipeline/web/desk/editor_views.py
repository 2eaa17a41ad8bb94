"""Editors: the review queue, one revision (every field diffed, three previews), decisions.

Decisions go through pipeline.content.editorial, as `syndicate approve|reject` do: the
approval is pinned to the content hash the editor's page showed (a changed revision
is refused), and `claim_for_decision` makes two editors deciding at once end with
one decision and a clear message for the other.
"""

from __future__ import annotations

import datetime as dt

from markupsafe import Markup
from sqlalchemy import select
from starlette.responses import HTMLResponse, Response

from pipeline.content import editorial
from pipeline.errors import EditorialError, NotFound
from pipeline.store.schema import articles, desk_articles, revisions
from pipeline.timeutil import utcnow

from .core import HEADERS, Ctx, db, read


def _age(when: dt.datetime) -> str:
    seconds = (utcnow() - when).total_seconds()
    if seconds < 3600:
        return f"{max(1, int(seconds // 60))} min"
    if seconds < 86400 * 2:
        return f"{int(seconds // 3600)} h"
    return f"{int(seconds // 86400)} days"


def _sources(conn, article_ids: list[int]) -> dict[int, str]:
    if not article_ids:
        return {}
    rows = conn.execute(select(articles.c.id, articles.c.source_path).where(articles.c.id.in_(article_ids)))
    return {i: ("desk" if p.startswith("desk:") else "file") for i, p in rows}


def queue(c: Ctx) -> Response:
    with read(c) as conn:
        items = editorial.review_queue(conn)
        sources = _sources(conn, [p.article_id for p in items])
    rows = [{"p": p, "age": _age(p.created_at), "source": sources.get(p.article_id, "file")} for p in items]
    return c.page("review_queue.html", rows=rows)


def _article(conn, slug: str):
    row = conn.execute(select(articles).where(articles.c.slug == slug)).first()
    if row is None:
        raise NotFound(f"no article {slug!r}")
    return row


def review(c: Ctx) -> Response:
    slug = c.params["slug"]
    with read(c) as conn:
        art = _article(conn, slug)
        rev = conn.execute(select(revisions).where(revisions.c.id == art.current_revision_id)).one()
        diff = editorial.field_diff(
            conn, rev.id, art.approved_revision_id if art.approved_revision_id != rev.id else None
        )
        desk_row = conn.execute(select(desk_articles.c.id).where(desk_articles.c.article_id == art.id)).first()
    return c.page(
        "review.html",
        art=art,
        rev=rev,
        diff=diff,
        flags=rev.flags or [],
        blocking=editorial.blocking(rev.flags),
        source="desk" if desk_row else "file",
        live=art.approved_revision_id is not None and art.retracted_at is None,
        error=None,
    )


def _preview_article(conn, c: Ctx, slug: str):
    art = _article(conn, slug)
    return editorial.revision_as_article(conn, c.settings, art.current_revision_id)


def preview_page(c: Ctx) -> Response:
    """The revision as its public page would be (the site's own template)."""
    from pipeline.site.pages import render_article

    with read(c) as conn:
        article = _preview_article(conn, c, c.params["slug"])
    return HTMLResponse(render_article(c.settings, article), headers=HEADERS)


def preview_digest(c: Ctx) -> Response:
    """The revision as one entry of an email digest (the digest's own template)."""
    from pipeline.digests import render
    from pipeline.digests.editions import article_view

    with read(c) as conn:
        article = _preview_article(conn, c, c.params["slug"])
    site = render.site_for_email(c.settings)
    html_env, _ = render.envs(c.settings)
    entry = html_env.get_template("email/_article.html").render(site=site, a=article_view(c.settings, site, article))
    return c.page("preview_digest.html", article=article, entry=Markup(entry))


def preview_feed(c: Ctx) -> Response:
    """The revision as an Atom entry, an RSS item and a JSON Feed item."""
    import json

    from lxml import etree

    from pipeline.site.feeds import EntryCache

    with read(c) as conn:
        article = _preview_article(conn, c, c.params["slug"])
    cache = EntryCache(c.settings)
    atom = etree.tostring(cache.atom(article), pretty_print=True, encoding="unicode")
    rss = etree.tostring(cache.rss(article), pretty_print=True, encoding="unicode")
    return c.page(
        "preview_feed.html",
        article=article,
        atom=atom,
        rss=rss,
        json_item=json.dumps(cache.json(article), indent=2, ensure_ascii=False, default=str),
    )


def _decide(c: Ctx, fn) -> Response:
    slug = c.params["slug"]
    try:
        with db(c) as conn:
            message = fn(conn, slug)
    except EditorialError as exc:
        with read(c) as conn:
            art = _article(conn, slug)
            rev = conn.execute(select(revisions).where(revisions.c.id == art.current_revision_id)).one()
            diff = editorial.field_diff(
                conn, rev.id, art.approved_revision_id if art.approved_revision_id != rev.id else None
            )
            desk_row = conn.execute(select(desk_articles.c.id).where(desk_articles.c.article_id == art.id)).first()
        return c.page(
            "review.html",
            409,
            art=art,
            rev=rev,
            diff=diff,
            flags=rev.flags or [],
            blocking=editorial.blocking(rev.flags),
            source="desk" if desk_row else "file",
            live=art.approved_revision_id is not None and art.retracted_at is None,
            error=exc,
        )
    return c.redirect("/review", message)


def _pinned_revision(c: Ctx) -> int:
    raw = c.text("revision_id", 30)
    if not raw.isdigit():
        raise EditorialError("the form does not say which revision you read", hint="Reload the page.")
    return int(raw)


def approve(c: Ctx) -> Response:
    def act(conn, slug):
        editorial.claim_for_decision(conn, slug, _pinned_revision(c))
        override = c.text("override", 2000).strip()
        decision = editorial.approve(
            conn,
            [slug],
            editor=c.user.email,
            note=c.text("note", 4000).strip(),
            override=override,
            expected_hash=c.text("content_hash", 64) or "-",
        )[0]
        c.audit(
            conn,
            "article.approve",
            slug,
            revision=decision.revision,
            note=c.text("note", 4000).strip(),
            override=override,
            content_hash=c.text("content_hash", 64),
        )
        return f"Approved {slug} r{decision.revision}."

    return _decide(c, act)


def reject(c: Ctx) -> Response:
    def act(conn, slug):
        reason = c.text("reason", 4000).strip()
        if not reason:
            raise EditorialError("a rejection needs a reason", hint="The author reads it; say what to change.")
        editorial.claim_for_decision(conn, slug, _pinned_revision(c))
        decision = editorial.reject(conn, slug, editor=c.user.email, reason=reason)
        c.audit(conn, "article.reject", slug, revision=decision.revision, reason=reason)
        return f"Rejected {slug} r{decision.revision}; the author sees your reason."

    return _decide(c, act)


def retract(c: Ctx) -> Response:
    def act(conn, slug):
        decision = editorial.retract(conn, slug, editor=c.user.email, reason=c.text("reason", 4000).strip())
        c.audit(conn, "article.retract", slug, reason=decision.reason)
        return f"Retracted {slug}; the next build removes it from the site and feeds."

    return _decide(c, act)


def history(c: Ctx) -> Response:
    slug = c.params["slug"]
    with read(c) as conn:
        events = editorial.timeline(conn, slug)
    return c.page("history.html", slug=slug, events=events)
