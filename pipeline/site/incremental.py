"""The incremental plan: the jobs a build needs after a few articles changed.

A full plan (`plan.plan_full`) reads the light metadata of every live article and
computes the dependency hash of every output: at 10,000 articles that is most of a
rebuild after one new article. This plan reads what it needs to find what changed, and
plans only the outputs a change can touch:

- **What changed.** Every article page's stored hash is `_h(page salt, "article",
  token)`, and the token names the approved revision and the author's name and link
  (`plan.article_token`). So one narrow query over the live articles, hashed the same
  way and compared with `build_outputs`, names every article that is new, has a new
  approved revision or a renamed author; a stored article page with no live article
  names one that left (retracted, or no longer approved).
- **The feeds they are in**, before and after: their positions (`feed_entries`) and
  the keys of their new revisions. Positions never move, and a feed's documents are cut
  by position (`Planner.paging`), so a change can touch only: the subscription document;
  the archive holding the article; and the archives from the newest one before this
  build to the newest one now (entries move from the subscription document into them,
  and the old newest archive gets a link to the next and is sealed). The listing pages
  are cut the same way. Only the positions and the metadata of the articles on those
  documents are read, and the text of the changed ones only: the build takes every
  other article's feed entries from the documents the last build wrote
  (`Plan.changed`, `build._reuse_entries`).
- **The home page** (every topic with its count), the names of the authors' feeds and
  the images are planned from the narrow query, as the full plan does from the
  metadata; the home page's newest articles come from an ORDER BY .. LIMIT, and the
  date of a subscription document every article left (the feed's newest update) from
  a query of its own. When the last build published no image, only the changed
  articles' bodies are searched for one.

Every other output keeps its stored hash: nothing it is made from changed. When that
cannot be shown cheaply, `plan_changes` answers None and the build plans in full:

- the last build did not finish, or left an error (no state rows: failed outputs are
  tried again);
- it was made with other code, templates or settings, or an author's name changed
  (`plan.plan_key`: an author's feed is named after the author on every document,
  sealed archives included);
- an output file is missing or has another size;
- many articles changed: more than 2% of them (at least 20 are always allowed, never
  more than `MAX_CHANGED`); the full plan then costs less than many small reads.

tests/test_build_incremental.py holds the two plans equal: after every build of a
random sequence of edits, a full plan finds nothing left to render or remove.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from pathlib import Path

from sqlalchemy import and_, func, or_, select
from sqlalchemy.engine import Connection

from pipeline.content.sanitize import clean_text
from pipeline.site import pages
from pipeline.site.plan import (
    PLAN_PATH,
    STATE_PATH,
    STATE_ROWS,
    Cut,
    Job,
    Plan,
    Planner,
    _assign_positions,
    _h,
    _image_jobs,
    all_in_place,
    article_token,
    author_labels,
    feed_keys,
    live_query,
    load_meta,
    plan_key,
    referenced_images,
    salts,
)
from pipeline.store.bulk import select_in
from pipeline.store.schema import articles, authors, build_outputs, feed_entries, revisions
from pipeline.timeutil import as_utc

log = logging.getLogger(__name__)

MAX_CHANGED = 200  # articles changed or gone, at most (and at most 2% of the live ones)


@dataclasses.dataclass(slots=True)
class Live:
    """What the home page, the topics and the images need of every live article."""

    article_id: int
    slug: str
    token: str
    tags: list[str]
    category: str
    author_slug: str
    author_name: str  # as shown (cleaned)
    image: str

    def feed_keys(self) -> list[str]:
        return feed_keys(self.tags, self.category, self.author_slug)


def live_articles(conn: Connection) -> list[Live]:
    """Every approved, unretracted article, in no order, with only the columns stored
    before the bodies and no date (two dates per row were half of this query's time at
    10,000 articles: `newest` and `newest_updates` ask for them)."""
    q = live_query(
        articles.c.id,
        articles.c.slug,
        revisions.c.id,
        revisions.c.content_hash,
        revisions.c.author_slug,
        revisions.c.tags,
        revisions.c.category,
        revisions.c.image,
        authors.c.name,
        authors.c.url,
    )
    shown: dict[tuple[str, str | None], str] = {}
    out = []
    for aid, slug, rid, chash, author_slug, tags, category, image, name, url in conn.execute(q):
        person = (author_slug, name)
        label = shown.get(person)
        if label is None:
            label = shown[person] = clean_text(name or author_slug) or author_slug
        token = article_token(rid, chash, name or author_slug, url)
        out.append(Live(aid, slug, token, list(tags or []), category or "", author_slug, label, image or ""))
    return out


def newest(conn: Connection, count: int) -> list[int]:
    """The ids of the `count` newest live articles, in `plan.load_meta`'s order
    (publication, then id, newest first): the home page's."""
    q = live_query(articles.c.id).order_by(revisions.c.published_at.desc(), articles.c.id.desc()).limit(count)
    return list(conn.execute(q).scalars())


