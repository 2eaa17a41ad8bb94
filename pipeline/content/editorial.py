"""Editorial approval: policy flags, approve / reject, approvals pinned to content hashes.

Revisions move draft -> submitted -> approved | rejected (and superseded, when a newer
revision of the same file arrives before anyone decided). An approval records the
editor, the time, a note and the exact content hash. Editing an approved article
creates a new revision that waits for review; meanwhile the last approved revision
stays the one syndicated. Every later stage reads articles through
`approved_articles()`, which returns approved revisions only.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
from collections.abc import Iterable

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from pipeline.content.ingest import article_url
from pipeline.content.policy import blocking, policy_flags  # noqa: F401  (re-exported)
from pipeline.content.sanitize import SANITIZER_VERSION, clean_text, http_url, sanitize_html
from pipeline.errors import EditorialError, NotFound
from pipeline.store.bulk import insert_batches
from pipeline.store.schema import approvals, articles, authors, revisions
from pipeline.timeutil import rfc3339, utcnow

# --- reading ---------------------------------------------------------------------------


@dataclasses.dataclass
class ApprovedArticle:
    """An approved revision with what every output needs. Plain data, no HTML escaping done."""

    article_id: int
    revision_id: int
    revision_number: int
    slug: str
    title: str
    author_slug: str
    author_name: str
    author_url: str
    published_at: dt.datetime
    updated_at: dt.datetime  # the revision's `updated`, else its publication date
    approved_at: dt.datetime  # first approval of the article: when it became public
    tags: list[str]
    category: str
    summary: str
    body_html: str  # sanitised at ingest (nh3); see content.sanitize_html
    image: str
    image_length: int | None
    image_type: str
    image_alt: str
    url: str  # our page for it
    canonical_url: str  # the article's own canonical_url if it names one, else `url`
    content_hash: str
    reading_minutes: int
    word_count: int
    image_width: int | None = None  # the featured image's size, when known (IMG-3)
    image_height: int | None = None


def _approved_query(revision_join=None):
    if revision_join is None:
        revision_join = revisions.c.id == articles.c.approved_revision_id
    return select(
        articles.c.id.label("article_id"),
        articles.c.slug,
        articles.c.first_approved_at,
        revisions.c.id.label("revision_id"),
        revisions.c.number,
        revisions.c.title,
        revisions.c.author_slug,
        revisions.c.published_at,
        revisions.c.updated_at,
        revisions.c.tags,
        revisions.c.category,
        revisions.c.summary,
        revisions.c.body_html,
        revisions.c.image,
        revisions.c.image_length,
        revisions.c.image_type,
        revisions.c.image_alt,
        revisions.c.image_width,
        revisions.c.image_height,
        revisions.c.canonical_url,
        revisions.c.content_hash,
        revisions.c.reading_minutes,
        revisions.c.word_count,
        revisions.c.sanitizer_version,
        authors.c.name.label("author_name"),
        authors.c.url.label("author_url"),
    ).select_from(articles.join(revisions, revision_join).outerjoin(authors, authors.c.slug == revisions.c.author_slug))


def _to_approved(settings, r) -> ApprovedArticle:
    # Defence in depth (SAN-5): stored HTML must come from the sanitiser we run now.
    body = r.body_html
    if r.sanitizer_version != SANITIZER_VERSION:
        body = sanitize_html(body, r.canonical_url or article_url(settings, r.slug))
    url = article_url(settings, r.slug)
    # Rows stored before ingest checked them (bidi controls, issue 18 item 5; author
    # URLs, item 4) are cleaned here too: what every output reads is safe to show.
    return ApprovedArticle(
        article_id=r.article_id,
        revision_id=r.revision_id,
        revision_number=r.number,
        slug=r.slug,
        title=clean_text(r.title),
        author_slug=r.author_slug,
        author_name=clean_text(r.author_name) or r.author_slug,
        author_url=http_url(r.author_url) or "",
        published_at=r.published_at,
        updated_at=r.updated_at or r.published_at,
        approved_at=r.first_approved_at or r.published_at,
        tags=list(r.tags or []),
        category=r.category or "",
        summary=clean_text(r.summary),
        body_html=body,
        image=r.image or "",
        image_length=r.image_length,
        image_type=r.image_type or "",
        image_alt=clean_text(r.image_alt),
        url=url,
        canonical_url=r.canonical_url or url,
        content_hash=r.content_hash,
        reading_minutes=r.reading_minutes,
        word_count=r.word_count,
        image_width=r.image_width,
        image_height=r.image_height,
    )


def with_image_sizes(conn: Connection, settings, items: list[ApprovedArticle]) -> list[ApprovedArticle]:
    """Every <img> of the bodies, and each featured image, sized from what is stored
    (IMG-3): fetched media from the media table, our own files under content/ from
    their headers. Done when the articles are read, so pages, feeds and email alike
    get `width`/`height` (no layout shift; IMG-1), and the stored revision stays as
    ingested."""
    from pipeline import imaging
    from pipeline.content.sources.media import known_sizes

    urls = {src for a in items for src in imaging.img_srcs(a.body_html)}
    urls |= {a.image for a in items if a.image and not (a.image_width and a.image_height)}
    if not urls:
        return items
    sizes = known_sizes(conn, settings, urls)
    if not sizes:
        return items
    for a in items:
        a.body_html = imaging.set_img_sizes(a.body_html, sizes.get)
        if a.image and not (a.image_width and a.image_height) and a.image in sizes:
            a.image_width, a.image_height = sizes[a.image]
    return items


def approved_articles(
    conn: Connection,
    settings,
    *,
    approved_since: dt.datetime | None = None,
    approved_until: dt.datetime | None = None,
    tags: Iterable[str] | None = None,
    slugs: Iterable[str] | None = None,
    limit: int | None = None,
) -> list[ApprovedArticle]:
    """THE query for approved content: approved revisions of articles that are not
    retracted, newest publication first. `approved_since/until` filter on the time
    the article was first approved (when it became news to subscribers)."""
    q = _approved_query().where(articles.c.retracted_at.is_(None))
    if approved_since is not None:
        q = q.where(articles.c.first_approved_at > approved_since)
    if approved_until is not None:
        q = q.where(articles.c.first_approved_at <= approved_until)
    if slugs is not None:
        q = q.where(articles.c.slug.in_(list(slugs)))
    q = q.order_by(revisions.c.published_at.desc(), articles.c.id.desc())
    result = [_to_approved(settings, r) for r in conn.execute(q)]
    if tags:
        wanted = set(tags)
        result = [a for a in result if wanted & (set(a.tags) | {a.category})]
    return with_image_sizes(conn, settings, result[:limit] if limit else result)


def retracted_articles(conn: Connection, settings) -> list[ApprovedArticle]:
    """Articles that were approved once and are now retracted (their file was deleted)."""
    q = _approved_query().where(articles.c.retracted_at.is_not(None))
    return with_image_sizes(conn, settings, [_to_approved(settings, r) for r in conn.execute(q)])


# --- reviewing -----------------------------------------------------------------------

# Every field of a revision an editor approves, in the order the review shows them: a
# change to any of them (not only title and body) makes a visible diff (issue 16 item 18).
_REVIEW_COLUMNS = (
    revisions.c.id,
    revisions.c.number,
    revisions.c.state,
    revisions.c.title,
    revisions.c.author_slug,
    revisions.c.published_at,
    revisions.c.updated_at,
    revisions.c.tags,
    revisions.c.category,
    revisions.c.summary,
    revisions.c.image,
    revisions.c.image_length,
    revisions.c.image_alt,
    revisions.c.canonical_url,
    revisions.c.body_markdown,
    revisions.c.content_hash,
    revisions.c.flags,
    revisions.c.created_at,
)


def revision_document(r) -> str:
    """A revision as the text an editor reads and diffs: every field, then the body."""
    image = r.image or ""
    if image and r.image_length:
        image += f" ({r.image_length:,} bytes)"
    fields = [
        ("title", r.title),
        ("author", r.author_slug),
        ("date", rfc3339(r.published_at)),
        ("updated", rfc3339(r.updated_at) if r.updated_at else ""),
        ("category", r.category or ""),
        ("tags", ", ".join(r.tags or [])),
        ("summary", r.summary or ""),
        ("image", image),
        ("image_alt", r.image_alt or ""),
        ("canonical_url", r.canonical_url or ""),
    ]
    body = r.body_markdown or ""
    return "".join(f"{name}: {value}\n" for name, value in fields) + "\n" + body + ("" if body.endswith("\n") else "\n")


def revision_diff(slug: str, old, new) -> str:
    """A unified diff of two revisions' documents ('' when there is no old one)."""
    if old is None:
        return ""
    return "".join(
        difflib.unified_diff(
            revision_document(old).splitlines(keepends=True),
            revision_document(new).splitlines(keepends=True),
            fromfile=f"{slug} r{old.number} (approved)",
            tofile=f"{slug} r{new.number}",
        )
    )


