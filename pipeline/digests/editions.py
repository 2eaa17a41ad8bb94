"""Email digests: who gets which articles, composed once, personalised at send time.

Selection. For each confirmed, unsuppressed subscriber of a frequency: the articles
first approved after that subscriber's watermark (`subscribers.last_digest_at`, which
starts at confirmation) and up to the edition's cutoff, filtered by their topics (tags
or category; no topics = everything), newest first, capped at `[digests] max_articles`
(the rest: "and N more" with a link to the edition's web version). Nobody gets an empty
digest; the watermark moves to the cutoff in the same transaction that queues the
message, so nobody gets an article twice, and a run that was missed for two days is
covered once by the next one. `[digests] welcome_latest` K adds the latest K matching
articles to a new subscriber's first daily/weekly digest.

Editions. A daily edition is one local day (`site.timezone`, starting at
`daily_hour`), a weekly one a week starting on `weekly_day` at `weekly_hour`: key
`daily-2026-11-25` / `weekly-2026-11-23`. The first compose in a period creates the
edition and fixes its cutoff; composing again in the same period reuses the cutoff,
handles only subscribers not yet handled, and adds nothing otherwise (idempotent; the
outbox key is subscriber + edition as well). Instant subscribers get one email per newly
approved article: edition `instant-<article id>`. `syndicate run` composes every
frequency that is due: instant always (it finds nothing when nothing is new), daily and
weekly when the current period's edition is not complete yet.

Composition (speed by design, SMTP-8). Subscribers are streamed in batches of
`[digests] batch_size`, one transaction per batch. Everything recipients share is
rendered once per edition and article selection (a "part": the MIME skeleton, see
pipeline.digests.render) and stored in `digest_parts`; each subscriber gets one small
outbox row (payload: edition key + part id). At send time `build_digest_email` checks
the subscriber is still confirmed and not suppressed (BULK-4), then splices the
personal values into the stored skeleton.

Chunks (issue 9). A large edition can be composed by several processes at once, on one
machine or many (PostgreSQL): `compose(..., chunk=(i, n))` / `syndicate digest compose
--chunk i/n` handles only the subscribers whose id % n == i - 1. The partition is by
id residue, not by id range, so it does not move while the chunks run (a range split
would shift as other chunks advance watermarks and could miss someone). Every chunk
agrees on the edition and its cutoff (the first to arrive creates it; the others adopt
it), parts are created once per variant whoever renders first (each in its own short
transaction on PostgreSQL, so chunks never wait on each other's batches), the outbox
key (subscriber + edition) makes a repeated chunk harmless, and the edition is marked
complete by whichever chunk finds no due subscriber left in any chunk.
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
import hashlib
import json
import logging
import textwrap
from collections import OrderedDict
from email.utils import parseaddr
from pathlib import Path
from typing import Callable, Iterable
from zoneinfo import ZoneInfo

from markupsafe import Markup
from sqlalchemy import and_, exists, func, insert, or_, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from pipeline.digests import render
from pipeline.config import Settings
from pipeline.content.editorial import ApprovedArticle, approved_articles
from pipeline.errors import ConfigError, NotFound, SyndicateError
from pipeline.store.schema import deliveries, digest_editions, digest_parts, revisions, subscribers, suppressions
from pipeline.timeutil import utcnow

log = logging.getLogger(__name__)

FREQUENCIES = ("instant", "daily", "weekly")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
KINDS = {"instant": "instant", "daily": "digest", "weekly": "digest"}


# --- periods and editions ------------------------------------------------------------------

def _tz(settings: Settings) -> ZoneInfo:
    try:
        return ZoneInfo(settings.site.timezone or "UTC")
    except Exception:  # ZoneInfoNotFoundError, ValueError
        raise ConfigError(f"site.timezone {settings.site.timezone!r} is not an IANA timezone",
                          hint="e.g. UTC, Europe/Lisbon, America/New_York.") from None


def period(settings: Settings, frequency: str, now: dt.datetime) -> tuple[str, dt.datetime]:
    """(edition key, period start in UTC) of the daily/weekly period `now` falls in."""
    local = now.astimezone(_tz(settings))
    if frequency == "daily":
        hour = settings.digests.daily_hour
        day = (local - dt.timedelta(hours=hour)).date()
        start = dt.datetime.combine(day, dt.time(hour), tzinfo=local.tzinfo)
        return f"daily-{day.isoformat()}", start.astimezone(dt.timezone.utc)
    if frequency == "weekly":
        offset = dt.timedelta(days=WEEKDAYS.index(settings.digests.weekly_day), hours=settings.digests.weekly_hour)
        shifted = local - offset
        monday = shifted.date() - dt.timedelta(days=shifted.weekday())
        start = dt.datetime.combine(monday, dt.time(0), tzinfo=local.tzinfo) + offset
        return f"weekly-{start.date().isoformat()}", start.astimezone(dt.timezone.utc)
    raise ValueError(frequency)


def _check_frequency(frequency: str) -> str:
    if frequency not in FREQUENCIES:
        raise ConfigError(f"unknown digest frequency {frequency!r}", hint=f"Use one of: {', '.join(FREQUENCIES)}.")
    return frequency


def get_edition(conn: Connection, key: str) -> dict | None:
    row = conn.execute(select(digest_editions).where(digest_editions.c.key == key)).mappings().first()
    return dict(row) if row else None


def is_due(conn: Connection, settings: Settings, frequency: str, now: dt.datetime | None = None) -> bool:
    """Instant: always. Daily/weekly: the current period's edition is not complete."""
    if frequency == "instant":
        return True
    key, _start = period(settings, frequency, now or utcnow())
    edition = get_edition(conn, key)
    return edition is None or edition["completed_at"] is None


