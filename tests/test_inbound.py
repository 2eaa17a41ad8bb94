"""The `bounces` stage: mailto: unsubscribes (LIST-1's mailto URI) and bounces from one Maildir."""

from __future__ import annotations

import shutil
from pathlib import Path

from pipeline import subscribers
from pipeline.ops.stages import run_stage

DATA = Path(__file__).parent / "data" / "delivery"


def deliver_to_maildir(maildir: Path, name: str, raw: bytes) -> None:
    for sub in ("tmp", "new", "cur"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    (maildir / "new" / name).write_bytes(raw)


def request(to: str) -> bytes:
    return (
        f"From: reader@example.com\r\nTo: {to}\r\nDelivered-To: {to}\r\nSubject: unsubscribe\r\n"
        "Message-ID: <u1@example.com>\r\n\r\nunsubscribe\r\n"
    ).encode()


def test_mailto_unsubscribe_withdraws_consent_and_forgeries_do_nothing(app):
    settings = app.settings
    with app.engine.begin() as conn:
        ana, _ = subscribers.add(conn, settings, "ana@example.com", confirmed=True, source="test")
        ben, _ = subscribers.add(conn, settings, "ben@example.com", confirmed=True, source="test")
    token = subscribers.list_token(settings, "unsubscribe", ana["id"])
    forged = subscribers.list_token(settings, "preferences", ben["id"])  # wrong purpose
    box = settings.path("email.inbound_mailbox")
    deliver_to_maildir(box, "1", request(f"unsubscribe+{token}@journal.example.com"))
    deliver_to_maildir(box, "2", request(f"unsubscribe+{forged}@journal.example.com"))
    shutil.copy(DATA / "auto-reply.eml", box / "new" / "3")
    counts = run_stage(app, "bounces")
    assert counts["unsubscribe_requests"] == 2 and counts["unsubscribed"] == 1 and counts["unsubscribe_invalid"] == 1
    assert counts["messages"] == 3
    with app.engine.connect() as conn:
        assert subscribers.get(conn, "ana@example.com")["state"] == "unsubscribed"
        assert subscribers.get(conn, "ben@example.com")["state"] == "confirmed"
        kinds = [e["kind"] for e in subscribers.history(conn, ana["id"])]
    assert kinds.count("unsubscribed") == 1
    assert run_stage(app, "bounces")["unsubscribed"] == 0  # read again: nothing changes


def test_no_inbound_mailbox_is_not_an_error(app):
    assert run_stage(app, "bounces") == {"messages": 0}