@dataclasses.dataclass
class PendingRevision:
    slug: str
    article_id: int
    revision_id: int
    number: int
    state: str
    title: str
    author_slug: str
    content_hash: str
    flags: list[dict]
    created_at: dt.datetime
    approved_revision_id: int | None
    diff: str
    document: str = ""  # every field and the body, as `revision_document` writes it


def _revisions_by_id(conn: Connection, ids: list[int]) -> dict:
    out = {}
    for i in range(0, len(ids), 500):
        out.update(
            {r.id: r for r in conn.execute(select(*_REVIEW_COLUMNS).where(revisions.c.id.in_(ids[i : i + 500])))}
        )
    return out


def _pending(conn: Connection, rows) -> list[PendingRevision]:
    old = _revisions_by_id(conn, [r.approved_revision_id for r in rows if r.approved_revision_id])
    current = _revisions_by_id(conn, [r.revision_id for r in rows])
    out = []
    for r in rows:
        rev = current[r.revision_id]
        previous = old.get(r.approved_revision_id) if r.approved_revision_id != r.revision_id else None
        out.append(
            PendingRevision(
                slug=r.slug,
                article_id=r.article_id,
                revision_id=r.revision_id,
                number=rev.number,
                state=rev.state,
                title=rev.title,
                author_slug=rev.author_slug,
                content_hash=rev.content_hash,
                flags=rev.flags or [],
                created_at=rev.created_at,
                approved_revision_id=r.approved_revision_id,
                diff=revision_diff(r.slug, previous, rev),
                document=revision_document(rev),
            )
        )
    return out