def edition_label(settings: Settings, frequency: str, when: dt.datetime) -> str:
    """'Daily digest, Wednesday 25 November 2026' for the period `when` falls in."""
    if frequency in ("daily", "weekly"):
        when = period(settings, frequency, when)[1]
    local = when.astimezone(_tz(settings))
    if frequency == "daily":
        return f"Daily digest, {local:%A} {local.day} {local:%B %Y}"
    if frequency == "weekly":
        return f"Weekly digest, week of {local.day} {local:%B %Y}"
    return "New article"


def web_path(key: str) -> str:
    return f"digests/{key}/"


# --- selection -----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Selection:
    article_ids: tuple[int, ...]
    more_count: int

    @property
    def variant(self) -> str:
        raw = json.dumps([list(self.article_ids), self.more_count])
        return hashlib.sha256(raw.encode("ascii")).hexdigest()


class Selector:
    """Selections for many subscribers over one candidate list, cached by what decides
    them: the topic set, how many candidates are newer than the watermark, first digest."""

    def __init__(self, candidates: list[ApprovedArticle], *, cap: int, welcome: int):
        self.candidates = candidates  # newest first (publication date)
        self.by_id = {a.article_id: a for a in candidates}
        self.approved_sorted = sorted(a.approved_at for a in candidates)
        self.keys = [frozenset(a.tags) | ({a.category} if a.category else frozenset()) for a in candidates]
        self.cap = max(1, cap)
        self.welcome = max(0, welcome)
        self._cache: dict = {}

    def select(self, topics: Iterable[str] | None, watermark: dt.datetime, *, first: bool = False) -> Selection:
        wanted = frozenset(topics or ())
        newer = len(self.approved_sorted) - bisect.bisect_right(self.approved_sorted, watermark)
        welcome = self.welcome if first else 0
        key = (wanted, newer, welcome)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._cache[key] = self._select(wanted, watermark, welcome)
        return hit

    def _select(self, wanted: frozenset, watermark: dt.datetime, welcome: int) -> Selection:
        chosen = []
        old = 0
        for a, keys in zip(self.candidates, self.keys):
            if wanted and not (wanted & keys):
                continue
            if a.approved_at > watermark:
                chosen.append(a.article_id)
            elif old < welcome:
                chosen.append(a.article_id)
                old += 1
        return Selection(tuple(chosen[:self.cap]), max(0, len(chosen) - self.cap))


# --- views for templates ------------------------------------------------------------------

def _image_sizes(conn: Connection, articles: list[ApprovedArticle]) -> dict[int, tuple]:
    ids = [a.revision_id for a in articles if a.image]
    if not ids:
        return {}
    rows = conn.execute(select(revisions.c.id, revisions.c.image_width, revisions.c.image_height)
                        .where(revisions.c.id.in_(ids)))
    return {r.id: (r.image_width, r.image_height) for r in rows}


def article_view(settings: Settings, site: render.Site, a: ApprovedArticle, size: tuple | None = None) -> dict:
    local = a.published_at.astimezone(_tz(settings))
    width, height = size or (None, None)
    return {
        "id": a.article_id, "slug": a.slug, "title": a.title, "url": a.url, "summary": a.summary,
        "summary_wrapped": textwrap.fill(a.summary, 72, initial_indent="   ", subsequent_indent="   "),
        "author_name": a.author_name, "date_label": f"{local.day} {local:%B %Y}",
        "published_at": a.published_at, "reading_minutes": a.reading_minutes, "category": a.category,
        "tags": a.tags,
        "image": render.image_view(settings, site, a.image, a.image_alt, width, height),
    }


def _preheader(titles: list[str], more: int) -> str:
    text = " · ".join(titles)
    if more:
        text += f" · and {more} more"
    return text if len(text) <= 100 else text[:99].rsplit(" ", 1)[0] + "…"


def email_body(settings: Settings, site: render.Site, body_html: str) -> Markup:
    """Sanitised article HTML made fit for email: every <img> gets alt, width and height
    (IMG-1), and images an https site cannot link safely are dropped."""
    import lxml.html

    if not body_html.strip():
        return Markup("")
    fragments = lxml.html.fragments_fromstring(body_html)
    out = []
    for frag in fragments:
        if isinstance(frag, str):
            out.append(Markup.escape(frag))
            continue
        for img in list(frag.iter("img")) + ([frag] if frag.tag == "img" else []):
            view = render.image_view(settings, site, img.get("src", ""), img.get("alt", ""),
                                     _int(img.get("width")), _int(img.get("height")))
            if view is None:
                if img is frag:
                    frag = None
                    break
                img.drop_tree()
                continue
            img.set("alt", view["alt"])
            img.set("width", str(view["width"]))
            img.set("height", str(view["height"]))
            img.set("style", f"display:block;border:0;width:{view['width']}px;height:auto;")
        if frag is not None:
            out.append(Markup(lxml.html.tostring(frag, encoding="unicode")))
    return Markup("").join(out)


