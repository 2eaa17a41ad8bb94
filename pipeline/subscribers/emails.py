"""The subscription's own emails: the confirmation, the "already subscribed" notice and
the welcome email (WEL-1..3).

Builders for the outbox's email channel (delivery kinds ``confirm`` and
``subscribed_notice``), rendered from ``templates/email/`` through the one templating
factory. The To address follows pipeline.subscribers.addresses (IDNA domain, never an
encoded-word; raw UTF-8 only under SMTPUTF8).
"""

from __future__ import annotations

import email.policy
import hashlib
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.engine import Connection

from pipeline import templating, tokens
from pipeline.config import Settings, require
from pipeline.store.schema import confirm_tokens, subscribers
from pipeline.subscribers.addresses import envelope_address, needs_smtputf8, smtputf8_enabled
from pipeline.subscribers.links import confirm_token, confirm_url, preferences_url, unsubscribe_url
from pipeline.timeutil import utcnow


def get_by_id(conn: Connection, subscriber_id: int) -> dict | None:
    """The subscriber row an email is for (read here, not through ``state``, which
    queues the welcome email from this module: the arrow runs state -> emails)."""
    row = conn.execute(select(subscribers).where(subscribers.c.id == subscriber_id)).mappings().first()
    return dict(row) if row else None


def template_dirs(settings: Settings) -> list[Path]:
    return templating.template_dirs(settings)


def _email_envs(settings: Settings):
    """(HTML env with autoescape, text env without), from the one factory."""
    return templating.environment(settings, html=True, keep_trailing_newline=False), templating.environment(
        settings, html=False
    )


def _domain(address: str) -> str:
    return parseaddr(address)[1].rpartition("@")[2] or (urlsplit(address).hostname or "localhost")


def _message(
    settings: Settings, row: dict, to: str, subject: str, template: str, context: dict, headers: dict | None = None
):
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
    # max_line_length 76: the stdlib encodes quoted-printable bodies to the policy's
    # limit, 78 for SMTP, where RFC 2045 6.7 allows 76 (issue 16 item 1).
    base = email.policy.SMTPUTF8 if needs_smtputf8(to) else email.policy.SMTP
    msg = EmailMessage(policy=base.clone(max_line_length=76))
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(utcnow())
    key = row.get("idempotency_key") or f"{row.get('id')}"
    msg["Message-ID"] = f"<{hashlib.sha256(key.encode('utf-8')).hexdigest()[:32]}@{_domain(sender)}>"
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(text_body)
    msg.add_alternative(html_body, subtype="html")
    data = msg.as_bytes()
    if headers:
        # Spliced in as written: the stdlib would fold a long URI header into RFC 2047
        # encoded-words, which List-Unsubscribe readers do not decode (LIST-1).
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = []
        for name, value in headers.items():
            if not value.isascii() or "\r" in value or "\n" in value or len(name) + len(value) > 990:
                raise ValueError(f"header {name} cannot be written as one ASCII line")
            lines.append(f"{name}: {value}".encode("ascii"))
        data = head + b"\r\n" + b"\r\n".join(lines) + b"\r\n\r\n" + rest
    return OutgoingEmail(envelope_from=parseaddr(sender)[1], recipients=[to], data=data)


def build_confirm_email(conn: Connection, settings: Settings, row: dict):
    """The 'confirm' delivery kind -> the confirmation email, or None when it is moot."""
    payload = row["payload"] or {}
    sub = get_by_id(conn, int(payload.get("subscriber_id") or row.get("subscriber_id") or 0))
    if sub is None or sub["state"] in ("confirmed", "suppressed"):
        return None
    token = confirm_token(settings, payload["nonce"])
    tok = (
        conn.execute(select(confirm_tokens).where(confirm_tokens.c.token_hash == tokens.token_hash(token)))
        .mappings()
        .first()
    )
    if tok is None or tok["used_at"] is not None or tok["expires_at"] <= utcnow():
        return None
    context = {
        "name": sub["name"],
        "email": sub["email"],
        "confirm_url": confirm_url(settings, token),
        "ttl_hours": settings.subscribers.confirm_ttl_hours,
        "frequency": sub["frequency"],
        "topics": list(sub["topics"] or []),
        "consent_text": settings.subscribers.consent_text,
        "resubscribe": sub["state"] == "unsubscribed",
    }
    return _message(
        settings, row, sub["email"], f"Confirm your subscription to {settings.site.title}", "confirm", context
    )


def build_notice_email(conn: Connection, settings: Settings, row: dict):
    """'subscribed_notice': someone asked to subscribe an address that already is."""
    sub = get_by_id(conn, int((row["payload"] or {}).get("subscriber_id") or row.get("subscriber_id") or 0))
    if sub is None or sub["state"] != "confirmed":
        return None
    context = {
        "name": sub["name"],
        "email": sub["email"],
        "preferences_url": preferences_url(settings, sub["id"]),
        "unsubscribe_url": unsubscribe_url(settings, sub["id"]),
    }
    return _message(
        settings,
        row,
        sub["email"],
        f"You are already subscribed to {settings.site.title}",
        "subscribed_notice",
        context,
    )


WELCOME_KIND = "welcome"


def welcome_key(subscriber_id: int) -> str:
    """One welcome per subscriber, ever (WEL-2): confirming again after leaving, or a
    second confirmation click racing the first, queues nothing new."""
    return f"welcome:{subscriber_id}"


def queue_welcome(conn: Connection, settings: Settings, sub: dict, now=None) -> bool:
    """Queue the welcome email in the confirmation's transaction (WEL-1); True when new."""
    from pipeline.delivery import outbox

    return outbox.enqueue(
        conn,
        channel="email",
        target=sub["email"],
        kind=WELCOME_KIND,
        key=welcome_key(sub["id"]),
        payload={"subscriber_id": sub["id"]},
        subscriber_id=sub["id"],
    )


def build_welcome_email(conn: Connection, settings: Settings, row: dict):
    """'welcome': the latest K approved articles and the reader's links, rendered at
    send time; None when the subscriber is no longer confirmed (WEL-3)."""
    from pipeline.content.editorial import approved_articles

    sub = get_by_id(conn, int((row["payload"] or {}).get("subscriber_id") or row.get("subscriber_id") or 0))
    if sub is None or sub["state"] != "confirmed":
        return None
    k = settings.subscribers.welcome_articles
    latest = approved_articles(conn, settings, limit=k) if k else []
    unsubscribe = unsubscribe_url(settings, sub["id"])
    context = {
        "name": sub["name"],
        "email": sub["email"],
        "frequency": sub["frequency"],
        "topics": list(sub["topics"] or []),
        "articles": [{"title": a.title, "url": a.url, "summary": a.summary} for a in latest],
        "preferences_url": preferences_url(settings, sub["id"]),
        "unsubscribe_url": unsubscribe,
    }
    return _message(
        settings,
        row,
        sub["email"],
        f"Welcome to {settings.site.title}",
        "welcome",
        context,
        headers={
            # LIST-1, LIST-2: the welcome is the first message of the list, so it can be left in one click too
            "List-Unsubscribe": f"<{unsubscribe}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    )