def review_queue(conn: Connection, *, include_drafts: bool = False) -> list[PendingRevision]:
    """Current revisions waiting for an editor, each with its flags and a diff of every
    field against the last approved revision of the same article."""
    rows = conn.execute(
        _waiting(
            select(
                articles.c.slug,
                articles.c.id.label("article_id"),
                articles.c.approved_revision_id,
                revisions.c.id.label("revision_id"),
            ).select_from(articles.join(revisions, revisions.c.id == articles.c.current_revision_id)),
            include_drafts=include_drafts,
        )
    ).all()
    return _pending(conn, rows)


def _waiting(query, *, include_drafts: bool = False):
    """`query` (over articles joined to their current revision) narrowed to the revisions
    the review queue shows, in its order."""
    states = ("submitted", "draft") if include_drafts else ("submitted",)
    return query.where(revisions.c.state.in_(states), articles.c.retracted_at.is_(None)).order_by(
        revisions.c.created_at, articles.c.slug
    )


@dataclasses.dataclass
class ArticleReview:
    """One article for `syndicate review SLUG`: its current revision in full, whether it
    waits, the diff against the approved one, and every decision taken on it."""

    slug: str
    current: PendingRevision
    waiting: bool
    approved_number: int | None
    retracted: bool
    history: list[dict]


def article_review(conn: Connection, slug: str) -> ArticleReview:
    row = conn.execute(
        select(
            articles.c.slug,
            articles.c.id.label("article_id"),
            articles.c.approved_revision_id,
            articles.c.retracted_at,
            articles.c.current_revision_id.label("revision_id"),
        ).where(articles.c.slug == slug)
    ).first()
    if row is None or row.revision_id is None:
        raise NotFound(
            f"no article {slug!r}", hint="`syndicate review` lists what waits; run `syndicate ingest` first."
        )
    (current,) = _pending(conn, [row])
    approved_number = None
    if row.approved_revision_id:
        approved_number = conn.execute(
            select(revisions.c.number).where(revisions.c.id == row.approved_revision_id)
        ).scalar_one()
    return ArticleReview(
        slug=slug,
        current=current,
        waiting=current.state in ("submitted", "draft"),
        approved_number=approved_number,
        retracted=row.retracted_at is not None,
        history=history(conn, slug),
    )


# --- deciding ------------------------------------------------------------------------


