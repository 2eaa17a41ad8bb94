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

Modules (one responsibility each; every public name is also reachable here, so
`from pipeline.digests.editions import compose` keeps working):
  editions   periods, time-zone slots, edition keys and labels, the stage, web versions
  selection  which articles each subscriber gets (Selection, Selector)
  parts      views for templates and the shared MIME part per selection (PartRenderer)
  compose    composing editions into the outbox, chunks, edition rows
  builder    the message at send time (the 'digest' and 'instant' email kinds)
  preview    what a subscriber's next digest will be
  stage      the `digest` stage (what `syndicate run` and the scheduler call)
  webversion the public web version of an edition and the archive page
  images     images fit for email (PNG/JPEG/GIF); render: templates -> MIME skeleton
  clicks     signed /r/ links and aggregate click counts (CLK-1..5)
  reports    what each edition did, as plain dicts (RPT-1..4)
  testsend   the next digest to a seed list, marked [TEST], no watermark moved (SEED-1..3)
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib
import logging
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.engine import Connection

from pipeline.config import Settings
from pipeline.errors import ConfigError
from pipeline.store.schema import digest_editions, subscribers
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
        raise ConfigError(
            f"site.timezone {settings.site.timezone!r} is not an IANA timezone",
            hint="e.g. UTC, Europe/Lisbon, America/New_York.",
        ) from None


def _zone(settings: Settings, name: str | None) -> ZoneInfo:
    """A subscriber's time zone; the site's when unset or unknown (values are checked
    when stored, so this is a fallback, not a path)."""
    if name:
        try:
            return ZoneInfo(name)
        except Exception:  # ZoneInfoNotFoundError, ValueError
            log.warning("unknown time zone %r: using site.timezone", name)
    return _tz(settings)


def period(
    settings: Settings, frequency: str, now: dt.datetime, timezone: str | None = None
) -> tuple[str, dt.datetime]:
    """(edition key, period start in UTC) of the daily/weekly period `now` falls in,
    in `timezone` (a subscriber's; default site.timezone).

    Keys: `daily-2026-11-25` when the period starts at the same instant as the site's
    (same UTC offset), else the time-zone slot is in the key: `daily-2026-11-25-utc+0530`.
    Every zone with the same offset at that moment shares the slot's edition."""
    zone = _zone(settings, timezone)
    local = now.astimezone(zone)
    if frequency == "daily":
        hour = settings.digests.daily_hour
        day = (local - dt.timedelta(hours=hour)).date()
        start = dt.datetime.combine(day, dt.time(hour), tzinfo=zone)
        key = f"daily-{day.isoformat()}"
    elif frequency == "weekly":
        offset = dt.timedelta(days=WEEKDAYS.index(settings.digests.weekly_day), hours=settings.digests.weekly_hour)
        shifted = local - offset
        monday = shifted.date() - dt.timedelta(days=shifted.weekday())
        start = dt.datetime.combine(monday, dt.time(0), tzinfo=zone) + offset
        key = f"weekly-{start.date().isoformat()}"
    else:
        raise ValueError(frequency)
    start_utc = start.astimezone(dt.UTC)
    if timezone:
        utcoffset = start_utc.astimezone(zone).utcoffset() or dt.timedelta(0)
        if utcoffset != (start_utc.astimezone(_tz(settings)).utcoffset() or dt.timedelta(0)):
            minutes = int(utcoffset.total_seconds()) // 60
            sign = "+" if minutes >= 0 else "-"
            key += f"-utc{sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"
    return key, start_utc


def next_period(
    settings: Settings, frequency: str, now: dt.datetime, timezone: str | None = None
) -> tuple[str, dt.datetime]:
    """The period after the one `now` falls in (a day or a week later, DST included)."""
    _key, start = period(settings, frequency, now, timezone)
    return period(settings, frequency, start + dt.timedelta(days=1 if frequency == "daily" else 7, hours=2), timezone)