def _int(value) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


# --- rendering parts -----------------------------------------------------------------------

class PartRenderer:
    """Renders and stores one part per (edition, selection), once."""

    def __init__(self, conn_settings: Settings, site: render.Site, edition: dict, articles: dict[int, ApprovedArticle],
                 sizes: dict[int, tuple], web_url: str, engine: Engine | None = None):
        self.settings = conn_settings
        # chunks running in parallel: create parts get-or-create style (on PostgreSQL in
        # their own short transaction, so no chunk waits on another's open batch)
        self.engine = engine
        self.site = site
        self.edition = edition
        self.articles = articles
        self.sizes = sizes
        self.web_url = web_url
        self.ids: dict[str, int] = {}
        self.views: dict[int, dict] = {}
        self.rendered = 0

    def view(self, article_id: int) -> dict:
        v = self.views.get(article_id)
        if v is None:
            a = self.articles[article_id]
            v = self.views[article_id] = article_view(self.settings, self.site, a, self.sizes.get(a.revision_id))
        return v

    def load_existing(self, conn: Connection) -> None:
        for r in conn.execute(select(digest_parts.c.id, digest_parts.c.variant)
                              .where(digest_parts.c.edition_id == self.edition["id"])):
            self.ids[r.variant] = r.id

    def part_id(self, conn: Connection, selection: Selection) -> int:
        variant = selection.variant
        pid = self.ids.get(variant)
        if pid is None:
            part = self.render(selection)
            values = dict(
                edition_id=self.edition["id"], variant=variant, article_ids=list(part["article_ids"]),
                more_count=part["more_count"], subject=part["rendered"].subject, headers=part["rendered"].headers,
                text_part=part["rendered"].text_part, html_part=part["rendered"].html_part,
                html_bytes=part["rendered"].html_bytes, created_at=utcnow())
            if self.engine is None:
                pid = conn.execute(insert(digest_parts).values(**values)).inserted_primary_key[0]
            elif conn.dialect.name == "postgresql":
                with self.engine.begin() as own:
                    pid = self._get_or_create(own, values)
            else:  # SQLite: one writer at a time anyway, and this connection holds the write lock
                pid = self._get_or_create(conn, values)
            self.ids[variant] = pid
            self.rendered += 1
        return pid

    @staticmethod
    def _get_or_create(conn: Connection, values: dict) -> int:
        from sqlalchemy.dialects import postgresql, sqlite

        ins = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(digest_parts)
        pid = conn.execute(ins.values(**values).on_conflict_do_nothing(
            index_elements=["edition_id", "variant"]).returning(digest_parts.c.id)).scalar()
        if pid is None:  # another chunk rendered this variant first
            pid = conn.execute(select(digest_parts.c.id).where(digest_parts.c.edition_id == values["edition_id"],
                                                               digest_parts.c.variant == values["variant"])).scalar_one()
        return pid

    def render(self, selection: Selection) -> dict:
        """Render a selection; when the HTML is over the size limit (SIZE-1), list fewer
        articles and count the rest in 'and N more'."""
        ids = list(selection.article_ids)
        more = selection.more_count
        while True:
            rendered = self._render(ids, more)
            if rendered.html_bytes + render.PERSONAL_ALLOWANCE < render.MAX_HTML_BYTES:
                return {"rendered": rendered, "article_ids": ids, "more_count": more}
            if len(ids) <= 1:
                if self.edition["frequency"] == "instant" and not getattr(self, "_summary_only", False):
                    self._summary_only = True
                    continue
                raise render.DigestTooLarge(
                    f"edition {self.edition['key']}: one article alone renders {rendered.html_bytes:,} bytes of HTML, "
                    f"over the {render.MAX_HTML_BYTES:,} bytes Gmail shows unclipped (SIZE-1)",
                    hint="Shorten the article's summary or the email templates.")
            log.info("edition %s: %d articles render %d bytes; listing one fewer", self.edition["key"],
                     len(ids), rendered.html_bytes)
            ids = ids[:-1]
            more += 1

    def _render(self, ids: list[int], more: int) -> render.RenderedPart:
        views = [self.view(i) for i in ids]
        seed = f"{self.edition['key']}|{ids}|{more}"
        frequency = self.edition["frequency"]
        footer_reason = (f"You get this email because you subscribed to the {frequency} "
                         f"{'alerts' if frequency == 'instant' else 'digest'} of {self.site.title}.")
        if frequency == "instant":
            a = self.articles[ids[0]]
            body = None if getattr(self, "_summary_only", False) else email_body(self.settings, self.site, a.body_html)
            context = {"a": views[0], "body": body, "web_url": a.url, "preheader": _preheader([a.summary], 0),
                       "footer_reason": footer_reason}
            return render.render_variant(self.settings, self.site, template="instant",
                                         subject_template="instant_subject.txt", context=context, seed=seed)
        edition = {"key": self.edition["key"], "frequency": frequency, "web_url": self.web_url,
                   "label": edition_label(self.settings, frequency, self.edition["cutoff"])}
        context = {"edition": edition, "articles": views, "more_count": more, "more_url": self.web_url,
                   "preheader": _preheader([v["title"] for v in views], more), "web_url": self.web_url,
                   "footer_reason": footer_reason}
        return render.render_variant(self.settings, self.site, template="digest",
                                     subject_template="digest_subject.txt", context=context, seed=seed)