@dataclasses.dataclass
class Decision:
    slug: str
    revision: int
    outcome: str  # approved | rejected | skipped
    reason: str = ""


def _current(conn: Connection, slug: str):
    row = conn.execute(_current_select().where(articles.c.slug == slug)).first()
    if row is None:
        raise NotFound(
            f"no article {slug!r}", hint="`syndicate review` lists what waits; run `syndicate ingest` first."
        )
    return row


def _current_select():
    """What approve() needs of an article's current revision."""
    return select(
        articles.c.id,
        articles.c.slug,
        articles.c.retracted_at,
        articles.c.first_approved_at,
        revisions.c.id.label("revision_id"),
        revisions.c.number,
        revisions.c.state,
        revisions.c.content_hash,
        revisions.c.flags,
    ).select_from(articles.join(revisions, revisions.c.id == articles.c.current_revision_id))


def _current_rows(conn: Connection, slugs: list[str]) -> dict:
    rows = conn.execute(_current_select().where(articles.c.slug.in_(slugs))).all()
    return {r.slug: r for r in rows}


def approve(
    conn: Connection,
    slugs: Iterable[str] | None = None,
    *,
    editor: str,
    note: str = "",
    override: str = "",
    all_pending: bool = False,
    expected_hash: str | None = None,
) -> list[Decision]:
    """Approve the current revision of each slug (or every waiting one with all_pending).

    A revision flagged by a blocking policy rule needs `override` (the reason); with
    `all_pending` flagged ones are skipped and reported, not approved. `expected_hash`
    pins the approval to the exact content the editor read. All checks run before any
    write, so a refused slug leaves the others of the same call unapproved too.
    """
    if not editor or not editor.strip():
        raise EditorialError("an approval needs the editor's name", hint="Pass --editor NAME.")
    if override and not override.strip():
        # An override is a decision someone must be able to read later (issue 16 item 19).
        raise EditorialError(
            "an override needs a reason",
            hint='Say why the flagged text is fine, e.g. --override "quotes a law, not a political statement".',
        )
    override = (override or "").strip()
    current = {}
    if all_pending:
        # The review queue's revisions in its order, read in one query: not review_queue()
        # itself, which also builds every revision's document and diff for a reader.
        current = {r.slug: r for r in conn.execute(_waiting(_current_select()))}
        slugs = list(current)
    slugs = list(slugs or [])
    if not slugs:
        return []
    if not all_pending:
        for i in range(0, len(slugs), 500):
            current.update(_current_rows(conn, slugs[i : i + 500]))
    now = utcnow()
    decisions, chosen = [], []
    for slug in slugs:
        row = current.get(slug)
        if row is None:
            raise NotFound(
                f"no article {slug!r}", hint="`syndicate review` lists what waits; run `syndicate ingest` first."
            )
        if row.state == "approved":
            decisions.append(Decision(slug, row.number, "skipped", "already approved"))
            continue
        if row.state == "draft":
            if all_pending:
                decisions.append(Decision(slug, row.number, "skipped", "draft"))
                continue
            raise EditorialError(
                f"{slug} r{row.number} is a draft",
                hint="The author sets 'status: submitted' when it is ready for review.",
            )
        if row.state != "submitted":
            raise EditorialError(
                f"{slug} r{row.number} is {row.state}",
                hint="Only submitted revisions can be approved; edit the file to submit a new one.",
            )
        if expected_hash and row.content_hash != expected_hash:
            raise EditorialError(
                f"{slug} changed since you reviewed it (now {row.content_hash[:12]})",
                hint="Run `syndicate review` again and approve what you read.",
            )
        block = blocking(row.flags)
        if block and not override:
            names = ", ".join(f"{f['rule']} ({'; '.join(f['matches'])})" for f in block)
            if all_pending:
                decisions.append(Decision(slug, row.number, "skipped", f"flagged: {names}"))
                continue
            raise EditorialError(
                f"{slug} r{row.number} is flagged by {names}",
                hint="Reject it, ask the author to edit it, or approve with --override REASON.",
            )
        chosen.append((row, bool(block)))
        decisions.append(Decision(slug, row.number, "approved", f"override: {override}" if block else ""))
    if chosen:
        # In bulk (`approve --all` of 10,000 articles): the approvals by the bulk inserter,
        # and each article pointed at its new revision by one statement per 500 articles,
        # not by 10,000 rows of parameters (SQLAlchemy's work on them was 0.3 s at 10,000).
        insert_batches(
            conn,
            approvals,
            [_decision_row(row, "approved", editor, now, note, override if flagged else "") for row, flagged in chosen],
        )
        article_ids = [row.id for row, _ in chosen]
        for i in range(0, len(article_ids), 500):
            part = article_ids[i : i + 500]
            conn.execute(
                update(revisions)
                .where(revisions.c.article_id.in_(part), revisions.c.state == "approved")
                .values(state="superseded")
            )
            conn.execute(
                update(articles)
                .where(articles.c.id.in_(part), articles.c.first_approved_at.is_(None))
                .values(first_approved_at=now)
            )
        revision_ids = [row.revision_id for row, _ in chosen]
        for i in range(0, len(revision_ids), 500):
            conn.execute(
                update(revisions).where(revisions.c.id.in_(revision_ids[i : i + 500])).values(state="approved")
            )
        # Each chosen article now has exactly one approved revision: the chosen one (the
        # one approved before was superseded above).
        approved_now = (
            select(revisions.c.id)
            .where(revisions.c.article_id == articles.c.id, revisions.c.state == "approved")
            .scalar_subquery()
        )
        for i in range(0, len(article_ids), 500):
            conn.execute(
                update(articles)
                .where(articles.c.id.in_(article_ids[i : i + 500]))
                .values(approved_revision_id=approved_now, updated_at=now)
            )
    return decisions