@dataclasses.dataclass(frozen=True)
class Slot:
    """One time-zone slot of a daily/weekly period: the subscribers whose local period
    starts at the same instant get the same edition (issue 16 item 21). `timezones`:
    the subscribers' time-zone values in it; None when there is one slot (everyone)."""

    key: str
    start: dt.datetime
    timezones: tuple[str, ...] | None


def slots(conn: Connection, settings: Settings, frequency: str, now: dt.datetime) -> list[Slot]:
    """The slots of `frequency` at `now`, one per distinct period start among the time
    zones of its confirmed subscribers (the site's slot always), site's first."""
    names = [
        r[0]
        for r in conn.execute(
            select(subscribers.c.timezone)
            .distinct()
            .where(subscribers.c.frequency == frequency, subscribers.c.state == "confirmed")
        )
    ]
    site_key, site_start = period(settings, frequency, now)
    groups: dict[str, tuple[dt.datetime, list[str]]] = {site_key: (site_start, [])}
    for name in sorted(n or "" for n in names):
        key, start = period(settings, frequency, now, name or None)
        groups.setdefault(key, (start, []))[1].append(name)
    if len(groups) == 1:
        return [Slot(site_key, site_start, None)]
    ordered = [site_key] + sorted((k for k in groups if k != site_key), key=lambda k: (groups[k][0], k))
    return [Slot(k, groups[k][0], tuple(groups[k][1])) for k in ordered]


def _slot_suffix(key: str) -> str:
    """'-utc+0530' of `daily-2026-11-25-utc+0530`; '' for the site's slot."""
    return key.split("-", 1)[1][10:] if "-" in key else ""


def edition_date(key: str) -> dt.date | None:
    """The local date in a daily/weekly edition key (`daily-2026-11-25[-utc+0100]`)."""
    try:
        return dt.date.fromisoformat(key.split("-", 1)[1][:10])
    except (IndexError, ValueError):
        return None


def _check_frequency(frequency: str) -> str:
    if frequency not in FREQUENCIES:
        raise ConfigError(f"unknown digest frequency {frequency!r}", hint=f"Use one of: {', '.join(FREQUENCIES)}.")
    return frequency


def get_edition(conn: Connection, key: str) -> dict | None:
    row = conn.execute(select(digest_editions).where(digest_editions.c.key == key)).mappings().first()
    return dict(row) if row else None


def is_due(conn: Connection, settings: Settings, frequency: str, now: dt.datetime | None = None) -> bool:
    """Instant: always. Daily/weekly: the current period's edition of some time-zone
    slot is not complete."""
    if frequency == "instant":
        return True
    for slot in slots(conn, settings, frequency, now or utcnow()):
        edition = get_edition(conn, slot.key)
        if edition is None or edition["completed_at"] is None:
            return True
    return False


def edition_label(settings: Settings, frequency: str, when: dt.datetime, key: str | None = None) -> str:
    """'Daily digest, Wednesday 25 November 2026' for the edition `key`, or for the
    site's period `when` falls in."""
    day = edition_date(key) if key and frequency in ("daily", "weekly") else None
    if day is None:
        if frequency in ("daily", "weekly"):
            when = period(settings, frequency, when)[1]
        day = when.astimezone(_tz(settings)).date()
    if frequency == "daily":
        return f"Daily digest, {day:%A} {day.day} {day:%B %Y}"
    if frequency == "weekly":
        return f"Weekly digest, week of {day.day} {day:%B %Y}"
    return "New article"


def web_path(key: str) -> str:
    return f"digests/{key}/"


# --- names that moved to their own modules (imported on first use: no import cycles) ---

_MOVED = {
    "selection": ("Selection", "Selector"),
    "parts": ("PartRenderer", "article_view", "email_body"),
    "compose": ("ComposeReport", "compose", "parse_chunk"),
    "builder": ("build_digest_email", "message_id", "personal"),
    "preview": ("Preview", "preview", "next_edition_for"),
    "stage": ("digest_stage",),
    "webversion": ("write_web_version", "write_archive", "_write"),
}
_HOME = {name: module for module, names in _MOVED.items() for name in names}


def __getattr__(name: str):
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"pipeline.digests.{module}"), name)