# --- composing -----------------------------------------------------------------------------

@dataclasses.dataclass
class ComposeReport:
    frequency: str
    editions: list[str] = dataclasses.field(default_factory=list)
    subscribers: int = 0  # due subscribers looked at
    queued: int = 0  # new outbox rows
    empty: int = 0  # nothing new for them: no email
    parts_rendered: int = 0
    dry_run: bool = False

    def counts(self) -> dict[str, int]:
        return {"editions": len(self.editions), "subscribers": self.subscribers, "queued": self.queued,
                "nothing_new": self.empty, "rendered": self.parts_rendered}


def _due_subscribers(frequency: str, cutoff: dt.datetime, chunk: tuple[int, int] | None = None):
    """Confirmed subscribers of `frequency`, confirmed by the cutoff, not yet handled for
    it, and not on the suppression list (and in chunk i of n: id % n == i - 1)."""
    suppressed = exists().where(suppressions.c.email == subscribers.c.email)
    due = and_(subscribers.c.state == "confirmed", subscribers.c.frequency == frequency,
               subscribers.c.confirmed_at.is_not(None), subscribers.c.confirmed_at <= cutoff,
               or_(subscribers.c.last_digest_at.is_(None), subscribers.c.last_digest_at < cutoff),
               ~suppressed)
    if chunk is not None:
        i, n = chunk
        due = and_(due, subscribers.c.id % n == i - 1)
    return due


def _watermark(sub) -> dt.datetime:
    return sub.last_digest_at or sub.confirmed_at


def parse_chunk(text: str | None) -> tuple[int, int] | None:
    """'2/4' -> (2, 4): the second of four chunks. None/'' -> None (everyone)."""
    if not text:
        return None
    try:
        i, n = (int(x) for x in str(text).split("/"))
    except ValueError:
        raise SyndicateError(f"chunk {text!r} is not of the form I/N", hint="e.g. --chunk 1/4 ... --chunk 4/4") from None
    if n < 1 or not 1 <= i <= n:
        raise SyndicateError(f"chunk {text!r}: I must be between 1 and N", hint="e.g. --chunk 1/4 ... --chunk 4/4")
    return i, n


def compose(engine: Engine, settings: Settings, frequency: str, *, now: dt.datetime | None = None,
            dry_run: bool = False, on_plan: Callable[[str, int], None] | None = None,
            chunk: tuple[int, int] | None = None) -> ComposeReport:
    """Compose the due edition(s) of `frequency`: queue one outbox row per subscriber
    with something new. Sends nothing. `dry_run`: write nothing; `on_plan(email, n)` is
    called for everyone who would get n articles. `chunk=(i, n)`: only subscribers whose
    id % n == i - 1, so that n processes can compose one edition in parallel."""
    _check_frequency(frequency)
    if chunk is not None and chunk[1] == 1:
        chunk = None
    site = render.site_for_email(settings)  # fails loudly before anything is written
    now = now or utcnow()
    report = ComposeReport(frequency, dry_run=dry_run)
    with engine.connect() as conn:
        if frequency == "instant":
            key, cutoff, edition = None, now, None
        else:
            key, _start = period(settings, frequency, now)
            edition = get_edition(conn, key)
            cutoff = edition["cutoff"] if edition else now
        due = _due_subscribers(frequency, cutoff, chunk)
        oldest = conn.execute(select(func.min(func.coalesce(subscribers.c.last_digest_at, subscribers.c.confirmed_at)))
                              .where(due)).scalar()
    if oldest is None:
        if edition is not None and edition["completed_at"] is None and not dry_run:
            _complete(engine, edition["id"], now, chunked=chunk is not None, frequency=frequency)
        return report
    oldest = oldest if oldest.tzinfo else oldest.replace(tzinfo=dt.timezone.utc)
    welcome = settings.digests.welcome_latest if frequency != "instant" else 0
    with engine.connect() as conn:
        candidates = approved_articles(conn, settings, approved_since=oldest, approved_until=cutoff)
        if welcome:
            seen = {a.article_id for a in candidates}
            extra = [a for a in approved_articles(conn, settings, approved_until=cutoff, limit=max(200, welcome * 20))
                     if a.article_id not in seen]
            candidates = sorted(candidates + extra, key=lambda a: (a.published_at, a.article_id), reverse=True)
        candidates = _printable(candidates)
        sizes = _image_sizes(conn, candidates)
    if not candidates:
        return report
    if chunk is not None and frequency != "instant" and edition is None and not dry_run:
        # Chunks must agree on the edition and its cutoff: the first creates it, the
        # others adopt it (and start again with its cutoff when theirs differs).
        with engine.begin() as conn:
            edition = _create_edition(conn, settings, key, frequency, cutoff, candidates, now, existing_ok=True)
        if edition["cutoff"] != cutoff:
            return compose(engine, settings, frequency, now=now, dry_run=dry_run, on_plan=on_plan, chunk=chunk)
    if frequency == "instant":
        _compose_instant(engine, settings, site, candidates, sizes, cutoff, due, report, dry_run, on_plan,
                         chunked=chunk is not None)
    else:
        _compose_periodic(engine, settings, site, key, edition, candidates, sizes, cutoff, now, due, report,
                          dry_run, on_plan, chunked=chunk is not None)
    return report


