"""Reading articles: front matter + Markdown -> a checked, sanitised article; ingest.

`read_article(path, ...)` turns one file into a `ParsedArticle` or raises
`ContentError` naming the file, the field and the fix. `ingest(app)` walks
`content/articles/`, stores a new revision for every changed file (pinned by the
sha256 of its bytes), leaves unchanged files alone without even parsing them, and
retracts the articles whose file was deleted. A bad file is reported and skipped;
the batch goes on.

Author HTML is untrusted: Markdown is rendered with raw HTML allowed (authors use
it), then sanitised (`pipeline.content.sanitize`): a tag set inside the W3C feed
validator's `acceptable_elements` (SAN-2, VAL-3), every URL made absolute against the
article's canonical URL (ATOM-8), only http(s)/mailto links kept (SAN-3). A relative
image in the body names a file: it is looked up next to the article (then under
content/, like the `image` field), published by the build, and a missing one is an
error naming the article. Plain text (summaries, word counts, the policy check) is
derived once from that HTML with a real parser (`sanitize.html_to_text`); the policy
rules live in `pipeline.content.policy`. Both modules' public names are re-exported
here.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import mimetypes
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, unquote, urljoin, urlsplit

import yaml
from sqlalchemy import bindparam, func, select, update
from sqlalchemy.engine import Connection

from pipeline.config import Settings
from pipeline.content import markdown_html
from pipeline.content.policy import blocking, policy_flags  # noqa: F401  (re-exported)
from pipeline.content.sanitize import (  # noqa: F401  (re-exported: the public names stay here)
    CONTROL_CHARS,
    FEED_ATTRIBUTES,
    FEED_TAGS,
    SAFE_SCHEMES,
    SANITIZER_VERSION,
    SUMMARY_CHARS,
    WORDS_PER_MINUTE,
    clean_text,
    derive_summary,
    element_text,
    html_to_text,
    http_url,
    nesting_depth,
    parse_fragment,
    sanitize_html,
    strip_control_chars,
    summary_of,
    summary_text,
    text_and_depth,
)
from pipeline.errors import ContentError
from pipeline.files import folder_names
from pipeline.store.bulk import insert_rows
from pipeline.store.schema import articles, authors, revisions
from pipeline.timeutil import parse_datetime, utcnow

log = logging.getLogger(__name__)

SLUG_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
# Long enough for any headline; short enough for a subject line, a feed reader's list
# and a search result (which show 60-80 characters) to stay readable.
TITLE_MAX_CHARS = 200
# Real articles nest a handful of levels; libxml2 stops reading text past 256 (2,047
# with huge_tree), so deeper HTML could hide words from the policy check.
MAX_NESTING = 64
FRONT_MATTER_FIELDS = {
    "title",
    "author",
    "date",
    "updated",
    "tags",
    "category",
    "summary",
    "image",
    "image_alt",
    "canonical_url",
    "status",
}

_YamlLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: ~10x faster
_markdown = markdown_html.renderer  # CommonMark + raw HTML + tables (ING-2); desk previews use it too


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
    body_text: str = ""  # the body's plain text, for the policy check (not stored)


def slugify(text: str) -> str:
    text = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return text or "untitled"


def markdown_names(folder: Path) -> list[str]:
    """The names of the `*.md` entries of `folder`, sorted (pipeline.files.folder_names:
    one scandir and a sort of strings, which every ingest pays, changed files or not);
    none when the folder does not exist. A folder that cannot be listed is an error,
    never an empty folder: glob returned no files for it, and ingest then retracted
    every article."""
    try:
        return folder_names(folder, ".md")
    except OSError as exc:
        raise ContentError(
            folder,
            f"cannot list the folder: {exc.strerror or exc}",
            hint="Check the folder's permissions (the user running syndicate must be able to read it);"
            " nothing was ingested.",
        ) from exc


def markdown_files(folder: Path) -> list[Path]:
    """`markdown_names` as paths (what `sorted(folder.glob("*.md"))` gives)."""
    return [folder / name for name in markdown_names(folder)]


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def split_front_matter(text: str, path: Path) -> tuple[dict, str]:
    if not text.startswith("---"):
        raise ContentError(
            path, "no YAML front matter", hint="Start the file with a '---' line, the fields, and another '---' line."
        )
    parts = re.split(r"^---[ \t]*$", text, maxsplit=2, flags=re.M)
    if len(parts) < 3:
        raise ContentError(
            path, "front matter is not closed", hint="Add a line with only '---' after the front matter fields."
        )
    try:
        meta = yaml.load(parts[1], Loader=_YamlLoader) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ContentError(
            path,
            f"front matter is not valid YAML{where}: {getattr(exc, 'problem', exc)}",
            hint="Check quoting: values with ':' or '#' need quotes.",
        ) from None
    if not isinstance(meta, dict):
        raise ContentError(
            path, "front matter must be 'key: value' lines", hint="See content/README.md for the fields."
        )
    return meta, parts[2]


def _read_text(path: Path, data: bytes, max_bytes: int) -> str:
    if len(data) > max_bytes:
        raise ContentError(
            path,
            f"file is {len(data):,} bytes, over the limit of {max_bytes:,}",
            hint="Shorten the article or raise [ingest] max_file_bytes.",
        )
    try:
        return data.decode("utf-8").lstrip("\ufeff")
    except UnicodeDecodeError as exc:
        raise ContentError(path, f"not UTF-8 (byte {exc.start})", hint="Save the file as UTF-8.") from None


def read_author(path: Path, max_bytes: int = 200_000) -> AuthorRecord:
    data = path.read_bytes()
    meta, body = split_front_matter(_read_text(path, data, max_bytes), path)
    name = meta.get("name")
    if not isinstance(name, str) or not clean_text(name):
        raise ContentError(path, "author has no name", field="name", hint="Add 'name: Full Name' to the front matter.")
    url = meta.get("url")
    if url not in (None, "") and http_url(url) is None:
        # Feeds carry it as Atom <uri> and JSON Feed authors[].url (issue 18 item 4).
        raise ContentError(
            path,
            f"'url' must be an absolute http(s) URL: {url!r}",
            field="url",
            hint="Use e.g. https://example.org/about/ or leave it out.",
        )
    return AuthorRecord(
        slug=path.stem,
        name=clean_text(name),
        bio=strip_control_chars(body.strip()),
        url=http_url(url) or "",
        email=clean_text(meta.get("email")),
        content_hash=content_hash(data),
    )


def _date_field(meta: dict, field: str, path: Path, required: bool) -> dt.datetime | None:
    value = meta.get(field)
    if value in (None, ""):
        if required:
            raise ContentError(path, f"'{field}' is missing", field=field, hint=f"Add '{field}: 2026-11-25T09:00:00Z'.")
        return None
    try:
        return parse_datetime(value if not isinstance(value, str) else value)
    except (ValueError, TypeError):
        raise ContentError(
            path,
            f"'{field}' is not a date: {value!r}",
            field=field,
            hint="Use ISO 8601, e.g. 2026-11-25 or 2026-11-25T09:00:00Z.",
        ) from None


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
        raise ContentError(
            path,
            f"file name {path.name!r} is not a valid slug",
            hint=f"Rename it to {slugify(slug)}.md (lower-case letters, digits and dashes).",
        )
    unknown = set(meta) - FRONT_MATTER_FIELDS
    if unknown:
        raise ContentError(
            path,
            f"unknown front matter field(s): {', '.join(sorted(map(str, unknown)))}",
            field=sorted(map(str, unknown))[0],
            hint=f"Known fields: {', '.join(sorted(FRONT_MATTER_FIELDS))}.",
        )
    title = meta.get("title")
    if not isinstance(title, (str, int, float)) or not clean_text(title):
        raise ContentError(path, "'title' is missing", field="title", hint="Add 'title: ...' to the front matter.")
    title = clean_text(title)
    if len(title) > TITLE_MAX_CHARS:
        raise ContentError(
            path,
            f"'title' is {len(title)} characters, over the limit of {TITLE_MAX_CHARS}",
            field="title",
            hint="Shorten the headline; put the rest in 'summary'.",
        )
    author = meta.get("author")
    if not isinstance(author, str) or not author.strip():
        raise ContentError(
            path, "'author' is missing", field="author", hint="Add 'author: <slug>' naming a file in content/authors/."
        )
    author = author.strip()
    if author not in known_authors:
        raise ContentError(
            path,
            f"unknown author {author!r}",
            field="author",
            hint=f"Create content/authors/{author}.md or use one of: {', '.join(sorted(known_authors)) or 'none yet'}.",
        )
    published = _date_field(meta, "date", path, required=True)
    updated = _date_field(meta, "updated", path, required=False)
    if updated is not None and updated < published:
        raise ContentError(path, "'updated' is before 'date'", field="updated", hint="Fix one of the two dates.")
    status = str(meta.get("status") or "submitted").strip().lower()
    if status not in ("draft", "submitted"):
        raise ContentError(
            path,
            f"'status' must be draft or submitted, not {status!r}",
            field="status",
            hint="Approval happens with `syndicate approve`, not in the file.",
        )
    canonical = str(meta.get("canonical_url") or "").strip()
    if canonical and http_url(canonical) is None:
        raise ContentError(
            path,
            f"'canonical_url' must be an absolute http(s) URL: {canonical!r}",
            field="canonical_url",
            hint="Use e.g. https://example.com/original-post/ or leave it out.",
        )
    site_url = article_url(settings, slug)
    body = strip_control_chars(body)
    body_html = _body_html(body, path, settings, canonical or site_url, has_original=bool(canonical))
    root = parse_fragment(body_html)  # parsed once: depth, plain text, summary
    plain, depth = text_and_depth(root)  # one walk for both
    if depth > MAX_NESTING:
        raise ContentError(
            path,
            f"the body's HTML nests more than {MAX_NESTING} levels deep",
            field="body",
            hint="Remove the nested raw HTML; Markdown never nests that deep.",
        )
    words = len(plain.split())
    summary_raw = meta.get("summary")
    if summary_raw not in (None, "") and not isinstance(summary_raw, str):
        raise ContentError(path, "'summary' must be text", field="summary", hint='Quote it: summary: "..."')
    # Titles and summaries are plain text, never HTML (SAN-5): markup is removed and
    # entities decoded once, every character of the text kept; outputs escape it again.
    summary = summary_text(summary_raw) if summary_raw else summary_of(root)
    image, image_length, image_type = _image(meta.get("image"), path, settings)
    return ParsedArticle(
        slug=slug,
        path=path,
        content_hash=content_hash(data),
        title=title,
        author_slug=author,
        published_at=published,
        updated_at=updated,
        tags=_str_list(meta, "tags", path),
        category=slugify(str(meta["category"])) if meta.get("category") else "",
        summary=summary,
        image=image,
        image_length=image_length,
        image_type=image_type,
        image_alt=clean_text(meta.get("image_alt")),
        canonical_url=canonical,
        status=status,
        body_markdown=body,
        body_html=body_html,
        reading_minutes=max(1, round(words / WORDS_PER_MINUTE)),
        word_count=words,
        body_text=plain,
    )


def content_file(content: Path, rel: str) -> Path | None:
    """The file `rel` ('/'-separated) names under the content folder, or None when it does
    not exist, is not a regular file, or resolves outside the folder (through `..` or a
    symlink: a link to var/secret_key must never be published, issue 19 item 5)."""
    if not rel or rel.startswith("/") or "\\" in rel or "\x00" in rel:
        return None
    root = content.resolve()
    try:
        real = (content / rel).resolve(strict=True)
    except (OSError, RuntimeError):  # missing, or a symlink loop
        return None
    if not real.is_relative_to(root) or not real.is_file():
        return None
    return real


def _local_rel(content: Path, candidate: Path) -> str | None:
    """`candidate` as a '/'-separated path relative to content/, or None outside it."""
    try:
        rel = Path(os.path.abspath(candidate)).relative_to(os.path.abspath(content))
    except ValueError:
        return None
    return rel.as_posix()


def _body_html(body: str, path: Path, settings: Settings, base_url: str, *, has_original: bool) -> str:
    """Markdown -> sanitised HTML, with relative images resolved to files.

    `images/x.png` in `content/articles/a.md` is content/articles/images/x.png, or else
    content/images/x.png (the same path as the `image` field); it is published at
    base_url + its path under content/. A missing one is an error naming the article,
    unless the article names its original (`canonical_url`), where it then points.
    """
    content = settings.path("paths.content")
    site = settings.site.base_url.rstrip("/") + "/"
    missing: list[str] = []

    def resolve_src(value: str) -> str | None:
        parts = urlsplit(value)
        target = unquote(parts.path)
        if not target:
            return None
        candidates = (
            [content / target.lstrip("/")] if target.startswith("/") else [path.parent / target, content / target]
        )
        for candidate in candidates:
            rel = _local_rel(content, candidate)
            if rel and content_file(content, rel) and (mimetypes.guess_type(rel)[0] or "").startswith("image/"):
                return urljoin(site, quote(rel))  # the build unquotes it back to the path
        if not has_original:
            missing.append(value)
        return None

    html = sanitize_html(_markdown.render(body), base_url, resolve_src=resolve_src)
    if missing:
        raise ContentError(
            path,
            f"image(s) not found in {content}: {', '.join(dict.fromkeys(missing))}",
            field="body",
            hint=f"Put the file next to the article or under {content}, as an image "
            "(.png, .jpg, .gif, .webp, .svg) inside that folder, or use an http(s) URL.",
        )
    return html


def _image(value, path: Path, settings: Settings) -> tuple[str, int | None, str]:
    """An image as (absolute URL, length in bytes or None, MIME type).

    A relative path names a file under content/ (copied to public/ by the build when
    an approved revision names it); its length is the file's size, so the enclosure
    is complete (RSS-9).
    """
    if not value:
        return "", None, ""
    value = str(value).strip()
    mime = mimetypes.guess_type(value)[0] or ""
    if urlsplit(value).scheme:
        if http_url(value) is None:
            raise ContentError(
                path,
                f"'image' must be a path under content/ or an http(s) URL: {value!r}",
                field="image",
                hint="e.g. image: images/picture.jpg",
            )
        return value, None, mime
    content = settings.path("paths.content")
    if value.startswith("/") or ".." in Path(value).parts:
        raise ContentError(
            path,
            f"'image' must be a path under content/ or an http(s) URL: {value!r}",
            field="image",
            hint="e.g. image: images/picture.jpg",
        )
    local = content_file(content, value)
    if local is None:
        if (content / value).is_symlink() or (content / value).exists():
            raise ContentError(
                path,
                f"image {value!r} resolves outside {content} or is not a file",
                field="image",
                hint="Copy the image into the content folder instead of linking to it.",
            )
        raise ContentError(
            path, f"image file {value!r} not found under {content}", field="image", hint="Add the file or fix the path."
        )
    if not mime.startswith("image/"):
        raise ContentError(
            path, f"'image' {value!r} is not an image type", field="image", hint="Use .jpg, .png, .gif, .webp or .svg."
        )
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
    authors_created: list[str] = dataclasses.field(default_factory=list)  # by store_source_items

    def counts(self) -> dict[str, int]:
        return {
            "new": len(self.new),
            "changed": len(self.changed),
            "unchanged": self.unchanged,
            "retracted": len(self.retracted),
            "flagged": len(self.flagged),
            "failed": len(self.errors),
        }


def _sync_authors(conn: Connection, settings: Settings, report: IngestReport, now) -> set[str]:
    folder = settings.path("paths.content") / "authors"
    existing = {r.slug: r for r in conn.execute(select(authors.c.slug, authors.c.content_hash))}
    known: set[str] = set()
    for path in markdown_files(folder):
        if path.name.lower() == "readme.md":
            continue
        try:
            rec = read_author(path)
        except ContentError as exc:
            report.errors.append(exc)
            if path.stem in existing:  # the last good version stays; their articles go on
                known.add(path.stem)
            continue
        known.add(rec.slug)
        values = dict(
            name=rec.name, bio=rec.bio, url=rec.url, email=rec.email, content_hash=rec.content_hash, updated_at=now
        )
        old = existing.get(rec.slug)
        if old is None:
            conn.execute(authors.insert().values(slug=rec.slug, **values))
        elif old.content_hash != rec.content_hash:
            conn.execute(update(authors).where(authors.c.slug == rec.slug).values(**values))
    report.authors = len(known)
    return known


# Parsing (Markdown + nh3) is CPU-bound: a large batch is parsed in worker processes
# where that pays. Measured on 2 cores (bench/feeds.py corpus, ~0.9 ms an article): forked
# workers cost little and pay from a few hundred articles (1,000: 0.9-1.1 s against
# 1.2-1.3 s serial; 10,000: 11.4 s against 12.8 s). A process with threads (the
# scheduler) must not fork; spawned workers import everything again (~0.8 s of CPU
# each) and only pay from a few thousand (1,000: 3.0 s against 1.1 s serial; 3,000 even).
PARALLEL_THRESHOLD = 200
STORE_BATCH = 250  # parsed articles stored in one batch of statements (same transaction)
SPAWN_THRESHOLD = 4000
# A file changed this close to the start of an ingest may change again within its
# timestamp's granularity (2 s on FAT, finer elsewhere) without its stamp changing:
# its stamp is not recorded, so the next ingest reads it again (git's "racy" rule).
RACY_NS = 2_000_000_000


def file_stamp(st: os.stat_result) -> str:
    """What says a file is the one read before, without reading it: its size, its
    modification and change times and its inode (an editor's save-by-rename changes
    the inode; `touch -d` or rsync can set the mtime back but not the ctime)."""
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}"


_worker_state: dict = {}


def _parse_init(settings: Settings, known_authors: set[str]) -> None:
    _worker_state["settings"] = settings
    _worker_state["authors"] = known_authors


def _parse_one(job: tuple[str, bytes]):
    """In a worker: (path, bytes) -> ("ok", ParsedArticle, flags) | ("error", path, message, hint, field).
    Errors travel as plain tuples: exceptions with extra constructor arguments do not pickle."""
    path, data = job
    settings = _worker_state["settings"]
    try:
        parsed = read_article(Path(path), settings, _worker_state["authors"], data=data)
    except ContentError as exc:
        return (
            "error",
            exc.path,
            exc.message.split(": ", 1)[-1] if exc.message.startswith(exc.path) else exc.message,
            exc.hint,
            exc.field,
        )
    return ("ok", parsed, policy_flags(settings.policy_rules, parsed))


def _parse_all(jobs: list[tuple[str, bytes]], settings: Settings, known_authors: set[str]) -> Iterator:
    """Yield each job's `_parse_one` result, in order, as soon as it is parsed: the caller
    stores a batch while the workers parse the next."""
    fork = threading.active_count() == 1
    if len(jobs) < (PARALLEL_THRESHOLD if fork else SPAWN_THRESHOLD) or (os.cpu_count() or 1) < 2:
        _parse_init(settings, known_authors)
        for job in jobs:
            yield _parse_one(job)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    workers = min(os.cpu_count() or 2, 8)
    ctx = multiprocessing.get_context("fork" if fork else "spawn")
    with ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=_parse_init, initargs=(settings, known_authors)
    ) as pool:
        yield from pool.map(_parse_one, jobs, chunksize=max(1, len(jobs) // (workers * 8)))


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
                r.slug: r
                for r in conn.execute(
                    select(
                        articles.c.id,
                        articles.c.slug,
                        articles.c.retracted_at,
                        articles.c.source_path,
                        articles.c.approved_revision_id,
                        articles.c.source_stamp,
                        revisions.c.content_hash,
                        revisions.c.number,
                    ).select_from(articles.outerjoin(revisions, revisions.c.id == articles.c.current_revision_id))
                )
            }
            seen: set[str] = set()
            jobs: list[tuple[str, bytes]] = []
            # A file is not even read when its stamp (file_stamp) and the hash of the
            # revision it holds are those recorded when it was last read: at 10,000
            # articles, reading and hashing every file was most of an ingest that finds
            # one new article. stamps: what to record with a new revision, by slug.
            settled_before = time.time_ns() - RACY_NS
            stamps: dict[str, str | None] = {}
            restamp: list[dict] = []
            # Names and path strings, not a Path per file: at 10,000 articles, making the
            # Paths cost as much as reading the files.
            prefix = os.path.join(folder, "")  # + name: os.path.join per file was 5% of a no-change ingest
            for name in markdown_names(folder):
                if name.lower() == "readme.md":
                    continue
                stem = os.path.splitext(name)[0]  # Path.stem
                path = prefix + name
                seen.add(stem)
                old = current.get(stem)
                try:
                    st = os.stat(path)
                    if (
                        old is not None
                        and old.retracted_at is None
                        and old.source_stamp is not None
                        and old.source_stamp == f"{file_stamp(st)}:{old.content_hash}"
                    ):
                        report.unchanged += 1  # the file read last time: not read again
                        continue
                    with open(path, "rb", buffering=0) as fh:
                        data = fh.readall()
                except OSError as exc:
                    report.errors.append(
                        ContentError(path, f"cannot read: {exc.strerror}", hint="Check the file's permissions.")
                    )
                    continue
                digest = content_hash(data)
                # the stat was taken before the read: a change since makes the next one differ
                stamp = f"{file_stamp(st)}:{digest}" if max(st.st_mtime_ns, st.st_ctime_ns) < settled_before else None
                if old is not None and old.source_path.startswith("desk:"):
                    report.errors.append(
                        ContentError(
                            path,
                            f"the slug {stem!r} belongs to an article written in the desk",
                            hint="Rename the file; desk articles are edited in /desk/.",
                        )
                    )
                    continue
                if old is not None and old.content_hash == digest:
                    if old.retracted_at is not None and _retracted_by_editor(conn, old.id):
                        report.unchanged += 1  # an editor took it down: the file coming back is no reason
                    elif old.retracted_at is not None:
                        _restore(conn, old, now)
                        report.restored.append(stem)
                    else:
                        report.unchanged += 1
                    if old.source_stamp != stamp:
                        restamp.append({"b_id": old.id, "b_stamp": stamp})
                    continue  # unchanged: not even parsed
                stamps[stem] = stamp
                jobs.append((path, data))
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
                if len(parsed_ok) >= STORE_BATCH:  # stored while the workers parse the rest
                    _store_revisions(conn, parsed_ok, current, now, stamps)
                    parsed_ok = []
            _store_revisions(conn, parsed_ok, current, now, stamps)
            if restamp:
                conn.execute(
                    update(articles)
                    .where(articles.c.id == bindparam("b_id"))
                    .values(source_stamp=bindparam("b_stamp")),
                    restamp,
                )
            # Other sources' articles are theirs to retract; desk articles ("desk:<id>") have no file.
            gone = [
                old.id
                for slug, old in current.items()
                if slug not in seen
                and old.retracted_at is None
                and not is_source_path(old.source_path)
                and not old.source_path.startswith("desk:")
            ]
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
        error = ContentError(
            first.path,
            first.message.split(": ", 1)[-1] + f" ({len(report.errors)} bad file(s); strict mode wrote nothing)",
            hint=first.hint,
            field=first.field,
        )
        error.errors = list(report.errors)  # every bad file, for the caller to name (ING-1)
        raise error
    return report


def _retracted_by_editor(conn: Connection, article_id: int) -> bool:
    """Whether the article's last decision is an editor's retraction (desk or CLI)."""
    from pipeline.store.schema import approvals

    last = conn.execute(
        select(approvals.c.decision)
        .where(approvals.c.article_id == article_id)
        .order_by(approvals.c.decided_at.desc(), approvals.c.id.desc())
        .limit(1)
    ).scalar()
    return last == "retracted"


def _restore(conn: Connection, old, now) -> None:
    conn.execute(update(articles).where(articles.c.id == old.id).values(retracted_at=None, updated_at=now))


def _store_revisions(
    conn: Connection,
    parsed_ok: list[tuple[ParsedArticle, list]],
    current: dict,
    now,
    stamps: dict[str, str | None] | None = None,
) -> None:
    """Store new revisions in a few batched statements (one row at a time costs ~1 ms each).
    `stamps`: each file's stamp, by slug (`ingest`); a revision from anywhere else
    records none, so the file, if there is one, is read again next time."""
    stamps = stamps or {}
    if not parsed_ok:
        return
    new_rows = [
        {"slug": p.slug, "source_path": str(p.path), "created_at": now, "updated_at": now}
        for p, _ in parsed_ok
        if p.slug not in current
    ]
    ids = {p.slug: current[p.slug].id for p, _ in parsed_ok if p.slug in current}
    # Plain bulk inserts, then the new ids read back by their unique keys: an INSERT ..
    # RETURNING in parameter order ran one statement per row on SQLite (20,000 for
    # 10,000 new articles), a tenth of a full ingest.
    if new_rows:
        insert_rows(conn, articles, new_rows)
        slugs = [r["slug"] for r in new_rows]
        ids.update(
            {
                slug: article_id
                for article_id, slug in conn.execute(
                    select(articles.c.id, articles.c.slug).where(articles.c.slug.in_(slugs))
                )
            }
        )
    changed_ids = [current[p.slug].id for p, _ in parsed_ok if p.slug in current]
    numbers: dict[int, int] = {}
    if changed_ids:
        numbers = dict(
            conn.execute(
                select(revisions.c.article_id, func.max(revisions.c.number))
                .where(revisions.c.article_id.in_(changed_ids))
                .group_by(revisions.c.article_id)
            ).all()
        )
        # Earlier revisions nobody decided on are superseded by the new one.
        conn.execute(
            update(revisions)
            .where(revisions.c.article_id.in_(changed_ids), revisions.c.state.in_(("draft", "submitted")))
            .values(state="superseded")
        )
    rows = []
    for p, flags in parsed_ok:
        article_id = ids[p.slug]
        rows.append(
            dict(
                article_id=article_id,
                number=numbers.get(article_id, 0) + 1,
                content_hash=p.content_hash,
                state="draft" if p.status == "draft" else "submitted",
                title=p.title,
                author_slug=p.author_slug,
                published_at=p.published_at,
                updated_at=p.updated_at,
                tags=p.tags,
                category=p.category,
                summary=p.summary,
                image=p.image,
                image_length=p.image_length,
                image_type=p.image_type,
                image_alt=p.image_alt,
                canonical_url=p.canonical_url,
                body_markdown=p.body_markdown,
                body_html=p.body_html,
                sanitizer_version=SANITIZER_VERSION,
                reading_minutes=p.reading_minutes,
                word_count=p.word_count,
                flags=flags,
                created_at=now,
            )
        )
    insert_rows(conn, revisions, rows)
    new_ids = {
        (article_id, number): revision_id
        for revision_id, article_id, number in conn.execute(
            select(revisions.c.id, revisions.c.article_id, revisions.c.number).where(
                revisions.c.article_id.in_([r["article_id"] for r in rows])
            )
        )
    }
    conn.execute(
        update(articles)
        .where(articles.c.id == bindparam("b_id"))
        .values(
            current_revision_id=bindparam("b_rev"),
            source_path=bindparam("b_path"),
            source_stamp=bindparam("b_stamp"),
            updated_at=now,
        ),
        [
            {
                "b_id": r["article_id"],
                "b_rev": new_ids[(r["article_id"], r["number"])],
                "b_path": str(p.path),
                "b_stamp": stamps.get(p.slug),
            }
            for r, (p, _) in zip(rows, parsed_ok)
        ],
    )
    returning = [
        current[p.slug].id for p, _ in parsed_ok if p.slug in current and current[p.slug].retracted_at is not None
    ]
    if returning:  # the file is back; the edit waits for review as usual
        conn.execute(update(articles).where(articles.c.id.in_(returning)).values(retracted_at=None))


# --- the seam for other sources (pipeline.content.sources) ---------------------------------

SOURCE_PATH_PREFIX = "source:"


def is_source_path(source_path: str) -> bool:
    """True for articles a configured source (feed, WordPress) brought, not a file."""
    return (source_path or "").startswith(SOURCE_PATH_PREFIX)


def source_path(source: str, key: str) -> str:
    """articles.source_path of item `key` of `source`: how an item finds its article again."""
    if len(key) > 700:  # source_path is 1000 characters; names are short ids
        key = "sha256:" + content_hash(key.encode("utf-8"))
    # Through Path() because ParsedArticle.path is one (it folds '//' in URL keys).
    return str(Path(f"{SOURCE_PATH_PREFIX}{source}:{key}"))


def _item_hash(item) -> str:
    """The revision's content hash: every field the source gave (not fallbacks we add)."""
    import json

    fields = dataclasses.asdict(item)
    fields.pop("status", None)
    return content_hash(json.dumps(fields, sort_keys=True, default=str, ensure_ascii=False).encode("utf-8"))


