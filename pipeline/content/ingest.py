"""Reading articles: front matter + Markdown -> a checked, sanitised article; ingest.

`read_article(path, ...)` turns one file into a `ParsedArticle` or raises
`ContentError` naming the file, the field and the fix. `ingest(app)` walks
`content/articles/`, stores a new revision for every changed file (pinned by the
sha256 of its bytes), leaves unchanged files alone without even parsing them, and
retracts the articles whose file was deleted. A bad file is reported and skipped;
the batch goes on.

Author HTML is untrusted: Markdown is rendered with raw HTML allowed (authors use
it), then sanitised with nh3 to a tag set inside the W3C feed validator's
`acceptable_elements` (SAN-2, VAL-3), every URL made absolute against the article's
canonical URL (ATOM-8), and only http(s)/mailto links kept (SAN-3).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import html
import logging
import mimetypes
import os
import re
import threading
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import nh3
import yaml
from markdown_it import MarkdownIt
from sqlalchemy import bindparam, func, select, update
from sqlalchemy.engine import Connection

from pipeline.config import Settings
from pipeline.errors import ContentError
from pipeline.store.schema import articles, authors, revisions
from pipeline.timeutil import parse_datetime, utcnow

log = logging.getLogger(__name__)

SANITIZER_VERSION = f"nh3-{nh3.__version__ if hasattr(nh3, '__version__') else '0'}-feed-1"
SLUG_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
# C0 controls that XML 1.0 forbids (FG-8); \t \n \r stay.
CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff]")
WORDS_PER_MINUTE = 230
SUMMARY_CHARS = 280

# A subset of the W3C feed validator's acceptable_elements (VAL-3): no script, style,
# iframe, object, embed, form, input, meta, link, base.
FEED_TAGS = {
    "a", "abbr", "acronym", "b", "blockquote", "br", "caption", "cite", "code", "col",
    "colgroup", "dd", "del", "dfn", "div", "dl", "dt", "em", "figcaption", "figure",
    "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "ins", "kbd", "li", "ol", "p",
    "pre", "q", "s", "samp", "small", "span", "strike", "strong", "sub", "sup", "table",
    "tbody", "td", "tfoot", "th", "thead", "tr", "tt", "u", "ul", "var",
}
FEED_ATTRIBUTES = {
    "a": {"href", "title", "hreflang"},
    "img": {"src", "alt", "title", "width", "height"},
    "abbr": {"title"}, "acronym": {"title"},
    "blockquote": {"cite"}, "q": {"cite"}, "del": {"cite", "datetime"}, "ins": {"cite", "datetime"},
    "td": {"colspan", "rowspan", "align"}, "th": {"colspan", "rowspan", "align", "scope"},
    "ol": {"start", "reversed"}, "li": {"value"},
    "code": {"class"}, "pre": {"class"},
}
CLEAN_CONTENT_TAGS = {"script", "style", "iframe", "object", "embed", "noscript", "template",
                      "svg", "math", "frame", "frameset", "applet", "title", "textarea", "select", "xmp"}
URL_ATTRIBUTES = {"href", "src", "cite"}
SAFE_SCHEMES = {"http", "https", "mailto"}
FRONT_MATTER_FIELDS = {"title", "author", "date", "updated", "tags", "category", "summary", "image",
                       "image_alt", "canonical_url", "status"}

_YamlLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: ~10x faster
_markdown = MarkdownIt("commonmark", {"html": True, "linkify": False, "typographer": False}).enable("table")


@dataclasses.dataclass
class AuthorRecord:
    slug: str
    name: str
    bio: str
    url: str
    email: str
    content_hash: str


@dataclasses.dataclass
class ParsedArticle:
    slug: str
    path: Path
    content_hash: str
    title: str
    author_slug: str
    published_at: dt.datetime
    updated_at: dt.datetime | None
    tags: list[str]
    category: str
    summary: str
    image: str
    image_length: int | None
    image_type: str
    image_alt: str
    canonical_url: str
    status: str
    body_markdown: str
    body_html: str
    reading_minutes: int
    word_count: int


def slugify(text: str) -> str:
    text = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return text or "untitled"


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def strip_control_chars(text: str) -> str:
    return CONTROL_CHARS.sub("", text)


def sanitize_html(fragment: str, base_url: str) -> str:
    """Untrusted HTML -> the feed-safe subset, URLs absolute. Idempotent (SAN-1)."""

    def keep_attribute(tag: str, attr: str, value: str) -> str | None:
        if attr not in URL_ATTRIBUTES:
            return value
        value = value.strip()
        if not value:
            return None
        absolute = urljoin(base_url, value)
        scheme = urlsplit(absolute).scheme.lower()
        if scheme not in SAFE_SCHEMES:
            return None
        if tag == "img" and scheme == "mailto":
            return None
        return absolute

    return nh3.clean(
        strip_control_chars(fragment),
        tags=FEED_TAGS,
        clean_content_tags=CLEAN_CONTENT_TAGS,
        attributes=FEED_ATTRIBUTES,
        attribute_filter=keep_attribute,
        url_schemes=SAFE_SCHEMES,
        strip_comments=True,
        link_rel="noopener noreferrer",
    )


def html_to_text(fragment: str) -> str:
    """Plain text of an HTML fragment (summaries, word counts, policy checks)."""
    text = re.sub(r"<(br|/p|/li|/h[1-6]|/blockquote|/tr)\b[^>]*>", "\n", fragment, flags=re.I)
    text = re.sub(r"<[^>]+>", "", text)
    text = html.unescape(text)
    return re.sub(r"[ \t\r\f\v]+", " ", text).strip()


def derive_summary(body_html: str, limit: int = SUMMARY_CHARS) -> str:
    """The first paragraph as plain text, cut at a word boundary."""
    for para in re.findall(r"<p\b[^>]*>(.*?)</p>", body_html, flags=re.S | re.I):
        text = " ".join(html_to_text(para).split())
        if text:
            break
    else:
        text = " ".join(html_to_text(body_html).split())
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0].rstrip(",;:.")
    return cut + "…"


def split_front_matter(text: str, path: Path) -> tuple[dict, str]:
    if not text.startswith("---"):
        raise ContentError(path, "no YAML front matter", hint="Start the file with a '---' line, the fields, and another '---' line.")
    parts = re.split(r"^---[ \t]*$", text, maxsplit=2, flags=re.M)
    if len(parts) < 3:
        raise ContentError(path, "front matter is not closed", hint="Add a line with only '---' after the front matter fields.")
    try:
        meta = yaml.load(parts[1], Loader=_YamlLoader) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ContentError(path, f"front matter is not valid YAML{where}: {getattr(exc, 'problem', exc)}",
                           hint="Check quoting: values with ':' or '#' need quotes.") from None
    if not isinstance(meta, dict):
        raise ContentError(path, "front matter must be 'key: value' lines", hint="See content/README.md for the fields.")
    return meta, parts[2]


def _read_text(path: Path, data: bytes, max_bytes: int) -> str:
    if len(data) > max_bytes:
        raise ContentError(path, f"file is {len(data):,} bytes, over the limit of {max_bytes:,}",
                           hint="Shorten the article or raise [ingest] max_file_bytes.")
    try:
        return data.decode("utf-8").lstrip("\ufeff")
    except UnicodeDecodeError as exc:
        raise ContentError(path, f"not UTF-8 (byte {exc.start})", hint="Save the file as UTF-8.") from None


def read_author(path: Path, max_bytes: int = 200_000) -> AuthorRecord:
    data = path.read_bytes()
    meta, body = split_front_matter(_read_text(path, data, max_bytes), path)
    name = meta.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ContentError(path, "author has no name", field="name", hint="Add 'name: Full Name' to the front matter.")
    return AuthorRecord(slug=path.stem, name=strip_control_chars(name.strip()), bio=body.strip(),
                        url=str(meta.get("url") or ""), email=str(meta.get("email") or ""),
                        content_hash=content_hash(data))


def _date_field(meta: dict, field: str, path: Path, required: bool) -> dt.datetime | None:
    value = meta.get(field)
    if value in (None, ""):
        if required:
            raise ContentError(path, f"'{field}' is missing", field=field, hint=f"Add '{field}: 2026-11-25T09:00:00Z'.")
        return None
    try:
        return parse_datetime(value if not isinstance(value, str) else value)
    except (ValueError, TypeError):
        raise ContentError(path, f"'{field}' is not a date: {value!r}", field=field,
                           hint="Use ISO 8601, e.g. 2026-11-25 or 2026-11-25T09:00:00Z.") from None


def _str_list(meta: dict, field: str, path: Path) -> list[str]:
    value = meta.get(field) or []
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",")]
    if not isinstance(value, list) or not all(isinstance(v, (str, int)) for v in value):
        raise ContentError(path, f"'{field}' must be a list", field=field, hint=f"Write '{field}: [one, two]'.")
    out = []
    for v in value:
        slug = slugify(str(v))
        if slug not in out:
            out.append(slug)
    return out


def read_article(path: Path, settings: Settings, known_authors: set[str], data: bytes | None = None) -> ParsedArticle:
    """One article file -> ParsedArticle, or ContentError naming path and field."""
    path = Path(path)
    data = path.read_bytes() if data is None else data
    text = _read_text(path, data, settings.ingest.max_file_bytes)
    meta, body = split_front_matter(text, path)
    slug = path.stem
    if not SLUG_RE.match(slug):
        raise ContentError(path, f"file name {path.name!r} is not a valid slug",
                           hint=f"Rename it to {slugify(slug)}.md (lower-case letters, digits and dashes).")
    unknown = set(meta) - FRONT_MATTER_FIELDS
    if unknown:
        raise ContentError(path, f"unknown front matter field(s): {', '.join(sorted(map(str, unknown)))}",
                           field=sorted(map(str, unknown))[0],
                           hint=f"Known fields: {', '.join(sorted(FRONT_MATTER_FIELDS))}.")
    title = meta.get("title")
    if not isinstance(title, (str, int, float)) or not str(title).strip():
        raise ContentError(path, "'title' is missing", field="title", hint="Add 'title: ...' to the front matter.")
    title = " ".join(strip_control_chars(str(title)).split())
    author = meta.get("author")
    if not isinstance(author, str) or not author.strip():
        raise ContentError(path, "'author' is missing", field="author",
                           hint="Add 'author: <slug>' naming a file in content/authors/.")
    author = author.strip()
    if author not in known_authors:
        raise ContentError(path, f"unknown author {author!r}", field="author",
                           hint=f"Create content/authors/{author}.md or use one of: {', '.join(sorted(known_authors)) or 'none yet'}.")
    published = _date_field(meta, "date", path, required=True)
    updated = _date_field(meta, "updated", path, required=False)
    if updated is not None and updated < published:
        raise ContentError(path, "'updated' is before 'date'", field="updated", hint="Fix one of the two dates.")
    status = str(meta.get("status") or "submitted").strip().lower()
    if status not in ("draft", "submitted"):
        raise ContentError(path, f"'status' must be draft or submitted, not {status!r}", field="status",
                           hint="Approval happens with `syndicate approve`, not in the file.")
    canonical = str(meta.get("canonical_url") or "").strip()
    if canonical and urlsplit(canonical).scheme not in ("http", "https"):
        raise ContentError(path, f"'canonical_url' must be an absolute http(s) URL: {canonical!r}",
                           field="canonical_url", hint="Use e.g. https://example.com/original-post/ or leave it out.")
    site_url = article_url(settings, slug)
    body = strip_control_chars(body)
    body_html = sanitize_html(_markdown.render(body), canonical or site_url)
    plain = html_to_text(body_html)
    words = len(plain.split())
    summary_raw = meta.get("summary")
    if summary_raw not in (None, "") and not isinstance(summary_raw, str):
        raise ContentError(path, "'summary' must be text", field="summary", hint="Quote it: summary: \"...\"")
    # Titles and summaries are plain text, never HTML (SAN-5): tags are removed, text kept.
    summary = " ".join(html_to_text(strip_control_chars(summary_raw)).split()) if summary_raw else derive_summary(body_html)
    image, image_length, image_type = _image(meta.get("image"), path, settings)
    return ParsedArticle(
        slug=slug, path=path, content_hash=content_hash(data), title=title, author_slug=author,
        published_at=published, updated_at=updated, tags=_str_list(meta, "tags", path),
        category=slugify(str(meta["category"])) if meta.get("category") else "",
        summary=summary, image=image, image_length=image_length, image_type=image_type,
        image_alt=" ".join(strip_control_chars(str(meta.get("image_alt") or "")).split()),
        canonical_url=canonical, status=status, body_markdown=body, body_html=body_html,
        reading_minutes=max(1, round(words / WORDS_PER_MINUTE)), word_count=words,
    )


def _image(value, path: Path, settings: Settings) -> tuple[str, int | None, str]:
    """An image as (absolute URL, length in bytes or None, MIME type).

    A relative path names a file under content/ (copied to public/ by the build);
    its length is the file's size, so the enclosure is complete (RSS-9).
    """
    if not value:
        return "", None, ""
    value = str(value).strip()
    mime = mimetypes.guess_type(value)[0] or ""
    if urlsplit(value).scheme in ("http", "https"):
        return value, None, mime
    if urlsplit(value).scheme or value.startswith("/") or ".." in Path(value).parts:
        raise ContentError(path, f"'image' must be a path under content/ or an http(s) URL: {value!r}",
                           field="image", hint="e.g. image: images/picture.jpg")
    local = settings.path("paths.content") / value
    if not local.is_file():
        raise ContentError(path, f"image file {value!r} not found under {settings.path('paths.content')}",
                           field="image", hint="Add the file or fix the path.")
    if not mime.startswith("image/"):
        raise ContentError(path, f"'image' {value!r} is not an image type", field="image",
                           hint="Use .jpg, .png, .gif, .webp or .svg.")
    return urljoin(settings.site.base_url.rstrip("/") + "/", value), local.stat().st_size, mime


def article_url(settings: Settings, slug: str) -> str:
    """The article's page on our site: the canonical URL unless the article names its own."""
    return f"{settings.site.base_url.rstrip('/')}/articles/{slug}/"