def _printable(candidates: list[ApprovedArticle]) -> list[ApprovedArticle]:
    """Leave out (and report) articles whose title would break a Subject line (MSG-5)."""
    good = []
    for a in candidates:
        try:
            render.check_header_value(f"title of article {a.slug!r}", a.title)
        except render.HeaderInjection as exc:
            log.error("%s; the article is left out of digests until its title is fixed", exc.message)
            continue
        good.append(a)
    return good


def _stream(engine: Engine, due, batch_size: int, dry_run: bool):
    """Yield (conn, batch) with one transaction per batch (none for dry runs)."""
    last_id = 0
    cols = [subscribers.c.id, subscribers.c.email, subscribers.c.topics, subscribers.c.confirmed_at,
            subscribers.c.last_digest_at]
    while True:
        ctx = engine.connect() if dry_run else engine.begin()
        with ctx as conn:
            batch = conn.execute(select(*cols).where(due, subscribers.c.id > last_id)
                                 .order_by(subscribers.c.id).limit(batch_size)).all()
            if not batch:
                return
            last_id = batch[-1].id
            yield conn, batch


def _advance(conn: Connection, ids: list[int], cutoff: dt.datetime) -> None:
    """The watermark moves in the transaction that queued the messages it stands for."""
    if ids:
        conn.execute(update(subscribers).where(subscribers.c.id.in_(ids)).values(last_digest_at=cutoff))


def _compose_periodic(engine, settings, site, key, edition, candidates, sizes, cutoff, now, due, report,
                      dry_run, on_plan, chunked: bool = False):
    frequency = report.frequency
    selector = Selector(candidates, cap=settings.digests.max_articles, welcome=settings.digests.welcome_latest)
    by_id = selector.by_id
    web_url = f"{site.base_url}/{web_path(key)}"
    renderer = None
    created = False
    for conn, batch in _stream(engine, due, settings.digests.batch_size, dry_run):
        rows = []
        for sub in batch:
            report.subscribers += 1
            sel = selector.select(sub.topics, _watermark(sub), first=sub.last_digest_at is None)
            if not sel.article_ids:
                report.empty += 1
                continue
            if on_plan:
                on_plan(sub.email, len(sel.article_ids) + sel.more_count)
            if dry_run:
                report.queued += 1
                continue
            if renderer is None:
                if edition is None:
                    edition = _create_edition(conn, settings, key, frequency, cutoff, candidates, now)
                    created = True
                renderer = PartRenderer(settings, site, edition, by_id, sizes, web_url,
                                        engine=engine if chunked else None)
                renderer.load_existing(conn)
            part = renderer.part_id(conn, sel)
            rows.append(_outbox_row(sub, edition, part, KINDS[frequency]))
        if not dry_run:
            report.queued += _enqueue(conn, rows)
            _advance(conn, [s.id for s in batch], cutoff)
    if renderer is not None:
        report.parts_rendered = renderer.rendered
    if edition is not None and not dry_run:
        report.editions.append(edition["key"])
        if not _complete(engine, edition["id"], now, report.queued, chunked=chunked, frequency=frequency):
            return  # other chunks are still composing; the last one writes the web version
        try:
            write_web_version(engine, settings, edition["key"])
        except SyndicateError:
            raise
        except Exception as exc:  # the emails are queued; a page problem must not undo that
            log.warning("could not write the web version of %s: %s", edition["key"], exc)
        if created:
            log.info("edition %s: %d queued, %d parts rendered", edition["key"], report.queued, report.parts_rendered)


def _compose_instant(engine, settings, site, candidates, sizes, cutoff, due, report, dry_run, on_plan,
                     chunked: bool = False):
    selector = Selector(candidates, cap=settings.digests.max_articles, welcome=0)
    editions: dict[int, dict] = {}
    renderers: dict[int, PartRenderer] = {}
    for conn, batch in _stream(engine, due, settings.digests.batch_size, dry_run):
        rows = []
        for sub in batch:
            report.subscribers += 1
            sel = selector.select(sub.topics, _watermark(sub))
            # Instant: one email per article, oldest first; more than the cap waiting
            # (e.g. after switching from weekly) sends the newest `cap` only.
            ids = list(reversed(sel.article_ids))
            if not ids:
                report.empty += 1
                continue
            if on_plan:
                on_plan(sub.email, len(ids))
            if dry_run:
                report.queued += len(ids)
                continue
            for article_id in ids:
                if article_id not in editions:
                    a = selector.by_id[article_id]
                    key = f"instant-{article_id}"
                    edition = get_edition(conn, key)
                    if edition is None and chunked and conn.dialect.name == "postgresql":
                        # another chunk may create it at the same moment: its own short transaction
                        with engine.begin() as own:
                            edition = _create_edition(own, settings, key, "instant", cutoff, [a], cutoff,
                                                      window_start=a.approved_at, article_ids=[article_id],
                                                      existing_ok=True)
                    elif edition is None:
                        edition = _create_edition(conn, settings, key, "instant", cutoff, [a], cutoff,
                                                  window_start=a.approved_at, article_ids=[article_id],
                                                  existing_ok=chunked)
                    editions[article_id] = edition
                    renderers[article_id] = PartRenderer(settings, site, edition, selector.by_id, sizes, a.url,
                                                         engine=engine if chunked else None)
                    renderers[article_id].load_existing(conn)
                part = renderers[article_id].part_id(conn, Selection((article_id,), 0))
                rows.append(_outbox_row(sub, editions[article_id], part, "instant"))
        if not dry_run:
            report.queued += _enqueue(conn, rows)
            _advance(conn, [s.id for s in batch], cutoff)
    report.parts_rendered = sum(r.rendered for r in renderers.values())
    if not dry_run:
        for edition in editions.values():
            report.editions.append(edition["key"])
            _complete(engine, edition["id"], cutoff)