def _author_for(conn: Connection, item, known: list, report: IngestReport, source: str, now) -> str:
    """Map a source's byline to a Syndicate author by email, then URI, then name;
    create an unknown one (named in the report)."""
    email, uri, name = item.author_email.strip().lower(), item.author_uri.strip(), _as_text(item.author_name)
    for row in known:
        if (email and row.email.lower() == email) or (uri and row.url == uri):
            return row.slug
    for row in known:
        if name and row.name.lower() == name.lower():
            return row.slug
    name = name or email.split("@")[0] or f"{source} contributor"
    base = slugify(name)
    slug, n = base, 2
    taken = {row.slug for row in known}
    while slug in taken:
        slug, n = f"{base}-{n}", n + 1
    conn.execute(
        authors.insert().values(
            slug=slug, name=name, bio="", url=uri, email=email, content_hash=f"source:{source}", updated_at=now
        )
    )
    known.append(dataclasses.make_dataclass("A", ["slug", "name", "email", "url"])(slug, name, email, uri))
    report.authors_created.append(slug)
    return slug


def _as_text(value: str) -> str:
    """A source's title, summary, byline or tag, read as HTML (entities decoded, tags
    dropped), on one line. WordPress stores term and display names HTML-escaped and
    serves them so, in its REST API and inside its feeds' CDATA ("Food &amp; Drink"), as
    feeds do titles; text without markup comes back as it was."""
    if "&" not in value and "<" not in value:
        return " ".join(strip_control_chars(value).split())
    return " ".join(html_to_text(strip_control_chars(value)).split())


