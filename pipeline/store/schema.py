"""Every table, in SQLAlchemy Core. One MetaData; Alembic migrations are generated from it.

Conventions: ids are integers; times are timezone-aware UTC (`UTCDateTime` stores them
naive-UTC on SQLite and as timestamptz on PostgreSQL and always hands back aware UTC);
JSON columns hold lists and small dicts; names of states are closed sets of strings.
Each table has one owning module, named in its comment; other modules read it through
that module's queries.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

from pipeline.states import CHECKED_COLUMNS, ImportStatus, check_sql, constraint_name

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = MetaData(naming_convention=NAMING)

# A big integer primary key that is still SQLite's rowid alias.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Aware UTC in, aware UTC out, on every backend."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use pipeline.timeutil.utcnow()")
        value = value.astimezone(dt.UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


# --- content and editorial (owner: pipeline.content.ingest, pipeline.content.editorial) -------------

authors = Table(
    "authors",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("slug", String(200), nullable=False, unique=True),
    Column("name", String(300), nullable=False),
    Column("bio", Text, nullable=False, default=""),
    Column("url", String(2000), nullable=False, default=""),
    Column("email", String(320), nullable=False, default=""),
    Column("content_hash", String(64), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

articles = Table(
    "articles",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("slug", String(200), nullable=False, unique=True),
    Column("source_path", String(1000), nullable=False),
    # The revision the file currently holds, and the one an editor approved last: the
    # approved one is what every later stage syndicates, even while an edit waits.
    Column("current_revision_id", BigInteger, nullable=True),
    Column("approved_revision_id", BigInteger, nullable=True),
    Column("first_approved_at", UTCDateTime, nullable=True),
    Column("retracted_at", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # "<size>:<mtime_ns>:<ctime_ns>:<inode>:<sha256>" of the file when ingest last read
    # it and stored or found the current revision (sha256 its bytes); NULL when unknown
    # or changed too recently to trust (ingest.RACY_NS). Ingest skips a file whose stat
    # and current revision still match, without reading it.
    Column("source_stamp", String(300), nullable=True),
)

revisions = Table(
    "revisions",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("article_id", BigInteger, ForeignKey("articles.id"), nullable=False, index=True),
    Column("number", Integer, nullable=False),
    Column("content_hash", String(64), nullable=False),
    # draft | submitted | approved | rejected | superseded
    Column("state", String(20), nullable=False),
    Column("title", Text, nullable=False),
    Column("author_slug", String(200), nullable=False),
    Column("published_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=True),
    Column("tags", JSON, nullable=False),
    Column("category", String(200), nullable=False, default=""),
    Column("summary", Text, nullable=False),
    Column("image", String(2000), nullable=False, default=""),
    Column("image_length", Integer, nullable=True),
    Column("image_type", String(100), nullable=False, default=""),
    Column("image_alt", Text, nullable=False, default=""),
    Column("image_width", Integer, nullable=True),
    Column("image_height", Integer, nullable=True),
    Column("canonical_url", String(2000), nullable=False, default=""),
    Column("body_markdown", Text, nullable=False),
    Column("body_html", Text, nullable=False),
    Column("sanitizer_version", String(40), nullable=False),
    Column("reading_minutes", Integer, nullable=False),
    Column("word_count", Integer, nullable=False),
    Column("flags", JSON, nullable=False),  # [{"rule", "action", "matches": [...]}]
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("article_id", "number", name="uq_revisions_article_number"),
)

approvals = Table(
    "approvals",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("article_id", BigInteger, ForeignKey("articles.id"), nullable=False, index=True),
    Column("revision_id", BigInteger, ForeignKey("revisions.id"), nullable=False, index=True),
    Column("content_hash", String(64), nullable=False),  # the exact bytes approved
    Column("decision", String(20), nullable=False),  # approved | rejected
    Column("editor", String(200), nullable=False),
    Column("decided_at", UTCDateTime, nullable=False),
    Column("note", Text, nullable=False, default=""),
    Column("override_reason", Text, nullable=False, default=""),
)

# --- the outbox (owner: pipeline.delivery.outbox) ------------------------------------

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", BigId, primary_key=True),
    # email | webhook | micropub | websub
    Column("channel", String(20), nullable=False),
    # the recipient address, partner name or hub URL
    Column("target", String(2000), nullable=False),
    # what is sent: confirm | digest | instant | article.published | ... | publish (hub)
    Column("kind", String(40), nullable=False),
    Column("idempotency_key", String(255), nullable=False, unique=True),
    # a reference to what to send (edition id, revision id, ...) or, for small
    # transactional mail, the rendered message itself
    Column("payload", JSON, nullable=False),
    # queued | sending | sent | retry | failed | suppressed | dead | cancelled
    Column("state", String(20), nullable=False, default="queued"),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("lease_until", UTCDateTime, nullable=True),
    Column("claimed_by", String(200), nullable=True),
    Column("last_error", Text, nullable=True),
    Column("provider_answer", Text, nullable=True),
    Column("subscriber_id", BigInteger, nullable=True),
    Column("article_id", BigInteger, nullable=True),
    Column("revision_id", BigInteger, nullable=True),
    Column("edition_id", BigInteger, nullable=True),
    # deliveries to one target that must keep their order (partner + article) share it
    Column("ordering_key", String(400), nullable=True),
    Column("sequence", BigInteger, nullable=False, default=0),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("sent_at", UTCDateTime, nullable=True),
)
Index("ix_deliveries_due", deliveries.c.state, deliveries.c.next_attempt_at)
Index("ix_deliveries_channel_state", deliveries.c.channel, deliveries.c.state)
Index("ix_deliveries_ordering", deliveries.c.ordering_key, deliveries.c.sequence)

# --- the scheduler (owner: pipeline.ops.scheduler) ---------------------------------------

job_runs = Table(
    "job_runs",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("job_id", String(200), nullable=False, index=True),
    Column("trigger", String(40), nullable=False, default="scheduled"),  # scheduled | manual | cli
    Column("scheduled_for", UTCDateTime, nullable=True),
    Column("started_at", UTCDateTime, nullable=True),
    Column("ended_at", UTCDateTime, nullable=True),
    Column("status", String(20), nullable=False),  # running | ok | failed | skipped | missed
    Column("counts", JSON, nullable=False),
    Column("error", Text, nullable=True),
    Column("host", String(200), nullable=False, default=""),
    Column("pid", Integer, nullable=True),
    Column("dry_run", Boolean, nullable=False, default=False),
)
Index("ix_job_runs_job_started", job_runs.c.job_id, job_runs.c.started_at)
Index("ix_job_runs_status", job_runs.c.status)

# Operator intent that outlives restarts: `syndicate jobs pause|resume ID`. A running
# scheduler reads it every scheduler.heartbeat_seconds (owner: pipeline.ops.scheduler).
job_state = Table(
    "job_state",
    metadata,
    Column("job_id", String(200), primary_key=True),
    Column("paused", Boolean, nullable=False, default=False),
    Column("note", Text, nullable=False, default=""),
    Column("changed_by", String(200), nullable=False, default=""),
    Column("updated_at", UTCDateTime, nullable=False),
)

# One row per `syndicate scheduler` process: the leader and its standbys, with the
# heartbeat /healthz and `syndicate status` report (owner: pipeline.ops.scheduler).
scheduler_instances = Table(
    "scheduler_instances",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("instance", String(200), nullable=False, unique=True),  # host:pid:random
    Column("host", String(200), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("role", String(20), nullable=False),  # standby | leader | stopped
    Column("started_at", UTCDateTime, nullable=False),
    Column("leader_since", UTCDateTime, nullable=True),
    Column("heartbeat_at", UTCDateTime, nullable=False),
    Column("stopped_at", UTCDateTime, nullable=True),
)

# Tables owned by other stages are declared in their sections below; keep the
# owner comment on each.
__all__ = ["metadata", "UTCDateTime", "BigId", "LargeBinary"]

# --- subscribers and consent (owner: pipeline.subscribers.state) ------------------------------

# One row per address. state: unconfirmed | confirmed | unsubscribed | suppressed.
# An unsubscribed or suppressed row is never flipped back silently: only a new
# confirmed opt-in (or an operator lifting a suppression) changes it.
subscribers = Table(
    "subscribers",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("email", String(320), nullable=False, unique=True),  # lower-case
    Column("name", String(200), nullable=False, default=""),
    Column("state", String(20), nullable=False),
    Column("frequency", String(20), nullable=False),  # instant | daily | weekly
    Column("topics", JSON, nullable=False),  # tag/category slugs; [] = everything
    Column("timezone", String(64), nullable=False, default="UTC"),
    Column("source", String(200), nullable=False, default=""),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("confirmed_at", UTCDateTime, nullable=True),
    Column("unsubscribed_at", UTCDateTime, nullable=True),
    # digest watermark: articles approved up to here were sent (owner: pipeline.digests.editions)
    Column("last_digest_at", UTCDateTime, nullable=True),
)
Index("ix_subscribers_state_frequency", subscribers.c.state, subscribers.c.frequency)

# The append-only consent log and other history (GDPR-1): never updated, never deleted
# except with its subscriber (purge of never-confirmed sign-ups, operator erasure).
subscriber_events = Table(
    "subscriber_events",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("subscriber_id", BigInteger, ForeignKey("subscribers.id", ondelete="CASCADE"), nullable=False, index=True),
    # signup | confirm_sent | confirmed | preferences | unsubscribed | suppressed | imported | notice_sent | ...
    Column("kind", String(40), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("source", String(300), nullable=False, default=""),  # form URL, one-click, import:NAME, operator
    Column("wording_version", String(80), nullable=False, default=""),
    Column("privacy_version", String(80), nullable=False, default=""),
    Column("token_hash", String(64), nullable=True),
    Column("ip", String(64), nullable=True),
    Column("user_agent", String(400), nullable=True),
    Column("detail", JSON, nullable=False),
)

# Confirmation tokens (DOI-1): only the SHA-256 of the link token is stored;
# single-use (used_at), expiring (expires_at).
confirm_tokens = Table(
    "confirm_tokens",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("subscriber_id", BigInteger, ForeignKey("subscribers.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("used_at", UTCDateTime, nullable=True),
)

# Sign-up attempts for the per-address and per-client rate limits (DOI-2); keys are
# hashes ("addr:<sha256>", "ip:<sha256>"), rows older than a day are purged.
subscribe_attempts = Table(
    "subscribe_attempts",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("key", String(80), nullable=False),
    Column("at", UTCDateTime, nullable=False),
)
Index("ix_subscribe_attempts_key_at", subscribe_attempts.c.key, subscribe_attempts.c.at)

# --- delivery: suppressions, channel state, quotas, workers, bounces -----------------
# (owner: pipeline.delivery)

# Addresses that must not get mail. `email` is stored lower-case; checked again at
# send time (BULK-4). reason: unsubscribed | hard_bounce | soft_bounces | complaint | manual
suppressions = Table(
    "suppressions",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("reason", String(40), nullable=False),
    Column("source", String(200), nullable=False, default=""),  # cli | bounce:<file> | smtp | web ...
    Column("created_at", UTCDateTime, nullable=False),
    Column("detail", Text, nullable=False, default=""),
)

# One row per channel: paused by the operator or by itself (5.7.x, N consecutive
# failures), and the shared slow-down after throttling answers (421, 4.7.x).
delivery_channels = Table(
    "delivery_channels",
    metadata,
    Column("channel", String(20), primary_key=True),
    Column("paused", Boolean, nullable=False, default=False),
    Column("paused_reason", Text, nullable=False, default=""),
    Column("paused_at", UTCDateTime, nullable=True),
    Column("consecutive_failures", Integer, nullable=False, default=0),
    Column("rate_factor", Integer, nullable=False, default=1),  # divide the rate by this
    Column("throttled_until", UTCDateTime, nullable=True),
    # with no configured rate: the per-worker pace (messages/minute) seen when throttled
    Column("throttle_base_per_minute", Integer, nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
    # the server cannot be reached (issue 16, item 11): no claims until outage_until,
    # a backoff that doubles with outage_count; cleared by the first success
    Column("outage_until", UTCDateTime, nullable=True),
    Column("outage_reason", Text, nullable=False, server_default=""),
    Column("outage_count", Integer, nullable=False, server_default="0"),
)

# Slowed-down destination domains (421 / 4.7.x, issue 19 item 3), owner
# pipeline.delivery.channels: the rate for `domain` is divided by rate_factor until
# throttled_until, then halves back every window_seconds (gradual recovery).
delivery_throttles = Table(
    "delivery_throttles",
    metadata,
    Column("channel", String(20), primary_key=True),
    Column("domain", String(255), primary_key=True),
    Column("rate_factor", Integer, nullable=False),
    Column("throttled_until", UTCDateTime, nullable=False),
    Column("window_seconds", Integer, nullable=False),
    Column("base_per_minute", Integer, nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
)

# Messages handed to the server per channel and minute: the per-hour and per-day
# sliding windows are sums over these buckets; quota is reserved before sending.
delivery_send_log = Table(
    "delivery_send_log",
    metadata,
    Column("channel", String(20), primary_key=True),
    Column("minute", UTCDateTime, primary_key=True),
    Column("count", Integer, nullable=False, default=0),
)

# One row per `syndicate worker` / `deliver` process, with its heartbeat; live workers
# share the per-second rate.
delivery_workers = Table(
    "delivery_workers",
    metadata,
    Column("worker", String(200), primary_key=True),  # host:pid
    Column("host", String(200), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("heartbeat_at", UTCDateTime, nullable=False),
    Column("state", String(20), nullable=False),  # running | stopping | stopped
    Column("sent", BigInteger, nullable=False, default=0),
    Column("failed", BigInteger, nullable=False, default=0),
)

# Every bounce or DSN read by `syndicate bounces process`, with the decision taken.
# source_key (message + recipient) makes processing the same mailbox twice harmless.
bounce_events = Table(
    "bounce_events",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("source_key", String(64), nullable=False, unique=True),
    Column("email", String(320), nullable=False, index=True),
    Column("kind", String(20), nullable=False),  # hard | soft | auto_reply | unknown
    Column("status", String(20), nullable=False, default=""),  # RFC 3463 x.y.z
    Column("action", String(20), nullable=False, default=""),  # DSN Action
    Column("decision", String(40), nullable=False),  # suppressed | counted | ignored
    Column("delivery_id", BigInteger, nullable=True),
    Column("subscriber_id", BigInteger, nullable=True),
    Column("detail", Text, nullable=False, default=""),
    Column("created_at", UTCDateTime, nullable=False),
)

# --- digests (owner: pipeline.digests.editions) -----------------------------------------------

# One row per edition: a daily/weekly period ("daily-2026-11-25", "weekly-2026-11-23")
# or one newly approved article for instant subscribers ("instant-<slug>"). `cutoff` is
# fixed when the edition is created, so re-running compose for it selects the same
# articles; `completed_at` is set once every due subscriber was handled.
digest_editions = Table(
    "digest_editions",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("key", String(200), nullable=False, unique=True),
    Column("frequency", String(20), nullable=False),  # instant | daily | weekly
    Column("window_start", UTCDateTime, nullable=True),  # web version: approved after this
    Column("cutoff", UTCDateTime, nullable=False),  # ... and up to this
    Column("article_ids", JSON, nullable=False),  # the web version's articles, newest first
    Column("subject", Text, nullable=False, default=""),
    Column("recipients", BigInteger, nullable=False, default=0),
    Column("created_at", UTCDateTime, nullable=False),
    Column("completed_at", UTCDateTime, nullable=True),
)
Index("ix_digest_editions_frequency_cutoff", digest_editions.c.frequency, digest_editions.c.cutoff)

# What recipients of one edition share, rendered once per distinct article selection
# (topic set x watermark): the MIME skeleton with markers for the personal parts
# (name, To, unsubscribe/preferences links, Message-ID, Date) spliced in at send time.
digest_parts = Table(
    "digest_parts",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("edition_id", BigInteger, ForeignKey("digest_editions.id", ondelete="CASCADE"), nullable=False),
    Column("variant", String(64), nullable=False),  # sha256 of the selection
    Column("article_ids", JSON, nullable=False),
    Column("more_count", Integer, nullable=False, default=0),
    Column("subject", Text, nullable=False),
    Column("headers", Text, nullable=False),  # shared header lines, CRLF
    Column("text_part", Text, nullable=False),  # quoted-printable, CRLF, with markers
    Column("html_part", Text, nullable=False),  # quoted-printable, CRLF, with markers
    Column("html_bytes", Integer, nullable=False),  # decoded HTML size (SIZE-1)
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("edition_id", "variant", name="uq_digest_parts_edition_variant"),
)

# --- partner push (owner: pipeline.partners) -----------------------------------------
# Machine state per configured partner (config says who the partners are; this says
# how they are doing). state: active | paused (circuit breaker, until paused_until) |
# disabled (410 Gone or the operator; only `syndicate partners resume` lifts it).
partner_state = Table(
    "partner_state",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("state", String(20), nullable=False, default="active"),
    Column("reason", Text, nullable=False, default=""),
    Column("paused_until", UTCDateTime, nullable=True),
    Column("throttled_until", UTCDateTime, nullable=True),  # 429 Retry-After
    Column("consecutive_failures", Integer, nullable=False, default=0),
    Column("last_success_at", UTCDateTime, nullable=True),
    Column("last_failure_at", UTCDateTime, nullable=True),
    Column("last_error", Text, nullable=False, default=""),
    Column("alert", Text, nullable=False, default=""),  # needs the operator (410, 401 scope, no secret)
    Column("updated_at", UTCDateTime, nullable=False),
)

# Every HTTP request made to a partner, with its answer: `syndicate partners status`.
partner_attempts = Table(
    "partner_attempts",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("partner", String(200), nullable=False),
    Column("delivery_id", BigInteger, nullable=True),  # None for `partners test`
    Column("kind", String(40), nullable=False),  # article.published | ... | ping
    Column("message_id", String(100), nullable=False, default=""),  # webhook-id
    Column("article_id", BigInteger, nullable=True),
    Column("attempted_at", UTCDateTime, nullable=False),
    Column("status_code", Integer, nullable=True),  # None: no HTTP answer
    Column("outcome", String(20), nullable=False),  # sent | retry | failed | dead | throttled | disabled | refused
    Column("error", Text, nullable=False, default=""),
    Column("response", Text, nullable=False, default=""),  # the first 2000 characters
    Column("duration_ms", Integer, nullable=False, default=0),
)
Index("ix_partner_attempts_partner_at", partner_attempts.c.partner, partner_attempts.c.attempted_at)
Index("ix_partner_attempts_delivery", partner_attempts.c.delivery_id)

# Where a Micropub partner put our article (MP-3: the Location of the created post),
# so later revisions are sent as updates and a retraction as a delete of that URL.
partner_syndications = Table(
    "partner_syndications",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("partner", String(200), nullable=False),
    Column("article_id", BigInteger, nullable=False),
    Column("location", String(2000), nullable=False),
    Column("revision_id", BigInteger, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("deleted_at", UTCDateTime, nullable=True),
    UniqueConstraint("partner", "article_id", name="uq_partner_syndications_partner_article"),
)

# --- feeds and pages build (owner: pipeline.site.build) -----------------------------------

# The position of each article in each feed ("all", "tags/<slug>", "categories/<slug>",
# "authors/<slug>"), assigned once when it first enters the feed. Archive document k
# of a feed holds the entries with seq in ((k-1)*archive_size, k*archive_size], so an
# archive's set of entries never moves (RFC 5005 §4); a retracted article leaves a hole.
feed_entries = Table(
    "feed_entries",
    metadata,
    Column("feed_key", String(400), primary_key=True),
    Column("article_id", BigInteger, primary_key=True),
    Column("seq", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("feed_key", "seq", name="uq_feed_entries_feed_key_seq"),
)

# Every file the build wrote under public/: what it was made from (`deps`, a hash of
# the inputs), its size, the `sha256` of its bytes when it is a subscription document
# (what a hub is pinged about; '' for other files, which nothing compares), and whether
# it is sealed (never rewritten; served with a long max-age).
build_outputs = Table(
    "build_outputs",
    metadata,
    Column("path", String(1000), primary_key=True),  # relative to paths.public, '/' separated
    Column("kind", String(20), nullable=False),  # feed | archive | page | article | listing | image
    Column("deps", String(64), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("immutable", Boolean, nullable=False, default=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

# --- sources (owner: pipeline.content.sources) ----------------------------------------------
# Machine state per configured [[sources]] entry (config says what the sources are; this
# says how reading them goes): `cursor` holds what the next fetch starts from (ETag,
# Last-Modified, a URL a 301 moved to, the WordPress modified_after watermark) and is
# advanced only past what was stored. paused is operator intent (`syndicate sources
# pause`); failures/next_attempt_at are the back-off after failures in a row.
source_state = Table(
    "source_state",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("type", String(40), nullable=False),
    Column("cursor", JSON, nullable=False),
    Column("paused", Boolean, nullable=False, default=False),
    Column("failures", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime, nullable=True),
    Column("last_run_at", UTCDateTime, nullable=True),
    Column("last_success_at", UTCDateTime, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("last_error_at", UTCDateTime, nullable=True),
    Column("last_counts", JSON, nullable=False),
)

# Every remote image an article names, fetched once and stored by the sha256 of its
# bytes under public/media/ (email_sha256: the PNG made for email from an SVG or WebP).
# error: why it could not be fetched (the article is ingested without it).
media = Table(
    "media",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("url", String(2000), nullable=False, unique=True),
    Column("sha256", String(64), nullable=True),
    Column("content_type", String(100), nullable=False, default=""),
    Column("width", Integer, nullable=True),
    Column("height", Integer, nullable=True),
    Column("length", Integer, nullable=True),
    Column("email_sha256", String(64), nullable=True),
    Column("error", Text, nullable=True),
    Column("fetched_at", UTCDateTime, nullable=False),
)

# --- the desk: accounts, sessions, audit (owner: pipeline.accounts) -----------------------

# People who sign in to /desk/. roles: a list of author | editor | operator | admin.
# state: unconfirmed (self-registered, email not confirmed) | pending (confirmed, waits
# for an editor) | invited (no password yet) | active | disabled.
users = Table(
    "users",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("email", String(320), nullable=False, unique=True),  # lower-case
    Column("name", String(200), nullable=False, default=""),
    Column("roles", JSON, nullable=False),
    Column("state", String(20), nullable=False),
    Column("password_hash", String(200), nullable=True),  # Argon2id, PHC string
    Column("author_slug", String(200), nullable=True),  # the authors row an author writes as
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("last_login_at", UTCDateTime, nullable=True),
)

# A signed-in browser. Only the SHA-256 of the cookie value is stored, so a copy of the
# database signs nobody in.
user_sessions = Table(
    "user_sessions",
    metadata,
    Column("id", String(64), primary_key=True),  # sha256 of the cookie value
    Column("user_id", BigInteger, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("last_seen_at", UTCDateTime, nullable=False),
    Column("ip", String(64), nullable=True),
    Column("user_agent", String(400), nullable=True),
)

# Single-use, expiring links: invite | reset | confirm. Only the SHA-256 of the link token.
account_tokens = Table(
    "account_tokens",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("user_id", BigInteger, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("purpose", String(20), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("used_at", UTCDateTime, nullable=True),
)

# Failed sign-ins, for the per-account and per-address throttles; keys are hashes
# ("acct:<sha256>", "ip:<sha256>").
login_failures = Table(
    "login_failures",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("key", String(80), nullable=False),
    Column("at", UTCDateTime, nullable=False),
)
Index("ix_login_failures_key_at", login_failures.c.key, login_failures.c.at)

# Every change made in the desk or by the CLI: who, when, what, from which address.
# Append-only.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("at", UTCDateTime, nullable=False, index=True),
    Column("actor", String(320), nullable=False),  # a user's email, or user@host for the CLI
    Column("via", String(10), nullable=False),  # web | cli
    Column("action", String(80), nullable=False),  # e.g. article.approve, user.add
    Column("target", String(400), nullable=False, default=""),
    Column("detail", JSON, nullable=False),
    Column("ip", String(64), nullable=True),
)

# --- desk articles: a content source stored in the database (owner: pipeline.content.desk) ----

# The author's working copy. Submitting turns it into a revision (revisions table)
# exactly as ingest does; article_id is set at the first submission.
desk_articles = Table(
    "desk_articles",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("owner_id", BigInteger, ForeignKey("users.id"), nullable=False, index=True),
    Column("slug", String(200), nullable=False, unique=True),
    Column("article_id", BigInteger, ForeignKey("articles.id"), nullable=True, unique=True),
    Column("title", Text, nullable=False),
    Column("summary", Text, nullable=False, default=""),
    Column("tags", JSON, nullable=False),
    Column("category", String(200), nullable=False, default=""),
    Column("body_markdown", Text, nullable=False),
    Column("image", String(2000), nullable=False, default=""),  # path under paths.content
    Column("image_alt", Text, nullable=False, default=""),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("submitted_at", UTCDateTime, nullable=True),
)

# --- API tokens and idempotency records (owner: pipeline.accounts.api_tokens) -----------------

# An integrator's bearer token (256 random bits). Only its SHA-256 is stored, so a copy of
# the database authenticates nobody; `prefix` is shown so people can tell tokens apart.
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("prefix", String(20), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("scopes", JSON, nullable=False),
    Column("created_by", String(320), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_used_at", UTCDateTime, nullable=True),
    Column("expires_at", UTCDateTime, nullable=True),
    Column("revoked_at", UTCDateTime, nullable=True),
)

# A write made with an Idempotency-Key: the stored answer is replayed for the same key
# and body (API-5). `status` is null while the first request is still running.
api_idempotency = Table(
    "api_idempotency",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("token_id", BigInteger, ForeignKey("api_tokens.id", ondelete="CASCADE"), nullable=False),
    Column("key", String(255), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("status", Integer, nullable=True),
    Column("response", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("token_id", "key", name="uq_api_idempotency_token_key"),
)

# --- edition reports (owner: pipeline.digests.clicks; issue 14 item 3) -------------------
# Clicks on a digest's signed /r/ links, counted per edition and article only: no row
# names a person (CLK-2). Indexes for the report's per-edition aggregates (RPT-1).
edition_clicks = Table(
    "edition_clicks",
    metadata,
    Column("edition_id", BigInteger, ForeignKey("digest_editions.id", ondelete="CASCADE"), primary_key=True),
    Column("article_id", BigInteger, primary_key=True),
    Column("count", BigInteger, nullable=False, default=0),
    Column("first_at", UTCDateTime, nullable=False),
    Column("last_at", UTCDateTime, nullable=False),
)
Index("ix_deliveries_edition", deliveries.c.edition_id, deliveries.c.state, deliveries.c.sent_at)
Index("ix_bounce_events_delivery", bounce_events.c.delivery_id)

# Closed states (pipeline.states) as CHECK constraints: a misspelt state cannot reach
# a row. Migration 0002 adds the same constraints to existing databases.
for _table, _column, _states in CHECKED_COLUMNS:
    metadata.tables[_table].append_constraint(
        CheckConstraint(check_sql(_column, _states), name=constraint_name(_table, _column))
    )

# --- subscriber imports (owner: pipeline.subscribers.imports) ---------------------------------

# One row per CSV import: who started it, from which file, its progress and its counts.
# status: queued | running | done | failed (pipeline.states.ImportStatus). A dry run
# keeps its row and its per-row notes (dry_run = true) and changes no subscriber.
subscriber_imports = Table(
    "subscriber_imports",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("filename", String(500), nullable=False, default=""),
    Column("source", String(200), nullable=False, default=""),
    Column("confirmed", Boolean, nullable=False, default=False),
    Column("dry_run", Boolean, nullable=False, default=False),
    Column("created_by", String(320), nullable=False, default=""),
    Column("status", String(20), nullable=False),
    Column("total", Integer, nullable=False, default=0),
    Column("created", Integer, nullable=False, default=0),
    Column("updated", Integer, nullable=False, default=0),
    Column("unchanged", Integer, nullable=False, default=0),
    Column("skipped", Integer, nullable=False, default=0),
    Column("bad", Integer, nullable=False, default=0),
    Column("confirmed_count", Integer, nullable=False, default=0),
    Column("confirmations_queued", Integer, nullable=False, default=0),
    Column("created_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime, nullable=True),
    Column("finished_at", UTCDateTime, nullable=True),
    Column("error", Text, nullable=False, default=""),
    CheckConstraint(check_sql("status", ImportStatus), name=constraint_name("subscriber_imports", "status")),
)

# What an import said about single rows: kind "bad" (line skipped: field and why) or
# "skipped" (an unsubscribed or suppressed address, kept as it is). Deleted with its import.
subscriber_import_errors = Table(
    "subscriber_import_errors",
    metadata,
    Column("id", BigId, primary_key=True),
    Column(
        "import_id",
        BigInteger,
        ForeignKey("subscriber_imports.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("line", Integer, nullable=False),
    Column("kind", String(20), nullable=False),  # bad | skipped
    Column("field", String(40), nullable=False, default=""),
    Column("message", Text, nullable=False),
)
