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
    assert by_kind["unclassified"].decision == "kept"  # BNC-3: kept for the operator
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


# --- non-DSN bounce reports (BNC-3, issue 16 item 6) -----------------------------------------

VENDOR_SAMPLES = [
    # (fixture, kind, decision, status)
    ("exim-hard.eml", "hard", "suppressed", "5.1.1"),
    ("postfix-nondsn.eml", "hard", "suppressed", ""),
    ("qmail.eml", "hard", "suppressed", "5.1.1"),
    ("yahoo.eml", "hard", "suppressed", "5.0.0"),
    ("hotmail-exchange.eml", "hard", "suppressed", "5.1.1"),
    ("gmail-delay.eml", "soft", "counted", ""),
    ("exim-policy.eml", "policy", "ignored", "5.7.1"),
]


def test_non_dsn_reports_act_as_a_dsn_would_bnc3(app, tmp_path):
    """BNC-3: Exim, Postfix (non-DSN), qmail, Yahoo- and Hotmail/Exchange-style reports,
    read through the real inbound path (a Maildir, the bounces stage): a permanent
    failure suppresses with the reason, a delay is counted, a 5.7.x is ours (ignored);
    each is matched to its outbox row through the VERP address."""
    from pipeline.delivery.inbound.mailbox import bounces_stage

    targets = [f"r{i}@example.org" for i in range(len(VENDOR_SAMPLES))]
    ids = enqueue_test(app.engine, targets)
    s = app.settings
    box = maildir_with(
        tmp_path,
        [
            fixture(name, verp_address=verp.encode(s, rid), rcpt=rcpt, tag=str(i))
            for i, ((name, *_), rid, rcpt) in enumerate(zip(VENDOR_SAMPLES, ids, targets, strict=True))
        ],
    )
    counts = bounces_stage(app, path=str(box))
    assert counts["messages"] == len(VENDOR_SAMPLES) and counts["unclassified"] == 0
    with app.engine.connect() as conn:
        rows = {r.delivery_id: r for r in conn.execute(select(bounce_events).order_by(bounce_events.c.id))}
    for (name, kind, decision, status), rid, rcpt in zip(VENDOR_SAMPLES, ids, targets, strict=True):
        row = rows[rid]
        assert (row.email, row.kind, row.decision, row.status) == (rcpt, kind, decision, status), name
    hard = {t for (_, kind, *_), t in zip(VENDOR_SAMPLES, targets, strict=True) if kind == "hard"}
    assert suppressed(app) == dict.fromkeys(hard, "hard_bounce")
    # read again: nothing twice
    again = bounces_stage(app, path=str(box))
    assert again["already_seen"] == len(VENDOR_SAMPLES) and again["suppressed"] == 0


def test_a_non_dsn_report_without_verp_changes_nothing_bnc1_bnc3(app, tmp_path):
    """A plain-text report naming an address but not mailed to a valid VERP address is
    recorded and ignored (anyone can write one), like a DSN (BNC-1)."""
    enqueue_test(app.engine, ["victim@example.org"])
    box = maildir_with(
        tmp_path, [fixture("exim-hard.eml", verp_address="bounces@news.example.com", rcpt="victim@example.org")]
    )
    report = process_mailbox(app.settings, app.engine, box)
    [d] = report.decisions
    assert (d.kind, d.decision, d.email) == ("hard", "ignored", "victim@example.org")
    assert "no VERP address" in d.detail
    assert suppressed(app) == {}


