"""Test sends: the next digest, as one subscriber would get it, to a seed list (SEED-1..3).

`syndicate digest test --to ADDRESS... [--as SUBSCRIBER]` renders the subscriber's next
digest exactly as `digest preview` does (the same selection, parts and templates; a
sample of the next edition when no subscriber is named) and queues one email per seed
address, kind `digest_test`, through the outbox like every email. It composes no
edition, writes no part and moves no watermark, so the real send later is unchanged
(SEED-2). The Subject starts with `[TEST]` and the message carries `X-Syndicate-Test:
yes` (SEED-1). The subscriber's own unsubscribe and preferences links are replaced by
a harmless link to the site, and there is no List-Unsubscribe header, so a seed
reader who clicks cannot unsubscribe the real subscriber (SEED-3). Links are never
click-tracked in a test send (the preview has no edition to count against).
"""

from __future__ import annotations

import dataclasses
import email.policy
import hashlib
import uuid
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr

from sqlalchemy import select
from sqlalchemy.engine import Engine

from pipeline.config import Settings, require
from pipeline.delivery import outbox
from pipeline.digests.preview import preview
from pipeline.store import transaction
from pipeline.store.schema import subscribers
from pipeline.subscribers.addresses import normalise_email, smtputf8_enabled
from pipeline.subscribers.links import ListLinks
from pipeline.timeutil import utcnow

KIND = "digest_test"
SUBJECT_PREFIX = "[TEST] "


@dataclasses.dataclass
class TestSend:
    subject: str
    recipient: str  # whose digest it is
    source: str  # what the preview shows (next digest, last digest sent, sample)
    articles: int
    to: list[str]
    keys: list[str]


def _neutralise(settings: Settings, text: str, subscriber_id: int | None) -> str:
    """Replace the subscriber's own unsubscribe and preferences links (SEED-3)."""
    if not subscriber_id:
        return text
    links = ListLinks(settings)
    harmless = f"{settings.site.base_url.rstrip('/')}/#test-send"
    for url in (links.unsubscribe_url(subscriber_id), links.preferences_url(subscriber_id)):
        text = text.replace(url, harmless)
    return text


def queue_test_send(
    engine: Engine,
    settings: Settings,
    to: list[str],
    *,
    as_subscriber: str | None = None,
    frequency: str | None = None,
    dry_run: bool = False,
) -> TestSend:
    """Render the next digest for `as_subscriber` (or a sample of `frequency`) and queue
    it to every address in `to`. Returns what was (or, dry run, would be) queued."""
    if not to:
        raise ValueError("no seed address")
    smtputf8 = smtputf8_enabled(settings)
    seeds = list(dict.fromkeys(normalise_email(a, smtputf8=smtputf8) for a in to))
    result = preview(engine, settings, frequency=frequency or (None if as_subscriber else "daily"), email=as_subscriber)
    with engine.connect() as conn:
        sid = conn.execute(select(subscribers.c.id).where(subscribers.c.email == result.recipient.lower())).scalar()
    html = _neutralise(settings, result.html, sid)
    text = _neutralise(settings, result.text, sid)
    subject = SUBJECT_PREFIX + result.subject
    run = uuid.uuid4().hex[:12]
    keys = [f"{KIND}:{run}:{address}" for address in seeds]
    if not dry_run:
        with transaction(engine) as conn:
            for key, address in zip(keys, seeds):
                outbox.enqueue(
                    conn,
                    channel="email",
                    target=address,
                    kind=KIND,
                    key=key,
                    payload={"subject": subject, "html": html, "text": text, "as": result.recipient},
                )
    return TestSend(subject, result.recipient, result.source, result.articles, seeds, keys if not dry_run else [])


def build_test_email(conn, settings: Settings, row: dict):
    """The `digest_test` email kind: the rendered test digest from the row's payload."""
    from pipeline.delivery.email.channel import OutgoingEmail

    payload = row["payload"] or {}
    sender = require(settings, "site.from_address", "digests need a From address")
    msg = EmailMessage(policy=email.policy.SMTP.clone(max_line_length=76))
    msg["From"] = sender
    msg["To"] = row["target"]
    msg["Subject"] = payload["subject"]
    msg["Date"] = format_datetime(utcnow())
    domain = parseaddr(sender)[1].rpartition("@")[2] or "localhost"
    msg["Message-ID"] = f"<{hashlib.sha256(row['idempotency_key'].encode()).hexdigest()[:32]}@{domain}>"
    msg["X-Syndicate-Test"] = "yes"
    msg.set_content(payload["text"])
    msg.add_alternative(payload["html"], subtype="html")
    return OutgoingEmail(envelope_from=parseaddr(sender)[1], recipients=[row["target"]], data=msg.as_bytes())
