"""What a subscriber chooses, checked: name, frequency, time zone, topics, the consent
wording version, and the subscribe form's context. Plain values in, plain values out
(InvalidInput names the field); no database writes, no HTTP.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Iterable
from functools import lru_cache
from zoneinfo import available_timezones

from sqlalchemy.engine import Connection

from pipeline.config import Settings
from pipeline.subscribers.addresses import InvalidInput

log = logging.getLogger(__name__)

FREQUENCIES = ("instant", "daily", "weekly")
MAX_TOPICS = 30
MAX_NAME = 200
TOPICS_CACHE_SECONDS = 30.0
_topics_cache: dict[str, tuple[float, tuple[str, ...]]] = {}
TOPIC_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


@lru_cache(maxsize=1)
def _timezones() -> frozenset[str]:
    return frozenset(available_timezones()) | {"UTC"}


def timezone_names() -> list[str]:
    return sorted(_timezones())


def clean_name(raw) -> str:
    if raw is None:
        return ""
    if not isinstance(raw, str):
        raise InvalidInput("name", "the name must be text")
    text = raw.strip()
    if CONTROL_RE.search(text):
        raise InvalidInput("name", "the name contains control characters")
    if len(text) > MAX_NAME:
        raise InvalidInput("name", f"the name is longer than {MAX_NAME} characters")
    return text


def clean_frequency(raw, settings: Settings) -> str:
    if raw in (None, ""):
        return settings.subscribers.default_frequency
    if raw not in FREQUENCIES:
        raise InvalidInput("frequency", f"frequency must be one of {', '.join(FREQUENCIES)}")
    return raw


def clean_timezone(raw) -> str:
    if raw in (None, ""):
        return "UTC"
    if not isinstance(raw, str) or raw not in _timezones():
        raise InvalidInput("timezone", f"{str(raw)[:64]!r} is not a known time zone (IANA name, e.g. Europe/Berlin)")
    return raw


def clean_topics(raw, known: Iterable[str] | None) -> list[str]:
    """A sorted list of topic slugs. `known` (if non-empty) is the set offered."""
    if raw in (None, ""):
        return []
    if isinstance(raw, str):
        raw = [t for t in re.split(r"[;,]", raw)]
    if not isinstance(raw, (list, tuple)):
        raise InvalidInput("topics", "topics must be a list of topic names")
    out: set[str] = set()
    for item in raw:
        if not isinstance(item, str):
            raise InvalidInput("topics", "topics must be a list of topic names")
        slug = item.strip().lower()
        if not slug:
            continue
        if not TOPIC_RE.match(slug):
            from pipeline.content.ingest import slugify  # only to word the error

            hint = slugify(item[:64])
            advice = f" (topics are slugs: {hint!r})" if hint != "untitled" and TOPIC_RE.match(hint) else ""
            raise InvalidInput("topics", f"{item[:40]!r} is not a topic name{advice}")
        out.add(slug)
    if len(out) > MAX_TOPICS:
        raise InvalidInput("topics", f"choose at most {MAX_TOPICS} topics")
    known = set(known or ())
    if known and out - known:
        raise InvalidInput(
            "topics",
            f"unknown topic(s): {', '.join(sorted(out - known))}",
            hint=f"Known topics: {', '.join(sorted(known))}.",
        )
    return sorted(out)


def available_topics(conn: Connection | None, settings: Settings) -> list[str]:
    """Topics people can choose: `subscribers.topics`, else the categories, then the
    tags, of approved articles. Empty when there is nothing yet (then any slug goes)."""
    if settings.subscribers.topics:
        return list(dict.fromkeys(t.lower() for t in settings.subscribers.topics))
    if conn is None:
        return []
    key = str(conn.engine.url)
    cached = _topics_cache.get(key)
    if cached and cached[0] > time.monotonic():
        return list(cached[1])
    try:
        from pipeline.content.editorial import approved_articles

        articles = approved_articles(conn, settings)
    except Exception:  # the content tables may not exist yet on a fresh install
        log.debug("no approved articles to take topics from", exc_info=True)
        return []
    categories = [a.category for a in articles if a.category]
    tags = [t for a in articles for t in a.tags]
    topics = [t for t in dict.fromkeys([*sorted(set(categories)), *sorted(set(tags))]) if TOPIC_RE.match(t.lower())]
    # Every sign-up validates against this list; a short cache keeps that off the articles.
    _topics_cache[key] = (time.monotonic() + TOPICS_CACHE_SECONDS, tuple(topics))
    return topics


def wording_version(settings: Settings) -> str:
    """The version label of the consent wording shown with the form (GDPR-1)."""
    return settings.subscribers.consent_version or (
        "sha256:" + hashlib.sha256(settings.subscribers.consent_text.encode("utf-8")).hexdigest()[:12]
    )


def clean_wording_version(raw, settings: Settings) -> str:
    """The version the submitted form showed, if it names one plausibly; else ours."""
    if isinstance(raw, str) and re.fullmatch(r"[A-Za-z0-9:._-]{1,80}", raw):
        return raw
    return wording_version(settings)


def form_context(settings: Settings, conn: Connection | None = None) -> dict:
    """What `templates/web/_subscribe_form.html` needs, as `subscribe_form`.

    The pages helper builds the static home page with it; the web service uses it for
    its own pages."""
    base = settings.site.base_url.rstrip("/")
    return {
        "action": f"{base}/subscribe",
        "topics": available_topics(conn, settings),
        "frequencies": list(FREQUENCIES),
        "default_frequency": settings.subscribers.default_frequency,
        "consent_text": settings.subscribers.consent_text,
        "consent_version": wording_version(settings),
        "privacy_url": settings.subscribers.privacy_url,
    }


__all__ = [
    "FREQUENCIES",
    "MAX_TOPICS",
    "MAX_NAME",
    "TOPIC_RE",
    "timezone_names",
    "clean_name",
    "clean_frequency",
    "clean_timezone",
    "clean_topics",
    "available_topics",
    "wording_version",
    "clean_wording_version",
    "form_context",
]