def test_unreadable_mail_is_unclassified_and_kept_bnc3(app, tmp_path):
    """Mail that is neither a DSN, a report flufl.bounce reads, nor an auto-reply is
    recorded as `unclassified` (decision `kept`, with sender and subject), stays in the
    Maildir, and is counted in `syndicate status` and /metrics (BNC-3)."""
    from pipeline.ops.metrics import render_metrics
    from pipeline.ops.status import snapshot

    [rid] = enqueue_test(app.engine, ["odd@example.org"])
    raw = fixture("unreadable-notice.eml", verp_address=verp.encode(app.settings, rid), rcpt="odd@example.org")
    box = maildir_with(tmp_path, [raw])
    report = process_mailbox(app.settings, app.engine, box)
    [d] = report.decisions
    assert (d.kind, d.decision) == ("unclassified", "kept") and report.unclassified == 1
    assert "postmaster@odd.example.net" in d.detail and "Problem with your message" in d.detail
    assert [m.as_bytes() for m in mailbox.Maildir(str(box), create=False)].__len__() == 1  # still there
    with app.engine.connect() as conn:
        [row] = conn.execute(select(bounce_events)).all()
    assert (row.kind, row.decision) == ("unclassified", "kept")
    assert suppressed(app) == {}
    panel = snapshot(app)["bounces"]
    assert panel["by_kind"]["unclassified"] == 1
    body, _ = render_metrics(app)
    assert 'syndicate_bounces_total{kind="unclassified"} 1.0' in body.decode()


def test_status_and_bounces_list_show_kinds_bnc3(sqlite_app, tmp_path):
    """`syndicate status` shows bounce counts by kind; `syndicate bounces list --kind
    unclassified` names the kept messages."""
    app = sqlite_app
    ids = enqueue_test(app.engine, ["gone@example.org", "odd@example.org"])
    s = app.settings
    box = maildir_with(
        tmp_path,
        [
            fixture("qmail.eml", verp_address=verp.encode(s, ids[0]), rcpt="gone@example.org"),
            fixture("unreadable-notice.eml", verp_address=verp.encode(s, ids[1]), rcpt="odd@example.org"),
        ],
    )
    process_mailbox(s, app.engine, box)
    from click.testing import CliRunner

    from pipeline.cli import main

    def cli(*args):
        r = CliRunner().invoke(main, ["--config", str(app.settings.source), *args], catch_exceptions=False)
        assert r.exit_code == 0, r.output
        return r.output

    out = cli("status")
    assert "Bounces" in out and "hard 1" in out and "unclassified 1" in out
    listed = cli("bounces", "list", "--kind", "unclassified")
    assert "Problem with your message" in listed and "gone@example.org" not in listed


def test_a_report_to_a_plain_address_is_matched_by_the_verp_in_the_returned_copy_bnc1_bnc3(app, tmp_path):
    """Some servers mail their report to a plain address; the copy of our message it
    returns still carries the signed VERP Return-Path, which names the delivery."""
    [rid] = enqueue_test(app.engine, ["gone@example.org"])
    raw = fixture("qmail.eml", verp_address=verp.encode(app.settings, rid), rcpt="gone@example.org")
    head, sep, body = raw.partition(b"\r\n\r\n")
    head = head.replace(verp.encode(app.settings, rid).encode(), b"postmaster@news.example.com")
    box = maildir_with(tmp_path, [head + sep + body])
    report = process_mailbox(app.settings, app.engine, box)
    [d] = report.decisions
    assert (d.kind, d.decision, d.delivery_id) == ("hard", "suppressed", rid)
    assert suppressed(app) == {"gone@example.org": "hard_bounce"}


def test_a_maildir_is_read_in_order_of_arrival(tmp_path):
    """Maildir names carry unpadded microseconds: sorted as strings, `M10913` came before
    `M9876` of the same second (test_a_forged_verp_token_is_ignored_bnc1 failed when its
    two messages were written 9,876 and 10,913 microseconds into a second)."""
    from pipeline.delivery.inbound.bounces import iter_messages

    box = tmp_path / "box"
    for folder in ("cur", "new", "tmp"):
        (box / folder).mkdir(parents=True)
    for name in ("1796648621.M10913P29337Q2.vm", "1796648621.M9876P29337Q1.vm", "1796648620.M999999P29337Q0.vm"):
        (box / "new" / name).write_bytes(f"Subject: {name}\n\nx\n".encode())
    assert [name.split("/")[1] for name, _raw in iter_messages(box)] == [
        "1796648620.M999999P29337Q0.vm",
        "1796648621.M9876P29337Q1.vm",
        "1796648621.M10913P29337Q2.vm",
    ]
