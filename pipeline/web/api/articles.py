"""/api/v1/articles: approved articles; revisions from a CMS; the editor's decisions.

A CMS revision is stored by pipeline.content.ingest.store_source_items (source `api`,
keyed by the CMS's own id), exactly as a feed item is: sanitised, policy-flagged,
pinned to a content hash, and waiting in state "submitted" for an editor (API-8).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import select

from pipeline.accounts import audit
from pipeline.content import editorial
from pipeline.content.ingest import store_source_items
from pipeline.content.sources import SourceItem
from pipeline.store.schema import articles
from pipeline.web.api.core import ApiProblem, actor, api_of, scoped

router = APIRouter(tags=["articles"])

API_SOURCE = "api"


class Article(BaseModel):
    slug: str
    title: str
    author_slug: str
    author_name: str
    published_at: dt.datetime
    updated_at: dt.datetime
    approved_at: dt.datetime
    tags: list[str]
    category: str
    summary: str
    url: str
    canonical_url: str
    revision: int
    content_hash: str
    reading_minutes: int
    word_count: int
    image: str = ""
    image_alt: str = ""
    body_html: str | None = None


class ArticlePage(BaseModel):
    items: list[Article]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")


class RevisionIn(BaseModel):
    key: str = Field(min_length=1, max_length=500, description="The CMS's stable id for this article.")
    title: str = Field(min_length=1, max_length=1000)
    body_html: str = Field(max_length=2_000_000, description="HTML; sanitised on arrival like every source.")
    summary: str = Field("", max_length=5000)
    link: str = Field("", max_length=2000, description="The canonical URL on the CMS, if any.")
    slug: str = Field("", max_length=200)
    tags: list[str] = Field(default_factory=list, max_length=50)
    category: str = Field("", max_length=200)
    published_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None
    author_name: str = Field("", max_length=300)
    author_email: str = Field("", max_length=320)
    author_uri: str = Field("", max_length=2000)
    image: str = Field("", max_length=2000)
    image_alt: str = Field("", max_length=2000)


class RevisionOut(BaseModel):
    slug: str | None
    outcome: str = Field(description="new | changed | unchanged: a new/changed revision waits for review.")
    state: str = Field(description="submitted while waiting for an editor; unchanged for a repeat.")
    flags: list[str] = Field(description="Policy rules the text trips; an editor sees them.")


class DecisionIn(BaseModel):
    note: str = Field("", max_length=2000)
    override: str = Field("", max_length=2000, description="Why a flagged revision is fine (required if flagged).")
    expected_hash: str | None = Field(None, max_length=64, description="Approve only this exact content.")


class RejectIn(BaseModel):
    reason: str = Field(min_length=1, max_length=2000)


class DecisionOut(BaseModel):
    slug: str
    revision: int
    outcome: str
    reason: str = ""


def _article(a: editorial.ApprovedArticle, *, body: bool) -> Article:
    return Article(
        slug=a.slug,
        title=a.title,
        author_slug=a.author_slug,
        author_name=a.author_name,
        published_at=a.published_at,
        updated_at=a.updated_at,
        approved_at=a.approved_at,
        tags=a.tags,
        category=a.category,
        summary=a.summary,
        url=a.url,
        canonical_url=a.canonical_url,
        revision=a.revision_number,
        content_hash=a.content_hash,
        reading_minutes=a.reading_minutes,
        word_count=a.word_count,
        image=a.image,
        image_alt=a.image_alt,
        body_html=a.body_html if body else None,
    )


@router.get("/articles", response_model=ArticlePage, **scoped("articles:read"))
def list_articles(
    request: Request,
    limit: int | None = Query(None, description="Page size (default 50; at most api.max_page_size)."),
    cursor: str | None = Query(None, max_length=500),
) -> ArticlePage:
    """Approved, not retracted articles, newest first (by id: a stable order)."""
    api = api_of(request)
    size = api.page_size(limit)
    after = api.after("articles", cursor)
    q = select(articles.c.id, articles.c.slug).where(
        articles.c.approved_revision_id.is_not(None), articles.c.retracted_at.is_(None)
    )
    if after is not None:
        q = q.where(articles.c.id < int(after))
    with api.connect() as conn:
        rows = conn.execute(q.order_by(articles.c.id.desc()).limit(size + 1)).all()
        page = rows[:size]
        found = {a.slug: a for a in editorial.approved_articles(conn, api.settings, slugs=[r.slug for r in page])}
    items = [_article(found[r.slug], body=False) for r in page if r.slug in found]
    more = len(rows) > size and page
    return ArticlePage(items=items, next_cursor=api.cursor("articles", page[-1].id) if more else None)


@router.get("/articles/{slug}", response_model=Article, **scoped("articles:read"))
def get_article(request: Request, slug: str) -> Article:
    """One approved article with its sanitised HTML body."""
    api = api_of(request)
    with api.connect() as conn:
        found = editorial.approved_articles(conn, api.settings, slugs=[slug[:200]])
    if not found:
        raise ApiProblem(404, "Not Found", f"no approved article {slug!r}", kind="not-found")
    return _article(found[0], body=True)


@router.post(
    "/articles/revisions",
    status_code=202,
    response_model=RevisionOut,
    **scoped("articles:write", idempotent_write=True),
)
def submit_revision(request: Request, body: RevisionIn) -> RevisionOut:
    """Submit an article (or a new revision of one, by the same `key`) from a CMS. It
    waits for an editor exactly like an ingested item; sending the same content again
    changes nothing."""
    api = api_of(request)
    item = SourceItem(
        key=body.key,
        title=body.title,
        body_html=body.body_html,
        link=body.link,
        slug=body.slug,
        summary=body.summary,
        published_at=_aware(body.published_at),
        updated_at=_aware(body.updated_at),
        author_name=body.author_name,
        author_email=body.author_email,
        author_uri=body.author_uri,
        tags=body.tags,
        category=body.category,
        image=body.image,
        image_alt=body.image_alt,
    )
    with api.begin() as conn:
        report = store_source_items(conn, api.settings, API_SOURCE, [item])
        if report.errors:
            err = report.errors[0]
            raise ApiProblem(
                422, "Unprocessable revision", err.message, kind="validation", errors=[{"message": err.message}]
            )
        changed = report.new or report.changed
        slug: str | None = changed[0] if changed else None
        outcome = "new" if report.new else "changed" if report.changed else "unchanged"
        if slug:
            audit.record(conn, actor=actor(request), action="api.article.submit", target=slug, via="api")
        else:
            from pipeline.content.ingest import source_path

            slug = conn.execute(
                select(articles.c.slug).where(articles.c.source_path == source_path(API_SOURCE, body.key))
            ).scalar()
    return RevisionOut(
        slug=slug,
        outcome=outcome,
        state="submitted" if outcome != "unchanged" else "unchanged",
        flags=[s for s in report.flagged],
    )


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


@router.post(
    "/articles/{slug}/approve", response_model=DecisionOut, **scoped("articles:approve", idempotent_write=True)
)
def approve_article(request: Request, slug: str, body: DecisionIn) -> DecisionOut:
    """Approve the waiting revision (pinned to `expected_hash` when given)."""
    api = api_of(request)
    who = actor(request)
    with api.begin() as conn:
        decisions = editorial.approve(
            conn, [slug[:200]], editor=who, note=body.note, override=body.override, expected_hash=body.expected_hash
        )
        d = decisions[0]
        audit.record(conn, actor=who, action="article.approve", target=slug, detail={"revision": d.revision}, via="api")
    return DecisionOut(slug=d.slug, revision=d.revision, outcome=d.outcome, reason=d.reason)


@router.post("/articles/{slug}/reject", response_model=DecisionOut, **scoped("articles:approve", idempotent_write=True))
def reject_article(request: Request, slug: str, body: RejectIn) -> DecisionOut:
    """Reject the waiting revision; the reason is what the author reads."""
    api = api_of(request)
    who = actor(request)
    with api.begin() as conn:
        d = editorial.reject(conn, slug[:200], editor=who, reason=body.reason)
        audit.record(conn, actor=who, action="article.reject", target=slug, detail={"reason": body.reason}, via="api")
    return DecisionOut(slug=d.slug, revision=d.revision, outcome=d.outcome, reason=d.reason)


class PendingOut(BaseModel):
    slug: str
    revision: int
    title: str
    author_slug: str
    content_hash: str = Field(description="Pass as `expected_hash` to approve exactly this content.")
    flags: list[dict[str, Any]]
    created_at: dt.datetime
    diff: str = Field(description="Every field against the last approved revision (unified diff).")


class PendingPage(BaseModel):
    items: list[PendingOut]
    next_cursor: str | None


@router.get("/review", response_model=PendingPage, **scoped("articles:approve"))
def review_queue(
    request: Request,
    limit: int | None = Query(None, description="Page size (default 50; at most api.max_page_size)."),
    cursor: str | None = Query(None, max_length=500),
) -> PendingPage:
    """Revisions waiting for an editor, oldest first, with policy flags and a diff
    (as `syndicate review`)."""
    api = api_of(request)
    size = api.page_size(limit)
    after = api.after("review", cursor)
    with api.connect() as conn:
        waiting = sorted(editorial.review_queue(conn), key=lambda p: p.revision_id)
    if after is not None:
        waiting = [p for p in waiting if p.revision_id > int(after)]
    page = waiting[:size]
    items = [
        PendingOut(
            slug=p.slug,
            revision=p.number,
            title=p.title,
            author_slug=p.author_slug,
            content_hash=p.content_hash,
            flags=p.flags,
            created_at=p.created_at,
            diff=p.diff,
        )
        for p in page
    ]
    more = len(waiting) > size
    return PendingPage(items=items, next_cursor=api.cursor("review", page[-1].revision_id) if more else None)