# --- ingest ------------------------------------------------------------------------

@dataclasses.dataclass
class IngestReport:
    new: list[str] = dataclasses.field(default_factory=list)
    changed: list[str] = dataclasses.field(default_factory=list)
    unchanged: int = 0
    retracted: list[str] = dataclasses.field(default_factory=list)
    restored: list[str] = dataclasses.field(default_factory=list)
    flagged: list[str] = dataclasses.field(default_factory=list)
    errors: list[ContentError] = dataclasses.field(default_factory=list)
    authors: int = 0

    def counts(self) -> dict[str, int]:
        return {"new": len(self.new), "changed": len(self.changed), "unchanged": self.unchanged,
                "retracted": len(self.retracted), "flagged": len(self.flagged), "failed": len(self.errors)}


def _sync_authors(conn: Connection, settings: Settings, report: IngestReport, now) -> set[str]:
    folder = settings.path("paths.content") / "authors"
    existing = {r.slug: r for r in conn.execute(select(authors.c.slug, authors.c.content_hash))}
    known: set[str] = set()
    for path in sorted(folder.glob("*.md")) if folder.is_dir() else []:
        if path.name.lower() == "readme.md":
            continue
        try:
            rec = read_author(path)
        except ContentError as exc:
            report.errors.append(exc)
            continue
        known.add(rec.slug)
        values = dict(name=rec.name, bio=rec.bio, url=rec.url, email=rec.email,
                      content_hash=rec.content_hash, updated_at=now)
        old = existing.get(rec.slug)
        if old is None:
            conn.execute(authors.insert().values(slug=rec.slug, **values))
        elif old.content_hash != rec.content_hash:
            conn.execute(update(authors).where(authors.c.slug == rec.slug).values(**values))
    report.authors = len(known)
    return known