def _outbox_row(sub, edition: dict, part_id: int, kind: str) -> dict:
    return {"channel": "email", "target": sub.email, "kind": kind,
            "key": f"digest:{edition['key']}:{sub.id}",
            "payload": {"edition": edition["key"], "part": part_id},
            "subscriber_id": sub.id, "edition_id": edition["id"]}


def _enqueue(conn: Connection, rows: list[dict]) -> int:
    from pipeline.delivery import outbox

    if not rows:
        return 0
    if conn.dialect.name == "sqlite":
        return outbox.enqueue_many(conn, rows)
    # psycopg's executemany does not report a reliable rowcount: count what is there.
    keys = [r["key"] for r in rows]
    existing = conn.execute(select(func.count()).select_from(deliveries)
                            .where(deliveries.c.idempotency_key.in_(keys))).scalar_one()
    outbox.enqueue_many(conn, rows)
    return len(rows) - existing


def _create_edition(conn: Connection, settings: Settings, key: str, frequency: str, cutoff: dt.datetime,
                    candidates: list[ApprovedArticle], now: dt.datetime, window_start: dt.datetime | None = None,
                    article_ids: list[int] | None = None, existing_ok: bool = False) -> dict:
    if window_start is None:
        previous = conn.execute(select(func.max(digest_editions.c.cutoff))
                                .where(digest_editions.c.frequency == frequency, digest_editions.c.cutoff < cutoff)
                                ).scalar()
        if previous is not None:
            window_start = previous if previous.tzinfo else previous.replace(tzinfo=dt.timezone.utc)
        else:
            window_start = cutoff - dt.timedelta(days=7 if frequency == "weekly" else 1)
    in_window = article_ids if article_ids is not None else [
        a.article_id for a in candidates if window_start < a.approved_at <= cutoff]
    subject = edition_label(settings, frequency, cutoff) if frequency != "instant" else candidates[0].title
    try:
        with conn.begin_nested():
            eid = conn.execute(insert(digest_editions).values(
                key=key, frequency=frequency, window_start=window_start, cutoff=cutoff, article_ids=in_window,
                subject=subject, recipients=0, created_at=now)).inserted_primary_key[0]
    except IntegrityError:
        if existing_ok:  # another chunk created it first: use theirs
            existing = get_edition(conn, key)
            if existing is not None:
                return existing
        raise SyndicateError(f"digest edition {key} was just created by another compose",
                             hint="Run the compose again: it continues that edition and adds nothing twice.") from None
    return get_edition(conn, key) | {"id": eid}


def _complete(engine: Engine, edition_id: int, now: dt.datetime, queued: int = 0, *, chunked: bool = False,
              frequency: str | None = None) -> bool:
    """Count the recipients queued and mark the edition complete; True when it is.
    A chunk marks it complete only when no chunk has a due subscriber left (each chunk
    checks after its last commit, so the last one to finish sees everything)."""
    with engine.begin() as conn:
        conn.execute(update(digest_editions).where(digest_editions.c.id == edition_id)
                     .values(recipients=digest_editions.c.recipients + queued))
        if chunked and frequency is not None:
            cutoff = conn.execute(select(digest_editions.c.cutoff)
                                  .where(digest_editions.c.id == edition_id)).scalar_one()
            left = conn.execute(select(subscribers.c.id).where(_due_subscribers(frequency, cutoff)).limit(1)).first()
            if left is not None:
                return False
        conn.execute(update(digest_editions).where(digest_editions.c.id == edition_id)
                     .values(completed_at=func.coalesce(digest_editions.c.completed_at, now)))
    return True


# --- the stage -----------------------------------------------------------------------------

def digest_stage(app, *, dry_run: bool = False, frequency: str | None = None, now: dt.datetime | None = None,
                 chunk: str | None = None, **_options) -> dict:
    """The `digest` stage. With `frequency`: compose that one. Without: compose every
    frequency that is due (instant always; daily/weekly once per period). `chunk="i/n"`
    (schedule args): only that share of the subscribers (see `compose`)."""
    now = now or utcnow()
    if frequency:
        frequencies = [_check_frequency(frequency)]
    else:
        with app.engine.connect() as conn:
            frequencies = [f for f in FREQUENCIES if is_due(conn, app.settings, f, now)]
    counts: dict[str, int] = {}
    for f in frequencies:
        report = compose(app.engine, app.settings, f, now=now, dry_run=dry_run, chunk=parse_chunk(chunk))
        counts[f"{f}_queued"] = report.queued
        if report.editions and f != "instant":
            counts[f"{f}_editions"] = len(report.editions)
    return counts


# --- the message builder (send time) ---------------------------------------------------------

_skeletons: OrderedDict = OrderedDict()
_SKELETON_CACHE = 64


