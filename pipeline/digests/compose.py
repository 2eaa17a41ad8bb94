"""Composing an edition: queue one outbox row per subscriber with something new, in
batches of `[digests] batch_size` (one transaction each; the watermark moves in the
transaction that queues the message), per time-zone slot, optionally as chunk i of n
(see pipeline.digests.editions for the whole story). Sends nothing."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Callable

from sqlalchemy import and_, exists, func, insert, or_, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from pipeline.config import Settings
from pipeline.content.editorial import ApprovedArticle, approved_articles
from pipeline.digests import render
from pipeline.digests.editions import (
    KINDS,
    Slot,
    _check_frequency,
    _slot_suffix,
    edition_label,
    get_edition,
    slots,
    web_path,
)
from pipeline.digests.parts import PartRenderer, _image_sizes
from pipeline.digests.selection import Selection, Selector
from pipeline.digests.webversion import write_web_version
from pipeline.errors import SyndicateError
from pipeline.store import transaction
from pipeline.store.schema import deliveries, digest_editions, subscribers, suppressions
from pipeline.timeutil import rfc3339, utcnow

log = logging.getLogger(__name__)


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
        return {
            "editions": len(self.editions),
            "subscribers": self.subscribers,
            "queued": self.queued,
            "nothing_new": self.empty,
            "rendered": self.parts_rendered,
        }


def _due_subscribers(
    frequency: str, cutoff: dt.datetime, chunk: tuple[int, int] | None = None, timezones: tuple[str, ...] | None = None
):
    """Confirmed subscribers of `frequency`, confirmed by the cutoff, not yet handled for
    it, and not on the suppression list (and in chunk i of n: id % n == i - 1; and with
    `timezones`, in one of those time zones: one slot's subscribers)."""
    suppressed = exists().where(suppressions.c.email == subscribers.c.email)
    due = and_(
        subscribers.c.state == "confirmed",
        subscribers.c.frequency == frequency,
        subscribers.c.confirmed_at.is_not(None),
        subscribers.c.confirmed_at <= cutoff,
        or_(subscribers.c.last_digest_at.is_(None), subscribers.c.last_digest_at < cutoff),
        ~suppressed,
    )
    if chunk is not None:
        i, n = chunk
        due = and_(due, subscribers.c.id % n == i - 1)
    if timezones is not None:
        due = and_(due, subscribers.c.timezone.in_(list(timezones)))
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
        raise SyndicateError(
            f"chunk {text!r} is not of the form I/N", hint="e.g. --chunk 1/4 ... --chunk 4/4"
        ) from None
    if n < 1 or not 1 <= i <= n:
        raise SyndicateError(f"chunk {text!r}: I must be between 1 and N", hint="e.g. --chunk 1/4 ... --chunk 4/4")
    return i, n


def compose(
    engine: Engine,
    settings: Settings,
    frequency: str,
    *,
    now: dt.datetime | None = None,
    dry_run: bool = False,
    on_plan: Callable[[str, int], None] | None = None,
    chunk: tuple[int, int] | None = None,
) -> ComposeReport:
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
    if frequency == "instant":
        _compose_one(engine, settings, site, frequency, None, now, dry_run, on_plan, chunk, report)
        return report
    with engine.connect() as conn:
        due_slots = slots(conn, settings, frequency, now)
    for slot in due_slots:
        _compose_one(engine, settings, site, frequency, slot, now, dry_run, on_plan, chunk, report)
    return report


def _compose_one(
    engine: Engine,
    settings: Settings,
    site: render.Site,
    frequency: str,
    slot: Slot | None,
    now: dt.datetime,
    dry_run: bool,
    on_plan,
    chunk,
    report: ComposeReport,
) -> None:
    """Instant (slot None), or the edition of one time-zone slot."""
    timezones = slot.timezones if slot is not None else None
    with engine.connect() as conn:
        if slot is None:
            key, cutoff, edition = None, now, None
        else:
            key = slot.key
            edition = get_edition(conn, key)
            cutoff = edition["cutoff"] if edition else now
        due = _due_subscribers(frequency, cutoff, chunk, timezones)
        oldest = conn.execute(
            select(func.min(func.coalesce(subscribers.c.last_digest_at, subscribers.c.confirmed_at))).where(due)
        ).scalar()
    candidates: list[ApprovedArticle] = []
    sizes: dict = {}
    if oldest is not None:
        oldest = oldest if oldest.tzinfo else oldest.replace(tzinfo=dt.UTC)
        welcome = settings.digests.welcome_latest if frequency != "instant" else 0
        with engine.connect() as conn:
            candidates = approved_articles(conn, settings, approved_since=oldest, approved_until=cutoff)
            if welcome:
                seen = {a.article_id for a in candidates}
                extra = [
                    a
                    for a in approved_articles(conn, settings, approved_until=cutoff, limit=max(200, welcome * 20))
                    if a.article_id not in seen
                ]
                candidates = sorted(candidates + extra, key=lambda a: (a.published_at, a.article_id), reverse=True)
            candidates = _printable(candidates)
            sizes = _image_sizes(conn, candidates)
    if slot is not None and edition is None and not dry_run:
        # The first compose in a slot's period creates its edition, with or without
        # anything to send: that fixes the cutoff, so an article approved later in the
        # period waits for the next edition instead of going out at once, at whatever
        # hour the next compose runs (digests arrive at the configured local hour).
        # Chunks agree on it the same way: the first creates it, the others adopt it
        # (and start again with its cutoff when theirs differs).
        with engine.begin() as conn:
            edition = _create_edition(
                conn, settings, key, frequency, cutoff, candidates, now, existing_ok=chunk is not None
            )
        if edition["cutoff"] != cutoff:
            return _compose_one(engine, settings, site, frequency, slot, now, dry_run, on_plan, chunk, report)
    if oldest is None or not candidates:
        if edition is not None and edition["completed_at"] is None and not dry_run:
            _complete(
                engine,
                edition["id"],
                now,
                chunked=chunk is not None,
                frequency=frequency,
                timezones=timezones,
                settings=settings,
            )
        return
    if frequency == "instant":
        _compose_instant(
            engine, settings, site, candidates, sizes, cutoff, due, report, dry_run, on_plan, chunked=chunk is not None
        )
    else:
        _compose_periodic(
            engine,
            settings,
            site,
            key,
            edition,
            candidates,
            sizes,
            cutoff,
            now,
            due,
            report,
            dry_run,
            on_plan,
            chunked=chunk is not None,
            timezones=timezones,
        )


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
    cols = [
        subscribers.c.id,
        subscribers.c.email,
        subscribers.c.topics,
        subscribers.c.confirmed_at,
        subscribers.c.last_digest_at,
    ]
    while True:
        with transaction(engine, dry_run=dry_run) as conn:
            batch = conn.execute(
                select(*cols).where(due, subscribers.c.id > last_id).order_by(subscribers.c.id).limit(batch_size)
            ).all()
            if not batch:
                return
            last_id = batch[-1].id
            yield conn, batch


def _advance(conn: Connection, ids: list[int], cutoff: dt.datetime) -> None:
    """The watermark moves in the transaction that queued the messages it stands for."""
    if ids:
        conn.execute(update(subscribers).where(subscribers.c.id.in_(ids)).values(last_digest_at=cutoff))


def _compose_periodic(
    engine,
    settings,
    site,
    key,
    edition,
    candidates,
    sizes,
    cutoff,
    now,
    due,
    report,
    dry_run,
    on_plan,
    chunked: bool = False,
    timezones: tuple[str, ...] | None = None,
):
    frequency = report.frequency
    selector = Selector(candidates, cap=settings.digests.max_articles, welcome=settings.digests.welcome_latest)
    by_id = selector.by_id
    web_url = f"{site.base_url}/{web_path(key)}"
    renderer = None
    queued = 0  # this slot's (the report adds up every slot's)
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
            if renderer is None:  # the edition exists: _compose_one creates it first
                renderer = PartRenderer(
                    settings, site, edition, by_id, sizes, web_url, engine=engine if chunked else None
                )
                renderer.load_existing(conn)
            part = renderer.part_id(conn, sel)
            rows.append(_outbox_row(sub, edition, part, KINDS[frequency]))
        if not dry_run:
            added = _enqueue(conn, rows)
            queued += added
            report.queued += added
            _advance(conn, [s.id for s in batch], cutoff)
    if renderer is not None:
        report.parts_rendered += renderer.rendered
    if edition is not None and not dry_run:
        report.editions.append(edition["key"])
        if not _complete(
            engine,
            edition["id"],
            now,
            queued,
            chunked=chunked,
            frequency=frequency,
            timezones=timezones,
            settings=settings,
        ):
            return  # other chunks are still composing; the last one writes the web version
        try:
            write_web_version(engine, settings, edition["key"])
        except SyndicateError:
            raise
        except Exception as exc:  # the emails are queued; a page problem must not undo that
            log.warning("could not write the web version of %s: %s", edition["key"], exc)
        log.info("edition %s: %d queued", edition["key"], queued)


def _compose_instant(
    engine, settings, site, candidates, sizes, cutoff, due, report, dry_run, on_plan, chunked: bool = False
):
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
                            edition = _create_edition(
                                own,
                                settings,
                                key,
                                "instant",
                                cutoff,
                                [a],
                                cutoff,
                                window_start=a.approved_at,
                                article_ids=[article_id],
                                existing_ok=True,
                            )
                    elif edition is None:
                        edition = _create_edition(
                            conn,
                            settings,
                            key,
                            "instant",
                            cutoff,
                            [a],
                            cutoff,
                            window_start=a.approved_at,
                            article_ids=[article_id],
                            existing_ok=chunked,
                        )
                    editions[article_id] = edition
                    renderers[article_id] = PartRenderer(
                        settings, site, edition, selector.by_id, sizes, a.url, engine=engine if chunked else None
                    )
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
            _complete(engine, edition["id"], cutoff, settings=settings)


def _outbox_row(sub, edition: dict, part_id: int, kind: str) -> dict:
    return {
        "channel": "email",
        "target": sub.email,
        "kind": kind,
        "key": f"digest:{edition['key']}:{sub.id}",
        "payload": {"edition": edition["key"], "part": part_id},
        "subscriber_id": sub.id,
        "edition_id": edition["id"],
    }


def _enqueue(conn: Connection, rows: list[dict]) -> int:
    from pipeline.delivery import outbox

    if not rows:
        return 0
    if conn.dialect.name == "sqlite":
        return outbox.enqueue_many(conn, rows)
    # psycopg's executemany does not report a reliable rowcount: count what is there.
    keys = [r["key"] for r in rows]
    existing = conn.execute(
        select(func.count()).select_from(deliveries).where(deliveries.c.idempotency_key.in_(keys))
    ).scalar_one()
    outbox.enqueue_many(conn, rows)
    return len(rows) - existing


def _create_edition(
    conn: Connection,
    settings: Settings,
    key: str,
    frequency: str,
    cutoff: dt.datetime,
    candidates: list[ApprovedArticle],
    now: dt.datetime,
    window_start: dt.datetime | None = None,
    article_ids: list[int] | None = None,
    existing_ok: bool = False,
) -> dict:
    if window_start is None:
        # the previous edition of the same time-zone slot (the key's suffix, if any)
        previous = next(
            (
                r.cutoff
                for r in conn.execute(
                    select(digest_editions.c.key, digest_editions.c.cutoff)
                    .where(digest_editions.c.frequency == frequency, digest_editions.c.cutoff < cutoff)
                    .order_by(digest_editions.c.cutoff.desc())
                    .limit(200)
                )
                if _slot_suffix(r.key) == _slot_suffix(key)
            ),
            None,
        )
        if previous is not None:
            window_start = previous if previous.tzinfo else previous.replace(tzinfo=dt.UTC)
        else:
            window_start = cutoff - dt.timedelta(days=7 if frequency == "weekly" else 1)
    in_window = (
        article_ids
        if article_ids is not None
        else [a.article_id for a in candidates if window_start < a.approved_at <= cutoff]
    )
    subject = edition_label(settings, frequency, cutoff, key) if frequency != "instant" else candidates[0].title
    try:
        with conn.begin_nested():
            eid = conn.execute(
                insert(digest_editions).values(
                    key=key,
                    frequency=frequency,
                    window_start=window_start,
                    cutoff=cutoff,
                    article_ids=in_window,
                    subject=subject,
                    recipients=0,
                    created_at=now,
                )
            ).inserted_primary_key[0]
    except IntegrityError:
        if existing_ok:  # another chunk created it first: use theirs
            existing = get_edition(conn, key)
            if existing is not None:
                return existing
        raise SyndicateError(
            f"digest edition {key} was just created by another compose",
            hint="Run the compose again: it continues that edition and adds nothing twice.",
        ) from None
    return get_edition(conn, key) | {"id": eid}


def _complete(
    engine: Engine,
    edition_id: int,
    now: dt.datetime,
    queued: int = 0,
    *,
    chunked: bool = False,
    frequency: str | None = None,
    timezones: tuple[str, ...] | None = None,
    settings: Settings | None = None,
) -> bool:
    """Count the recipients queued and mark the edition complete; True when it is.
    A chunk marks it complete only when no chunk has a due subscriber left (each chunk
    checks after its last commit, so the last one to finish sees everything)."""
    with engine.begin() as conn:
        conn.execute(
            update(digest_editions)
            .where(digest_editions.c.id == edition_id)
            .values(recipients=digest_editions.c.recipients + queued)
        )
        if chunked and frequency is not None:
            cutoff = conn.execute(
                select(digest_editions.c.cutoff).where(digest_editions.c.id == edition_id)
            ).scalar_one()
            left = conn.execute(
                select(subscribers.c.id).where(_due_subscribers(frequency, cutoff, None, timezones)).limit(1)
            ).first()
            if left is not None:
                return False
        first = conn.execute(
            update(digest_editions)
            .where(digest_editions.c.id == edition_id, digest_editions.c.completed_at.is_(None))
            .values(completed_at=now)
        ).rowcount
        if first and settings is not None:
            _announce_edition(conn, settings, edition_id, now)
    return True


def _announce_edition(conn: Connection, settings: Settings, edition_id: int, now: dt.datetime) -> None:
    """`edition.sent` (EVT-2): every due subscriber's message is in the outbox. Sent
    once per edition, in the transaction that completes it; what each message did
    then is the edition report (pipeline.digests.reports)."""
    from pipeline.delivery import emit_event

    ed = conn.execute(select(digest_editions).where(digest_editions.c.id == edition_id)).mappings().one()
    queued = conn.execute(
        select(func.count()).select_from(deliveries).where(deliveries.c.edition_id == edition_id)
    ).scalar_one()
    if not queued:  # an edition with nobody to mail was not sent
        return
    emit_event(
        conn,
        settings,
        "edition.sent",
        {
            "edition": ed["key"],
            "frequency": ed["frequency"],
            "subject": ed["subject"],
            "article_ids": list(ed["article_ids"] or []),
            "recipients": queued,
            "completed_at": rfc3339(now),
        },
        key=f"edition:{ed['key']}",
    )