# Parsing (Markdown + nh3) is CPU-bound: a large batch is parsed in worker processes.
PARALLEL_THRESHOLD = 200
_worker_state: dict = {}


def _parse_init(settings: Settings, known_authors: set[str]) -> None:
    _worker_state["settings"] = settings
    _worker_state["authors"] = known_authors


def _parse_one(job: tuple[str, bytes]):
    """In a worker: (path, bytes) -> ("ok", ParsedArticle, flags) | ("error", path, message, hint, field).
    Errors travel as plain tuples: exceptions with extra constructor arguments do not pickle."""
    from pipeline.content.editorial import policy_flags

    path, data = job
    settings = _worker_state["settings"]
    try:
        parsed = read_article(Path(path), settings, _worker_state["authors"], data=data)
    except ContentError as exc:
        return ("error", exc.path, exc.message.split(": ", 1)[-1] if exc.message.startswith(exc.path) else exc.message,
                exc.hint, exc.field)
    return ("ok", parsed, policy_flags(settings.policy_rules, parsed))


def _parse_all(jobs: list[tuple[str, bytes]], settings: Settings, known_authors: set[str]) -> list:
    if len(jobs) < PARALLEL_THRESHOLD or (os.cpu_count() or 1) < 2:
        _parse_init(settings, known_authors)
        return [_parse_one(job) for job in jobs]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    workers = min(os.cpu_count() or 2, 8)
    ctx = multiprocessing.get_context("fork" if threading.active_count() == 1 else "spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_parse_init,
                             initargs=(settings, known_authors)) as pool:
        return list(pool.map(_parse_one, jobs, chunksize=max(1, len(jobs) // (workers * 8))))


def ingest(app, *, dry_run: bool = False, strict: bool | None = None) -> IngestReport:
    """content/ -> database. See the module docstring. `strict`: any bad file aborts
    the whole ingest with nothing written."""
    settings = app.settings
    strict = settings.ingest.strict if strict is None else strict
    folder = settings.path("paths.content") / "articles"
    report = IngestReport()
    now = utcnow()
    with app.engine.connect() as conn:
        trans = conn.begin()
        try:
            known_authors = _sync_authors(conn, settings, report, now)
            current = {
                r.slug: r for r in conn.execute(
                    select(articles.c.id, articles.c.slug, articles.c.retracted_at, articles.c.source_path,
                           articles.c.approved_revision_id, revisions.c.content_hash, revisions.c.number)
                    .select_from(articles.outerjoin(revisions, revisions.c.id == articles.c.current_revision_id)))
            }
            seen: set[str] = set()
            jobs: list[tuple[str, bytes]] = []
            files = sorted(folder.glob("*.md")) if folder.is_dir() else []
            for path in files:
                if path.name.lower() == "readme.md":
                    continue
                seen.add(path.stem)
                try:
                    data = path.read_bytes()
                except OSError as exc:
                    report.errors.append(ContentError(path, f"cannot read: {exc.strerror}", hint="Check the file's permissions."))
                    continue
                old = current.get(path.stem)
                if old is not None and old.source_path.startswith("desk:"):
                    report.errors.append(ContentError(path, f"the slug {path.stem!r} belongs to an article written in the desk",
                                                      hint="Rename the file; desk articles are edited in /desk/."))
                    continue
                if old is not None and old.content_hash == content_hash(data):
                    if old.retracted_at is not None and _retracted_by_editor(conn, old.id):
                        report.unchanged += 1  # an editor took it down: the file coming back is no reason
                    elif old.retracted_at is not None:
                        _restore(conn, old, now)
                        report.restored.append(path.stem)
                    else:
                        report.unchanged += 1
                    continue  # unchanged: not even parsed
                jobs.append((str(path), data))
            parsed_ok = []
            for result in _parse_all(jobs, settings, known_authors):
                if result[0] == "error":
                    _, path, message, hint, field = result
                    report.errors.append(ContentError(path, message, hint=hint, field=field))
                    continue
                _, parsed, flags = result
                if flags:
                    report.flagged.append(parsed.slug)
                parsed_ok.append((parsed, flags))
                (report.new if parsed.slug not in current else report.changed).append(parsed.slug)
            _store_revisions(conn, parsed_ok, current, now)
            # Desk articles (source_path "desk:<id>") have no file: never "deleted" here.
            gone = [old.id for slug, old in current.items()
                    if slug not in seen and old.retracted_at is None and not old.source_path.startswith("desk:")]
            if gone:
                conn.execute(update(articles).where(articles.c.id.in_(gone)).values(retracted_at=now, updated_at=now))
                report.retracted.extend(slug for slug, old in current.items() if old.id in set(gone))
            if dry_run or (strict and report.errors):
                trans.rollback()
            else:
                trans.commit()
        except BaseException:
            trans.rollback()
            raise
    if strict and report.errors:
        first = report.errors[0]
        raise ContentError(first.path, first.message.split(": ", 1)[-1] + f" ({len(report.errors)} bad file(s); strict mode wrote nothing)",
                           hint=first.hint, field=first.field)
    return report


def _retracted_by_editor(conn: Connection, article_id: int) -> bool:
    """Whether the article's last decision is an editor's retraction (desk or CLI)."""
    from pipeline.store.schema import approvals

    last = conn.execute(select(approvals.c.decision).where(approvals.c.article_id == article_id)
                        .order_by(approvals.c.decided_at.desc(), approvals.c.id.desc()).limit(1)).scalar()
    return last == "retracted"


def _restore(conn: Connection, old, now) -> None:
    conn.execute(update(articles).where(articles.c.id == old.id).values(retracted_at=None, updated_at=now))


def _store_revisions(conn: Connection, parsed_ok: list[tuple[ParsedArticle, list]], current: dict, now) -> None:
    """Store new revisions in a few batched statements (one row at a time costs ~1 ms each)."""
    if not parsed_ok:
        return
    new_rows = [{"slug": p.slug, "source_path": str(p.path), "created_at": now, "updated_at": now}
                for p, _ in parsed_ok if p.slug not in current]
    ids = {p.slug: current[p.slug].id for p, _ in parsed_ok if p.slug in current}
    if new_rows:
        inserted = conn.execute(articles.insert().returning(articles.c.id, articles.c.slug,
                                                            sort_by_parameter_order=True), new_rows)
        ids.update({slug: article_id for article_id, slug in inserted})
    changed_ids = [current[p.slug].id for p, _ in parsed_ok if p.slug in current]
    numbers: dict[int, int] = {}
    if changed_ids:
        numbers = dict(conn.execute(select(revisions.c.article_id, func.max(revisions.c.number))
                                    .where(revisions.c.article_id.in_(changed_ids)).group_by(revisions.c.article_id)).all())
        # Earlier revisions nobody decided on are superseded by the new one.
        conn.execute(update(revisions).where(revisions.c.article_id.in_(changed_ids),
                                             revisions.c.state.in_(("draft", "submitted")))
                     .values(state="superseded"))
    rows = []
    for p, flags in parsed_ok:
        article_id = ids[p.slug]
        rows.append(dict(
            article_id=article_id, number=numbers.get(article_id, 0) + 1, content_hash=p.content_hash,
            state="draft" if p.status == "draft" else "submitted",
            title=p.title, author_slug=p.author_slug, published_at=p.published_at,
            updated_at=p.updated_at, tags=p.tags, category=p.category, summary=p.summary,
            image=p.image, image_length=p.image_length, image_type=p.image_type,
            image_alt=p.image_alt, canonical_url=p.canonical_url, body_markdown=p.body_markdown,
            body_html=p.body_html, sanitizer_version=SANITIZER_VERSION,
            reading_minutes=p.reading_minutes, word_count=p.word_count, flags=flags, created_at=now))
    inserted = conn.execute(revisions.insert().returning(revisions.c.id, revisions.c.article_id,
                                                         sort_by_parameter_order=True), rows)
    conn.execute(
        update(articles).where(articles.c.id == bindparam("b_id")).values(
            current_revision_id=bindparam("b_rev"), source_path=bindparam("b_path"), updated_at=now),
        [{"b_id": article_id, "b_rev": revision_id, "b_path": str(p.path)}
         for (revision_id, article_id), (p, _) in zip(inserted.all(), parsed_ok)])
    returning = [current[p.slug].id for p, _ in parsed_ok if p.slug in current and current[p.slug].retracted_at is not None]
    if returning:  # the file is back; the edit waits for review as usual
        conn.execute(update(articles).where(articles.c.id.in_(returning)).values(retracted_at=None))


def ingest_stage(app, *, dry_run: bool = False, **_options) -> dict:
    report = ingest(app, dry_run=dry_run)
    for err in report.errors:
        log.error("%s%s", err.message, f" (hint: {err.hint})" if err.hint else "")
    return report.counts()