def _decision_row(row, decision: str, editor: str, now, note: str, override_reason: str = "") -> dict:
    """The `approvals` row recording an editor's decision on `row` (a `_current_select` row)."""
    return dict(
        article_id=row.id,
        revision_id=row.revision_id,
        content_hash=row.content_hash,
        decision=decision,
        editor=editor,
        decided_at=now,
        note=note,
        override_reason=override_reason,
    )


def reject(conn: Connection, slug: str, *, editor: str, reason: str) -> Decision:
    if not reason.strip():
        raise EditorialError("a rejection needs a reason", hint="Pass --reason TEXT; the author reads it.")
    row = _current(conn, slug)
    if row.state not in ("submitted", "draft"):
        raise EditorialError(
            f"{slug} r{row.number} is {row.state}, nothing to reject", hint="Only waiting revisions can be rejected."
        )
    conn.execute(approvals.insert().values(**_decision_row(row, "rejected", editor, utcnow(), reason)))
    conn.execute(update(revisions).where(revisions.c.id == row.revision_id).values(state="rejected"))
    return Decision(slug, row.number, "rejected", reason)


def history(conn: Connection, slug: str) -> list[dict]:
    """Every decision on an article, oldest first."""
    q = (
        select(approvals, revisions.c.number)
        .join(revisions, revisions.c.id == approvals.c.revision_id)
        .join(articles, articles.c.id == approvals.c.article_id)
        .where(articles.c.slug == slug)
        .order_by(approvals.c.decided_at, approvals.c.id)
    )
    return [dict(r._mapping) for r in conn.execute(q)]


# --- the desk's editor views: every field, one revision as an article, retraction ----------

DIFF_FIELDS = (
    "title",
    "summary",
    "category",
    "tags",
    "image",
    "image_alt",
    "canonical_url",
    "author_slug",
    "body_markdown",
)


def revision_as_article(conn: Connection, settings, revision_id: int) -> ApprovedArticle:
    """Any revision dressed as the approved article it would become, so the page, digest
    and feed renderers can show it before anyone approves it."""
    q = _approved_query(revisions.c.article_id == articles.c.id).where(revisions.c.id == revision_id)
    row = conn.execute(q).first()
    if row is None:
        raise NotFound(f"no revision {revision_id}")
    return with_image_sizes(conn, settings, [_to_approved(settings, row)])[0]