def newest_updates(conn: Connection, keys: set[str]) -> dict[str, dt.datetime]:
    """Feed key -> the newest update of its live articles, for these feeds."""
    q = live_query(
        revisions.c.tags,
        revisions.c.category,
        revisions.c.author_slug,
        revisions.c.published_at,
        revisions.c.updated_at,
    )
    out: dict[str, dt.datetime] = {}
    for tags, category, author_slug, published, updated in conn.execute(q):
        when = as_utc(updated) or as_utc(published)
        for key in keys.intersection(feed_keys(tags or [], category or "", author_slug)):
            if key not in out or when > out[key]:
                out[key] = when
    return out


def plan_changes(
    conn: Connection, settings, hubs: list[str], now, stored: dict, public: Path, fingerprint: str | None = None
) -> Plan | None:
    """The incremental plan (see the module docstring), or None: plan in full.
    `fingerprint`: the templates' (pages.template_fingerprint), read when not given."""
    if fingerprint is None:
        fingerprint = pages.template_fingerprint(settings)
    feed_salt, page_salt = salts(settings, hubs, fingerprint)
    if stored.get(STATE_PATH) is None or stored.get(PLAN_PATH) is None:
        return _full("the last build did not finish")
    if not all_in_place(public, [(p, r.size) for p, r in stored.items() if p not in STATE_ROWS]):
        return _full("an output file is missing or was changed")
    live = live_articles(conn)
    labels = author_labels(live)  # in any order: all of an author's articles show the authors row's name
    if stored[PLAN_PATH].deps != plan_key(feed_salt, page_salt, labels):
        return _full("other code, templates or settings, or an author's name changed")
    live_pages = set()
    changed: set[int] = set()
    for a in live:
        path = pages.article_path(a.slug)
        live_pages.add(path)
        row = stored.get(path)
        if row is None or row.deps != _h(page_salt, "article", a.token):
            changed.add(a.article_id)
    gone_pages = [p for p, r in stored.items() if r.kind == "article" and p not in live_pages]
    if len(changed) + len(gone_pages) > min(MAX_CHANGED, max(20, len(live) // 50)):
        return _full(f"{len(changed) + len(gone_pages)} articles changed")
    gone: set[int] = set()
    if gone_pages:
        slugs = [p.removeprefix("articles/").removesuffix("/index.html") for p in gone_pages]
        gone.update(r.id for r in select_in(conn, select(articles.c.id), articles.c.slug, slugs))
        if len(gone) != len(gone_pages):
            return _full("an article that left has no row any more")

    touched = changed | gone
    metas = {m.article_id: m for m in load_meta(conn, settings, ids=touched)} if changed else {}
    keys = {"all"}
    for m in metas.values():
        keys.update(m.keys)
    # Positions: the touched articles' own and every feed's newest, then only those on
    # the documents planned (not every position of the site's feed: 10,000 rows).
    q = select(feed_entries.c.feed_key, feed_entries.c.article_id, feed_entries.c.seq)
    own = select_in(conn, q, feed_entries.c.article_id, touched)
    keys.update(key for key, _aid, _seq in own)
    ordered = sorted(keys)
    positions: dict[str, dict[int, int]] = {key: {} for key in keys}
    for key, aid, seq in own:
        positions[key][aid] = seq
    before = dict.fromkeys(ordered, 0)
    top = select(feed_entries.c.feed_key, func.max(feed_entries.c.seq)).group_by(feed_entries.c.feed_key)
    before.update((key, seq) for key, seq in select_in(conn, top, feed_entries.c.feed_key, ordered))
    _assign_positions(conn, [m for m in metas.values() if m.article_id in changed], positions, now, last=before)

    # The documents each feed's change can touch, and the articles on them.
    rule = Cut.of(settings)
    documents: dict[str, list[int | None]] = {}
    spans: list[tuple[str, int, int]] = []
    archived_upto: dict[str, int] = {}
    for key in ordered:
        seqs = positions[key]
        total = max(before[key], *seqs.values()) if seqs else before[key]
        archived, count = rule.cut(total)
        archived_upto[key] = archived
        _, count_before = rule.cut(before[key])
        docs = {None, *range(max(1, count_before), count + 1)}
        docs.update(rule.page_of(seqs[i], archived) for i in touched if i in seqs)
        documents[key] = [None, *sorted(d for d in docs if d is not None)]
        spans.extend((key, lo, hi) for lo, hi in rule.spans(docs, archived, total))
    for key, aid, seq in _positions_in(conn, spans):
        positions[key][aid] = seq
    wanted = set(newest(conn, max(1, settings.feeds.listing_size)))  # the home page's
    for key in ordered:
        archived = archived_upto[key]
        wanted.update(aid for aid, seq in positions[key].items() if rule.page_of(seq, archived) in documents[key])
    metas.update({m.article_id: m for m in load_meta(conn, settings, ids=wanted - set(metas))})
    loaded = sorted(metas.values(), key=lambda m: (m.published_at, m.article_id), reverse=True)
    # An author's feed is named after the author, whose articles may all be elsewhere.
    planner = Planner(settings, loaded, positions, hubs, fingerprint, labels=labels)
    # A subscription document every article left is dated by the feed's newest update
    # (Planner.document_date): the feeds with one get it from every live article.
    empty = {key for key in ordered if not planner.paging(key)[1].get(None)}
    if empty:
        planner.newest_update = newest_updates(conn, empty)

    jobs: list[Job] = []
    for key in ordered:
        jobs.extend(planner.feed_jobs(key, documents[key]))
    jobs.extend(planner.article_job(metas[i]) for i in sorted(changed))
    for key in ordered:
        jobs.extend(planner.listing_jobs(key, documents[key]))
    jobs.append(
        planner.index_job(pages.topic_list(settings, live), pages.subscribe_form(settings, live), total=len(live))
    )
    # The images: when the last build published none, no unchanged article's body has
    # one (it would have been published, or been an error, and an error leaves no state
    # rows), so only the changed articles' bodies are read.
    errors: list[str] = []
    published_images = any(r.kind == "image" for r in stored.values())
    refs = referenced_images(conn, settings, live, None if published_images else changed)  # type: ignore[arg-type]
    jobs.extend(_image_jobs(settings, refs, errors))

    # Everything stored stays but the pages of articles that left and the images no
    # longer referenced; the jobs' own paths stay whatever they were.
    keep = {p for p, r in stored.items() if r.kind != "image" and p not in STATE_ROWS} - set(gone_pages)
    keep.update(p for job in jobs for p in job.paths)
    log.debug(
        "build: incremental plan: %d articles changed, %d left, %d feeds, %d articles read",
        len(changed),
        len(gone),
        len(ordered),
        len(metas),
    )
    finished = conn.execute(select(build_outputs.c.updated_at).where(build_outputs.c.path == PLAN_PATH)).scalar()
    return Plan("incremental", jobs, planner, keep, len(live), errors, changed, as_utc(finished))


def _positions_in(conn: Connection, spans: list[tuple[str, int, int]], size: int = 100) -> list:
    """(feed key, article id, seq) of every position lo < seq <= hi of a span's feed;
    `size` spans per statement (each span an indexed range of uq_feed_entries_feed_key_seq)."""
    fe = feed_entries.c
    rows = []
    for i in range(0, len(spans), size):
        ranges = [and_(fe.feed_key == key, fe.seq > lo, fe.seq <= hi) for key, lo, hi in spans[i : i + size]]
        rows.extend(conn.execute(select(fe.feed_key, fe.article_id, fe.seq).where(or_(*ranges))))
    return rows


def _full(why: str) -> Plan | None:
    log.debug("build: full plan: %s", why)
    return None


__all__ = ["plan_changes", "live_articles", "newest", "newest_updates", "Live", "MAX_CHANGED"]
