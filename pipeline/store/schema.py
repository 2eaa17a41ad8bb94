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
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = MetaData(naming_convention=NAMING)

# A big integer primary key that is still SQLite's rowid alias.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator):
    """Aware UTC in, aware UTC out, on every backend."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use pipeline.timeutil.utcnow()")
        value = value.astimezone(dt.timezone.utc)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc)


# --- content and editorial (owner: pipeline.content, pipeline.editorial) -------------

authors = Table(
    "authors", metadata,
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
    "articles", metadata,
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
)

revisions = Table(
    "revisions", metadata,
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
    "approvals", metadata,
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
    "deliveries", metadata,
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

# --- the scheduler (owner: pipeline.scheduler) ---------------------------------------

job_runs = Table(
    "job_runs", metadata,
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

# Tables owned by other stages are declared in their sections below; keep the
# owner comment on each.
__all__ = ["metadata", "UTCDateTime", "BigId", "LargeBinary"]
