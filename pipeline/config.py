"""Every setting, declared once: (section, key, default, type, help).

Loaded once, in this order, later wins: the defaults below, then `syndicate.toml`,
then environment variables `SYNDICATE_<SECTION>__<KEY>`, then CLI flags (the CLI
passes them as `overrides`). An unknown key or a value of the wrong type stops
start-up with the key and the fix named. Secrets (`secret=True`) are read only from
the environment; a secret in the TOML file is an error, so none ends up in a repo.

Two sections are lists of tables rather than plain keys: `[[policy.rules]]` and
`[[partners]]`; their fields are declared in `POLICY_RULE_FIELDS` / `PARTNER_FIELDS`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.durations import duration_list
from pipeline.errors import ConfigError

ENV_PREFIX = "SYNDICATE_"


@dataclasses.dataclass(frozen=True)
class Setting:
    section: str
    key: str
    default: Any
    type: type | Callable[[Any], Any]
    help: str
    secret: bool = False
    choices: tuple[str, ...] | None = None
    # The allowed range of a number, checked at load (`digests.max_articles = -5` is
    # refused there, not at the first digest). `above`: strictly more than this.
    at_least: float | None = None
    at_most: float | None = None
    above: float | None = None

    def check_range(self, value: object) -> str | None:
        """Why `value` is out of this setting's range, or None."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        if self.above is not None and not value > self.above:
            return f"must be more than {self.above:g}"
        if self.at_least is not None and value < self.at_least:
            return f"must be at least {self.at_least:g}"
        if self.at_most is not None and value > self.at_most:
            return f"must be at most {self.at_most:g}"
        return None

    @property
    def env_name(self) -> str:
        return f"{ENV_PREFIX}{self.section.upper()}__{self.key.upper()}"


