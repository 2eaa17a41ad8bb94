"""Planning a build: the articles' light metadata, every output's dependency hash, and
the jobs that make the outputs (pipeline.site.build renders and writes them).

Every output file has a *dependency hash* computed from light metadata (revision ids,
content hashes, author names, the templates and settings that shape it), without
loading article bodies; `build` renders the jobs whose hash differs from the stored one.
The full plan (`plan_full`) computes every output's hash from every live article; the
incremental plan (pipeline.site.incremental) only those a change can touch.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import html
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlsplit

from sqlalchemy import select
from sqlalchemy.engine import Connection

from pipeline.content.sanitize import SANITIZER_VERSION, clean_text, http_url
from pipeline.errors import SyndicateError
from pipeline.site import feeds, pages
from pipeline.store.bulk import insert_batches, select_in
from pipeline.store.schema import articles, authors, build_outputs, feed_entries, revisions
from pipeline.timeutil import as_utc

FORMAT_VERSION = "build-1"  # bump to force every output to be rendered again
MANIFEST = ".build-manifest.json"  # read by pipeline.site.serving; dot files are never served


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
        return feed_keys(self.tags, self.category, self.author_slug)


def feed_keys(tags, category: str, author_slug: str) -> list[str]:
    """The feeds an article is in: the site's, its tags', its category's, its author's."""
    keys = ["all", *(f"tags/{t}" for t in tags)]
    if category:
        keys.append(f"categories/{category}")
    keys.append(f"authors/{author_slug}")
    return keys


def live_query(*columns):
    """These columns of every approved, unretracted article: the join and filter of
    `editorial.approved_articles` (THE query)."""
    from pipeline.content.editorial import _approved_query

    return (
        _approved_query()
        .with_only_columns(*columns, maintain_column_froms=False)
        .where(articles.c.retracted_at.is_(None))
    )


def load_meta(conn: Connection, settings, ids=None) -> list[Meta]:
    """Approved, unretracted articles, light: the same join and filter as
    `editorial.approved_articles` (THE query), minus the bodies. `ids`: only these
    articles (the incremental plan, pipeline.site.incremental).

    Only columns stored before the bodies in `revisions`: SQLite reaches a column after
    a large value by walking that row's overflow pages, so one such column (the
    reading time, which no listing shows) made this query read every body, 40-70 ms of
    a 100 ms query at 10,000 articles."""
    from pipeline.content.ingest import article_url

    q = live_query(
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
    )
    rows = conn.execute(q) if ids is None else select_in(conn, q, articles.c.id, ids)
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
    ) in rows:
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
                token=article_token(rid, chash, author_name, author_url),
            )
        )
    out.sort(key=lambda m: (m.published_at, m.article_id), reverse=True)  # newest first, like THE query
    return out


def article_token(revision_id: int, content_hash: str, author_name: str, author_url: str | None) -> str:
    """What an article's outputs are made from, in one string (Meta.token): its approved
    revision and the author's name and link (an author file's edit changes them)."""
    return f"{revision_id}:{content_hash}:{author_name}:{author_url or ''}"


def author_labels(metas) -> dict[str, str]:
    """Feed key "authors/<slug>" -> the author's name as shown (of the newest article)."""
    labels = {}
    for m in reversed(metas):  # newest first: the newest wins
        labels[f"authors/{m.author_slug}"] = m.author_name
    return labels


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
PLAN_PATH = ".plan"  # ... and the row holding plan_key() of that build
STATE_ROWS = (STATE_PATH, PLAN_PATH)  # kind "state": no file


def plan_key(feed_salt: str, page_salt: str, labels: dict[str, str]) -> str:
    """What shapes outputs beyond their own articles: the salts, and the authors' names
    (an author's feed is named after the author, on every document, emptied ones too)."""
    return _h("plan", feed_salt, page_salt, sorted(labels.items()))


