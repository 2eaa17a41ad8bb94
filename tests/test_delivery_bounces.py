"""`syndicate bounces process` (BNC-1, BNC-2): DSN fixtures drive the right decisions;
a forged VERP token changes nothing; soft bounces count; Maildir and mbox both read."""

from __future__ import annotations

import mailbox
from pathlib import Path

from sqlalchemy import select

from pipeline.delivery.email import verp
from pipeline.delivery.inbound.bounces import process_mailbox
from pipeline.store.schema import bounce_events, suppressions
from tests.delivery_kit import enqueue_test

FIXTURES = Path(__file__).parent / "data" / "delivery"


def fixture(name: str, *, verp_address: str, rcpt: str, tag: str = "1") -> bytes:
    text = (FIXTURES / name).read_text()
    return (
        text.replace("{{VERP}}", verp_address)
        .replace("{{RCPT}}", rcpt)
        .replace("{{TAG}}", tag)
        .replace("\n", "\r\n")
        .encode()
    )


def maildir_with(tmp_path: Path, messages: list[bytes]) -> Path:
    box = mailbox.Maildir(str(tmp_path / "bounces"), create=True)
    for raw in messages:
        box.add(raw)
    return tmp_path / "bounces"


def suppressed(app) -> dict[str, str]:
    with app.engine.connect() as conn:
        return dict(conn.execute(select(suppressions.c.email, suppressions.c.reason)).all())


def test_hard_soft_auto_reply_and_non_dsn_bnc2(app, tmp_path):
    ids = enqueue_test(app.engine, ["hard@example.org", "soft@example.org", "away@example.org", "fan@example.org"])
    s = app.settings
    box = maildir_with(
        tmp_path,
        [
            fixture("dsn-hard.eml", verp_address=verp.encode(s, ids[0]), rcpt="hard@example.org"),
            fixture("dsn-soft.eml", verp_address=verp.encode(s, ids[1]), rcpt="soft@example.org"),
            fixture("auto-reply.eml", verp_address=verp.encode(s, ids[2]), rcpt="away@example.org"),
            fixture("not-dsn.eml", verp_address=verp.encode(s, ids[3]), rcpt="fan@example.org"),
        ],
    )
    report = process_mailbox(s, app.engine, box)
    assert report.messages == 4
    by_kind = {d.kind: d for d in report.decisions}
    assert by_kind["hard"].decision == "suppressed" and by_kind["hard"].status == "5.1.1"
    assert by_kind["soft"].decision == "counted" and by_kind["soft"].status == "4.4.1"
    assert by_kind["auto_reply"].decision == "ignored"
    assert by_kind["unknown"].decision == "ignored"
    assert suppressed(app) == {"hard@example.org": "hard_bounce"}  # only the hard one suppresses
    # the same mailbox again changes nothing
    again = process_mailbox(s, app.engine, box)
    assert again.already_seen == 4 and again.suppressed == 0
    with app.engine.connect() as conn:
        assert conn.execute(select(bounce_events)).all().__len__() == 4


def test_a_forged_verp_token_is_ignored_bnc1(app, tmp_path):
    [rid] = enqueue_test(app.engine, ["victim@example.org"])
    good = verp.encode(app.settings, rid)
    local, domain = good.split("@")
    forged = local[:-1] + ("a" if local[-1] != "a" else "b") + "@" + domain
    box = maildir_with(
        tmp_path,
        [
            fixture("dsn-hard.eml", verp_address=forged, rcpt="victim@example.org"),
            fixture("dsn-hard.eml", verp_address="bounces@news.example.com", rcpt="victim@example.org", tag="2"),
        ],
    )
    report = process_mailbox(app.settings, app.engine, box)
    assert [d.decision for d in report.decisions] == ["ignored", "ignored"]
    assert "forged" in report.decisions[0].detail
    assert suppressed(app) == {}


def test_soft_bounces_suppress_after_n_within_m_days(make_app, db_url, tmp_path):
    app = make_app(db_url, "[delivery]\nsoft_bounce_limit = 3\nsoft_bounce_days = 7\n")
    [rid] = enqueue_test(app.engine, ["flaky@example.org"])
    address = verp.encode(app.settings, rid)
    mbox_path = tmp_path / "bounces.mbox"
    box = mailbox.mbox(str(mbox_path), create=True)
    for i in range(2):
        box.add(fixture("dsn-soft.eml", verp_address=address, rcpt="flaky@example.org", tag=str(i)))
    box.flush()
    report = process_mailbox(app.settings, app.engine, mbox_path)
    assert [d.decision for d in report.decisions] == ["counted", "counted"]
    assert suppressed(app) == {}
    box.add(fixture("dsn-soft.eml", verp_address=address, rcpt="flaky@example.org", tag="3"))
    box.flush()
    report = process_mailbox(app.settings, app.engine, mbox_path)
    assert report.suppressed == 1
    assert suppressed(app) == {"flaky@example.org": "soft_bounces"}


def test_dry_run_changes_nothing(sqlite_app, tmp_path):
    app = sqlite_app
    [rid] = enqueue_test(app.engine, ["hard@example.org"])
    eml = tmp_path / "one.eml"
    eml.write_bytes(fixture("dsn-hard.eml", verp_address=verp.encode(app.settings, rid), rcpt="hard@example.org"))
    report = process_mailbox(app.settings, app.engine, eml, dry_run=True)
    assert report.suppressed == 1
    assert suppressed(app) == {}


def test_decisions_are_logged_on_the_subscriber(sqlite_app, tmp_path):
    """A hard bounce suppresses the subscriber itself (state and consent log), through
    the suppression list's one owner, and records the bounce in its history."""
    from pipeline import subscribers as subs
    from pipeline.store import schema

    app = sqlite_app
    with app.engine.begin() as conn:
        subs.add(conn, app.settings, "hard@example.org", confirmed=True)
        sub = subs.get(conn, "hard@example.org")
    [rid] = enqueue_test(app.engine, ["hard@example.org"])
    eml = tmp_path / "one.eml"
    eml.write_bytes(fixture("dsn-hard.eml", verp_address=verp.encode(app.settings, rid), rcpt="hard@example.org"))
    process_mailbox(app.settings, app.engine, eml)
    with app.engine.connect() as conn:
        kinds = [
            r[0]
            for r in conn.execute(
                select(schema.subscriber_events.c.kind).where(schema.subscriber_events.c.subscriber_id == sub["id"])
            )
        ]
        assert subs.get(conn, "hard@example.org")["state"] == "suppressed"
    assert "bounce_hard" in kinds and "suppressed" in kinds