def _skeleton(conn: Connection, part_id: int) -> str:
    key = (conn.engine.url.render_as_string(hide_password=True), part_id)
    hit = _skeletons.get(key)
    if hit is None:
        row = conn.execute(select(digest_parts.c.headers, digest_parts.c.text_part, digest_parts.c.html_part)
                           .where(digest_parts.c.id == part_id)).first()
        if row is None:
            raise NotFound(f"digest part {part_id} is gone", hint="Compose the digest again.")
        hit = row.headers + "\r\n" + row.text_part + row.html_part
        _skeletons[key] = hit
        while len(_skeletons) > _SKELETON_CACHE:
            _skeletons.popitem(last=False)
    else:
        _skeletons.move_to_end(key)
    return hit


def message_id(site: render.Site, idempotency_key: str, edition_key: str) -> str:
    tag = hashlib.sha256(idempotency_key.encode("utf-8")).hexdigest()[:20]
    return f"<{edition_key}.{tag}@{site.from_domain}>"


def personal(settings: Settings, site: render.Site, sub: dict, row: dict) -> render.Personal:
    from pipeline.subscribers.links import preferences_url, unsubscribe_url

    unsub = unsubscribe_url(settings, sub["id"])
    token = unsub.rsplit("/", 1)[1]  # the same UNS-1 token names the mailto address
    return render.Personal(
        email=sub["email"], name=sub.get("name") or "",
        unsubscribe_url=unsub, preferences_url=preferences_url(settings, sub["id"]),
        message_id=message_id(site, row.get("idempotency_key") or "", (row.get("payload") or {}).get("edition", "digest")),
        unsubscribe_mailto=f"mailto:unsubscribe+{token}@{site.unsubscribe_domain}?subject=unsubscribe",
    )


def build_digest_email(conn: Connection, settings: Settings, row: dict):
    """The 'digest' and 'instant' kinds -> the message, or None when the subscriber left,
    changed address or was suppressed since composing (BULK-4: checked at send time)."""
    from pipeline.delivery.email.channel import OutgoingEmail

    # One query: the subscriber now, and whether the address is on the suppression list.
    sub = conn.execute(select(subscribers.c.id, subscribers.c.email, subscribers.c.name, subscribers.c.state,
                              suppressions.c.reason.label("suppressed"))
                       .select_from(subscribers.outerjoin(suppressions, suppressions.c.email == subscribers.c.email))
                       .where(subscribers.c.id == row.get("subscriber_id"))).mappings().first()
    if sub is None or sub["state"] != "confirmed" or sub["suppressed"] is not None \
            or sub["email"].lower() != row["target"].lower():
        return None
    site = render.site_for_email(settings)
    skeleton = _skeleton(conn, int((row.get("payload") or {})["part"]))
    data = render.personalise(skeleton, personal(settings, site, dict(sub), row))
    return OutgoingEmail(envelope_from=parseaddr(site.from_address)[1], recipients=[sub["email"]], data=data)


def _register() -> None:
    from pipeline.delivery import register_email_kind

    register_email_kind("digest", build_digest_email)
    register_email_kind("instant", build_digest_email)


_register()


# --- previews -----------------------------------------------------------------------------

@dataclasses.dataclass
class Preview:
    subject: str
    html: str
    text: str
    recipient: str
    source: str  # what the preview shows: "next digest", "last digest sent", "sample"
    articles: int


def preview(engine: Engine, settings: Settings, *, frequency: str | None = None, email: str | None = None,
            now: dt.datetime | None = None) -> Preview:
    """The exact HTML and text a subscriber would get: their next digest if one is due
    with something new, else the last one queued for them; without a subscriber, a
    sample of the frequency's next edition for everyone (all topics)."""
    site = render.site_for_email(settings)
    now = now or utcnow()
    with engine.connect() as conn:
        sub = None
        if email:
            sub = conn.execute(select(subscribers).where(subscribers.c.email == email.strip().lower())).mappings().first()
            if sub is None:
                raise NotFound(f"no subscriber {email!r}", hint="`syndicate subscribers list` shows who is on the list.")
            sub = dict(sub)
            frequency = frequency or sub["frequency"]
        if frequency is None:
            raise ConfigError("name a frequency or a subscriber", hint="e.g. --frequency weekly")
        _check_frequency(frequency)
        if sub is None:
            first = conn.execute(select(subscribers).where(_due_subscribers(frequency, now))
                                 .order_by(subscribers.c.id).limit(1)).mappings().first()
            sub = dict(first) if first else None
        if sub is not None:
            result = _preview_next(conn, settings, site, sub, frequency, now)
            if result is None:
                result = _preview_last(conn, settings, site, sub)
            if result is not None:
                return result
        return _preview_sample(conn, settings, site, frequency, now, sub)


def _fill(settings, site, sub: dict, subject: str, html: str, text: str, source: str, n: int) -> Preview:
    p = personal(settings, site, sub, {"idempotency_key": "preview", "payload": {}})
    return Preview(subject, render.fill_preview(html, p), render.fill_preview(text, p), sub["email"], source, n)


