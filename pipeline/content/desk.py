"""The desk source (`type = "desk"`): articles written in the browser, stored in the database.

An author's working copy lives in `desk_articles` and can be saved as often as they
like; *submitting* turns it into a revision exactly as ingest turns a changed file
into one: the same Markdown renderer and sanitiser, the same policy flags, the same
content hash (of the article as a Markdown file with front matter, which is also
what `syndicate export articles` writes), stored by ingest's own `_store_revisions`.
From there on the editorial workflow cannot tell a desk article from a file.

Articles from the desk carry `source_path = "desk:<id>"`; ingest leaves them alone
(it retracts only file articles whose file is gone).

Images are uploaded into `paths.content/images/desk/`, named by their SHA-256, so
the build copies them to public/ like any other content image. An upload must be a
real image (decoded by Pillow) under `desk.max_upload_bytes`; an SVG with script,
event handlers, foreignObject or external references is refused.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import io
import json
import re
import types
from pathlib import Path

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection

from pipeline.errors import NotFound, SyndicateError
from pipeline.store.schema import approvals, articles, desk_articles, revisions
from pipeline.timeutil import utcnow

SOURCE_PREFIX = "desk:"
MAX_TITLE = 200
MAX_SUMMARY = 1000
MAX_TAGS = 12
RASTER_TYPES = {
    "PNG": ("png", "image/png"),
    "JPEG": ("jpg", "image/jpeg"),
    "GIF": ("gif", "image/gif"),
    "WEBP": ("webp", "image/webp"),
}
SVG_DANGER = re.compile(
    rb"<\s*script|\bon[a-z]+\s*=|javascript:|<\s*foreignObject|<!ENTITY|xlink:href\s*=\s*[\"']\s*(?!#)"
    rb"|\bhref\s*=\s*[\"']\s*(?!#)|@import|<\s*iframe|<\s*embed|<\s*object",
    re.I,
)


class DeskInputError(SyndicateError):
    """A field of the article form is not acceptable; `field` names it."""

    def __init__(self, field: str, message: str, hint: str | None = None):
        super().__init__(message, hint)
        self.field = field


@dataclasses.dataclass
class Draft:
    title: str
    summary: str
    tags: list[str]
    category: str
    body_markdown: str
    image: str = ""
    image_alt: str = ""


def clean_draft(settings, values: dict, *, image: str = "") -> Draft:
    """Form values -> Draft, or DeskInputError naming the first bad field."""
    from pipeline.content.ingest import html_to_text, slugify, strip_control_chars

    def text(name: str) -> str:
        v = values.get(name)
        return strip_control_chars(v) if isinstance(v, str) else ""

    title = " ".join(text("title").split())
    if not title:
        raise DeskInputError("title", "the article needs a title")
    if len(title) > MAX_TITLE:
        raise DeskInputError(
            "title",
            f"the title is {len(title):,} characters; the limit is {MAX_TITLE}",
            hint="A headline reads best under about 70 characters.",
        )
    summary = " ".join(html_to_text(text("summary")).split())
    if len(summary) > MAX_SUMMARY:
        raise DeskInputError("summary", f"the summary is {len(summary):,} characters; the limit is {MAX_SUMMARY}")
    tags = []
    for t in re.split(r"[,\n]", text("tags")):
        slug = slugify(t) if t.strip() else ""
        if slug and slug not in tags:
            tags.append(slug[:100])
    if len(tags) > MAX_TAGS:
        raise DeskInputError("tags", f"{len(tags)} tags; at most {MAX_TAGS}")
    category = slugify(text("category"))[:100] if text("category").strip() else ""
    body = text("body").replace("\r\n", "\n")
    if not body.strip():
        raise DeskInputError("body", "the article has no text")
    if len(body.encode("utf-8")) > settings.ingest.max_file_bytes:
        raise DeskInputError("body", f"the text is over {settings.ingest.max_file_bytes:,} bytes")
    image_alt = " ".join(text("image_alt").split())[:500]
    if image and not image_alt:
        raise DeskInputError(
            "image_alt",
            "describe the image for people who cannot see it",
            hint="e.g. 'Two cups of tea on a wooden table'.",
        )
    return Draft(
        title=title,
        summary=summary,
        tags=tags,
        category=category,
        body_markdown=body,
        image=image,
        image_alt=image_alt if image else "",
    )


# --- images ------------------------------------------------------------------------------


def store_image(settings, data: bytes, filename: str = "") -> str:
    """Check an uploaded image and store it; returns its path under paths.content."""
    limit = settings.desk.max_upload_bytes
    if len(data) > limit:
        raise DeskInputError(
            "image",
            f"the image is {len(data):,} bytes; the limit is {limit:,}",
            hint="Save it smaller (about 1600 pixels wide is plenty).",
        )
    if not data:
        raise DeskInputError("image", "the image file is empty")
    head = data[:1000].lstrip().lower()
    if head.startswith((b"<?xml", b"<svg")) or b"<svg" in head:
        ext = _check_svg(data)
    else:
        ext = _check_raster(data)
    name = f"{hashlib.sha256(data).hexdigest()[:24]}.{ext}"
    folder = settings.path("paths.content") / "images" / "desk"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return f"images/desk/{name}"


def _check_raster(data: bytes) -> str:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format
            if im.width * im.height > 40_000_000:
                raise DeskInputError("image", "the image has too many pixels")
            im.verify()
        with Image.open(io.BytesIO(data)) as im:
            im.load()  # verify() does not decode the pixels; a truncated file fails here
    except DeskInputError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise DeskInputError(
            "image", "that file is not an image we can read", hint="Upload a PNG, JPEG, GIF, WebP or a plain SVG."
        ) from None
    if fmt not in RASTER_TYPES:
        raise DeskInputError("image", f"{fmt} images are not accepted", hint="Upload a PNG, JPEG, GIF or WebP.")
    return RASTER_TYPES[fmt][0]


def _check_svg(data: bytes) -> str:
    from lxml import etree

    if SVG_DANGER.search(data):
        raise DeskInputError(
            "image",
            "this SVG contains script, event handlers or external references",
            hint="Export it again as a plain drawing, or upload a PNG.",
        )
    try:
        parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError:
        raise DeskInputError("image", "that SVG file is not well-formed") from None
    if etree.QName(root).localname != "svg":
        raise DeskInputError("image", "that file is not an SVG image")
    return "svg"


def image_facts(settings, image: str) -> tuple[str, int | None, str]:
    """(absolute URL, length, MIME type) of a stored image, as ingest records them."""
    if not image:
        return "", None, ""
    import mimetypes
    from urllib.parse import urljoin

    local = settings.path("paths.content") / image
    mime = mimetypes.guess_type(image)[0] or ""
    return (
        urljoin(settings.site.base_url.rstrip("/") + "/", image),
        local.stat().st_size if local.is_file() else None,
        mime,
    )


# --- the working copy -------------------------------------------------------------------


def _unique_slug(conn: Connection, title: str) -> str:
    from pipeline.content.ingest import slugify

    base = slugify(title)[:80].strip("-") or "article"
    slug, n = base, 1
    while (
        conn.execute(select(desk_articles.c.id).where(desk_articles.c.slug == slug)).first() is not None
        or conn.execute(select(articles.c.id).where(articles.c.slug == slug)).first() is not None
    ):
        n += 1
        slug = f"{base}-{n}"
    return slug


def create(conn: Connection, owner_id: int, draft: Draft) -> int:
    now = utcnow()
    return conn.execute(
        insert(desk_articles)
        .values(
            owner_id=owner_id,
            slug=_unique_slug(conn, draft.title),
            article_id=None,
            created_at=now,
            updated_at=now,
            submitted_at=None,
            **dataclasses.asdict(draft),
        )
        .returning(desk_articles.c.id)
    ).scalar_one()


def save(conn: Connection, desk_id: int, draft: Draft) -> None:
    conn.execute(
        update(desk_articles)
        .where(desk_articles.c.id == desk_id)
        .values(updated_at=utcnow(), **dataclasses.asdict(draft))
    )


def get(conn: Connection, desk_id: int) -> dict | None:
    row = conn.execute(select(desk_articles).where(desk_articles.c.id == desk_id)).first()
    return dict(row._mapping) if row else None


def get_owned(conn: Connection, desk_id: int, owner_id: int) -> dict:
    """The article if `owner_id` wrote it. Another author's article is 'not found', so
    ids cannot be probed."""
    row = get(conn, desk_id)
    if row is None or row["owner_id"] != owner_id:
        raise NotFound("no such article of yours", hint="Your articles are listed on the desk's Articles page.")
    return row


def draft_of(row: dict) -> Draft:
    return Draft(
        title=row["title"],
        summary=row["summary"],
        tags=list(row["tags"] or []),
        category=row["category"],
        body_markdown=row["body_markdown"],
        image=row["image"],
        image_alt=row["image_alt"],
    )


def list_owned(conn: Connection, owner_id: int) -> list[dict]:
    """The author's articles with where each stands: draft | waiting | approved | rejected
    (with the reason) | retracted; `changed` when the copy differs from what was submitted."""
    rows = conn.execute(
        select(desk_articles)
        .where(desk_articles.c.owner_id == owner_id)
        .order_by(desk_articles.c.updated_at.desc(), desk_articles.c.id.desc())
    ).all()
    return [dict(r._mapping) | status(conn, dict(r._mapping)) for r in rows]


def status(conn: Connection, row: dict) -> dict:
    if row["article_id"] is None:
        return {"state": "draft", "reason": "", "decided_by": "", "approved_ever": False}
    art = conn.execute(select(articles).where(articles.c.id == row["article_id"])).first()
    rev = conn.execute(
        select(revisions.c.state, revisions.c.id).where(revisions.c.id == art.current_revision_id)
    ).first()
    last = conn.execute(
        select(approvals)
        .where(approvals.c.revision_id == rev.id)
        .order_by(approvals.c.decided_at.desc(), approvals.c.id.desc())
    ).first()
    state = {"submitted": "waiting", "approved": "approved", "rejected": "rejected"}.get(rev.state, rev.state)
    if art.retracted_at is not None:
        state = "retracted"
    return {
        "state": state,
        "reason": last.note if last is not None and last.decision == "rejected" else "",
        "decided_by": last.editor if last is not None else "",
        "approved_ever": art.approved_revision_id is not None,
    }


# --- Markdown, preview, submission ------------------------------------------------------


def as_markdown(settings, row: dict, author_slug: str, published_at: dt.datetime) -> str:
    """The article as a Markdown file with front matter: what `export articles` writes
    and what the content hash is taken over."""
    front = {
        "title": row["title"],
        "author": author_slug,
        "date": published_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "tags": list(row["tags"] or []),
        "category": row["category"],
        "summary": row["summary"],
    }
    if row["image"]:
        front["image"] = row["image"]
        front["image_alt"] = row["image_alt"]
    lines = ["---"] + [f"{k}: {json.dumps(v, ensure_ascii=False)}" for k, v in front.items() if v not in ("", [])]
    return "\n".join(lines) + "\n---\n" + row["body_markdown"].rstrip("\n") + "\n"


def render_body(settings, slug: str, body_markdown: str) -> str:
    from pipeline.content.ingest import _markdown, article_url, sanitize_html, strip_control_chars

    return sanitize_html(_markdown.render(strip_control_chars(body_markdown)), article_url(settings, slug))


def flags_for(settings, draft: Draft, slug: str = "preview") -> list[dict]:
    """The policy rules this text trips, shown to the author before submitting."""
    from pipeline.content.editorial import policy_flags

    view = types.SimpleNamespace(
        title=draft.title, summary=draft.summary, body_html=render_body(settings, slug, draft.body_markdown)
    )
    return policy_flags(settings.policy_rules, view)


def submit(conn: Connection, settings, desk_id: int, author_slug: str) -> dict:
    """The working copy -> a revision waiting for review, as ingest stores one.
    Submitting an unchanged copy again adds nothing (same content hash)."""
    from pipeline.content import ingest as ing
    from pipeline.content.editorial import policy_flags

    row = get(conn, desk_id)
    now = utcnow()
    published = row["submitted_at"] or now
    text = as_markdown(settings, row, author_slug, published)
    chash = ing.content_hash(text.encode("utf-8"))
    current = {}
    approved_before = False
    if row["article_id"] is not None:
        art = conn.execute(
            select(
                articles.c.id,
                articles.c.slug,
                articles.c.retracted_at,
                articles.c.approved_revision_id,
                revisions.c.content_hash,
                revisions.c.state,
            )
            .select_from(articles.outerjoin(revisions, revisions.c.id == articles.c.current_revision_id))
            .where(articles.c.id == row["article_id"])
        ).first()
        if art.content_hash == chash and art.state in ("submitted", "approved"):
            return {"changed": False, "flags": []}
        current[art.slug] = types.SimpleNamespace(id=art.id, retracted_at=art.retracted_at)
        approved_before = art.approved_revision_id is not None
    body_html = render_body(settings, row["slug"], row["body_markdown"])
    words = len(ing.html_to_text(body_html).split())
    image, length, mime = image_facts(settings, row["image"])
    parsed = ing.ParsedArticle(
        slug=row["slug"],
        path=Path(f"{SOURCE_PREFIX}{desk_id}"),
        content_hash=chash,
        title=row["title"],
        author_slug=author_slug,
        published_at=published,
        updated_at=now if approved_before else None,
        tags=list(row["tags"] or []),
        category=row["category"],
        summary=row["summary"] or ing.derive_summary(body_html),
        image=image,
        image_length=length,
        image_type=mime,
        image_alt=row["image_alt"],
        canonical_url="",
        status="submitted",
        body_markdown=row["body_markdown"],
        body_html=body_html,
        reading_minutes=max(1, round(words / ing.WORDS_PER_MINUTE)),
        word_count=words,
    )
    flags = policy_flags(settings.policy_rules, parsed)
    ing._store_revisions(conn, [(parsed, flags)], current, now)
    article_id = conn.execute(select(articles.c.id).where(articles.c.slug == row["slug"])).scalar_one()
    conn.execute(
        update(desk_articles)
        .where(desk_articles.c.id == desk_id)
        .values(article_id=article_id, submitted_at=published, updated_at=now)
    )
    return {"changed": True, "flags": flags, "article_id": article_id}


def export(conn: Connection, settings, folder: Path) -> list[Path]:
    """Every desk article as `<slug>.md` with front matter (`syndicate export articles`)."""
    from pipeline.store.schema import users

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    rows = conn.execute(
        select(desk_articles, users.c.author_slug, users.c.name)
        .join(users, users.c.id == desk_articles.c.owner_id)
        .order_by(desk_articles.c.slug)
    ).all()
    for r in rows:
        row = dict(r._mapping)
        author = row["author_slug"] or "unknown"
        path = folder / f"{row['slug']}.md"
        path.write_text(as_markdown(settings, row, author, row["submitted_at"] or row["created_at"]), encoding="utf-8")
        out.append(path)
    return out