def _unique_slug(wanted: str, taken: set[str]) -> str:
    base = slugify(wanted)[:180].strip("-") or "untitled"
    slug, n = base, 2
    while slug in taken:
        slug, n = f"{base}-{n}", n + 1
    taken.add(slug)
    return slug


def store_source_items(
    conn: Connection, settings: Settings, source: str, items: list, *, present_keys: set[str] | None = None, now=None
) -> IngestReport:
    """Store what a source fetched (pipeline.content.sources.SourceItem), in the caller's
    transaction, with the Markdown path's guarantees: each revision pinned to a content
    hash (an unchanged item writes nothing), sanitised like a file, policy-flagged;
    items with status "retracted" (and, when `present_keys` is given, stored items not
    in it) are retracted. Returns the report; `report.new + report.changed` are slugs
    whose new revision waits in state "submitted".
    """
    from urllib.parse import urlsplit as _split

    now = now or utcnow()
    report = IngestReport()
    prefix = source_path(source, "")
    rows = conn.execute(
        select(
            articles.c.id,
            articles.c.slug,
            articles.c.retracted_at,
            articles.c.source_path,
            revisions.c.content_hash,
            revisions.c.published_at,
        )
        .select_from(articles.outerjoin(revisions, revisions.c.id == articles.c.current_revision_id))
        .where(articles.c.source_path.startswith(prefix, autoescape=True))
    ).all()
    by_path = {r.source_path: r for r in rows}
    taken = set(conn.execute(select(articles.c.slug)).scalars())
    known_authors = list(conn.execute(select(authors.c.slug, authors.c.name, authors.c.email, authors.c.url)).all())
    parsed_ok, current, retract = [], {}, []
    for item in items:
        path = source_path(source, item.key)
        old = by_path.get(path)
        if item.status == "retracted":
            if old is not None and old.retracted_at is None:
                retract.append(old)
            continue
        digest = _item_hash(item)
        if old is not None and old.content_hash == digest:
            if old.retracted_at is not None:
                _restore(conn, old, now)
                report.restored.append(old.slug)
            else:
                report.unchanged += 1
            continue
        try:
            title = _as_text(item.title)
            if not title:
                raise ContentError(
                    path, "item has no title", field="title", hint="The source must give each item a title."
                )
            slug = (
                old.slug
                if old is not None
                else _unique_slug(item.slug or _split(item.link).path.rstrip("/").rsplit("/", 1)[-1] or title, taken)
            )
            site_url = article_url(settings, slug)
            body_html = sanitize_html(item.body_html, item.base_url or item.link or site_url)
            plain = html_to_text(body_html)
            words = len(plain.split())
            summary = _as_text(item.summary) if item.summary else ""
            summary = summary or derive_summary(body_html)
            published = item.published_at or (old.published_at if old is not None else None) or now
            updated = item.updated_at if item.updated_at and item.updated_at > published else None
            author = _author_for(conn, item, known_authors, report, source, now)
            canonical = item.link if _split(item.link).scheme in ("http", "https") else ""
            parsed = ParsedArticle(
                slug=slug,
                path=Path(path),
                content_hash=digest,
                title=title,
                author_slug=author,
                published_at=published,
                updated_at=updated,
                tags=list(dict.fromkeys(slugify(_as_text(t)) for t in item.tags if t.strip())),
                category=slugify(item.category) if item.category else "",
                summary=summary,
                image=item.image,
                image_length=None,
                image_type=mimetypes.guess_type(_split(item.image).path)[0] or "" if item.image else "",
                image_alt=" ".join(strip_control_chars(item.image_alt).split()),
                canonical_url=canonical,
                status="submitted",
                body_markdown="",
                body_html=body_html,
                reading_minutes=max(1, round(words / WORDS_PER_MINUTE)),
                word_count=words,
            )
        except ContentError as exc:
            report.errors.append(exc)
            continue
        flags = policy_flags(settings.policy_rules, parsed)
        if flags:
            report.flagged.append(slug)
        parsed_ok.append((parsed, flags))
        if old is not None:
            current[slug] = old
            report.changed.append(slug)
        else:
            report.new.append(slug)
    _store_revisions(conn, parsed_ok, current, now)
    if present_keys is not None:
        stored_keys = {source_path(source, k) for k in present_keys}
        retract.extend(
            r for r in rows if r.source_path not in stored_keys and r.retracted_at is None and r not in retract
        )
    if retract:
        conn.execute(
            update(articles).where(articles.c.id.in_([r.id for r in retract])).values(retracted_at=now, updated_at=now)
        )
        report.retracted.extend(r.slug for r in retract)
    return report


def ingest_stage(app, *, dry_run: bool = False, **_options) -> dict:
    report = ingest(app, dry_run=dry_run)
    for err in report.errors:
        log.error("%s%s", err.message, f" (hint: {err.hint})" if err.hint else "")
    return report.counts()