def state_digest(conn: Connection, settings, hubs: list[str], fingerprint: str | None = None) -> tuple[str, int]:
    """A digest of everything a build reads, from a few integer columns: the approved
    revision of every live article, every author file, the images, and the salts
    (`fingerprint`: the templates', read when not given). When it equals the last
    complete build's and every output is still there, the build has nothing to do and
    loads no article at all."""
    h = hashlib.sha256()
    h.update("\n".join(salts(settings, hubs, fingerprint)).encode())
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
        select(build_outputs.c.path, build_outputs.c.size).where(build_outputs.c.path.not_in(STATE_ROWS))
    ).all()
    return len(rows) if all_in_place(public, rows) else None


def all_in_place(public: Path, rows) -> bool:
    """Whether every output file (rows of path, size) is in public/ with its size."""
    try:  # relative to the folder: no path joined and walked from / per file (15,000 at 10,000 articles)
        folder = os.open(public, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except FileNotFoundError:
        return False
    try:
        for path, size in rows:
            try:
                if os.stat(path, dir_fd=folder).st_size != size:
                    return False
            except FileNotFoundError:
                return False
    finally:
        os.close(folder)
    return True


@dataclasses.dataclass(frozen=True)
class Cut:
    """How a feed is cut into documents by position: archive k holds positions
    ((k-1)*archive_size, k*archive_size], the subscription document the max_entries
    newest."""

    max_entries: int
    archive_size: int

    @classmethod
    def of(cls, settings) -> Cut:
        return cls(max(1, settings.feeds.max_entries), max(1, settings.feeds.archive_size))

    def cut(self, total: int) -> tuple[int, int]:
        """(positions archived, archive pages) of a feed whose newest position is `total`."""
        archived_upto = max(0, total - self.max_entries)
        return archived_upto, -(-archived_upto // self.archive_size)

    def page_of(self, seq: int, archived_upto: int) -> int | None:
        """The document holding position `seq` (None: the subscription document)."""
        return None if seq > archived_upto else (seq - 1) // self.archive_size + 1

    def spans(self, pages, archived_upto: int, total: int) -> list[tuple[int, int]]:
        """The positions (lo, hi] the documents `pages` hold, adjacent ones merged."""
        ranges = sorted(
            (archived_upto, total) if page is None else ((page - 1) * self.archive_size, page * self.archive_size)
            for page in pages
        )
        merged: list[tuple[int, int]] = []
        for lo, hi in ranges:
            if merged and lo <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
            else:
                merged.append((lo, hi))
        return merged


class Planner:
    """The jobs of a build, from the articles' light metadata and their feed positions.

    The full plan gives it every live article and every feed's positions; the
    incremental plan (pipeline.site.incremental) only the feeds a change touches and
    the articles on the documents it plans, and asks for those documents by `only`."""

    def __init__(
        self,
        settings,
        metas: list[Meta],
        positions: dict[str, dict[int, int]],
        hubs: list[str],
        fingerprint: str | None = None,
        labels: dict[str, str] | None = None,
    ):
        self.settings = settings
        # When `metas` are not all the articles: the authors' names (`labels`), and feed
        # key -> the newest update of its articles (the date of an empty subscription
        # document), which the incremental plan sets when it has one.
        self.newest_update: dict[str, dt.datetime] = {}
        self.metas = metas
        self.by_id = {m.article_id: m for m in metas}
        self.positions = positions  # feed key -> {article_id: seq}
        self.hubs = hubs
        self.rule = Cut.of(settings)
        # the templates every page is rendered with
        self.fingerprint = pages.template_fingerprint(settings) if fingerprint is None else fingerprint
        self.feed_salt, self.page_salt = salts(settings, hubs, self.fingerprint)
        self.labels = self._labels() if labels is None else labels
        self._paging: dict[str, tuple[int, dict[int | None, list[Meta]]]] = {}
        self.key_members: dict[str, set[int]] = {}
        for m in metas:
            for key in m.keys:
                self.key_members.setdefault(key, set()).add(m.article_id)

    def _labels(self) -> dict[str, str]:
        return author_labels(self.metas)

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
        its articles, newest position first; None is the subscription document). The
        listing pages are cut the same way. Once per feed and build."""
        cached = self._paging.get(key)
        if cached is None:
            archived_upto, pages_count = self.rule.cut(max(self.positions.get(key, {}).values(), default=0))
            # members are newest position first: cut them into documents in one pass
            by_page: dict[int | None, list[Meta]] = {None: []}
            for seq, m in self.members(key):
                by_page.setdefault(self.rule.page_of(seq, archived_upto), []).append(m)
            cached = self._paging[key] = (pages_count, by_page)
        return cached

    def document_date(self, key: str, page: int | None, entries: list[Meta]) -> dt.datetime:
        """A document's date: its newest update. One every article left has none: the
        subscription document then takes the feed's newest update, an archive the epoch
        (its date must not hang on articles elsewhere in the feed, or every new article
        would rewrite every emptied archive, sealed ones included)."""
        if entries:
            return max(m.updated_at for m in entries)  # UTC already
        if page is not None:
            return feeds.EPOCH
        if key in self.newest_update:
            return self.newest_update[key]
        _, by_page = self.paging(key)
        return max((m.updated_at for ms in by_page.values() for m in ms), default=feeds.EPOCH)

    def documents(self, key: str) -> list[int | None]:
        """Every document of feed `key`: the subscription document, then archives 1..n."""
        return [None, *range(1, self.paging(key)[0] + 1)]

    def feed_jobs(self, key: str, only: list[int | None] | None = None) -> list[Job]:
        """The jobs of feed `key`'s documents (`only` these, when given)."""
        settings = self.settings
        spec = feeds.make_spec(settings, key, self.label(key))
        pages_count, by_page = self.paging(key)
        jobs = []

        def doc_job(page: int | None, entries: list[Meta]) -> Job:
            doc = feeds.FeedDocument(spec, page, pages_count, entries, self.document_date(key, page, entries))
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

            def render(ctx: RenderContext, doc=doc, metas=entries, paths=paths) -> dict[str, bytes]:
                # an entry taken from the last build's documents needs no article text
                doc.entries = [m if ctx.entries.has(m) else ctx.articles[m.article_id] for m in metas]
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

        for page in self.documents(key) if only is None else only:
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

    def listing_jobs(self, key: str, only: list[int | None] | None = None) -> list[Job]:
        """The HTML pages of feed `key`: one per document of the feed, with the same
        articles (`paging`), newest publication first on each page. So a page is as
        long as a feed document, not as the whole tag (at 10,000 articles a category
        page was 630 KB), a new article changes the newest page and the newest archive
        page only, and every older page is sealed like its feed archive (immutable)."""
        settings = self.settings
        spec = feeds.make_spec(settings, key, self.label(key))
        pages_count, by_page = self.paging(key)
        jobs = []
        for page in self.documents(key) if only is None else only:
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

    def index_job(self, topics: list[tuple[str, str, int]], form: dict, total: int | None = None) -> Job:
        """The home page and the feeds page. `metas` must hold the newest articles;
        `total`: how many articles there are, when `metas` are not all of them."""
        settings = self.settings
        latest = self.metas[: max(1, settings.feeds.listing_size)]
        # More articles than the home page shows: it links the listing of all of them.
        total = len(self.metas) if total is None else total
        everything = pages.listing_url(settings, "all") if total > len(latest) else None
        deps = _h(self.page_salt, "index", [m.token for m in latest], topics, form, everything)

        def render(ctx: RenderContext) -> dict[str, bytes]:
            return {
                "index.html": pages.render_index(settings, latest, topics, form, everything),
                pages.FEEDS_INDEX: pages.render_feeds_index(settings, topics),
            }

        return Job("index", ["index.html", pages.FEEDS_INDEX], deps, render)


_IMG_SRC = re.compile(r'<img\b[^>]*?\ssrc="([^"]*)"', re.I)
_FETCHED_MEDIA = re.compile(r"media/[0-9a-f]{64}\.[a-z]+")  # stored by ingest (content.sources.media)


def referenced_images(conn: Connection, settings, metas: list[Meta], bodies_of=None) -> dict[str, list[str]]:
    """The local images approved revisions reference -> the slugs that reference them:
    each article's `image` and every `<img>` of its body that points at our site
    (ingest made those absolute, base_url + the file's path under content/). Only
    bodies that contain such an image are read; `bodies_of`: only those of these
    article ids (reading every body to find them is 0.1 s at 10,000 articles)."""
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
    found = conn.execute(q) if bodies_of is None else select_in(conn, q, articles.c.id, bodies_of)
    for article_id, slug, body in found:
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


@dataclasses.dataclass
class Plan:
    """What a build considers: `jobs` (each rendered when its outputs are stale), the
    planner, the outputs that stay (every stored one not in `keep` is removed), how
    many live articles there are, and the bad items found while planning.

    `changed`: the incremental plan's articles that are new or changed since the last
    complete build. Every other article's feed entries are, byte for byte, those in
    the documents that build wrote (the same code, settings and token), so the build
    takes them from there instead of reading and making them again. None (the full
    plan): no article is known unchanged. `finished_at`: when that build had every
    file in place; a file changed after it is not read."""

    how: str  # "full" | "incremental"
    jobs: list[Job]
    planner: Planner
    keep: set[str]
    articles: int
    errors: list[str]
    changed: set[int] | None = None
    finished_at: dt.datetime | None = None


def plan_full(conn: Connection, settings, hubs: list[str], now, fingerprint: str | None = None) -> Plan:
    """Every output of the site, from every live article (`fingerprint`: the
    templates', read when not given)."""
    metas = load_meta(conn, settings)
    positions = _positions(conn)
    _assign_positions(conn, metas, positions, now)
    planner = Planner(settings, metas, positions, hubs, fingerprint)
    jobs: list[Job] = []
    keys = sorted(set(positions) | {"all"})
    for key in keys:
        jobs.extend(planner.feed_jobs(key))
    for m in metas:
        jobs.append(planner.article_job(m))
    for key in keys:
        jobs.extend(planner.listing_jobs(key))
    jobs.append(planner.index_job(pages.topic_list(settings, metas), pages.subscribe_form(settings, metas)))
    errors: list[str] = []
    jobs.extend(_image_jobs(settings, referenced_images(conn, settings, metas), errors))
    keep = {p for job in jobs for p in job.paths}
    return Plan("full", jobs, planner, keep, len(metas), errors)


# --- state -------------------------------------------------------------------------------


def _positions(conn: Connection) -> dict[str, dict[int, int]]:
    out: dict[str, dict[int, int]] = {}
    for key, aid, seq in conn.execute(select(feed_entries.c.feed_key, feed_entries.c.article_id, feed_entries.c.seq)):
        out.setdefault(key, {})[aid] = seq
    return out


def _assign_positions(
    conn: Connection, metas: list[Meta], positions: dict[str, dict[int, int]], now, last: dict | None = None
) -> int:
    """Give every (feed, article) pair without a position the next one, in the order
    articles became public; returns how many were added. `positions` must hold the
    articles' own positions; `last`: each feed's newest position, when `positions` do
    not hold every one."""
    rows = []
    last = {key: max(seqs.values(), default=0) for key, seqs in positions.items()} if last is None else dict(last)
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
    q = select(
        build_outputs.c.path, build_outputs.c.kind, build_outputs.c.deps, build_outputs.c.sha256, build_outputs.c.size
    )
    return {r.path: r for r in conn.execute(q)}


__all__ = ["Meta", "load_meta", "Job", "Planner", "Plan", "plan_full", "state_digest", "salts", "MANIFEST"]