def _list_of_str(value: Any) -> list[str]:
    if isinstance(value, str):  # from the environment: comma separated
        return [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("expected a list of strings")
    return list(value)


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected a whole number")
    return int(value)


def _float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number")
    return float(value)


def _timezone(value: object) -> str:
    """An IANA name, checked now rather than at the first digest."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected an IANA timezone name such as 'Europe/Berlin'")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{value!r} is not an IANA timezone (e.g. 'Europe/Berlin')") from None
    return value


def _date_or_empty(value: object) -> str:
    """An ISO 8601 date or datetime, kept as written; empty means none."""
    from pipeline.timeutil import parse_datetime

    if not isinstance(value, str):
        raise ValueError("expected an ISO 8601 date such as '2026-11-01'")
    if value.strip():
        parse_datetime(value)
    return value


def _positive_float(value: Any) -> float:
    result = _float(value)
    if not result > 0:
        raise ValueError("must be more than 0")
    return result


def _count(value: Any) -> int:
    result = _int(value)
    if result < 0:
        raise ValueError("must be 0 or more")
    return result


S = Setting
SETTINGS: list[Setting] = [
    # --- site: who we are; everything a reader or recipient sees
    S("site", "title", "Syndicate Sample Journal", str, "Site name used in feeds, pages and emails."),
    S(
        "site",
        "description",
        "Articles from our community of authors.",
        str,
        "One-line site description (RSS channel description).",
    ),
    S(
        "site",
        "base_url",
        "http://127.0.0.1:8000",
        str,
        "Absolute URL the public site is served from; every link in feeds and emails starts with it.",
    ),
    S("site", "language", "en", str, "RFC 5646 language tag of the content."),
    S("site", "timezone", "UTC", _timezone, "IANA timezone used for digest schedules and dates shown to people."),
    S(
        "site",
        "postal_address",
        "",
        str,
        "Physical postal address printed in every email footer (CAN-SPAM); digests refuse to render without it.",
    ),
    S("site", "from_address", "", str, "From address of digests, e.g. 'Journal <digest@news.example.com>'."),
    S(
        "site",
        "transactional_from",
        "",
        str,
        "From address of confirmation and other transactional mail (must differ from from_address, BULK-6).",
    ),
    S("site", "reply_to", "", str, "Reply-To address for digests (empty: none)."),
    S(
        "site",
        "list_id",
        "",
        str,
        "List-Id value, e.g. 'Journal digest <digest.news.example.com>' (empty: derived from base_url).",
    ),
    # --- paths: where things live; relative paths are relative to the config file's folder
    S("paths", "content", "content", str, "Folder with articles/ and authors/."),
    S(
        "paths",
        "templates",
        "templates",
        str,
        "Folder with email/ and web/ templates (operator overrides of the bundled ones).",
    ),
    S("paths", "public", "public", str, "Output folder for feeds, pages and digest web views."),
    S("paths", "var", "var", str, "State folder: database, local secret, Maildir, locks."),
    S("paths", "schedules", "schedules", str, "Folder of schedule files (*.toml) read by `syndicate scheduler`."),
    # --- database
    S(
        "database",
        "url",
        "sqlite:///var/syndicate.db",
        str,
        "SQLAlchemy URL. SQLite paths are relative to the config folder; PostgreSQL: postgresql+psycopg://user@host/db.",
    ),
    # --- ingest
    S("ingest", "max_file_bytes", 1_000_000, _int, "Largest article file accepted, in bytes.", at_least=1),
    S("ingest", "strict", False, _bool, "Any bad file or source item is fatal; nothing written (ING-1)."),
    # --- email
    S(
        "email",
        "backend",
        "maildir",
        str,
        "How mail leaves: 'maildir' (files in email.maildir) or 'smtp'.",
        choices=("maildir", "smtp"),
    ),
    S("email", "maildir", "var/mail", str, "Maildir that the maildir backend writes to."),
    S("email", "smtp_host", "127.0.0.1", str, "SMTP server host."),
    S("email", "smtp_port", 587, _int, "SMTP server port.", at_least=1, at_most=65535),
    S(
        "email",
        "smtp_security",
        "starttls",
        str,
        "'starttls' (fail closed if not offered), 'tls' (implicit TLS) or 'none' (local relays only).",
        choices=("starttls", "tls", "none"),
    ),
    S("email", "smtp_username", "", str, "SMTP AUTH user (empty: no AUTH)."),
    S("email", "smtp_password", "", str, "SMTP AUTH password; environment only.", secret=True),
    S("email", "smtp_timeout", 30.0, _float, "Seconds to wait for the SMTP server.", above=0),
    S(
        "email",
        "smtputf8",
        False,
        _bool,
        "The relay offers SMTPUTF8 (RFC 6531): accept sign-ups whose address has non-ASCII characters before the @ (false: such sign-ups are refused with a clear message; domains are always IDNA-encoded).",
    ),
    S(
        "email",
        "inbound_mailbox",
        "var/inbound",
        str,
        "Maildir where the MTA delivers mail for the bounce domain (VERP bounces, mailto: unsubscribes); read by the `bounces` stage.",
    ),
    S(
        "email",
        "bounce_domain",
        "",
        str,
        "Domain of the VERP envelope sender bounces+TOKEN@DOMAIN (empty: the From domain).",
    ),
    S("email", "dkim_selector", "", str, "DKIM selector (empty: no DKIM signing)."),
    S("email", "dkim_domain", "", str, "DKIM d= domain; must align with the From domain."),
    S("email", "dkim_private_key", "", str, "PEM private key for DKIM; environment only.", secret=True),
    # --- feeds
    S(
        "feeds",
        "max_entries",
        50,
        _int,
        "Entries in a subscription feed; older ones move to RFC 5005 archives.",
        at_least=1,
    ),
    S("feeds", "archive_size", 50, _int, "Entries per archive document (full archives never change).", at_least=1),
    S("feeds", "hubs", [], _list_of_str, "WebSub hub URLs pinged when a feed changes."),
    S(
        "feeds",
        "hub_url_param",
        "hub.url",
        str,
        "Form field naming the topic in a hub publish ping ('hub.url' or 'hub.topic').",
    ),
    S("feeds", "max_age", 600, _int, "Cache-Control max-age (s) of subscription feeds and pages.", at_least=0),
    S("feeds", "archive_max_age", 31_536_000, _int, "Cache-Control max-age (s) of full archive documents.", at_least=0),
    S("feeds", "listing_size", 20, _int, "Latest articles listed on the home page (public/index.html).", at_least=0),
    S(
        "feeds",
        "build_processes",
        0,
        _int,
        "Processes that render a big build (0: one per CPU; 1: none). Used only from a single-threaded process (the CLI), never inside the scheduler.",
        at_least=0,
    ),
    S(
        "feeds",
        "hub_timeout",
        10.0,
        _float,
        "Seconds to wait for a WebSub hub to answer a publish ping (connect and read, each).",
        above=0,
    ),
    S(
        "feeds",
        "hub_retry_schedule",
        ["30s", "2m", "10m", "1h", "6h", "24h"],
        duration_list,
        "Waits before retry 1, 2, ... of a failed hub ping (s, m, h, d suffixes); when it runs out the ping is 'dead' (WS-4).",
    ),
    # --- web
    S("web", "host", "127.0.0.1", str, "Address `syndicate serve` listens on."),
    S("web", "port", 8000, _int, "Port `syndicate serve` listens on.", at_least=1, at_most=65535),
    S(
        "web",
        "forwarded_allow_ips",
        "",
        str,
        "Reverse proxies (addresses or networks, comma separated) whose X-Forwarded-For/-Proto are trusted for the client address (rate limits, consent log); empty: none, the peer is the client. The client is the right-most hop not in this list, so the proxy must overwrite (or append to) X-Forwarded-For, never pass a client's own value on alone. '*' trusts any peer as one proxy hop.",
    ),
    S(
        "web",
        "allowed_origins",
        [],
        _list_of_str,
        "Extra origins (scheme://host[:port]) whose pages may POST the subscribe form; the origin of site.base_url is always allowed.",
    ),
    # --- desk (owner: pipeline.accounts, pipeline.web.desk): the signed-in workspace under /desk/
    S(
        "desk",
        "open_registration",
        False,
        _bool,
        "Authors who register at /desk/join and confirm their address are accepted at once (false: an editor or admin accepts them).",
    ),
    S("desk", "session_hours", 12, _int, "Hours a desk sign-in lasts; then the person signs in again."),
    S("desk", "invite_ttl_hours", 72, _int, "Hours an invitation link (`syndicate users add`) stays valid."),
    S("desk", "reset_ttl_hours", 2, _int, "Hours a password-reset or registration-confirmation link stays valid."),
    S(
        "desk",
        "max_failures_per_account",
        5,
        _int,
        "Failed sign-ins for one account within throttle_minutes before it is refused for a while.",
    ),
    S(
        "desk",
        "max_failures_per_address",
        20,
        _int,
        "Failed sign-ins from one client address within throttle_minutes before it is refused for a while.",
    ),
    S("desk", "throttle_minutes", 15, _int, "Window, in minutes, of the sign-in throttles."),
    S("desk", "max_upload_bytes", 5_000_000, _int, "Largest image an author may upload, in bytes."),
    # --- scheduler (owner: pipeline.ops.scheduler)
    S(
        "scheduler",
        "heartbeat_seconds",
        10.0,
        _float,
        "Seconds between the scheduler's heartbeats, checks of its leader lock and of paused jobs (a pause or resume is honoured within this time).",
        above=0,
    ),
    S(
        "scheduler",
        "standby_poll_seconds",
        5.0,
        _float,
        "Seconds between a standby scheduler's attempts to take over; with the lock's keepalives a standby takes over within 30 s of the leader dying.",
        above=0,
    ),
    S(
        "scheduler",
        "max_workers",
        10,
        _int,
        "Jobs that may run at the same time in one scheduler (APScheduler's thread pool).",
        at_least=1,
    ),
    S(
        "scheduler",
        "stale_after_seconds",
        60.0,
        _float,
        "A scheduler heartbeat older than this is reported as stale by /healthz and `syndicate status`.",
        above=0,
    ),
    # --- delivery (owner: pipeline.delivery): the outbox drain and the SMTP sender
    S("delivery", "batch_size", 200, _int, "Deliveries claimed per batch.", at_least=1),
    S(
        "delivery",
        "lease_seconds",
        300,
        _int,
        "A claim not completed within this time (the worker died) becomes due again.",
        at_least=1,
    ),
    S(
        "delivery",
        "retry_schedule",
        ["5m", "30m", "1h", "2h", "4h", "8h", "16h", "24h", "24h", "24h"],
        duration_list,
        "Waits before retry 1, 2, ... of a transient failure (s, m, h, d suffixes); when it runs out the delivery is 'dead' (SMTP-2: default ends after more than 4 days).",
    ),
    S(
        "delivery",
        "max_consecutive_failures",
        20,
        _int,
        "The channel pauses itself after this many failures in a row (0: never).",
        at_least=0,
    ),
    S(
        "delivery",
        "throttle_seconds",
        60.0,
        _float,
        "After a 421 or 4.7.x answer: requeue the message this much later (no attempt spent) and halve the send rate to that domain for this long (recovering gradually after it).",
        at_least=0,
    ),
    S(
        "delivery",
        "outage_backoff_seconds",
        30.0,
        _float,
        "When the mail server cannot be reached, the email channel stops sending for this long, doubling with each failed try (up to 32x); `deliver` exits non-zero and `status` shows the outage.",
        above=0,
    ),
    S(
        "delivery",
        "policy_pause_domains",
        5,
        _int,
        "A 5.7.x refusal at RCPT fails that recipient only; the channel pauses when this many different recipient domains refuse with 5.7.x in a row (0: never).",
        at_least=0,
    ),
    S(
        "delivery",
        "smtp_connections",
        2,
        _int,
        "SMTP connections each delivery process keeps open in parallel.",
        at_least=1,
    ),
    S(
        "delivery",
        "messages_per_connection",
        100,
        _int,
        "Messages sent on one SMTP connection before it is closed and reopened (SMTP-5).",
        at_least=1,
    ),
    S(
        "delivery",
        "rate_per_second",
        0.0,
        _float,
        "Token-bucket rate, messages per second for the email channel, shared by all live workers (0: unlimited).",
        at_least=0,
    ),
    S(
        "delivery",
        "max_per_hour",
        0,
        _int,
        "Sliding-window cap, messages per hour for the email channel (0: none).",
        at_least=0,
    ),
    S(
        "delivery",
        "max_per_day",
        0,
        _int,
        "Sliding-window cap, messages per 24 hours for the email channel (0: none).",
        at_least=0,
    ),
    S(
        "delivery",
        "pipelining",
        True,
        _bool,
        "Use ESMTP PIPELINING (RFC 2920) when the server offers it: one round trip for MAIL, RCPT and DATA.",
    ),
    S(
        "delivery",
        "smtp_ca_file",
        "",
        str,
        "PEM file of CA certificates trusted for the SMTP server's TLS certificate (empty: the system store).",
    ),
    S(
        "delivery",
        "dkim_key_file",
        "",
        str,
        "PEM file with the DKIM private key (alternative to SYNDICATE_EMAIL__DKIM_PRIVATE_KEY).",
    ),
    S(
        "delivery",
        "soft_bounce_limit",
        3,
        _int,
        "Soft bounces within soft_bounce_days that suppress an address.",
        at_least=1,
    ),
    S("delivery", "soft_bounce_days", 14, _int, "Window, in days, in which soft bounces are counted.", at_least=1),
    S(
        "delivery",
        "journal",
        True,
        _bool,
        "Append each accepted message to a journal in var/ before the database commit, so a killed worker's successor never re-sends it.",
    ),
    # --- partner push (owner: pipeline.partners): defaults for every [[partners]] entry
    S(
        "partner_push",
        "connect_timeout",
        5.0,
        _float,
        "Seconds to wait for a partner's TCP/TLS connection (SW-6; a partner may set its own connect_timeout).",
        above=0,
    ),
    S(
        "partner_push",
        "read_timeout",
        15.0,
        _float,
        "Seconds to wait for a partner's answer (SW-4: 15-30 s; a partner may set its own read_timeout).",
        above=0,
    ),
    S(
        "partner_push",
        "retry_schedule",
        ["5s", "5m", "30m", "2h", "5h", "10h", "14h", "20h", "24h"],
        duration_list,
        "Waits before retry 1, 2, ... of a partner push after a 5xx, timeout or connection error (s, m, h, d); then the push is dead-lettered. Default: the Standard Webhooks example, about 3 days (SW-5).",
    ),
    S(
        "partner_push",
        "retry_jitter",
        0.2,
        _float,
        "Each retry wait is scaled by a random factor within +/- this fraction, so retries to a recovering partner spread out.",
        at_least=0,
        at_most=1,
    ),
    S(
        "partner_push",
        "retry_after_max",
        86400,
        _int,
        "Longest Retry-After (seconds) honoured from a 429/503 answer; longer values are capped.",
        at_least=0,
    ),
    S(
        "partner_push",
        "max_consecutive_failures",
        5,
        _int,
        "Circuit breaker: a partner failing this many times in a row is paused for pause_minutes (0: never); other partners go on.",
        at_least=0,
    ),
    S(
        "partner_push",
        "pause_minutes",
        60,
        _int,
        "How long the circuit breaker pauses a failing partner before one trial push.",
        at_least=0,
    ),
    S(
        "partner_push",
        "require_partner_noindex",
        True,
        _bool,
        "Ask partners to mark syndicated copies noindex (CANON-2); sent in every payload's meta and data.noindex.",
    ),
    # --- tokens
    S(
        "security",
        "secret_key",
        "",
        str,
        "Key that signs tokens (confirm, unsubscribe, preferences, VERP); environment only. `syndicate init` writes a local one to var/secret_key for the demo.",
        secret=True,
    ),
    S(
        "security",
        "previous_secret_keys",
        [],
        _list_of_str,
        "Keys retired from secret_key, comma separated; unsubscribe and preferences links signed with them keep working (UNS-1 rotation); environment only.",
        secret=True,
    ),
    # --- subscribers (owner: pipeline.subscribers)
    S(
        "subscribers",
        "default_frequency",
        "weekly",
        str,
        "Digest frequency of a sign-up that names none.",
        choices=("instant", "daily", "weekly"),
    ),
    S(
        "subscribers",
        "topics",
        [],
        _list_of_str,
        "Topics offered on the subscribe form (tag or category slugs); empty: the categories and tags of approved articles.",
    ),
    S("subscribers", "confirm_ttl_hours", 48, _int, "Hours a confirmation link stays valid (DOI-1).", at_least=1),
    S(
        "subscribers",
        "purge_unconfirmed_days",
        7,
        _int,
        "Sign-ups never confirmed are deleted after this many days (GDPR-2; `syndicate subscribers purge`).",
        at_least=1,
    ),
    S(
        "subscribers",
        "max_signups_per_address",
        3,
        _int,
        "Sign-up requests per address per hour before answering 429 (DOI-2, stops subscription bombing).",
        at_least=1,
    ),
    S(
        "subscribers",
        "max_signups_per_client",
        20,
        _int,
        "Sign-up requests per client IP per hour before answering 429 (DOI-2).",
        at_least=1,
    ),
    S(
        "subscribers",
        "consent_text",
        "Send me the digest of new articles by email. I can change what I get or unsubscribe at any time with the link in every email.",
        str,
        "What the subscribe form tells people they are agreeing to (recorded by version in the consent log).",
    ),
    S(
        "subscribers",
        "consent_version",
        "",
        str,
        "Version label of consent_text (empty: a hash of the text), stored with every sign-up (GDPR-1).",
    ),
    S(
        "subscribers",
        "privacy_url",
        "",
        str,
        "Link to the privacy notice shown next to the subscribe form (empty: none).",
    ),
    S(
        "subscribers",
        "privacy_version",
        "1",
        str,
        "Version of the privacy notice in force, stored with every sign-up (GDPR-1).",
    ),
    S(
        "subscribers",
        "record_client",
        True,
        _bool,
        "Store the client IP and user agent with consent events (GDPR-1 'optionally'; false keeps data minimal).",
    ),
    # --- digests (owner: pipeline.digests.editions): who gets which articles, and when an edition is due
    S(
        "digests",
        "max_articles",
        10,
        _int,
        "Articles listed in one digest; the rest appear as 'and N more' with a link to the web version.",
        at_least=1,
    ),
    S(
        "digests",
        "welcome_latest",
        0,
        _int,
        "A new subscriber's first daily/weekly digest also lists the latest K matching articles approved before they confirmed (0: only articles approved after confirming).",
        at_least=0,
    ),
    S(
        "digests",
        "daily_hour",
        0,
        _int,
        "Local hour (0-23) at which daily digests arrive, in each subscriber's time zone (site.timezone for those without one); each time-zone slot's edition is composed once per day.",
        at_least=0,
        at_most=23,
    ),
    S(
        "digests",
        "weekly_day",
        "monday",
        str,
        "Day from which the weekly edition is due.",
        choices=("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"),
    ),
    S(
        "digests",
        "weekly_hour",
        0,
        _int,
        "Local hour on weekly_day at which weekly digests arrive, in each subscriber's time zone.",
        at_least=0,
        at_most=23,
    ),
    S(
        "digests",
        "batch_size",
        1000,
        _int,
        "Subscribers read, selected and queued per transaction while composing (memory stays flat in list size).",
        at_least=1,
    ),
    # --- api (owner: pipeline.web.api): the REST API for integrators under /api/v1
    S("api", "enabled", True, _bool, "Serve the REST API under /api/v1 (tokens: `syndicate tokens create`)."),
    S(
        "api",
        "rate_limit",
        600,
        _int,
        "Requests per minute one API token may make (a token bucket of this size, refilled evenly); beyond it: 429 with Retry-After. Per serving process.",
        at_least=1,
    ),
    S(
        "api",
        "max_page_size",
        200,
        _int,
        "The largest `limit` a list request may ask for; a larger one is refused with 400 (the default page is 50 or this, whichever is smaller).",
        at_least=1,
        at_most=10000,
    ),
    # --- issue 14: click counts, welcome email
    S(
        "digests",
        "track_clicks",
        False,
        _bool,
        "Article links in digests go through signed /r/ redirects that count clicks per edition and article, in aggregate only (CLK-1..4; no per-person history, no open pixel).",
    ),
    S(
        "subscribers",
        "welcome_email",
        False,
        _bool,
        "Send a welcome email (templates email/welcome.html and welcome.txt) when a subscriber confirms (WEL-1).",
    ),
    S(
        "subscribers",
        "welcome_articles",
        3,
        _int,
        "How many of the latest approved articles the welcome email lists (0: none).",
        at_least=0,
        at_most=20,
    ),
]

# field -> (converter, help)
FieldTable = dict[str, tuple[Callable[[Any], Any], str]]

POLICY_RULE_FIELDS: FieldTable = {
    "name": (str, "Short id of the rule, shown in `syndicate review`."),
    "phrases": (
        _list_of_str,
        "Words or phrases that flag a revision: whole words, case-insensitive, "
        "across markup; a trailing * matches word beginnings (politic*).",
    ),
    "allow": (_list_of_str, "Phrases inside which a match does not count (government grant*)."),
    "action": (str, "'flag' (needs --override to approve) or 'warn' (shown, not blocking)."),
    "description": (str, "What the rule is for, shown to editors."),
}

# The seed site's rule "statements involving politics will not be approved": words that
# are political on their own, and the everyday phrases that contain them but are not
# (see pipeline.content.policy for how they match).
DEFAULT_POLICY_RULES = [
    {
        "name": "no-politics",
        "description": "Site rule: statements involving politics will not be approved.",
        "action": "flag",
        "phrases": [
            "politic*",
            "election*",
            "electoral",
            "vote for",
            "vote against",
            "votes for",
            "voted for",
            "voted against",
            "voting",
            "voter*",
            "ballot*",
            "referendum*",
            "parliament*",
            "congress",
            "congressional",
            "senate",
            "senator*",
            "government",
            "prime minister",
            "president*",
            "left-wing",
            "right-wing",
            "campaign rally",
            "legislat*",
            "lawmaker*",
            "democrats",
            "republicans",
        ],
        "allow": [
            "office politics",
            "workplace politics",
            "family politics",
            "politics at work",
            "politics of the office",
            "government grant*",
            "government funding",
            "government-funded",
            "government website*",
            "student government",
            "vice president*",
            "vice-president*",
            "class president",
            "club president",
            "company president",
        ],
    },
]

PARTNER_FIELDS: FieldTable = {
    "name": (str, "Short unique name of the partner."),
    "kind": (str, "'webhook', 'micropub' or 'websub'."),
    "url": (str, "Endpoint URL (from admin config only)."),
    "secret_env": (
        str,
        "Environment variable holding the signing secret (webhook: whsec_...) or bearer token (micropub).",
    ),
    "tags": (_list_of_str, "Only articles with one of these tags (empty: all)."),
    "categories": (_list_of_str, "Only articles in one of these categories (empty: all)."),
    "authors": (_list_of_str, "Only articles by one of these author slugs (empty: all)."),
    "enabled": (_bool, "false keeps the partner configured but sends nothing."),
    "allow_private": (_bool, "Allow a URL that resolves to a private or loopback address (tests and intranets; SW-7)."),
    "connect_timeout": (_positive_float, "Seconds to wait for the connection (default: partner_push.connect_timeout)."),
    "read_timeout": (_positive_float, "Seconds to wait for the answer (default: partner_push.read_timeout)."),
    "retry_schedule": (
        duration_list,
        "This partner's retry waits, e.g. ['1m', '1h'] (default: partner_push.retry_schedule).",
    ),
    "max_consecutive_failures": (
        _count,
        "Circuit breaker threshold for this partner (default: partner_push.max_consecutive_failures).",
    ),
    "noindex": (_bool, "Ask this partner to mark copies noindex (default: partner_push.require_partner_noindex)."),
    "since": (
        _date_or_empty,
        "Only articles first approved at or after this date (ISO 8601; empty: the whole back catalogue).",
    ),
    "discover": (_bool, 'micropub: url is the partner\'s site; find the endpoint from its rel="micropub" link (MP-1).'),
}


# --- [[events.endpoints]] (owner: pipeline.partners.outgoing): outgoing events ---------

EVENT_TYPES = ("subscriber.confirmed", "subscriber.unsubscribed", "subscriber.bounced", "edition.sent")
EVENT_ENDPOINT_FIELDS: FieldTable = {
    "name": (str, "Short unique name of the endpoint."),
    "url": (str, "The URL events are POSTed to (from admin config only)."),
    "secret_env": (str, "Environment variable holding the endpoint's whsec_... signing secret(s)."),
    "events": (_list_of_str, "Event types sent to this endpoint (empty: all): " + ", ".join(EVENT_TYPES) + "."),
    "enabled": (_bool, "false keeps the endpoint configured but queues and sends nothing."),
    "allow_private": (_bool, "Allow a URL that resolves to a private or loopback address (tests and intranets; SW-7)."),
    "connect_timeout": (_positive_float, "Seconds to wait for the connection (default: partner_push.connect_timeout)."),
    "read_timeout": (_positive_float, "Seconds to wait for the answer (default: partner_push.read_timeout)."),
    "retry_schedule": (duration_list, "Retry waits, e.g. ['1m', '1h'] (default: partner_push.retry_schedule)."),
    "max_consecutive_failures": (_count, "Circuit breaker threshold (default: partner_push.max_consecutive_failures)."),
}


def event_endpoints_from_config(table: Any, where: str) -> list[dict[str, Any]]:
    """`[events]` takes only `[[events.endpoints]]` tables (EVT-1)."""
    if not isinstance(table, dict) or set(table) - {"endpoints"} or not isinstance(table.get("endpoints", []), list):
        raise ConfigError(
            f"{where}: [events] takes only [[events.endpoints]] tables",
            hint="Each endpoint: name, url, secret_env, events.",
        )
    out = []
    for i, raw in enumerate(table.get("endpoints", [])):
        e = _coerce_table(EVENT_ENDPOINT_FIELDS, raw, f"{where}: events.endpoints[{i}]", ("name", "url", "secret_env"))
        unknown = sorted(set(e.get("events", [])) - set(EVENT_TYPES))
        if unknown:
            raise ConfigError(
                f"{where}: event endpoint {e['name']!r}: unknown event type(s) {', '.join(unknown)}",
                hint=f"Known: {', '.join(EVENT_TYPES)}.",
            )
        e.setdefault("events", [])
        e.setdefault("enabled", True)
        e.setdefault("allow_private", False)
        out.append(e)
    names = [e["name"] for e in out]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise ConfigError(
            f"{where}: event endpoint name(s) used twice: {', '.join(sorted(dupes))}",
            hint="Endpoint names identify their deliveries; make them unique.",
        )
    return out


# --- [[sources]] (owner: pipeline.content.sources): where articles come from -----------

SOURCE_TYPES = ("markdown", "feed", "wordpress")
SOURCE_SECRET_PREFIX = f"{ENV_PREFIX}SOURCES__"  # SYNDICATE_SOURCES__<NAME>__PASSWORD
SOURCE_FIELDS: FieldTable = {
    "name": (str, "Stable id of the source (letters, digits, '-' and '_'); recorded with every article it brings."),
    "type": (
        str,
        "'markdown' (a folder of .md files), 'feed' (RSS/Atom/JSON Feed URL) or 'wordpress' (a site's REST API).",
    ),
    "url": (str, "feed: the feed's URL; wordpress: the site's URL (the REST API is under /wp-json/)."),
    "path": (str, "markdown: the content folder (default: paths.content)."),
    "approval": (
        str,
        "'review' (every revision waits for an editor) or 'source' (published upstream counts as approved; policy flags still wait).",
    ),
    "enabled": (_bool, "false keeps the source configured but never reads it."),
    "allow_private": (_bool, "Allow a URL that resolves to a private or loopback address (intranets and tests; SW-7)."),
    "retract_missing": (_bool, "feed: an item that leaves the feed is retracted (default false: feeds are windows)."),
    "username": (
        str,
        "wordpress: application-password user; the password comes from SYNDICATE_SOURCES__<NAME>__PASSWORD. With it, pending posts are read too.",
    ),
    "timeout": (_float, "Seconds to wait for the server (connect and read, each; default 20)."),
    "max_bytes": (_int, "Largest response accepted, in bytes (default 10 MB)."),
    "max_items": (_int, "Items read from one response at most (default 1000; the rest are reported)."),
    "max_redirects": (_int, "Redirects followed per request (default 5); a 301 is remembered."),
    "per_page": (_int, "wordpress: posts per page (default 20, at most 100)."),
    "max_failures": (_int, "Failures in a row after which the source is reported and backed off (default 5)."),
    "backoff_minutes": (_int, "How long a source that reached max_failures waits before the next try (default 60)."),
}
_SOURCE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


def sources_from_config(table: object, where: str) -> list[dict[str, Any]]:
    """`[[sources]]` tables -> checked dicts with defaults. A separate function so that
    source settings stay out of the plain-key validation above."""
    if not isinstance(table, list):
        raise ConfigError(
            f"{where}: sources must be [[sources]] tables", hint="See the commented example in syndicate.toml."
        )
    out: list[dict[str, Any]] = []
    for i, raw in enumerate(table):
        if isinstance(raw, dict) and {"password", "token"} & set(raw):
            raise ConfigError(
                f"{where}: sources[{i}] has a secret in the file",
                hint="Remove it and set SYNDICATE_SOURCES__<NAME>__PASSWORD in the environment.",
            )
        s = _coerce_table(SOURCE_FIELDS, raw, f"{where}: sources[{i}]", ("name", "type"))
        name = s["name"]
        if not _SOURCE_NAME_RE.match(name) or len(name) > 100:
            raise ConfigError(
                f"{where}: source name {name!r} is not a simple id",
                hint="Use up to 100 letters, digits, '-' and '_' (it names the password variable too).",
            )
        if s["type"] not in SOURCE_TYPES:
            raise ConfigError(
                f"{where}: source {name!r}: type {s['type']!r} is unknown",
                hint=f"Use one of: {', '.join(SOURCE_TYPES)}.",
            )
        if s["type"] in ("feed", "wordpress") and not s.get("url"):
            raise ConfigError(f"{where}: source {name!r} ({s['type']}) needs a url", hint=SOURCE_FIELDS["url"][1])
        s.setdefault("approval", "review")
        if s["approval"] not in ("review", "source"):
            raise ConfigError(
                f"{where}: source {name!r}: approval must be 'review' or 'source'", hint=SOURCE_FIELDS["approval"][1]
            )
        for key, default in (
            ("enabled", True),
            ("allow_private", False),
            ("retract_missing", False),
            ("username", ""),
            ("url", ""),
            ("path", ""),
            ("timeout", 20.0),
            ("max_bytes", 10_000_000),
            ("max_items", 1000),
            ("max_redirects", 5),
            ("per_page", 20),
            ("max_failures", 5),
            ("backoff_minutes", 60),
        ):
            s.setdefault(key, default)
        out.append(s)
    names = [s["name"].lower() for s in out]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise ConfigError(
            f"{where}: source name(s) used twice: {', '.join(sorted(dupes))}",
            hint="A source's name identifies its articles and state; make them unique.",
        )
    return out


def source_secret(source: dict[str, Any], key: str = "password", env: Mapping[str, str] | None = None) -> str:
    """A source's secret, from SYNDICATE_SOURCES__<NAME>__<KEY> only (never the file)."""
    values: Mapping[str, str] = os.environ if env is None else env
    name = source["name"].upper().replace("-", "_")
    return values.get(f"{SOURCE_SECRET_PREFIX}{name}__{key.upper()}", "")


def declared(section: str, key: str) -> Setting:
    for s in SETTINGS:
        if s.section == section and s.key == key:
            return s
    raise KeyError(f"{section}.{key}")


def sections() -> list[str]:
    seen: list[str] = []
    for s in SETTINGS:
        if s.section not in seen:
            seen.append(s.section)
    return seen


class Section:
    """Attribute access to one section's values: `settings.site.base_url`."""

    def __init__(self, name: str, values: dict[str, Any]):
        self._name = name
        self._values = values

    def __getattr__(self, key: str) -> Any:
        # Through __dict__: while pickle rebuilds a Section (settings sent to a spawned
        # worker) _values is not set yet, and self._values would call this again, forever.
        values = self.__dict__.get("_values")
        if values is None or key not in values:
            raise AttributeError(f"no setting {self.__dict__.get('_name')}.{key}")
        return values[key]

    def as_dict(self) -> dict[str, Any]:
        return dict(self._values)


class Settings:
    """The effective configuration. Not state: nothing here changes while running."""

    def __init__(
        self,
        values: dict[str, dict[str, Any]],
        root: Path,
        policy_rules: list[dict[str, Any]],
        partners: list[dict[str, Any]],
        source: Path | None,
        origins: dict[str, str],
    ):
        self._values = values
        self.root = root
        self.policy_rules = policy_rules
        self.partners = partners
        self.source = source
        self.origins = origins  # "section.key" -> "default" | file | env name
        self.sources: list[dict[str, Any]] = []  # [[sources]] (see sources_from_config); empty: content/ only
        self.event_endpoints: list[dict[str, Any]] = []  # [[events.endpoints]] (see event_endpoints_from_config)
        for name, vals in values.items():
            setattr(self, name, Section(name, vals))

    if TYPE_CHECKING:  # the sections are set in __init__, one attribute per declared section

        def __getattr__(self, name: str) -> Section: ...

    def path(self, section_key: str) -> Path:
        """A path setting resolved against the config folder, e.g. path('paths.public')."""
        section, key = section_key.split(".")
        raw = Path(self._values[section][key])
        return raw if raw.is_absolute() else (self.root / raw)

    @property
    def database_url(self) -> str:
        url: str = self._values["database"]["url"]
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith("sqlite:////") and url != "sqlite:///:memory:":
            return prefix + str((self.root / url[len(prefix) :]).resolve())
        return url

    def effective(self, mask_secrets: bool = True) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for s in SETTINGS:
            value = self._values[s.section][s.key]
            if s.secret and mask_secrets and value:
                value = "********"
            out.setdefault(s.section, {})[s.key] = value
        return out

    def partner_secret(self, partner: dict[str, Any]) -> str:
        env = partner.get("secret_env") or ""
        return os.environ.get(env, "") if env else ""


def _coerce(setting: Setting, value: Any, where: str) -> Any:
    try:
        result = setting.type(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"{where}: {setting.section}.{setting.key} = {value!r} is not valid ({exc})",
            hint=f"{setting.help} Default: {setting.default!r}.",
        ) from None
    out_of_range = setting.check_range(result)
    if out_of_range:
        raise ConfigError(
            f"{where}: {setting.section}.{setting.key} = {value!r} {out_of_range}",
            hint=f"{setting.help} Default: {setting.default!r}.",
        )
    if setting.choices and result not in setting.choices:
        raise ConfigError(
            f"{where}: {setting.section}.{setting.key} = {value!r} is not one of {', '.join(setting.choices)}",
            hint=setting.help,
        )
    return result


def _coerce_table(fields: FieldTable, table: Any, where: str, required: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table", hint="Write it as [[...]] with key = value lines.")
    out = {}
    for key, value in table.items():
        if key not in fields:
            raise ConfigError(f"{where}: unknown key {key!r}", hint=f"Known keys: {', '.join(fields)}.")
        conv, _help = fields[key]
        try:
            out[key] = conv(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}.{key} = {value!r} is not valid ({exc})", hint=_help) from None
    for key in required:
        if not out.get(key):
            raise ConfigError(f"{where}: {key!r} is required", hint=fields[key][1])
    return out


def load_settings(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> Settings:
    """Defaults, then the TOML file (if it exists), then the environment, then overrides.

    `overrides` maps "section.key" to a value (CLI flags). `env` defaults to os.environ.
    """
    env = os.environ if env is None else env
    values: dict[str, dict[str, Any]] = {}
    origins: dict[str, str] = {}
    for s in SETTINGS:
        # through the same conversion as a configured value: a retry schedule is a
        # list of Duration whichever way it was set
        values.setdefault(s.section, {})[s.key] = _coerce(s, s.default, "default")
        origins[f"{s.section}.{s.key}"] = "default"

    source: Path | None = None
    data: dict[str, Any] = {}
    if path is not None:
        source = Path(path)
        if source.exists():
            try:
                data = tomllib.loads(source.read_text(encoding="utf-8"))
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise ConfigError(
                    f"{source}: not valid TOML ({exc})",
                    hint="Fix the syntax; `syndicate.toml` in the repository is a commented example.",
                ) from None
        elif path != "syndicate.toml":
            raise ConfigError(
                f"config file {source} does not exist",
                hint="Pass --config with an existing file, or leave it out to use ./syndicate.toml.",
            )
    root = (source.parent if source is not None else Path.cwd()).resolve()

    policy_rules = [dict(r) for r in DEFAULT_POLICY_RULES]
    partners: list[dict[str, Any]] = []
    sources: list[dict[str, Any]] = []
    event_endpoints: list[dict[str, Any]] = []
    known_sections = set(sections())
    for section, table in data.items():
        where = f"{source}"
        if section == "policy":
            if not isinstance(table, dict) or set(table) - {"rules"}:
                raise ConfigError(
                    f"{where}: [policy] takes only [[policy.rules]] tables",
                    hint="Each rule: name, phrases, allow, action, description.",
                )
            policy_rules = [
                _coerce_table(POLICY_RULE_FIELDS, rule, f"{where}: policy.rules[{i}]", ("name", "phrases"))
                for i, rule in enumerate(table.get("rules", []))
            ]
            for rule in policy_rules:
                rule.setdefault("action", "flag")
                rule.setdefault("description", "")
                if rule["action"] not in ("flag", "warn"):
                    raise ConfigError(
                        f"{where}: policy rule {rule['name']!r}: action must be 'flag' or 'warn'",
                        hint="'flag' blocks approval without --override; 'warn' only shows.",
                    )
            continue
        if section == "partners":
            if not isinstance(table, list):
                raise ConfigError(
                    f"{where}: partners must be [[partners]] tables",
                    hint="See the commented example in syndicate.toml.",
                )
            for i, partner in enumerate(table):
                p = _coerce_table(PARTNER_FIELDS, partner, f"{where}: partners[{i}]", ("name", "kind", "url"))
                if p["kind"] not in ("webhook", "micropub", "websub"):
                    raise ConfigError(
                        f"{where}: partner {p['name']!r}: kind {p['kind']!r} is unknown",
                        hint="Use 'webhook', 'micropub' or 'websub'.",
                    )
                p.setdefault("secret_env", "")
                p.setdefault("tags", [])
                p.setdefault("categories", [])
                p.setdefault("authors", [])
                p.setdefault("enabled", True)
                p.setdefault("allow_private", False)
                partners.append(p)
            names = [p["name"] for p in partners]
            dupes = {n for n in names if names.count(n) > 1}
            if dupes:
                raise ConfigError(
                    f"{where}: partner name(s) used twice: {', '.join(sorted(dupes))}",
                    hint="Partner names identify their deliveries; make them unique.",
                )
            continue
        if section == "sources":
            sources = sources_from_config(table, where)
            continue
        if section == "events":
            event_endpoints = event_endpoints_from_config(table, where)
            continue
        if section not in known_sections:
            raise ConfigError(
                f"{where}: unknown section [{section}]",
                hint=f"Known sections: {', '.join(sorted(known_sections | {'policy', 'partners', 'sources', 'events'}))}.",
            )
        if not isinstance(table, dict):
            raise ConfigError(
                f"{where}: [{section}] must be a table", hint="Write it as [section] with key = value lines."
            )
        for key, value in table.items():
            try:
                setting = declared(section, key)
            except KeyError:
                keys = [s.key for s in SETTINGS if s.section == section]
                raise ConfigError(
                    f"{where}: unknown setting {section}.{key}", hint=f"Settings in [{section}]: {', '.join(keys)}."
                ) from None
            if setting.secret:
                raise ConfigError(
                    f"{where}: {section}.{key} is a secret and must not be in a file",
                    hint=f"Remove it from the file and set the environment variable {setting.env_name}.",
                )
            values[section][key] = _coerce(setting, value, where)
            origins[f"{section}.{key}"] = str(source)

    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name or name.startswith(SOURCE_SECRET_PREFIX):
            continue
        section, _, key = name[len(ENV_PREFIX) :].lower().partition("__")
        try:
            setting = declared(section, key)
        except KeyError:
            raise ConfigError(
                f"environment variable {name} names no setting",
                hint="Unset it, or fix its name: SYNDICATE_<SECTION>__<KEY>, see `syndicate config show`.",
            ) from None
        values[section][key] = _coerce(setting, raw, name)
        origins[f"{section}.{key}"] = name
    # The short names the docs promise for the most common secret.
    if env.get("SYNDICATE_SECRET_KEY"):
        values["security"]["secret_key"] = env["SYNDICATE_SECRET_KEY"]
        origins["security.secret_key"] = "SYNDICATE_SECRET_KEY"

    for dotted, value in (overrides or {}).items():
        section, key = dotted.split(".")
        setting = declared(section, key)
        values[section][key] = _coerce(setting, value, "command line")
        origins[dotted] = "command line"

    settings = Settings(values, root, policy_rules, partners, source, origins)
    settings.sources = sources
    settings.event_endpoints = event_endpoints
    return settings


def settings_markdown() -> str:
    """The settings reference in docs/configuration.md, generated from SETTINGS (a test
    keeps the page in step)."""
    lines = ["| setting | environment variable | default | what it does |", "|---|---|---|---|"]
    for s in SETTINGS:
        default = "(secret: environment only)" if s.secret else f"`{s.default!r}`"
        help_text = s.help + (f" One of: {', '.join(s.choices)}." if s.choices else "")
        lines.append(f"| `{s.section}.{s.key}` | `{s.env_name}` | {default} | {help_text.replace('|', '/')} |")
    lines += [
        "",
        "`[[policy.rules]]` fields: " + "; ".join(f"`{k}`: {h}" for k, (_, h) in POLICY_RULE_FIELDS.items()),
        "",
        "`[[partners]]` fields: " + "; ".join(f"`{k}`: {h}" for k, (_, h) in PARTNER_FIELDS.items()),
        "",
        "`[[sources]]` fields: " + "; ".join(f"`{k}`: {h}" for k, (_, h) in SOURCE_FIELDS.items()),
        "",
        "`[[events.endpoints]]` fields: " + "; ".join(f"`{k}`: {h}" for k, (_, h) in EVENT_ENDPOINT_FIELDS.items()),
    ]
    return "\n".join(lines)


def require(settings: Settings, section_key: str, why: str) -> Any:
    """The value of a setting that this operation cannot do without."""
    section, key = section_key.split(".")
    value = getattr(getattr(settings, section), key)
    if value in ("", None, []):
        s = declared(section, key)
        where = s.env_name if s.secret else f"[{section}] {key} in {settings.source or 'syndicate.toml'}"
        raise ConfigError(f"{section_key} is not set; {why}", hint=f"Set {where}. {s.help}")
    return value
