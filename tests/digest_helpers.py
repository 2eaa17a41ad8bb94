"""Helpers for the digest tests: articles approved at chosen times, subscribers inserted
directly with chosen confirmation times, and the Maildir read back."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import json
import re
from email.parser import BytesParser
from pathlib import Path

from sqlalchemy import insert, update

from pipeline.content.editorial import approve
from pipeline.content.ingest import ingest
from pipeline.store.schema import articles, subscribers, suppressions

from .articles import write_article, write_author

UTC = dt.UTC
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
        write_article(
            root,
            s["slug"],
            title=s.get("title", s["slug"].replace("-", " ").title()),
            tags=s.get("tags", "[habits]"),
            category=s.get("category", "wellbeing"),
            date=s.get("date", "2026-10-01T08:00:00Z"),
            extra=extra,
        )
    report = ingest(app)
    assert not report.errors, [e.message for e in report.errors]
    with app.engine.begin() as conn:
        approve(conn, [s["slug"] for s in specs], editor="test", override="test")
        for s in specs:
            conn.execute(
                update(articles).where(articles.c.slug == s["slug"]).values(first_approved_at=s["approved_at"])
            )


def add_subscriber(
    app,
    email_addr: str,
    *,
    frequency: str = "daily",
    topics: list[str] | None = None,
    state: str = "confirmed",
    confirmed_at: dt.datetime | None = None,
    name: str = "",
    last_digest_at: dt.datetime | None = None,
) -> int:
    now = confirmed_at or T0
    with app.engine.begin() as conn:
        return conn.execute(
            insert(subscribers).values(
                email=email_addr.lower(),
                name=name,
                state=state,
                frequency=frequency,
                topics=topics or [],
                timezone="UTC",
                source="test",
                created_at=now,
                updated_at=now,
                confirmed_at=confirmed_at if state != "unconfirmed" else None,
                last_digest_at=last_digest_at,
            )
        ).inserted_primary_key[0]


def suppress(app, email_addr: str, reason: str = "hard_bounce") -> None:
    with app.engine.begin() as conn:
        conn.execute(
            insert(suppressions).values(
                email=email_addr.lower(), reason=reason, source="test", created_at=T0, detail=""
            )
        )


def drain(app):
    from pipeline.delivery.worker import drain as run_drain

    return run_drain(app.settings, app.engine)


def maildir_messages(app) -> list[tuple[bytes, email.message.EmailMessage]]:
    """Every message in the Maildir, each checked by `check_strict` first."""
    folder = Path(app.settings.path("email.maildir")) / "new"
    out = []
    for path in sorted(folder.glob("*")) if folder.exists() else []:
        data = path.read_bytes()
        out.append((data, check_strict(data)))
    return out


_QP_LINE = re.compile(rb"(?:[\x21-\x3c\x3e-\x7e \t]|=[0-9A-F]{2})*=?")


def check_strict(data: bytes) -> email.message.EmailMessage:
    """The message as a strict receiver reads it, or an AssertionError naming the rule.

    CRLF only (SMTP-7); header lines <= 998 and ASCII (RFC 5322 2.1.1); parsed with
    `email.policy.strict`, which raises on every defect the parser notices; every
    quoted-printable line <= 76 characters, with only `=XX` escapes (upper-case hex) or
    a final soft break, and no trailing white space (RFC 2045 6.7); base64 lines <= 76;
    every text part decodes as its charset."""
    assert b"\n" not in data.replace(b"\r\n", b""), "bare LF (SMTP-7)"
    assert b"\r" not in data.replace(b"\r\n", b""), "bare CR (SMTP-7)"
    head = data.split(b"\r\n\r\n", 1)[0]
    for line in head.split(b"\r\n"):
        assert len(line) <= 998 and line.isascii(), f"header line: {line[:80]!r}"
    msg = BytesParser(policy=email.policy.strict).parsebytes(data)
    for part in msg.walk():
        if part.is_multipart():
            continue
        cte = str(part.get("Content-Transfer-Encoding", "7bit")).lower()
        raw = part.get_payload(decode=False).encode("ascii")
        lines = raw.split(b"\r\n") if b"\r\n" in raw else raw.split(b"\n")
        for number, line in enumerate(lines, 1):
            if cte == "quoted-printable":
                assert len(line) <= 76, f"QP line {number} has {len(line)} characters (RFC 2045 6.7): {line!r}"
                assert _QP_LINE.fullmatch(line), f"QP line {number} is not valid quoted-printable: {line!r}"
                assert not line.endswith((b" ", b"\t")), f"QP line {number} ends in white space: {line!r}"
            elif cte == "base64":
                assert len(line) <= 76, f"base64 line {number} has {len(line)} characters"
            else:
                assert len(line) <= 998, f"line {number} is over 998 characters"
        if part.get_content_maintype() == "text":
            part.get_payload(decode=True).decode(part.get_content_charset() or "ascii")
    return email.message_from_bytes(data, policy=email.policy.default)


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