def _preview_next(conn, settings, site, sub, frequency, now) -> Preview | None:
    if sub["state"] != "confirmed" or not sub["confirmed_at"]:
        return None
    if frequency == "instant":
        key, cutoff = "instant-preview", now
    else:
        key, _start = period(settings, frequency, now)
        edition = get_edition(conn, key)
        cutoff = edition["cutoff"] if edition else now
    watermark = sub["last_digest_at"] or sub["confirmed_at"]
    if watermark >= cutoff:
        return None
    welcome = settings.digests.welcome_latest if frequency != "instant" else 0
    candidates = approved_articles(conn, settings, approved_since=None if welcome and not sub["last_digest_at"]
                                   else watermark, approved_until=cutoff)
    selector = Selector(candidates, cap=settings.digests.max_articles, welcome=welcome)
    sel = selector.select(sub["topics"], watermark, first=sub["last_digest_at"] is None)
    if not sel.article_ids:
        return None
    if frequency == "instant":
        sel = Selection((sel.article_ids[-1],), 0)
        key = f"instant-{sel.article_ids[0]}"
    fake = {"id": 0, "key": key, "frequency": frequency, "cutoff": cutoff}
    web_url = selector.by_id[sel.article_ids[0]].url if frequency == "instant" else f"{site.base_url}/{web_path(key)}"
    part = PartRenderer(settings, site, fake, selector.by_id, _image_sizes(conn, candidates), web_url).render(sel)
    r = part["rendered"]
    return _fill(settings, site, sub, r.subject, r.html, r.text, "next digest", len(part["article_ids"]))


def _preview_last(conn, settings, site, sub) -> Preview | None:
    row = conn.execute(select(deliveries.c.payload).where(deliveries.c.subscriber_id == sub["id"],
                                                          deliveries.c.kind.in_(list(set(KINDS.values()))))
                       .order_by(deliveries.c.id.desc()).limit(1)).first()
    if row is None:
        return None
    part = conn.execute(select(digest_parts).where(digest_parts.c.id == int(row.payload["part"]))).mappings().first()
    if part is None:
        return None
    import email as email_lib
    import email.policy

    msg = email_lib.message_from_string(part["headers"] + "\r\n" + part["text_part"] + part["html_part"],
                                        policy=email.policy.default)
    html = msg.get_body(("html",)).get_content()
    text = msg.get_body(("plain",)).get_content()
    return _fill(settings, site, sub, part["subject"], html, text, "last digest sent", len(part["article_ids"]))


def _preview_sample(conn, settings, site, frequency, now, sub) -> Preview:
    candidates = approved_articles(conn, settings, approved_until=now, limit=max(settings.digests.max_articles * 3, 20))
    if not candidates:
        raise NotFound("there are no approved articles to preview a digest with",
                       hint="Ingest and approve articles first: `syndicate ingest`, `syndicate approve --all`.")
    if frequency == "instant":
        candidates = candidates[:1]
        key = f"instant-{candidates[0].article_id}"
    else:
        key = period(settings, frequency, now)[0]
    selector = Selector(candidates, cap=settings.digests.max_articles, welcome=0)
    sel = selector.select(None, dt.datetime.min.replace(tzinfo=dt.timezone.utc))
    fake = {"id": 0, "key": key, "frequency": frequency, "cutoff": now}
    web_url = candidates[0].url if frequency == "instant" else f"{site.base_url}/{web_path(key)}"
    part = PartRenderer(settings, site, fake, selector.by_id, _image_sizes(conn, candidates), web_url).render(sel)
    r = part["rendered"]
    reader = sub or {"id": 0, "email": "reader@example.com", "name": "Reader"}
    return _fill(settings, site, reader, r.subject, r.html, r.text, "sample", len(part["article_ids"]))


# --- the public web version ------------------------------------------------------------------

def _web_env(settings: Settings):
    return render.envs(settings)[0]


def write_web_version(engine: Engine, settings: Settings, key: str) -> Path:
    """public/digests/<key>/index.html ("view in browser") and the archive page."""
    with engine.connect() as conn:
        edition = get_edition(conn, key)
        if edition is None:
            raise NotFound(f"no digest edition {key!r}")
        ids = list(edition["article_ids"] or [])
        articles = {a.article_id: a for a in approved_articles(conn, settings)
                    if a.article_id in set(ids)} if ids else {}
    site = render.site_for_email(settings)
    views = [article_view(settings, site, articles[i]) for i in ids if i in articles]
    page = _web_env(settings).get_template("web/digest.html").render(
        site=settings.site, edition={**edition, "label": edition_label(settings, edition["frequency"], edition["cutoff"]),
                                     "url": f"{site.base_url}/{web_path(key)}"},
        articles=views, archive_url=f"{site.base_url}/digests/")
    path = settings.path("paths.public") / web_path(key) / "index.html"
    _write(path, page)
    write_archive(engine, settings)
    return path


def write_archive(engine: Engine, settings: Settings) -> Path:
    site = render.site_for_email(settings)
    with engine.connect() as conn:
        rows = conn.execute(select(digest_editions).where(digest_editions.c.frequency != "instant")
                            .order_by(digest_editions.c.cutoff.desc(), digest_editions.c.id.desc())).mappings().all()
    editions = [{"key": r["key"], "frequency": r["frequency"], "cutoff": r["cutoff"],
                 "label": edition_label(settings, r["frequency"], r["cutoff"]),
                 "articles": len(r["article_ids"] or []), "url": f"{site.base_url}/{web_path(r['key'])}"}
                for r in rows]
    page = _web_env(settings).get_template("web/digests_index.html").render(site=settings.site, editions=editions)
    path = settings.path("paths.public") / "digests" / "index.html"
    _write(path, page)
    return path


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
