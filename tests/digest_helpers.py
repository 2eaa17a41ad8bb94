"""Helpers for the digest tests: articles approved at chosen times, subscribers inserted
directly with chosen confirmation times, and the Maildir read back."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import json
from pathlib import Path

from sqlalchemy import insert, update

from pipeline.content.ingest import ingest
from pipeline.content.editorial import approve
from pipeline.store.schema import articles, subscribers, suppressions

from .articles import write_article, write_author

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 11, 2, 9, 0, tzinfo=UTC)  # a Monday


def at(days: float = 0, hours: float = 0) -> dt.datetime:
    return T0 + dt.timedelta(days=days, hours=hours)


def add_articles(app, specs: list[dict]) -> None:
    """specs: {slug, title?, tags?, category?, approved_at, summary?, extra?}. Written,
    ingested, approved, then first_approved_at set to the given time."""
    root = app.settings.root
    write_author(root)
    for s in specs:
        extra = s.get("extra", "")
        if s.get("summary"):
            extra += f"summary: {json.dumps(s['summary'])}\n"
        write_article(root, s["slug"], title=s.get("title", s["slug"].replace("-", " ").title()),
                      tags=s.get("tags", "[habits]"), category=s.get("category", "wellbeing"),
                      date=s.get("date", "2026-10-01T08:00:00Z"), extra=extra)
    report = ingest(app)
    assert not report.errors, [e.message for e in report.errors]
    with app.engine.begin() as conn:
        approve(conn, [s["slug"] for s in specs], editor="test", override="test")
        for s in specs:
            conn.execute(update(articles).where(articles.c.slug == s["slug"])
                         .values(first_approved_at=s["approved_at"]))


def add_subscriber(app, email_addr: str, *, frequency: str = "daily", topics: list[str] | None = None,
                   state: str = "confirmed", confirmed_at: dt.datetime | None = None, name: str = "",
                   last_digest_at: dt.datetime | None = None) -> int:
    now = confirmed_at or T0
    with app.engine.begin() as conn:
        return conn.execute(insert(subscribers).values(
            email=email_addr.lower(), name=name, state=state, frequency=frequency, topics=topics or [],
            timezone="UTC", source="test", created_at=now, updated_at=now,
            confirmed_at=confirmed_at if state != "unconfirmed" else None,
            last_digest_at=last_digest_at)).inserted_primary_key[0]


def suppress(app, email_addr: str, reason: str = "hard_bounce") -> None:
    with app.engine.begin() as conn:
        conn.execute(insert(suppressions).values(email=email_addr.lower(), reason=reason, source="test",
                                                 created_at=T0, detail=""))


def drain(app):
    from pipeline.delivery.worker import drain as run_drain

    return run_drain(app.settings, app.engine)


def maildir_messages(app) -> list[tuple[bytes, email.message.EmailMessage]]:
    folder = Path(app.settings.path("email.maildir")) / "new"
    out = []
    for path in sorted(folder.glob("*")) if folder.exists() else []:
        data = path.read_bytes()
        out.append((data, email.message_from_bytes(data, policy=email.policy.default)))
    return out


def by_recipient(app) -> dict[str, list[email.message.EmailMessage]]:
    out: dict[str, list] = {}
    for _data, msg in maildir_messages(app):
        out.setdefault(msg["To"].addresses[0].addr_spec, []).append(msg)
    return out


def titles(msg) -> list[str]:
    """Article titles listed in a digest's text part, in order."""
    text = body(msg, "plain")
    import re
    return re.findall(r"^\d+\. (.+)$", text, flags=re.M)


def body(msg, subtype: str) -> str:
    """A part's decoded text with LF line ends (QP text decodes to canonical CRLF)."""
    return msg.get_body((subtype,)).get_content().replace("\r\n", "\n")