def field_diff(conn: Connection, revision_id: int, approved_revision_id: int | None) -> list[dict]:
    """Every field of a waiting revision against the approved one:
    [{field, old, new, changed, diff}] (diff: unified lines for the body, else empty)."""
    cols = [revisions.c[f] for f in DIFF_FIELDS] + [revisions.c.number]
    new = conn.execute(select(*cols).where(revisions.c.id == revision_id)).one()._mapping
    old = (
        conn.execute(select(*cols).where(revisions.c.id == approved_revision_id)).one()._mapping
        if approved_revision_id
        else None
    )
    out = []

    def show(v: object) -> str:
        return ", ".join(v) if isinstance(v, list) else ("" if v is None else str(v))

    for f in DIFF_FIELDS:
        nv = new[f]
        ov = old[f] if old is not None else None
        diff = []
        if f == "body_markdown" and old is not None and ov != nv:
            diff = list(
                difflib.unified_diff(
                    show(ov).splitlines(),
                    show(nv).splitlines(),
                    f"r{old['number']} (approved)",
                    f"r{new['number']}",
                    lineterm="",
                )
            )
        out.append(
            {
                "field": f,
                "old": show(ov) if old is not None else None,
                "new": show(nv),
                "changed": old is None or ov != nv,
                "diff": diff,
            }
        )
    return out


def claim_for_decision(conn: Connection, slug: str, revision_id: int) -> None:
    """Take the write lock on a waiting revision before deciding on it, so that of two
    editors deciding at once one wins and the other is told (the second waits for the
    lock, then finds the revision no longer waiting)."""
    n = conn.execute(
        update(revisions)
        .where(revisions.c.id == revision_id, revisions.c.state == "submitted")
        .values(state="submitted")
    ).rowcount
    if n != 1:
        last = conn.execute(
            select(approvals.c.decision, approvals.c.editor)
            .where(approvals.c.revision_id == revision_id)
            .order_by(approvals.c.decided_at.desc(), approvals.c.id.desc())
        ).first()
        who = f" ({last.decision} by {last.editor})" if last else ""
        raise EditorialError(
            f"{slug}: this revision is no longer waiting{who}",
            hint="Someone decided on it while you were reading; open the queue again.",
        )


def retract(conn: Connection, slug: str, *, editor: str, reason: str) -> Decision:
    """Take an approved article off the site, feeds and future digests."""
    if not reason.strip():
        raise EditorialError("a retraction needs a reason", hint="Say why; the author reads it.")
    row = _current(conn, slug)
    art = conn.execute(
        select(articles.c.approved_revision_id, articles.c.retracted_at).where(articles.c.id == row.id)
    ).one()
    if art.approved_revision_id is None or art.retracted_at is not None:
        raise EditorialError(f"{slug} is not published, nothing to retract")
    now = utcnow()
    rev = conn.execute(select(revisions.c.content_hash).where(revisions.c.id == art.approved_revision_id)).scalar_one()
    conn.execute(
        approvals.insert().values(
            article_id=row.id,
            revision_id=art.approved_revision_id,
            content_hash=rev,
            decision="retracted",
            editor=editor,
            decided_at=now,
            note=reason,
        )
    )
    conn.execute(update(articles).where(articles.c.id == row.id).values(retracted_at=now, updated_at=now))
    return Decision(slug, row.number, "retracted", reason)


def timeline(conn: Connection, slug: str) -> list[dict]:
    """Every revision and every decision on an article, oldest first:
    [{at, what, revision, who, text}]."""
    article_id = conn.execute(select(articles.c.id).where(articles.c.slug == slug)).scalar()
    if article_id is None:
        raise NotFound(f"no article {slug!r}")
    events = [
        {
            "at": r.created_at,
            "what": "revision",
            "revision": r.number,
            "who": r.author_slug,
            "text": r.title,
            "flags": r.flags or [],
        }
        for r in conn.execute(select(revisions).where(revisions.c.article_id == article_id))
    ]
    for a in history(conn, slug):
        what = "override" if a["decision"] == "approved" and a["override_reason"] else a["decision"]
        text = a["note"] + (f" (override: {a['override_reason']})" if a["override_reason"] else "")
        events.append(
            {
                "at": a["decided_at"],
                "what": what,
                "revision": a["number"],
                "who": a["editor"],
                "text": text,
                "flags": [],
            }
        )
    events.sort(key=lambda e: (e["at"], e["what"] != "revision"))
    return events


__all__ = [
    "policy_flags",
    "blocking",
    "approved_articles",
    "retracted_articles",
    "review_queue",
    "approve",
    "reject",
    "ApprovedArticle",
    "PendingRevision",
    "ArticleReview",
    "article_review",
    "revision_document",
    "Decision",
    "history",
    "revision_as_article",
    "field_diff",
    "claim_for_decision",
    "retract",
    "timeline",
]
