"""The `build` stage: approved articles -> feeds, pages and images in public/.

Incremental and deterministic:

- Every output file has a *dependency hash* computed from light metadata (revision
  ids, content hashes, author names, the templates and settings that shape it),
  without loading article bodies. Only outputs whose hash changed, or whose file is
  missing, are rendered; so a rebuild with nothing changed renders nothing, and adding
  one article renders only the feeds, archives and pages it belongs in.
- A file is written only when its bytes differ, through a temporary file and a
  rename, so readers never see half a file. The temporary files of a build are
  flushed to disk with one file-system sync, then renamed (FILE-2): one sync per
  build, not one fsync per file, which was most of a full build's time. Every date in the output comes from the
  content (never "now"), so the same approved content gives the same bytes.
- Feed positions are stored (`feed_entries`): an article keeps its place in each feed,
  archive k holds positions ((k-1)*archive_size, k*archive_size], and every archive
  but the newest is sealed: never rewritten, served with a long max-age (PAGE-3).
- What was published is recorded in `build_outputs` (hash of the bytes); a WebSub
  ping is queued, in the same transaction, for every subscription feed whose bytes
  changed, after the file is in place (WS-2, WS-3).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import hashlib
import html
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlsplit

from sqlalchemy import delete, insert, select
from sqlalchemy.engine import Connection

from pipeline import files, gcpause
from pipeline.content.sanitize import SANITIZER_VERSION, clean_text, http_url
from pipeline.errors import SyndicateError
from pipeline.files import StagedWrites, write_atomic, write_temporary
from pipeline.site import feeds, pages
from pipeline.store.bulk import insert_batches
from pipeline.store.schema import articles, authors, build_outputs, feed_entries, revisions
from pipeline.timeutil import as_utc, utcnow

log = logging.getLogger(__name__)

FORMAT_VERSION = "build-1"  # bump to force every output to be rendered again
MANIFEST = ".build-manifest.json"  # read by pipeline.site.serving; dot files are never served
_build_lock = threading.Lock()
CHUNK = 500  # ids in one IN (...) list
PARALLEL_MIN_JOBS = 400  # below this, forking costs more than it saves


# --- light metadata ------------------------------------------------------------------


@dataclasses.dataclass
class Meta:
    """What planning needs about an approved article; no body."""

    article_id: int
    slug: str
    revision_id: int
    content_hash: str
    title: str
    author_slug: str
    author_name: str
    author_url: str
    published_at: dt.datetime
    updated_at: dt.datetime
    approved_at: dt.datetime
    tags: list[str]
    category: str
    summary: str
    image: str
    image_alt: str
    url: str
    canonical_url: str
    token: str  # changes whenever anything shown about the article changes

    @functools.cached_property
    def keys(self) -> tuple[str, ...]:
        return tuple(self.feed_keys())

    def feed_keys(self) -> list[str]:
        keys = ["all", *(f"tags/{t}" for t in self.tags)]
        if self.category:
            keys.append(f"categories/{self.category}")
        keys.append(f"authors/{self.author_slug}")
        return keys


def load_meta(conn: Connection, settings) -> list[Meta]:
    """Approved, unretracted articles, light: the same join and filter as
    `editorial.approved_articles` (THE query), minus the bodies.

    Only columns stored before the bodies in `revisions`: SQLite reaches a column after
    a large value by walking that row's overflow pages, so one such column (the
    reading time, which no listing shows) made this query read every body, 40-70 ms of
    a 100 ms query at 10,000 articles."""
    from pipeline.content.editorial import _approved_query
    from pipeline.content.ingest import article_url

    q = (
        _approved_query()
        .with_only_columns(
            articles.c.id,
            articles.c.slug,
            articles.c.first_approved_at,
            revisions.c.id,
            revisions.c.content_hash,
            revisions.c.title,
            revisions.c.author_slug,
            revisions.c.published_at,
            revisions.c.updated_at,
            revisions.c.tags,
            revisions.c.category,
            revisions.c.summary,
            revisions.c.image,
            revisions.c.image_alt,
            revisions.c.canonical_url,
            authors.c.name,
            authors.c.url,
            maintain_column_froms=False,
        )
        .where(articles.c.retracted_at.is_(None))
    )
    out = []
    people: dict[tuple, tuple[str, str]] = {}  # (slug, name, url) -> cleaned: 25 authors, 10,000 rows
    for (
        aid,
        slug,
        approved_at,
        rid,
        chash,
        title,
        author_slug,
        published,
        updated,
        tags,
        category,
        summary,
        image,
        image_alt,
        canonical,
        author_name,
        author_url,
    ) in conn.execute(q):
        published = as_utc(published)
        person = (author_slug, author_name, author_url)
        shown = people.get(person)
        if shown is None:
            shown = people[person] = (clean_text(author_name or author_slug) or author_slug, http_url(author_url) or "")
        author_name = author_name or author_slug
        url = article_url(settings, slug)
        # cleaned as editorial._to_approved cleans them (rows from before ingest did)
        out.append(
            Meta(
                article_id=aid,
                slug=slug,
                revision_id=rid,
                content_hash=chash,
                title=clean_text(title),
                author_slug=author_slug,
                author_name=shown[0],
                author_url=shown[1],
                published_at=published,
                updated_at=as_utc(updated) or published,
                approved_at=as_utc(approved_at) or published,
                tags=list(tags or []),
                category=category or "",
                summary=clean_text(summary),
                image=image or "",
                image_alt=clean_text(image_alt),
                url=url,
                canonical_url=canonical or url,
                token=f"{rid}:{chash}:{author_name}:{author_url or ''}",
            )
        )
    out.sort(key=lambda m: (m.published_at, m.article_id), reverse=True)  # newest first, like THE query
    return out


# --- plan ------------------------------------------------------------------------------


def _h(*parts) -> str:
    """A dependency hash: SHA-256 of the parts' repr. The parts are str, int, None,
    datetimes, dataclasses (FeedSpec) and lists, tuples and dicts of them, whose reprs
    are deterministic and unambiguous (a str's repr quotes and escapes it). A full
    build at 10,000 articles hashes 13,000 of these; json.dumps with sorted keys, per
    part, was a sixth of planning. A dict written in another order hashes differently:
    that costs one render of unchanged bytes, never a stale file."""
    return hashlib.sha256(repr(parts).encode("utf-8", "surrogatepass")).hexdigest()


def _source_hash(*modules) -> str:
    h = hashlib.sha256()
    for m in modules:
        h.update(Path(m.__file__).read_bytes())
    return h.hexdigest()


@dataclasses.dataclass
class Job:
    """One unit of rendering: a feed document (3 files) or one page or image."""

    kind: str  # feed | archive | article | listing | index | image
    paths: list[str]
    deps: str
    render: Callable[[RenderContext], dict[str, bytes]]
    needs: tuple[int, ...] = ()  # article ids whose full text the render needs
    immutable: bool = False
    topics: dict[str, str] = dataclasses.field(default_factory=dict)  # path -> topic URL (subscription feeds)


@dataclasses.dataclass
class RenderContext:
    articles: dict[int, object]  # article_id -> ApprovedArticle
    entries: feeds.EntryCache  # each article's feed entries, made once per build


@dataclasses.dataclass
class BuildReport:
    written: list[str] = dataclasses.field(default_factory=list)
    unchanged: int = 0
    rendered: int = 0
    removed: list[str] = dataclasses.field(default_factory=list)
    changed_topics: list[str] = dataclasses.field(default_factory=list)
    pings: int = 0
    errors: list[str] = dataclasses.field(default_factory=list)
    articles: int = 0
    dry_run: bool = False
    seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        return {
            "articles": self.articles,
            "written": len(self.written),
            "unchanged": self.unchanged,
            "removed": len(self.removed),
            "feeds changed": len(self.changed_topics),
            "pings queued": self.pings,
            "failed": len(self.errors),
        }


def salts(settings, hubs: list[str], fingerprint: str | None = None) -> tuple[str, str]:
    """What shapes every feed / every page besides the articles: code, templates
    (`fingerprint`, pages.template_fingerprint, read when not given), settings."""
    site = settings.site.as_dict()
    feed_salt = _h(FORMAT_VERSION, SANITIZER_VERSION, _source_hash(feeds), site, settings.feeds.as_dict(), hubs)
    page_salt = _h(
        FORMAT_VERSION,
        SANITIZER_VERSION,
        _source_hash(pages),
        site,
        settings.feeds.as_dict(),
        pages.template_fingerprint(settings) if fingerprint is None else fingerprint,
        settings.subscribers.as_dict(),
    )
    return feed_salt, page_salt


STATE_PATH = ".state"  # the build_outputs row holding state_digest() of the last complete build


def state_digest(conn: Connection, settings, hubs: list[str]) -> tuple[str, int]:
    """A digest of everything a build reads, from a few integer columns: the approved
    revision of every live article, every author file, the images, and the salts. When
    it equals the last complete build's and every output is still there, the build has
    nothing to do and loads no article at all."""
    h = hashlib.sha256()
    h.update("\n".join(salts(settings, hubs)).encode())
    q = (
        select(articles.c.id, articles.c.approved_revision_id)
        .where(articles.c.approved_revision_id.is_not(None), articles.c.retracted_at.is_(None))
        .order_by(articles.c.id)
    )
    live = [tuple(r) for r in conn.execute(q)]
    h.update(json.dumps(live).encode())
    h.update(
        json.dumps(
            [tuple(r) for r in conn.execute(select(authors.c.slug, authors.c.content_hash).order_by(authors.c.slug))]
        ).encode()
    )
    # The images the last build published: a file replaced (or swapped for a symlink)
    # changes the digest; images newly referenced come with a new approved revision.
    content = settings.path("paths.content")
    for (rel,) in conn.execute(
        select(build_outputs.c.path).where(build_outputs.c.kind == "image").order_by(build_outputs.c.path)
    ):
        try:
            lst, st = os.lstat(content / rel), os.stat(content / rel)
            h.update(f"{rel}\0{lst.st_mode}\0{st.st_ino}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{rel}\0gone\n".encode())
    return h.hexdigest(), len(live)


def _up_to_date(conn: Connection, public: Path, digest: str) -> int | None:
    """How many outputs there are, when the last complete build had this digest and
    every output file is still in place; else None."""
    state = conn.execute(select(build_outputs.c.deps).where(build_outputs.c.path == STATE_PATH)).scalar()
    if state != digest or not (public / MANIFEST).exists():
        return None  # something changed: the build reads every output row once, in _stored
    rows = conn.execute(
        select(build_outputs.c.path, build_outputs.c.size).where(build_outputs.c.path != STATE_PATH)
    ).all()
    root = os.fspath(public)
    for r in rows:
        try:
            if os.stat(os.path.join(root, r.path)).st_size != r.size:
                return None
        except FileNotFoundError:
            return None
    return len(rows)


class Planner:
    def __init__(self, settings, metas: list[Meta], positions: dict[str, dict[int, int]], hubs: list[str]):
        self.settings = settings
        self.metas = metas
        self.by_id = {m.article_id: m for m in metas}
        self.positions = positions  # feed key -> {article_id: seq}
        self.hubs = hubs
        fs = settings.feeds
        self.max_entries = max(1, fs.max_entries)
        self.archive_size = max(1, fs.archive_size)
        self.fingerprint = pages.template_fingerprint(settings)  # the templates every page is rendered with
        self.feed_salt, self.page_salt = salts(settings, hubs, self.fingerprint)
        self.labels = self._labels()
        self.key_members: dict[str, set[int]] = {}
        for m in metas:
            for key in m.keys:
                self.key_members.setdefault(key, set()).add(m.article_id)

    def _labels(self) -> dict[str, str]:
        labels = {}
        for m in reversed(self.metas):  # newest wins
            labels[f"authors/{m.author_slug}"] = m.author_name
        return labels

    def label(self, key: str) -> str:
        return self.labels.get(key) or key.partition("/")[2]

    def members(self, key: str) -> list[tuple[int, Meta]]:
        """(seq, meta) of the articles now in feed `key`, newest position first."""
        seqs = self.positions.get(key, {})
        out = [(seqs[aid], self.by_id[aid]) for aid in self.key_members.get(key, ()) if aid in seqs]
        out.sort(key=lambda p: p[0], reverse=True)
        return out

    # -- feeds
    def paging(self, key: str) -> tuple[int, dict[int | None, list[Meta]]]:
        """How feed `key` is cut into documents: (the number of archive pages, page ->
        its articles, newest position first; None is the subscription document). Archive
        k holds positions ((k-1)*archive_size, k*archive_size]; the subscription document
        the max_entries newest. The listing pages are cut the same way."""
        total = max(self.positions.get(key, {}).values(), default=0)
        archived_upto = max(0, total - self.max_entries)
        pages_count = -(-archived_upto // self.archive_size)
        # members are newest position first: cut them into documents in one pass
        by_page: dict[int | None, list[Meta]] = {None: []}
        for seq, m in self.members(key):
            page = None if seq > archived_upto else (seq - 1) // self.archive_size + 1
            by_page.setdefault(page, []).append(m)
        return pages_count, by_page

    def feed_jobs(self, key: str) -> list[Job]:
        settings = self.settings
        spec = feeds.make_spec(settings, key, self.label(key))
        pages_count, by_page = self.paging(key)
        overall = max((m.updated_at for ms in by_page.values() for m in ms), default=feeds.EPOCH)  # UTC already
        jobs = []

        def doc_job(page: int | None, entries: list[Meta]) -> Job:
            doc = feeds.FeedDocument(
                spec, page, pages_count, entries, max((m.updated_at for m in entries), default=overall)
            )
            hubs = self.hubs
            deps = _h(
                self.feed_salt,
                key,
                spec,
                page,
                doc.prev_page,
                doc.next_page,
                doc.complete,
                doc.updated,
                [m.token for m in entries],
            )
            paths = {fmt: feeds.doc_path(key, fmt, page) for fmt in feeds.FORMATS}
            ids = tuple(m.article_id for m in entries)

            def render(ctx: RenderContext, doc=doc, ids=ids, paths=paths) -> dict[str, bytes]:
                doc.entries = [ctx.articles[i] for i in ids]
                out = feeds.render_document(settings, doc, hubs, ctx.entries)
                return {paths[fmt]: data for fmt, data in out.items()}

            topics = (
                {} if page is not None else {paths[fmt]: feeds.doc_url(settings, key, fmt) for fmt in feeds.FORMATS}
            )
            return Job(
                "archive" if page else "feed",
                list(paths.values()),
                deps,
                render,
                ids,
                immutable=page is not None and page < pages_count,
                topics=topics,
            )

        jobs.append(doc_job(None, by_page[None]))
        for page in range(1, pages_count + 1):
            jobs.append(doc_job(page, by_page.get(page, [])))
        return jobs

    # -- pages
    def article_job(self, m: Meta) -> Job:
        settings = self.settings
        path = pages.article_path(m.slug)
        deps = _h(self.page_salt, "article", m.token)

        def render(ctx: RenderContext) -> dict[str, bytes]:
            return {path: pages.render_article(settings, ctx.articles[m.article_id])}

        return Job("article", [path], deps, render, (m.article_id,))

    def listing_jobs(self, key: str) -> list[Job]:
        """The HTML pages of feed `key`: one per document of the feed, with the same
        articles (`paging`), newest publication first on each page. So a page is as
        long as a feed document, not as the whole tag (at 10,000 articles a category
        page was 630 KB), a new article changes the newest page and the newest archive
        page only, and every older page is sealed like its feed archive (immutable)."""
        settings = self.settings
        spec = feeds.make_spec(settings, key, self.label(key))
        pages_count, by_page = self.paging(key)
        jobs = []
        for page in [None, *range(1, pages_count + 1)]:
            entries = sorted(by_page.get(page, []), key=lambda m: (m.published_at, m.article_id), reverse=True)
            # Newer: none from the newest page; from archive k, k+1, or the newest page
            # from the last archive. Older: the last archive from the newest page; from
            # archive k, k-1; none from archive 1.
            newer_url = None
            if page is not None:
                newer_url = pages.listing_url(settings, key, page + 1 if page < pages_count else None)
            older = pages_count if page is None else page - 1
            older_url = pages.listing_url(settings, key, older) if older else None
            path = pages.listing_path(key, page)
            deps = _h(self.page_salt, "listing", key, spec, page, newer_url, older_url, [m.token for m in entries])

            def render(ctx: RenderContext, path=path, page=page, entries=entries, newer=newer_url, older=older_url):
                return {path: pages.render_listing(settings, spec, entries, page=page, newer=newer, older=older)}

            jobs.append(Job("listing", [path], deps, render, immutable=page is not None and page < pages_count))
        return jobs

    def index_job(self, topics: list[tuple[str, str, int]], form: dict) -> Job:
        settings = self.settings
        latest = self.metas[: max(1, settings.feeds.listing_size)]
        # More articles than the home page shows: it links the listing of all of them.
        everything = pages.listing_url(settings, "all") if len(self.metas) > len(latest) else None
        deps = _h(self.page_salt, "index", [m.token for m in latest], topics, form, everything)

        def render(ctx: RenderContext) -> dict[str, bytes]:
            return {
                "index.html": pages.render_index(settings, latest, topics, form, everything),
                pages.FEEDS_INDEX: pages.render_feeds_index(settings, topics),
            }

        return Job("index", ["index.html", pages.FEEDS_INDEX], deps, render)


_IMG_SRC = re.compile(r'<img\b[^>]*?\ssrc="([^"]*)"', re.I)
_FETCHED_MEDIA = re.compile(r"media/[0-9a-f]{64}\.[a-z]+")  # stored by ingest (content.sources.media)


def referenced_images(conn: Connection, settings, metas: list[Meta]) -> dict[str, list[str]]:
    """The local images approved revisions reference -> the slugs that reference them:
    each article's `image` and every `<img>` of its body that points at our site
    (ingest made those absolute, base_url + the file's path under content/). Only
    bodies that contain such an image are read."""
    base = feeds.site_base(settings) + "/"
    refs: dict[str, list[str]] = {}

    def add(url: str, slug: str) -> None:
        if url.startswith(base):
            rel = unquote(urlsplit(url[len(base) :]).path)
            if rel and not _FETCHED_MEDIA.fullmatch(rel):  # fetched media live in public/media/ already
                refs.setdefault(rel, [])
                if slug not in refs[rel]:
                    refs[rel].append(slug)

    for m in metas:
        if m.image:
            add(m.image, m.slug)
    live = {m.article_id for m in metas}
    q = (
        select(articles.c.id, articles.c.slug, revisions.c.body_html)
        .select_from(articles.join(revisions, revisions.c.id == articles.c.approved_revision_id))
        .where(
            articles.c.retracted_at.is_(None),
            revisions.c.body_html.contains(f'src="{html.escape(base)}', autoescape=True),
        )
    )
    for article_id, slug, body in conn.execute(q):
        if article_id in live:
            for src in _IMG_SRC.findall(body):
                add(html.unescape(src), slug)
    return refs


def _image_jobs(settings, refs: dict[str, list[str]], errors: list[str]) -> list[Job]:
    """Every image an approved revision references is copied to the same path under
    public/ (an image URL is base_url + its path under content/); nothing else in
    content/ is published (issue 19 item 5). A path that is missing, is not a file, or
    resolves outside the content folder (`..`, or a symlink to var/secret_key) is an
    error naming the articles, and is not published."""
    from pipeline.content.ingest import content_file

    content = settings.path("paths.content")
    jobs = []
    for rel in sorted(refs):
        real = content_file(content, rel) if ".." not in rel.split("/") else None
        if real is None:
            errors.append(
                f"{rel}: image of {', '.join(refs[rel])} is missing, not a file, or resolves "
                f"outside {content}; not published"
            )
            continue
        st = real.stat()

        def render(ctx: RenderContext, rel=rel) -> dict[str, bytes]:
            real = content_file(content, rel)  # again: the file may have changed since planning
            if real is None:
                raise SyndicateError(f"{rel} resolves outside {content} or is gone")
            return {rel: real.read_bytes()}

        jobs.append(Job("image", [rel], _h("image", str(real), st.st_size, st.st_mtime_ns), render))
    return jobs


# --- state -------------------------------------------------------------------------------


def _positions(conn: Connection) -> dict[str, dict[int, int]]:
    out: dict[str, dict[int, int]] = {}
    for key, aid, seq in conn.execute(select(feed_entries.c.feed_key, feed_entries.c.article_id, feed_entries.c.seq)):
        out.setdefault(key, {})[aid] = seq
    return out


def _assign_positions(conn: Connection, metas: list[Meta], positions: dict[str, dict[int, int]], now) -> int:
    """Give every (feed, article) pair without a position the next one, in the order
    articles became public; returns how many were added."""
    rows = []
    last = {key: max(seqs.values(), default=0) for key, seqs in positions.items()}
    for m in sorted(metas, key=lambda m: (m.approved_at, m.published_at, m.article_id)):
        for key in m.keys:
            seqs = positions.setdefault(key, {})
            if m.article_id not in seqs:
                seq = last[key] = last.get(key, 0) + 1
                seqs[m.article_id] = seq
                rows.append({"feed_key": key, "article_id": m.article_id, "seq": seq, "created_at": now})
    insert_batches(conn, feed_entries, rows)
    return len(rows)


def _stored(conn: Connection) -> dict[str, tuple]:
    q = select(build_outputs.c.path, build_outputs.c.deps, build_outputs.c.sha256, build_outputs.c.size)
    return {r.path: r for r in conn.execute(q)}


def _write_atomic(path: Path, data: bytes) -> None:
    """A reader sees the old bytes or the new ones, never half a file (pipeline.files)."""
    write_atomic(path, data)


def _same_bytes(path: Path, data: bytes) -> bool:
    try:
        if path.stat().st_size != len(data):
            return False
        return path.read_bytes() == data
    except FileNotFoundError:
        return False


def _load_articles(conn: Connection, settings, ids: set[int], total: int) -> dict[int, object]:
    from pipeline.content.editorial import approved_articles

    if not ids:
        return {}
    slugs_by_id = (
        {r.id: r.slug for r in conn.execute(select(articles.c.id, articles.c.slug).where(articles.c.id.in_(list(ids))))}
        if len(ids) <= CHUNK
        else None
    )
    if slugs_by_id is None or len(ids) * 2 > total:
        found = approved_articles(conn, settings)
    else:
        found = approved_articles(conn, settings, slugs=list(slugs_by_id.values()))
    return {a.article_id: a for a in found}


@contextlib.contextmanager
def build_lock(settings):
    """One build at a time: in this process (threads, finding 0.3 / SCHED-3) and on
    this machine (a file lock in var/)."""
    with _build_lock:
        var = settings.path("paths.var")
        var.mkdir(parents=True, exist_ok=True)
        with open(var / "build.lock", "a+") as fh:
            try:
                import fcntl

                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            except ImportError:  # pragma: no cover - not POSIX
                pass
            yield


# --- the build ----------------------------------------------------------------------------


def build(
    app, *, dry_run: bool = False, force: bool = False, progress: Callable[[str], None] | None = None
) -> BuildReport:
    """Bring public/ up to date with the approved articles. See the module docstring.

    `force` renders every output again (files whose bytes are unchanged are still not
    rewritten). `dry_run` renders what changed and reports it; it writes no file, no
    database row and queues no ping.
    """
    from pipeline.site import websub

    settings = app.settings
    public = settings.path("paths.public")
    report = BuildReport(dry_run=dry_run)
    started = time.monotonic()
    with build_lock(settings), app.engine.connect() as conn, contextlib.ExitStack() as stack:
        trans = conn.begin()
        try:
            now = utcnow()
            hubs = feeds.hub_urls(settings)
            digest, report.articles = state_digest(conn, settings, hubs)
            if not force:
                outputs = _up_to_date(conn, public, digest)
                if outputs is not None:  # nothing changed since the last complete build
                    report.unchanged = outputs
                    trans.rollback()
                    report.seconds = time.monotonic() - started
                    return report
            with gcpause.paused():  # the plan: ~100,000 objects that live until the build ends
                metas = load_meta(conn, settings)
                report.articles = len(metas)
                positions = _positions(conn)
                _assign_positions(conn, metas, positions, now)
                planner = Planner(settings, metas, positions, hubs)
                jobs: list[Job] = []
                keys = sorted(set(positions) | {"all"})
                for key in keys:
                    jobs.extend(planner.feed_jobs(key))
                for m in metas:
                    jobs.append(planner.article_job(m))
                for key in keys:
                    jobs.extend(planner.listing_jobs(key))
                jobs.append(planner.index_job(pages.topic_list(settings, metas), pages.subscribe_form(settings, metas)))
                jobs.extend(_image_jobs(settings, referenced_images(conn, settings, metas), report.errors))
                for error in report.errors:  # a bad item is recorded and skipped
                    log.error("build: %s", error)

                stored = _stored(conn)
                public_root = os.fspath(public)
                todo = []
                for job in jobs:
                    if force or any(_stale(public_root, stored.get(p), job.deps) for p in job.paths):
                        todo.append(job)
                    else:
                        report.unchanged += len(job.paths)
                needed = {i for job in todo for i in job.needs}
                log.debug("build: planned %d of %d outputs in %.2fs", len(todo), len(jobs), time.monotonic() - started)
                ctx = RenderContext(_load_articles(conn, settings, needed, len(metas)), feeds.EntryCache(settings))
            stack.enter_context(gcpause.frozen())  # ... and are never garbage: no collection walks them
            loaded = time.monotonic()
            log.debug("build: %d articles read in %.2fs", len(ctx.articles), loaded - started)
            if progress:
                progress(f"{len(todo)} of {len(jobs)} outputs to render")

            changed_rows, pings = [], []
            stack.enter_context(pages.pinned(settings, planner.fingerprint))
            staged = stack.enter_context(StagedWrites(public))
            public_dir = os.fspath(public)
            for job, results, error in _render_all(todo, ctx, public, dry_run, settings):
                if error:  # a bad item is recorded and skipped
                    log.error("build: could not render %s", error)
                    report.errors.append(error)
                    continue
                report.rendered += 1
                for path, sha, size, tmp in results:
                    old = stored.get(path)
                    written = tmp is not None
                    if written:
                        report.written.append(path)
                        if tmp:  # "" in a dry run: nothing was staged
                            staged.adopt(tmp, os.path.join(public_dir, path))
                    else:
                        report.unchanged += 1
                    if path in job.topics and (old is None or old.sha256 != sha):
                        report.changed_topics.append(job.topics[path])
                        pings.extend((hub, job.topics[path], sha) for hub in hubs)
                    changed_rows.append(
                        {
                            "path": path,
                            "kind": job.kind,
                            "deps": job.deps,
                            "sha256": sha,
                            "size": size,
                            "immutable": job.immutable,
                            "updated_at": now,
                        }
                    )

            rendered = time.monotonic()
            log.debug("build: rendered in %.2fs", rendered - loaded)
            staged.publish()  # FILE-2: one sync, then every rename, before the commit (WS-3)
            published = time.monotonic()
            log.debug("build: %d files synced and renamed in %.2fs", len(report.written), published - rendered)
            planned = {p for job in jobs for p in job.paths} | {STATE_PATH}
            for path in sorted(set(stored) - planned):
                if not dry_run:
                    _remove(public, path)
                report.removed.append(path)

            if not dry_run:
                paths = [r["path"] for r in changed_rows] + report.removed
                for i in range(0, len(paths), CHUNK):
                    conn.execute(delete(build_outputs).where(build_outputs.c.path.in_(paths[i : i + CHUNK])))
                insert_batches(conn, build_outputs, changed_rows)
                # WS-3: the files are in place before the pings can be claimed (same commit).
                report.pings = websub.queue_pings(conn, pings)
                conn.execute(delete(build_outputs).where(build_outputs.c.path == STATE_PATH))
                if not report.errors:  # a failed output is tried again next time
                    conn.execute(
                        insert(build_outputs).values(
                            path=STATE_PATH,
                            kind="state",
                            deps=digest,
                            sha256="",
                            size=0,
                            immutable=False,
                            updated_at=now,
                        )
                    )
                _write_manifest(public, conn)
                recorded = time.monotonic()
                trans.commit()
                log.debug(
                    "build: %d outputs recorded in %.2fs, committed in %.2fs",
                    len(changed_rows),
                    recorded - published,
                    time.monotonic() - recorded,
                )
            else:
                trans.rollback()
        except BaseException:
            if trans.is_active:
                trans.rollback()
            raise
    report.seconds = time.monotonic() - started
    return report


def _render_one(job: Job, ctx: RenderContext, public: Path, dry_run: bool):
    """Render one job and stage its files whose bytes changed (FILE-2: the caller
    publishes them all with one sync). -> ([(path, sha256, size, staged)], error
    message or ""); staged is the temporary file's path, "" in a dry run, None when
    the bytes on disk are already these.

    sha256 is that of the bytes for a subscription document (a WebSub topic: a changed
    hash is what queues a ping), "" for every other file: nothing compares those, and
    hashing them was 1.3 GB, about 0.9 s of CPU, in a full build at 10,000 articles."""
    try:
        rendered = job.render(ctx)
    except Exception as exc:
        log.debug("render failure", exc_info=True)
        return [], f"{job.paths[0]}: {type(exc).__name__}: {exc}"
    results = []
    for path, data in rendered.items():
        target = public / path
        tmp = None
        if not _same_bytes(target, data):
            tmp = "" if dry_run else write_temporary(target, data)
        sha = hashlib.sha256(data).hexdigest() if path in job.topics else ""
        results.append((path, sha, len(data), tmp))
    return results, ""


_parallel: tuple | None = None  # what forked workers inherit: (todo, ctx, public, dry_run)


def _render_chunk(indices: list[int]):
    todo, ctx, public, dry_run = _parallel
    return [(i, *_render_one(todo[i], ctx, public, dry_run)) for i in indices]


def _entries_chunk(ids: list[int]):
    """In a worker: the feed entries of these articles, as bytes for the parent's cache."""
    _todo, ctx, _public, _dry_run = _parallel
    out = []
    for i in ids:
        try:
            out.append(ctx.entries.export(ctx.articles[i]))
        except Exception:  # the feed documents that need it fail, named, in the second round
            log.debug("feed entry of article %s", i, exc_info=True)
    return out


def _processes(settings, jobs: int) -> int:
    """Worker processes for this build: feeds.build_processes, 0 = one per CPU; only
    for big builds, and only with fork from a single-threaded process (a scheduler's
    threads may hold locks a forked child would inherit): else 1."""
    wanted = settings.feeds.build_processes or (os.cpu_count() or 1)
    if wanted <= 1 or jobs < PARALLEL_MIN_JOBS or threading.active_count() > 1:
        return 1
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods():
        return 1
    return min(wanted, jobs // (PARALLEL_MIN_JOBS // 2) or 1)


def _make_folders(public: Path, todo: list[Job]) -> None:
    """Create every folder the jobs write into. The parent process does this while
    its workers render: on a busy file system a mkdir can take most of a millisecond,
    and a full build has one folder per article page (articles/<slug>/)."""
    root = os.fspath(public)
    folders = sorted({os.path.dirname(path) for job in todo for path in job.paths})
    for folder in folders:
        os.makedirs(os.path.join(root, folder), exist_ok=True)


def _interleave(items: list, parts: int) -> list[list]:
    """`items` dealt round-robin into `parts` chunks, so big and small spread evenly."""
    return [c for c in (items[k::parts] for k in range(parts)) if c]


def _render_all(todo: list[Job], ctx: RenderContext, public: Path, dry_run: bool, settings):
    """Yield (job, results, error) for every job, in order; rendered in forked worker
    processes when the build is big (the database stays in this process).

    In two rounds: first every job but the feed documents, while the same workers
    make the feed entries of every article a feed document needs (each article's
    entries made once, in one worker, and handed back as bytes); then the feed
    documents, forked with those entries in the cache, so they only splice. One
    round would make most articles' entries once in each worker."""
    global _parallel
    n = _processes(settings, len(todo))
    if n <= 1:
        for job in todo:
            yield (job, *_render_one(job, ctx, public, dry_run))
        return
    import multiprocessing

    pages.compile_templates(settings)  # once here, not once in every forked worker
    fork = multiprocessing.get_context("fork")
    docs = {i for i, job in enumerate(todo) if job.kind in ("feed", "archive")}
    first = [i for i in range(len(todo)) if i not in docs]
    wanted = sorted({a for i in docs for a in todo[i].needs if a in ctx.articles})
    done = []
    _parallel = (todo, ctx, public, dry_run)
    try:
        parts = n * 4
        started = time.monotonic()
        with fork.Pool(n) as pool:
            pending = pool.map_async(_entries_chunk, _interleave(wanted, parts))
            rendering = pool.map_async(_render_chunk, _interleave(first, parts))
            if not dry_run:  # meanwhile, the folders the workers will write into
                _make_folders(public, todo)
            done += [r for part in rendering.get() for r in part]
            for part in pending.get():
                for exported in part:
                    ctx.entries.adopt(exported)
        log.debug(
            "build: %d pages and %d articles' entries in %.2fs", len(first), len(wanted), time.monotonic() - started
        )
        if docs:
            started = time.monotonic()
            with fork.Pool(n) as pool:
                rendering = pool.map_async(_render_chunk, _interleave(sorted(docs), parts))
                if not dry_run:  # meanwhile, push what is written to disk (the final sync waits less)
                    while not rendering.ready():
                        files.sync_filesystem(public)  # FILE-2 still syncs once more before any rename
                        rendering.wait(0.05)
                done += [r for part in rendering.get() for r in part]
            log.debug("build: %d feed documents in %.2fs", len(docs), time.monotonic() - started)
    finally:
        _parallel = None
    for i, results, error in sorted(done, key=lambda r: r[0]):
        if error and not dry_run:  # no empty folder left for an output that failed
            for path in todo[i].paths:
                _prune_folders(public, path)
        yield todo[i], results, error


def _stale(public: str, row, deps: str) -> bool:
    if row is None or row.deps != deps:
        return True
    try:
        return os.stat(os.path.join(public, row.path)).st_size != row.size
    except FileNotFoundError:
        return True


def _remove(public: Path, rel: str) -> None:
    path = public / rel
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    _prune_folders(public, rel)


def _prune_folders(public: Path, rel: str) -> None:
    """Remove the folders above `rel` that are empty, up to public/."""
    parent = (public / rel).parent
    while parent != public and parent.is_dir():
        try:
            parent.rmdir()  # only when empty
        except OSError:
            break
        parent = parent.parent


def _write_manifest(public: Path, conn: Connection) -> None:
    immutable = sorted(
        r[0] for r in conn.execute(select(build_outputs.c.path).where(build_outputs.c.immutable.is_(True)))
    )
    data = (json.dumps({"immutable": immutable}, indent=0) + "\n").encode("utf-8")
    target = public / MANIFEST
    if not _same_bytes(target, data):
        _write_atomic(target, data)


def build_stage(app, *, dry_run: bool = False, **_options) -> dict:
    """The `build` stage of `syndicate run` (render failures are logged by build())."""
    return build(app, dry_run=dry_run).counts()


__all__ = ["build", "build_stage", "BuildReport", "load_meta", "Meta", "MANIFEST", "build_lock"]
