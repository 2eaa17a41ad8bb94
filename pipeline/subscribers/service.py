"""The subscription state machine and its consent log. No HTTP and no click in here.

States (closed set): ``unconfirmed -> confirmed -> unsubscribed``, plus ``suppressed``
(hard bounce, complaint, operator). Double opt-in (DOI-1): a sign-up creates an
unconfirmed row and queues a confirmation email through the outbox; only the
confirmation link, POSTed, makes the row ``confirmed``. An unsubscribed or suppressed
address is never silently re-subscribed: signing up again sends a new confirmation
(the person must confirm again) and a suppressed address gets nothing at all.

Every step is an event in ``subscriber_events`` (GDPR-1): sign-up, confirmation,
preference changes, withdrawal, with time, source, consent wording version, privacy
notice version, the confirmation token's hash and (optionally) IP and user agent.

Links:
- confirmation: ``/confirm/<token>``; the token is ``tokens.sign("confirm", nonce)``
  where the 256-bit nonce sits in the outbox payload and only the SHA-256 of the whole
  token is stored, so a database read alone cannot confirm anybody. Single use,
  expires after ``subscribers.confirm_ttl_hours``.
- unsubscribe / preferences: ``/unsubscribe/<token>``, ``/preferences/<token>`` with
  the UNS-1 token: ``<key id>.<subscriber id>.<HMAC-SHA256 tag>`` over
  ``"<key id>|<subscriber id>|<list id>|<purpose>"``, no expiry, verified with
  ``hmac.compare_digest``; keys in ``security.previous_secret_keys`` still verify.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import datetime as dt
import email.policy
import hashlib
import hmac
import logging
import re
import struct
import time
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from functools import lru_cache
from pathlib import Path
from typing import IO, Iterable
from urllib.parse import urlsplit
from zoneinfo import available_timezones

from sqlalchemy import and_, delete, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from pipeline import tokens
from pipeline import templating
from pipeline.config import Settings, require
from pipeline.errors import NotFound, SyndicateError, TokenError
from pipeline.subscribers.addresses import (InvalidInput, envelope_address, needs_smtputf8, normalise_email,
                                            smtputf8_enabled)
from pipeline.store.schema import confirm_tokens, subscribe_attempts, subscriber_events, subscribers
from pipeline.timeutil import utcnow

log = logging.getLogger(__name__)

STATES = ("unconfirmed", "confirmed", "unsubscribed", "suppressed")
FREQUENCIES = ("instant", "daily", "weekly")
MAX_TOPICS = 30
MAX_NAME = 200
RATE_WINDOW = dt.timedelta(hours=1)
TOPICS_CACHE_SECONDS = 30.0
_topics_cache: dict[str, tuple[float, tuple[str, ...]]] = {}
_TOPIC_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_LIST_PURPOSES = ("unsubscribe", "preferences")


# --- errors -----------------------------------------------------------------------

class RateLimited(SyndicateError):
    """Too many sign-up requests for one address or from one client (DOI-2)."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message, hint=f"Try again in {max(1, retry_after // 60)} minute(s).")
        self.retry_after = max(1, int(retry_after))


class LinkExpired(TokenError):
    """A confirmation link older than its time to live."""


class LinkUsed(TokenError):
    """A single-use confirmation link that was used already."""


# --- plain data -------------------------------------------------------------------

@dataclasses.dataclass
class Client:
    """Who asked and how: the consent log's 'source' and optional IP / user agent."""

    source: str = ""
    ip: str | None = None
    user_agent: str | None = None
    wording_version: str = ""

    def for_log(self, settings: Settings) -> dict:
        keep = settings.subscribers.record_client
        return {"source": self.source[:300],
                "ip": (self.ip or None) if keep else None,
                "user_agent": (self.user_agent or "")[:400] or None if keep else None}


@dataclasses.dataclass
class SignupResult:
    """What a sign-up did. Never shown to the requester (DOI-2: same answer for all)."""

    subscriber_id: int | None
    action: str  # confirm_sent | notice_sent | ignored_suppressed
    # The idempotency key of the email queued, if any: the web service sends that row at
    # once (after its commit) so the reader need not wait for the next `deliver`.
    outbox_key: str | None = None


# --- validation -------------------------------------------------------------------

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
    if _CONTROL_RE.search(text):
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
        if not _TOPIC_RE.match(slug):
            raise InvalidInput("topics", f"{item[:40]!r} is not a topic name")
        out.add(slug)
    if len(out) > MAX_TOPICS:
        raise InvalidInput("topics", f"choose at most {MAX_TOPICS} topics")
    known = set(known or ())
    if known and out - known:
        raise InvalidInput("topics", f"unknown topic(s): {', '.join(sorted(out - known))}",
                           hint=f"Known topics: {', '.join(sorted(known))}.")
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
    topics = [t for t in dict.fromkeys([*sorted(set(categories)), *sorted(set(tags))]) if _TOPIC_RE.match(t.lower())]
    # Every sign-up validates against this list; a short cache keeps that off the articles.
    _topics_cache[key] = (time.monotonic() + TOPICS_CACHE_SECONDS, tuple(topics))
    return topics


def wording_version(settings: Settings) -> str:
    """The version label of the consent wording shown with the form (GDPR-1)."""
    return settings.subscribers.consent_version or (
        "sha256:" + hashlib.sha256(settings.subscribers.consent_text.encode("utf-8")).hexdigest()[:12])


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


# --- reading ----------------------------------------------------------------------

def get(conn: Connection, email: str) -> dict | None:
    row = conn.execute(select(subscribers).where(subscribers.c.email == email.strip().lower())).mappings().first()
    return dict(row) if row else None


def get_by_id(conn: Connection, subscriber_id: int) -> dict | None:
    row = conn.execute(select(subscribers).where(subscribers.c.id == subscriber_id)).mappings().first()
    return dict(row) if row else None


def require_subscriber(conn: Connection, email: str) -> dict:
    try:
        key = normalise_email(email, smtputf8=True)
    except InvalidInput:
        key = email.strip().lower()
    sub = get(conn, key)
    if sub is None:
        raise NotFound(f"no subscriber {email!r}", hint="`syndicate subscribers list` shows who is on the list.")
    return sub


def history(conn: Connection, subscriber_id: int) -> list[dict]:
    """The subscriber's events, oldest first (the consent record)."""
    rows = conn.execute(select(subscriber_events).where(subscriber_events.c.subscriber_id == subscriber_id)
                        .order_by(subscriber_events.c.at, subscriber_events.c.id)).mappings()
    return [dict(r) for r in rows]


def list_subscribers(conn: Connection, *, state: str | None = None, frequency: str | None = None,
                     limit: int | None = None) -> list[dict]:
    q = select(subscribers).order_by(subscribers.c.id)
    if state:
        q = q.where(subscribers.c.state == state)
    if frequency:
        q = q.where(subscribers.c.frequency == frequency)
    if limit:
        q = q.limit(limit)
    return [dict(r) for r in conn.execute(q).mappings()]


def counts_by_state(conn: Connection) -> dict[str, int]:
    return {state: n for state, n in conn.execute(
        select(subscribers.c.state, func.count()).group_by(subscribers.c.state))}


def is_suppressed_address(conn: Connection, email: str) -> str | None:
    """The suppression list's reason for `email` (pipeline.delivery owns that table)."""
    from pipeline.delivery.email.channel import is_suppressed
    return is_suppressed(conn, email)


def _blocking_suppression(conn: Connection, email: str) -> str | None:
    """A suppression that stops even a confirmation email: everything but a recorded
    unsubscribe (which a new, confirmed opt-in overrides)."""
    reason = is_suppressed_address(conn, email)
    return reason if reason and reason != "unsubscribed" else None


def may_receive(conn: Connection, subscriber_id: int) -> bool:
    """True when a digest may go to this subscriber *now* (checked at send time, BULK-4):
    confirmed, and not on the suppression list."""
    sub = get_by_id(conn, subscriber_id)
    return bool(sub and sub["state"] == "confirmed" and not is_suppressed_address(conn, sub["email"]))


# --- the consent log ----------------------------------------------------------------

def _event(conn: Connection, settings: Settings, subscriber_id: int, kind: str, *, client: Client | None = None,
           token_hash: str | None = None, detail: dict | None = None, now: dt.datetime | None = None,
           wording: str | None = None) -> None:
    """Append one event. `wording` (the consent wording version) marks a consent event:
    those also record the privacy notice version in force."""
    client = client or Client(source="system")
    logged = client.for_log(settings)
    conn.execute(insert(subscriber_events).values(
        subscriber_id=subscriber_id, kind=kind, at=now or utcnow(), source=logged["source"],
        wording_version=(wording or "")[:80],
        privacy_version=settings.subscribers.privacy_version if wording is not None else "",
        token_hash=token_hash, ip=logged["ip"], user_agent=logged["user_agent"], detail=detail or {}))


# --- rate limits (DOI-2) -------------------------------------------------------------

def _attempt_key(kind: str, value: str) -> str:
    return f"{kind}:" + hashlib.sha256(value.encode("utf-8")).hexdigest()[:64]


def check_rate(conn: Connection, key: str, limit: int, now: dt.datetime, what: str) -> None:
    """Count attempts for `key` in the last hour; RateLimited at `limit`, else record one."""
    if limit <= 0:
        return
    since = now - RATE_WINDOW
    n, oldest = conn.execute(select(func.count(), func.min(subscribe_attempts.c.at))
                             .where(subscribe_attempts.c.key == key, subscribe_attempts.c.at > since)).one()
    if n >= limit:
        oldest = oldest if oldest.tzinfo else oldest.replace(tzinfo=dt.timezone.utc)
        retry = int((oldest + RATE_WINDOW - now).total_seconds()) + 1
        raise RateLimited(f"too many sign-up requests {what}", retry_after=retry)
    conn.execute(insert(subscribe_attempts).values(key=key, at=now))


# --- tokens -------------------------------------------------------------------------

def _key_id(key: str) -> str:
    return hashlib.sha256(("syndicate.key-id|" + key).encode("utf-8")).hexdigest()[:8]


def _keys(settings: Settings) -> list[str]:
    return [tokens.secret_key(settings), *settings.security.previous_secret_keys]


def list_id(settings: Settings) -> str:
    """The list's id for tokens and the List-Id header: `site.list_id`'s <...> part,
    else derived from base_url's host."""
    configured = settings.site.list_id
    if configured:
        m = re.search(r"<([^>]+)>", configured)
        return (m.group(1) if m else configured).strip()
    host = urlsplit(settings.site.base_url).hostname or "localhost"
    return f"digest.{host}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _tag(key: str, kid: str, subscriber_id: int, lst: str, purpose: str) -> bytes:
    message = f"{kid}|{subscriber_id}|{lst}|{purpose}".encode("utf-8")
    return hmac.new(key.encode("utf-8"), message, hashlib.sha256).digest()


def list_token(settings: Settings, purpose: str, subscriber_id: int) -> str:
    """The UNS-1 token for `purpose` ('unsubscribe' | 'preferences'); no expiry."""
    if purpose not in _LIST_PURPOSES:
        raise ValueError(purpose)
    key = tokens.secret_key(settings)
    kid = _key_id(key)
    sid = _b64(struct.pack(">Q", subscriber_id))
    return f"{kid}.{sid}.{_b64(_tag(key, kid, subscriber_id, list_id(settings), purpose))}"


def verify_list_token(settings: Settings, purpose: str, token: str) -> int:
    """The subscriber id the token names, or TokenError (tampered, other purpose/list,
    unknown key)."""
    bad = TokenError("this link is not valid", hint="Use the link from your most recent email, complete.")
    if not isinstance(token, str) or len(token) > 200:
        raise bad
    parts = token.split(".")
    if len(parts) != 3:
        raise bad
    kid, sid, tag = parts
    try:
        raw_id = _unb64(sid)
        given = _unb64(tag)
    except (ValueError, TypeError):
        raise bad from None
    if len(raw_id) != 8 or len(given) != 32 or _b64(raw_id) != sid or _b64(given) != tag:
        raise bad
    subscriber_id = struct.unpack(">Q", raw_id)[0]
    for key in _keys(settings):
        if hmac.compare_digest(_key_id(key), kid):
            expected = _tag(key, kid, subscriber_id, list_id(settings), purpose)
            if hmac.compare_digest(expected, given):
                return subscriber_id
            raise bad
    raise bad


def unsubscribe_url(settings: Settings, subscriber_id: int) -> str:
    """The List-Unsubscribe / footer link (RFC 8058 one-click POST target, LIST-3)."""
    return f"{settings.site.base_url.rstrip('/')}/unsubscribe/{list_token(settings, 'unsubscribe', subscriber_id)}"


def preferences_url(settings: Settings, subscriber_id: int) -> str:
    return f"{settings.site.base_url.rstrip('/')}/preferences/{list_token(settings, 'preferences', subscriber_id)}"


def _confirm_token(settings: Settings, nonce: str) -> str:
    return tokens.sign(settings, "confirm", nonce)


def confirm_url(settings: Settings, token: str) -> str:
    return f"{settings.site.base_url.rstrip('/')}/confirm/{token}"


# --- sign-up ------------------------------------------------------------------------

def _issue_confirmation(conn: Connection, settings: Settings, sub: dict, client: Client, now: dt.datetime) -> str:
    """A new single-use confirmation token: stored as a hash, queued as an email.
    Returns the email's idempotency key."""
    from pipeline.delivery import outbox

    nonce = tokens.random_token()
    token = _confirm_token(settings, nonce)
    token_h = tokens.token_hash(token)
    expires = now + dt.timedelta(hours=settings.subscribers.confirm_ttl_hours)
    conn.execute(insert(confirm_tokens).values(subscriber_id=sub["id"], token_hash=token_h, created_at=now,
                                               expires_at=expires, used_at=None))
    key = f"confirm:{sub['id']}:{token_h[:32]}"
    outbox.enqueue(conn, channel="email", target=sub["email"], kind="confirm", key=key, subscriber_id=sub["id"],
                   payload={"subscriber_id": sub["id"], "nonce": nonce, "expires_at": expires.isoformat()})
    _event(conn, settings, sub["id"], "confirm_sent", client=client, token_hash=token_h, now=now,
           detail={"expires_at": expires.isoformat()})
    return key


def request_subscription(conn: Connection, settings: Settings, email: str, *, name=None, frequency=None,
                         topics=None, timezone=None, client: Client | None = None,
                         known_topics: Iterable[str] | None = None, now: dt.datetime | None = None) -> SignupResult:
    """Handle a sign-up request; the caller answers the same whatever happened.

    Validates (InvalidInput), rate-limits per client and per address (RateLimited),
    then: a new or never-confirmed address gets a confirmation email; an unsubscribed
    one too (it stays unsubscribed until it confirms again); a confirmed one gets a
    notice with its preferences link instead; a suppressed one gets nothing.
    """
    now = now or utcnow()
    client = client or Client(source="api")
    address = normalise_email(email, smtputf8=smtputf8_enabled(settings))
    prefs = {
        "name": clean_name(name),
        "frequency": clean_frequency(frequency, settings),
        "topics": clean_topics(topics, known_topics if known_topics is not None else available_topics(conn, settings)),
        "timezone": clean_timezone(timezone),
    }
    if client.ip:
        check_rate(conn, _attempt_key("ip", client.ip), settings.subscribers.max_signups_per_client, now,
                   "from your network")
    check_rate(conn, _attempt_key("addr", address), settings.subscribers.max_signups_per_address, now,
               "for this address")
    wording = client.wording_version or wording_version(settings)
    sub = get(conn, address)
    suppression = _blocking_suppression(conn, address)
    if sub is None:
        if suppression:
            log.info("sign-up for a suppressed address ignored (%s)", suppression)
            return SignupResult(None, "ignored_suppressed")
        try:
            with conn.begin_nested():  # a concurrent sign-up for the same address may win the insert
                sid = conn.execute(insert(subscribers).values(
                    email=address, state="unconfirmed", source=client.source[:200], created_at=now,
                    updated_at=now, **prefs)).inserted_primary_key[0]
        except IntegrityError:
            sid = get(conn, address)["id"]
        sub = get_by_id(conn, sid)
        state_before = None
    else:
        state_before = sub["state"]
        if sub["state"] in ("unconfirmed", "unsubscribed") and not suppression:
            # Not receiving anything now: the new choices apply once (re)confirmed.
            conn.execute(update(subscribers).where(subscribers.c.id == sub["id"]).values(updated_at=now, **prefs))
    _event(conn, settings, sub["id"], "signup", client=client, now=now, wording=wording,
           detail={"requested": prefs, "state_before": state_before})
    if suppression or sub["state"] == "suppressed":
        return SignupResult(sub["id"], "ignored_suppressed")
    if sub["state"] == "confirmed":
        from pipeline.delivery import outbox
        key = f"notice:{sub['id']}:{tokens.random_token()[:24]}"
        outbox.enqueue(conn, channel="email", target=address, kind="subscribed_notice", key=key,
                       subscriber_id=sub["id"], payload={"subscriber_id": sub["id"]})
        _event(conn, settings, sub["id"], "notice_sent", client=client, now=now)
        return SignupResult(sub["id"], "notice_sent", key)
    return SignupResult(sub["id"], "confirm_sent", _issue_confirmation(conn, settings, sub, client, now))


def _token_row(conn: Connection, settings: Settings, token: str) -> dict:
    tokens.verify(settings, "confirm", token)  # TokenError when tampered or for another purpose
    row = conn.execute(select(confirm_tokens).where(confirm_tokens.c.token_hash == tokens.token_hash(token))
                       ).mappings().first()
    if row is None:
        raise TokenError("this confirmation link is not valid (or the sign-up was deleted)",
                         hint="Sign up again on the home page.")
    return dict(row)


def check_confirm_token(conn: Connection, settings: Settings, token: str, now: dt.datetime | None = None) -> dict:
    """Read-only check for the GET page: the subscriber, or TokenError / LinkUsed / LinkExpired."""
    now = now or utcnow()
    row = _token_row(conn, settings, token)
    if row["used_at"] is not None:
        raise LinkUsed("this confirmation link was used already",
                       hint="If you confirmed, you are subscribed; every digest has a link to your preferences.")
    if row["expires_at"] <= now:
        raise LinkExpired("this confirmation link has expired", hint="Ask for a new one below.")
    sub = get_by_id(conn, row["subscriber_id"])
    if sub is None:
        raise TokenError("this confirmation link is not valid", hint="Sign up again on the home page.")
    return sub


def confirm(conn: Connection, settings: Settings, token: str, *, client: Client | None = None,
            now: dt.datetime | None = None) -> dict:
    """Use a confirmation token (single use): the subscriber becomes confirmed."""
    now = now or utcnow()
    client = client or Client(source="web")
    sub = check_confirm_token(conn, settings, token, now)
    token_h = tokens.token_hash(token)
    used = conn.execute(update(confirm_tokens).where(confirm_tokens.c.token_hash == token_h,
                                                     confirm_tokens.c.used_at.is_(None))
                        .values(used_at=now)).rowcount
    if used != 1:  # a concurrent request used it first
        raise LinkUsed("this confirmation link was used already")
    if sub["state"] == "suppressed" or _blocking_suppression(conn, sub["email"]):
        # The address bounced or complained meanwhile: confirmed consent, but no mail.
        _event(conn, settings, sub["id"], "confirmed", client=client, token_hash=token_h, now=now,
               wording=_signup_wording(conn, sub["id"]), detail={"state_before": sub["state"], "suppressed": True})
        return get_by_id(conn, sub["id"])
    if is_suppressed_address(conn, sub["email"]) == "unsubscribed":
        from pipeline.subscribers.suppression import unsuppress
        unsuppress(conn, None, sub["email"], source="confirmed opt-in")
    conn.execute(update(subscribers).where(subscribers.c.id == sub["id"]).values(
        state="confirmed", confirmed_at=now, unsubscribed_at=None, updated_at=now))
    # Older links for the same sign-up are spent too.
    conn.execute(update(confirm_tokens).where(confirm_tokens.c.subscriber_id == sub["id"],
                                              confirm_tokens.c.used_at.is_(None)).values(used_at=now))
    _event(conn, settings, sub["id"], "confirmed", client=client, token_hash=token_h, now=now,
           wording=_signup_wording(conn, sub["id"]), detail={"state_before": sub["state"]})
    return get_by_id(conn, sub["id"])


def _signup_wording(conn: Connection, subscriber_id: int) -> str:
    """The wording version of the sign-up being confirmed (its latest 'signup' event)."""
    row = conn.execute(select(subscriber_events.c.wording_version)
                       .where(subscriber_events.c.subscriber_id == subscriber_id,
                              subscriber_events.c.kind.in_(("signup", "imported")))
                       .order_by(subscriber_events.c.at.desc(), subscriber_events.c.id.desc()).limit(1)).first()
    return row[0] if row else ""


def resend_confirmation(conn: Connection, settings: Settings, token: str, *, client: Client | None = None,
                        now: dt.datetime | None = None) -> SignupResult:
    """'Send it again' from an expired (or lost) link: a new token, if still unconfirmed."""
    now = now or utcnow()
    client = client or Client(source="web:resend")
    row = _token_row(conn, settings, token)
    sub = get_by_id(conn, row["subscriber_id"])
    if sub is None:
        raise TokenError("this confirmation link is not valid", hint="Sign up again on the home page.")
    if client.ip:
        check_rate(conn, _attempt_key("ip", client.ip), settings.subscribers.max_signups_per_client, now,
                   "from your network")
    check_rate(conn, _attempt_key("addr", sub["email"]), settings.subscribers.max_signups_per_address, now,
               "for this address")
    if sub["state"] in ("confirmed", "suppressed") or _blocking_suppression(conn, sub["email"]):
        return SignupResult(sub["id"], "ignored_suppressed" if sub["state"] != "confirmed" else "noop")
    return SignupResult(sub["id"], "confirm_sent", _issue_confirmation(conn, settings, sub, client, now))


# --- preferences and withdrawal -------------------------------------------------------

def update_preferences(conn: Connection, settings: Settings, subscriber_id: int, *, name=None, frequency=None,
                       topics=None, timezone=None, client: Client | None = None,
                       known_topics: Iterable[str] | None = None, now: dt.datetime | None = None) -> dict:
    """Change what and how often; returns {field: [old, new]} for what changed."""
    now = now or utcnow()
    sub = get_by_id(conn, subscriber_id)
    if sub is None:
        raise NotFound("this subscription no longer exists", hint="Sign up again on the home page.")
    if topics is not None:
        known = list(known_topics) if known_topics is not None else available_topics(conn, settings)
        if known:  # what they have already stays choosable, offered or not
            known += list(sub["topics"] or [])
    new = {
        "name": clean_name(name) if name is not None else sub["name"],
        "frequency": clean_frequency(frequency, settings) if frequency is not None else sub["frequency"],
        "topics": clean_topics(topics, known) if topics is not None else list(sub["topics"] or []),
        "timezone": clean_timezone(timezone) if timezone is not None else sub["timezone"],
    }
    changes = {k: [sub[k] if k != "topics" else list(sub["topics"] or []), v] for k, v in new.items()
               if (list(sub["topics"] or []) if k == "topics" else sub[k]) != v}
    if changes:
        conn.execute(update(subscribers).where(subscribers.c.id == subscriber_id).values(updated_at=now, **new))
        _event(conn, settings, subscriber_id, "preferences", client=client, now=now, detail={"changes": changes})
    return changes


def unsubscribe(conn: Connection, settings: Settings, subscriber_id: int, *, client: Client | None = None,
                now: dt.datetime | None = None) -> bool:
    """Withdraw consent (idempotent): True when this call changed something."""
    now = now or utcnow()
    client = client or Client(source="web")
    sub = get_by_id(conn, subscriber_id)
    if sub is None or sub["state"] == "unsubscribed":
        return False
    if sub["state"] == "suppressed":
        # Stays suppressed; the withdrawal is still recorded, once.
        if sub["unsubscribed_at"] is not None:
            return False
        changed = conn.execute(update(subscribers).where(subscribers.c.id == subscriber_id,
                                                         subscribers.c.unsubscribed_at.is_(None))
                               .values(unsubscribed_at=now, updated_at=now)).rowcount
    else:
        changed = conn.execute(update(subscribers).where(subscribers.c.id == subscriber_id,
                                                         subscribers.c.state == sub["state"])
                               .values(state="unsubscribed", unsubscribed_at=now, updated_at=now)).rowcount
    if changed:
        # Pending confirmation links die with the withdrawal.
        conn.execute(update(confirm_tokens).where(confirm_tokens.c.subscriber_id == subscriber_id,
                                                  confirm_tokens.c.used_at.is_(None)).values(used_at=now))
        _event(conn, settings, subscriber_id, "unsubscribed", client=client, now=now,
               detail={"state_before": sub["state"]})
    return bool(changed)


def mark_suppressed(conn: Connection, settings: Settings, email: str, *, reason: str, source: str = "operator",
                    now: dt.datetime | None = None) -> bool:
    """Set a subscriber's state to suppressed (hard bounce, complaint, operator).
    The delivery helper's suppression list is the send-time check; this keeps the
    subscriber's own state and history in step. True when a row changed."""
    now = now or utcnow()
    sub = get(conn, email)
    if sub is None or sub["state"] == "suppressed":
        return False
    if reason == "unsubscribed":  # e.g. a mailto: unsubscribe: a withdrawal, not a bounce
        return unsubscribe(conn, settings, sub["id"], client=Client(source=source), now=now)
    conn.execute(update(subscribers).where(subscribers.c.id == sub["id"]).values(state="suppressed", updated_at=now))
    _event(conn, settings, sub["id"], "suppressed", client=Client(source=source), now=now,
           detail={"reason": reason, "state_before": sub["state"]})
    return True


def lift_suppression(conn: Connection, settings: Settings, email: str, *, source: str = "operator",
                     now: dt.datetime | None = None) -> bool:
    """Back from suppressed: to confirmed only if it was confirmed and never withdrew."""
    now = now or utcnow()
    sub = get(conn, email)
    if sub is None or sub["state"] != "suppressed":
        return False
    state = ("unsubscribed" if sub["unsubscribed_at"] else "confirmed" if sub["confirmed_at"] else "unconfirmed")
    conn.execute(update(subscribers).where(subscribers.c.id == sub["id"]).values(state=state, updated_at=now))
    _event(conn, settings, sub["id"], "unsuppressed", client=Client(source=source), now=now, detail={"state": state})
    return True


# --- operator actions ---------------------------------------------------------------

def add(conn: Connection, settings: Settings, email: str, *, name=None, frequency=None, topics=None, timezone=None,
        confirmed: bool = False, source: str = "operator", now: dt.datetime | None = None) -> tuple[dict, str]:
    """Add one address by hand. Without `confirmed`, a confirmation email is queued
    (double opt-in). Returns (subscriber, what happened)."""
    now = now or utcnow()
    address = normalise_email(email, smtputf8=smtputf8_enabled(settings))
    prefs = {"name": clean_name(name), "frequency": clean_frequency(frequency, settings),
             "topics": clean_topics(topics, None), "timezone": clean_timezone(timezone)}
    existing = get(conn, address)
    suppression = is_suppressed_address(conn, address)
    if existing and existing["state"] in ("unsubscribed", "suppressed"):
        raise SyndicateError(f"{address} is {existing['state']}; not re-subscribing it",
                             hint="People who left must sign up again themselves (a suppression: "
                                  "`syndicate suppressions remove` first, if the cause is gone).")
    if suppression:
        raise SyndicateError(f"{address} is on the suppression list ({suppression})",
                             hint="`syndicate suppressions remove EMAIL` first, if the cause is gone.")
    client = Client(source=source, wording_version="operator")
    if existing is None:
        sid = conn.execute(insert(subscribers).values(email=address, state="unconfirmed", source=source[:200],
                                                      created_at=now, updated_at=now, **prefs)).inserted_primary_key[0]
        _event(conn, settings, sid, "signup", client=client, now=now, wording="operator",
               detail={"requested": prefs, "by": "operator"})
        sub = get_by_id(conn, sid)
        action = "added"
    elif existing["state"] == "unconfirmed" and confirmed:
        sub, action = existing, "already on the list"
    else:
        raise SyndicateError(f"{address} is already on the list ({existing['state']})",
                             hint="Preferences are the subscriber's to change (the link in every email); "
                                  "`syndicate subscribers show EMAIL` shows them.")
    if sub["state"] == "unconfirmed":
        if confirmed:
            _mark_confirmed(conn, settings, sub["id"], source=source, now=now, detail={"by": "operator"})
            action += ", confirmed"
        else:
            _issue_confirmation(conn, settings, sub, client, now)
            action += ", confirmation queued"
    return get_by_id(conn, sub["id"]), action


def _mark_confirmed(conn: Connection, settings: Settings, subscriber_id: int, *, source: str, now: dt.datetime,
                    detail: dict) -> None:
    conn.execute(update(subscribers).where(subscribers.c.id == subscriber_id).values(
        state="confirmed", confirmed_at=now, updated_at=now))
    _event(conn, settings, subscriber_id, "confirmed", client=Client(source=source), now=now,
           wording=f"stated by operator: {source}"[:80], detail=detail)


def remove(conn: Connection, settings: Settings, email: str, *, erase: bool = False,
           now: dt.datetime | None = None) -> str:
    """Operator removal: by default a withdrawal (history kept); `erase` deletes the
    subscriber and its whole history (right to erasure)."""
    sub = require_subscriber(conn, email)
    if erase:
        conn.execute(delete(subscriber_events).where(subscriber_events.c.subscriber_id == sub["id"]))
        conn.execute(delete(confirm_tokens).where(confirm_tokens.c.subscriber_id == sub["id"]))
        conn.execute(delete(subscribers).where(subscribers.c.id == sub["id"]))
        return "erased"
    changed = unsubscribe(conn, settings, sub["id"], client=Client(source="operator"), now=now)
    return "unsubscribed" if changed else f"already {sub['state']}"


# --- CSV import and export ----------------------------------------------------------

IMPORT_COLUMNS = ("email", "name", "frequency", "topics", "timezone")
EXPORT_COLUMNS = ("email", "name", "state", "frequency", "topics", "timezone", "source",
                  "created_at", "confirmed_at", "unsubscribed_at")


@dataclasses.dataclass
class ImportReport:
    rows: int = 0
    added: int = 0
    updated: int = 0
    confirmed: int = 0
    confirmations_queued: int = 0
    unchanged: int = 0
    kept: list[tuple[int, str, str]] = dataclasses.field(default_factory=list)  # (line, email, state)
    bad: list[tuple[int, str]] = dataclasses.field(default_factory=list)  # (line, message)

    def counts(self) -> dict[str, int]:
        return {"rows": self.rows, "added": self.added, "updated": self.updated, "confirmed": self.confirmed,
                "confirmations_queued": self.confirmations_queued, "unchanged": self.unchanged,
                "kept_unsubscribed_or_suppressed": len(self.kept), "bad": len(self.bad)}


def import_csv(conn: Connection, settings: Settings, stream: IO[str], *, confirmed: bool = False,
               source: str = "", file_name: str = "", now: dt.datetime | None = None) -> ImportReport:
    """Upsert subscribers from CSV (columns email,name,frequency,topics,timezone; topics
    semicolon separated). Bad rows are reported by line and skipped; unsubscribed and
    suppressed addresses are kept as they are. `confirmed` marks new and unconfirmed
    rows confirmed with the stated `source` (required then); otherwise new rows get a
    confirmation email."""
    if confirmed and not source.strip():
        raise InvalidInput("source", "--confirmed needs --source NAME: where these people gave their consent",
                           hint="e.g. --source 'paper sign-up sheet, 2026 fair'")
    now = now or utcnow()
    report = ImportReport()
    reader = csv.DictReader(stream)
    if reader.fieldnames is None:
        return report
    fields = [f.strip().lower() for f in reader.fieldnames]
    if "email" not in fields:
        raise InvalidInput("email", f"{file_name or 'the CSV file'}: no 'email' column in the header line",
                           hint=f"The first line names the columns: {','.join(IMPORT_COLUMNS)}.")
    reader.fieldnames = fields
    # Any well-formed topic goes: an operator may list topics no article has used yet.
    known: list[str] = []
    tag = f"import:{source.strip()}" if source.strip() else "import"
    client = Client(source=tag, wording_version=f"import:{source.strip()}"[:80] if source.strip() else "import")
    line_end = reader.line_num
    seen: set[str] = set()
    for record in reader:
        line = line_end + 1
        line_end = reader.line_num
        if not any((v or "").strip() for k, v in record.items() if k is not None):
            continue
        report.rows += 1
        try:
            if None in record:
                raise InvalidInput("row", "more values than columns")
            address = normalise_email(record.get("email"), smtputf8=smtputf8_enabled(settings))
            prefs = {"name": clean_name(record.get("name")),
                     "frequency": clean_frequency((record.get("frequency") or "").strip().lower(), settings),
                     "topics": clean_topics(record.get("topics") or "", known),
                     "timezone": clean_timezone((record.get("timezone") or "").strip())}
        except InvalidInput as exc:
            report.bad.append((line, exc.message))
            continue
        if address in seen:
            report.bad.append((line, f"{address} appears more than once; this row was skipped"))
            continue
        seen.add(address)
        existing = get(conn, address)
        suppression = is_suppressed_address(conn, address)
        if existing and existing["state"] in ("unsubscribed", "suppressed"):
            report.kept.append((line, address, existing["state"]))
            continue
        if suppression:
            report.kept.append((line, address, f"suppressed ({suppression})"))
            continue
        detail = {"file": file_name, "line": line}
        if existing is None:
            sid = conn.execute(insert(subscribers).values(email=address, state="unconfirmed", source=tag[:200],
                                                          created_at=now, updated_at=now, **prefs)
                               ).inserted_primary_key[0]
            _event(conn, settings, sid, "imported", client=client, now=now, wording=client.wording_version,
                   detail={**detail, "preferences": prefs})
            report.added += 1
            sub = get_by_id(conn, sid)
        else:
            # Only what the row states: a missing column or an empty cell keeps the current value.
            given = {k: v for k, v in prefs.items() if (record.get(k) or "").strip()}
            changes = update_preferences(conn, settings, existing["id"], client=client, now=now, known_topics=known,
                                         **given)
            sub = get_by_id(conn, existing["id"])
            if changes:
                report.updated += 1
            elif not (confirmed and sub["state"] == "unconfirmed"):
                report.unchanged += 1
        if sub["state"] == "unconfirmed":
            if confirmed:
                _mark_confirmed(conn, settings, sub["id"], source=tag, now=now, detail=detail)
                report.confirmed += 1
            elif existing is None:
                _issue_confirmation(conn, settings, sub, client, now)
                report.confirmations_queued += 1
    return report


def _iso(value) -> str:
    return value.isoformat() if value else ""


def export_csv(conn: Connection, stream: IO[str], *, state: str | None = None) -> int:
    """Write every subscriber (or those in `state`) with state and preferences; returns rows."""
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    n = 0
    for sub in list_subscribers(conn, state=state):
        writer.writerow([sub["email"], sub["name"], sub["state"], sub["frequency"], ";".join(sub["topics"] or []),
                         sub["timezone"], sub["source"], _iso(sub["created_at"]), _iso(sub["confirmed_at"]),
                         _iso(sub["unsubscribed_at"])])
        n += 1
    return n


# --- purge (GDPR-2, Art. 5(1)(e)) ----------------------------------------------------

def purge_unconfirmed(conn: Connection, settings: Settings, *, days: int | None = None, dry_run: bool = False,
                      now: dt.datetime | None = None) -> dict[str, int]:
    """Delete sign-ups never confirmed whose last request is older than `days`, with
    their tokens and events, plus rate-limit rows older than a day."""
    now = now or utcnow()
    days = settings.subscribers.purge_unconfirmed_days if days is None else days
    if days < 1:
        raise InvalidInput("days", "the purge age must be at least 1 day")
    cutoff = now - dt.timedelta(days=days)
    stale = select(subscribers.c.id).where(subscribers.c.state == "unconfirmed",
                                           subscribers.c.confirmed_at.is_(None),
                                           subscribers.c.updated_at < cutoff)
    ids = [r[0] for r in conn.execute(stale)]
    old_attempts = conn.execute(select(func.count()).select_from(subscribe_attempts)
                                .where(subscribe_attempts.c.at < now - dt.timedelta(days=1))).scalar_one()
    if not dry_run:
        for chunk in (ids[i:i + 500] for i in range(0, len(ids), 500)):
            conn.execute(delete(subscriber_events).where(subscriber_events.c.subscriber_id.in_(chunk)))
            conn.execute(delete(confirm_tokens).where(confirm_tokens.c.subscriber_id.in_(chunk)))
            conn.execute(delete(subscribers).where(subscribers.c.id.in_(chunk)))
        conn.execute(delete(subscribe_attempts).where(subscribe_attempts.c.at < now - dt.timedelta(days=1)))
        # Expired, unused links of people who did confirm or left are no use to anyone.
        conn.execute(delete(confirm_tokens).where(and_(confirm_tokens.c.used_at.is_(None),
                                                       confirm_tokens.c.expires_at < cutoff)))
    return {"purged_unconfirmed": len(ids), "rate_limit_rows": old_attempts}


def purge_stage(app, *, dry_run: bool = False, days: int | None = None, **_options) -> dict:
    """The `purge` stage: delete never-confirmed sign-ups older than N days."""
    with app.engine.begin() as conn:
        return purge_unconfirmed(conn, app.settings, days=days, dry_run=dry_run)


# --- the confirmation email ---------------------------------------------------------

def template_dirs(settings: Settings) -> list[Path]:
    return templating.template_dirs(settings)


def _email_envs(settings: Settings):
    """(HTML env with autoescape, text env without), from the one factory."""
    return templating.environment(settings, html=True, keep_trailing_newline=False), templating.environment(settings, html=False)


def _domain(address: str) -> str:
    return parseaddr(address)[1].rpartition("@")[2] or (urlsplit(address).hostname or "localhost")


def _message(settings: Settings, row: dict, to: str, subject: str, template: str, context: dict):
    from pipeline.delivery.email.channel import OutgoingEmail

    sender = require(settings, "site.transactional_from", "confirmation emails need a From address (BULK-6)")
    html_env, text_env = _email_envs(settings)
    context = {"site": settings.site, **context}
    text_body = text_env.get_template(f"email/{template}.txt").render(**context)
    html_body = html_env.get_template(f"email/{template}.html").render(**context)
    # The address goes in as IDNA/ASCII, or raw UTF-8 under SMTPUTF8 (RFC 6532): never as
    # encoded-words, which RFC 2047 forbids inside an addr-spec.
    smtputf8 = smtputf8_enabled(settings)
    to = envelope_address(to, smtputf8=smtputf8)
    msg = EmailMessage(policy=email.policy.SMTPUTF8 if needs_smtputf8(to) else email.policy.SMTP)
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(utcnow())
    key = row.get("idempotency_key") or f"{row.get('id')}"
    msg["Message-ID"] = f"<{hashlib.sha256(key.encode('utf-8')).hexdigest()[:32]}@{_domain(sender)}>"
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(text_body)
    msg.add_alternative(html_body, subtype="html")
    return OutgoingEmail(envelope_from=parseaddr(sender)[1], recipients=[to], data=msg.as_bytes())


def build_confirm_email(conn: Connection, settings: Settings, row: dict):
    """The 'confirm' delivery kind -> the confirmation email, or None when it is moot."""
    payload = row["payload"] or {}
    sub = get_by_id(conn, int(payload.get("subscriber_id") or row.get("subscriber_id") or 0))
    if sub is None or sub["state"] in ("confirmed", "suppressed"):
        return None
    token = _confirm_token(settings, payload["nonce"])
    tok = conn.execute(select(confirm_tokens).where(confirm_tokens.c.token_hash == tokens.token_hash(token))
                       ).mappings().first()
    if tok is None or tok["used_at"] is not None or tok["expires_at"] <= utcnow():
        return None
    context = {"name": sub["name"], "email": sub["email"], "confirm_url": confirm_url(settings, token),
               "ttl_hours": settings.subscribers.confirm_ttl_hours, "frequency": sub["frequency"],
               "topics": list(sub["topics"] or []), "consent_text": settings.subscribers.consent_text,
               "resubscribe": sub["state"] == "unsubscribed"}
    return _message(settings, row, sub["email"], f"Confirm your subscription to {settings.site.title}",
                    "confirm", context)


def build_notice_email(conn: Connection, settings: Settings, row: dict):
    """'subscribed_notice': someone asked to subscribe an address that already is."""
    sub = get_by_id(conn, int((row["payload"] or {}).get("subscriber_id") or row.get("subscriber_id") or 0))
    if sub is None or sub["state"] != "confirmed":
        return None
    context = {"name": sub["name"], "email": sub["email"], "preferences_url": preferences_url(settings, sub["id"]),
               "unsubscribe_url": unsubscribe_url(settings, sub["id"])}
    return _message(settings, row, sub["email"], f"You are already subscribed to {settings.site.title}",
                    "subscribed_notice", context)


def _register() -> None:
    from pipeline.delivery import register_email_kind

    register_email_kind("confirm", build_confirm_email)
    register_email_kind("subscribed_notice", build_notice_email)


_register()


__all__ = ["STATES", "FREQUENCIES", "InvalidInput", "RateLimited", "LinkExpired", "LinkUsed", "Client",
           "request_subscription", "confirm", "check_confirm_token", "resend_confirmation", "update_preferences",
           "unsubscribe", "mark_suppressed", "lift_suppression", "add", "remove", "import_csv", "export_csv",
           "purge_unconfirmed", "purge_stage", "unsubscribe_url", "preferences_url", "list_token",
           "verify_list_token", "may_receive", "history", "form_context", "available_topics"]
