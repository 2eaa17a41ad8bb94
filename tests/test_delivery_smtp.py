"""The SMTP sender and the email channel against a real aiosmtpd server (SMTP-1..7,
BULK-3, BULK-4, MSG-5), on SQLite and PostgreSQL, with and without PIPELINING (the
client's default path when the server offers it; issue 16, item 16)."""

from __future__ import annotations

import datetime as dt
import math
import os
import time

import pytest
from sqlalchemy import select

from pipeline.app import App
from pipeline.delivery import outbox
from pipeline.delivery.channels import get_state, resume
from pipeline.delivery.worker import drain
from pipeline.store.schema import suppressions
from pipeline.timeutil import as_utc, utcnow
from tests.delivery_kit import enqueue_test, rows_by_id, smtp_toml
from tests.smtp_server import SMTPTestServer


@pytest.fixture(params=[True, False], ids=["pipelining", "stepwise"])
def smtp(request):
    server = SMTPTestServer(pipelining=request.param).start()
    yield server
    server.stop()


def test_the_test_server_offers_pipelining_when_asked(smtp):
    import smtplib

    client = smtplib.SMTP(smtp.host, smtp.port, timeout=5)
    try:
        client.ehlo()
        assert client.has_extn("pipelining") is smtp.pipelining
    finally:
        client.quit()


@pytest.fixture
def smtp_app(make_app, db_url, smtp):
    def factory(**delivery) -> App:
        return make_app(db_url, smtp_toml(smtp, **delivery))

    return factory


def _drain(app, **kw):
    return drain(app.settings, app.engine, **kw)


def test_every_message_arrives_once_with_crlf_and_verp_smtp7(smtp_app, smtp):
    app = smtp_app()
    targets = [f"reader{i}@example.org" for i in range(12)]
    ids = enqueue_test(app.engine, targets)
    report = _drain(app)
    assert report.sent == 12
    assert smtp.counts() == {t: 1 for t in targets}
    for message in smtp.messages:
        assert not message.has_bare_lf
        assert message.mail_from.startswith("bounces+")
    rows = rows_by_id(app.engine, ids)
    assert {r["state"] for r in rows.values()} == {"sent"}
    assert all(r["provider_answer"].startswith("250") for r in rows.values())
    assert _drain(app).claimed == 0  # nothing twice


def test_bare_lf_from_a_builder_is_sent_as_crlf_smtp7(smtp_app, smtp):
    from pipeline.delivery import register_email_kind
    from pipeline.delivery.email.channel import OutgoingEmail

    register_email_kind(
        "lf-test",
        lambda conn, settings, row: OutgoingEmail(
            "digest@news.example.com",
            [row["target"]],
            b"From: a@news.example.com\nTo: " + row["target"].encode() + b"\nSubject: lf\n\n" + b"x" * 70 + b"\n" * 3,
        ),
    )
    app = smtp_app()
    with app.engine.begin() as conn:
        outbox.enqueue(conn, channel="email", target="lf@example.org", kind="lf-test", key="lf:1")
    assert _drain(app).sent == 1
    assert not smtp.messages[0].has_bare_lf


def test_451_is_retried_later_with_an_attempt_spent_smtp1(smtp_app, smtp):
    app = smtp_app(retry_schedule=["10m", "1h"])
    smtp.answer("data", "451 4.3.0 Temporary failure", times=1)
    [rid] = enqueue_test(app.engine, ["soft@example.org"])
    before = utcnow()
    _drain(app)
    row = rows_by_id(app.engine, [rid])[rid]
    assert row["state"] == "retry" and row["attempts"] == 1
    assert "451" in row["last_error"]
    wait = as_utc(row["next_attempt_at"]) - before
    assert dt.timedelta(minutes=9) < wait < dt.timedelta(minutes=11)
    # due again: it goes out
    _drain_at(app, as_utc(row["next_attempt_at"]) + dt.timedelta(seconds=1))
    assert rows_by_id(app.engine, [rid])[rid]["state"] == "sent"
    assert smtp.counts() == {"soft@example.org": 1}


def _drain_at(app, when):
    import os

    os.environ["SYNDICATE_FROZEN_NOW"] = when.isoformat()
    try:
        return _drain(app)
    finally:
        del os.environ["SYNDICATE_FROZEN_NOW"]


def test_452_is_transient_and_the_schedule_ends_in_dead_smtp2(smtp_app, smtp):
    app = smtp_app(retry_schedule=["1m"])
    smtp.answer("rcpt", "452 4.2.2 Mailbox full")
    [rid] = enqueue_test(app.engine, ["full@example.org"])
    _drain(app)
    row = rows_by_id(app.engine, [rid])[rid]
    assert row["state"] == "retry" and row["attempts"] == 1
    _drain_at(app, as_utc(row["next_attempt_at"]) + dt.timedelta(seconds=1))
    row = rows_by_id(app.engine, [rid])[rid]
    assert row["state"] == "dead" and row["attempts"] == 2
    assert "gave up" in row["last_error"]


def test_421_slows_down_that_domain_only_and_requeues_without_spending_an_attempt(smtp_app, smtp, db_url):
    """Issue 19 item 3: a 421 for one recipient slows sending to its domain, not the list."""
    from pipeline.delivery.channels import domain_throttles

    app = smtp_app(throttle_seconds=120)
    smtp.answer("rcpt", "421 4.7.0 Too many messages, slow down", recipient="a@slow.example", times=1)
    ids = enqueue_test(app.engine, ["a@slow.example", "b@example.org", "c@example.org"])
    before = utcnow()
    _drain(app)
    rows = rows_by_id(app.engine, ids)
    throttled = [r for r in rows.values() if r["state"] == "retry"]
    assert [r["target"] for r in throttled] == ["a@slow.example"]
    assert throttled[0]["attempts"] == 0  # no attempt spent
    assert as_utc(throttled[0]["next_attempt_at"]) >= before + dt.timedelta(seconds=119)
    assert sum(r["state"] == "sent" for r in rows.values()) == 2  # the others went on
    state = get_state(app.engine, "email")
    assert state.effective_rate_factor() == 1 and not state.paused  # the channel is not slowed
    slowed = domain_throttles(app.engine, "email")
    assert set(slowed) == {"slow.example"} and slowed["slow.example"].factor() == 2
    assert slowed["slow.example"].base_per_minute >= 600  # no configured rate: the pace it had, at least 10/s
    # the current rate is shown in `status` and /metrics
    from prometheus_client.parser import text_string_to_metric_families

    from pipeline.delivery.channels import health
    from pipeline.ops.metrics import render_metrics

    [email] = health(app.engine)
    assert "slow.example at 1/2" in email["line"] and email["rate_factor"] == 1
    body, _ = render_metrics(app)
    factors = {
        s.labels["domain"]: s.value
        for f in text_string_to_metric_families(body.decode())
        for s in f.samples
        if s.name == "syndicate_delivery_rate_factor"
    }
    assert factors == {"*": 1, "slow.example": 2}
    # another worker (a new channel object) slows down for that domain too
    from pipeline.delivery.email.channel import EmailChannel

    other = EmailChannel(app.settings, app.engine)
    other._tune_domains()
    assert 0 < other.domain_buckets["slow.example"].rate <= slowed["slow.example"].base_per_minute / 60 / 2
    assert "example.org" not in other.domain_buckets
    other.close()


def test_a_domain_throttle_recovers_gradually_after_its_window():
    """Issue 19 item 3: after the window the divisor halves once per window, not at once."""
    from pipeline.delivery.channels import recovering_factor

    until = utcnow()
    at = lambda seconds: recovering_factor(16, until, 60, until + dt.timedelta(seconds=seconds))  # noqa: E731
    assert at(-1) == 16
    assert [at(0), at(59), at(60), at(120), at(180), at(240)] == [8, 8, 4, 2, 1, 1]


def test_550_511_is_a_hard_bounce_that_suppresses_the_address_smtp1(smtp_app, smtp):
    app = smtp_app()
    smtp.refuse("gone@example.org")
    [rid] = enqueue_test(app.engine, ["gone@example.org"])
    _drain(app)
    row = rows_by_id(app.engine, [rid])[rid]
    assert row["state"] == "failed" and "5.1.1" in row["last_error"]
    with app.engine.connect() as conn:
        sup = conn.execute(select(suppressions).where(suppressions.c.email == "gone@example.org")).mappings().one()
    assert sup["reason"] == "hard_bounce" and sup["source"] == "smtp"
    # not retried, and the next message to that address is stopped before sending (BULK-4)
    smtp.clear_rules()
    enqueue_test(app.engine, ["gone@example.org"], tag="second")
    report = _drain(app)
    assert report.suppressed == 1 and smtp.counts() == {}


def test_554_571_at_data_pauses_the_channel_and_does_not_blame_the_recipient(smtp_app, smtp):
    app = smtp_app(smtp_connections=1)  # one lane: nothing else is in flight when it pauses
    smtp.answer("data", "554 5.7.1 Message rejected: DMARC policy", times=1)
    ids = enqueue_test(app.engine, [f"r{i}@example.org" for i in range(5)])
    report = _drain(app)
    state = get_state(app.engine, "email")
    assert state.paused and "5.7.1" in state.paused_reason
    rows = rows_by_id(app.engine, ids)
    assert all(r["state"] in ("queued", "retry") for r in rows.values())
    assert all(r["attempts"] == 0 for r in rows.values())
    with app.engine.connect() as conn:
        assert conn.execute(select(suppressions)).first() is None  # nobody suppressed
    assert report.sent == 0
    assert _drain(app).claimed == 0  # paused: nothing is claimed
    resume(app.engine, "email")
    assert _drain(app).sent == 5
    assert len(smtp.messages) == 5


@pytest.mark.parametrize("stage", ["mail"])
def test_554_571_at_mail_from_pauses_the_channel(smtp_app, smtp, stage):
    app = smtp_app(smtp_connections=1)
    smtp.answer(stage, "554 5.7.1 Sender blocked", times=1)
    enqueue_test(app.engine, ["m1@example.org", "m2@example.org"])
    _drain(app)
    assert get_state(app.engine, "email").paused


def test_554_571_at_rcpt_fails_that_recipient_only_and_the_list_goes_on(smtp_app, smtp):
    """Issue 19 item 2: one recipient's 5.7.1 at RCPT is that recipient's failure
    (failed, counted as a soft bounce towards suppression), never a paused channel."""
    from pipeline.store.schema import bounce_events

    app = smtp_app(soft_bounce_limit=2)
    smtp.refuse("blocked@example.net", "554 5.7.1 Recipient address rejected: Access denied")
    targets = ["blocked@example.net", *[f"ok{i}@example.org" for i in range(30)]]
    ids = enqueue_test(app.engine, targets)
    report = _drain(app, batch_size=10)
    state = get_state(app.engine, "email")
    assert not state.paused, state.paused_reason
    rows = rows_by_id(app.engine, ids)
    blocked = rows[ids[0]]
    assert blocked["state"] == "failed" and blocked["attempts"] == 1 and "5.7.1" in blocked["last_error"]
    assert report.sent == 30 and len(smtp.counts()) == 30
    with app.engine.connect() as conn:
        events = conn.execute(select(bounce_events.c.email, bounce_events.c.kind)).all()
        assert events == [("blocked@example.net", "soft")]
        assert conn.execute(select(suppressions)).first() is None  # one soft bounce of two
    # the second refusal reaches soft_bounce_limit: the address is suppressed
    enqueue_test(app.engine, ["blocked@example.net"], tag="again")
    _drain(app)
    with app.engine.connect() as conn:
        assert conn.execute(select(suppressions.c.email, suppressions.c.reason)).all() == [
            ("blocked@example.net", "soft_bounces")
        ]
    assert _drain(app).claimed == 0  # nothing waits to pause the channel again


def test_571_at_rcpt_from_many_domains_in_a_row_pauses_the_channel(smtp_app, smtp):
    """Issue 19 item 2: 5.7.x from policy_pause_domains different domains in a row is
    about us (a block list), so the channel pauses."""
    app = smtp_app(policy_pause_domains=3, smtp_connections=1)
    smtp.answer("rcpt", "554 5.7.1 Client host blocked using a block list")
    enqueue_test(app.engine, [f"r@d{i}.example" for i in range(6)])
    _drain(app)
    state = get_state(app.engine, "email")
    assert state.paused and "different domains" in state.paused_reason


def test_one_refused_recipient_of_two_is_handled_per_recipient_smtp4(smtp_app, smtp):
    app = smtp_app()
    smtp.refuse("bad@example.org")
    [ok_row] = enqueue_test(app.engine, ["good@example.org"], also_to=["bad@example.org"], tag="x")
    [bad_row] = enqueue_test(app.engine, ["bad@example.org"], also_to=["good2@example.org"], tag="y")
    _drain(app)
    rows = rows_by_id(app.engine, [ok_row, bad_row])
    assert rows[ok_row]["state"] == "sent" and "bad@example.org" in rows[ok_row]["provider_answer"]
    assert rows[bad_row]["state"] == "failed"  # its own recipient was refused
    assert smtp.counts() == {"good@example.org": 1, "good2@example.org": 1}
    with app.engine.connect() as conn:
        assert [r[0] for r in conn.execute(select(suppressions.c.email))] == ["bad@example.org"]


@pytest.mark.parametrize("pipelining", [True, False])
def test_partial_refusal_without_pipelining_too(make_app, sqlite_url, smtp, pipelining):
    app = make_app(sqlite_url, smtp_toml(smtp, pipelining=pipelining))
    smtp.refuse("bad@example.org")
    [rid] = enqueue_test(app.engine, ["good@example.org"], also_to=["bad@example.org"])
    _drain(app)
    assert rows_by_id(app.engine, [rid])[rid]["state"] == "sent"
    assert smtp.counts() == {"good@example.org": 1}


def test_connection_dropped_mid_data_is_retried_and_nothing_is_lost(smtp_app, smtp):
    app = smtp_app(retry_schedule=["1m"])
    smtp.drop_during_data(times=1)
    ids = enqueue_test(app.engine, [f"d{i}@example.org" for i in range(4)])
    _drain(app)
    rows = rows_by_id(app.engine, ids)
    retried = [r for r in rows.values() if r["state"] == "retry"]
    assert len(retried) == 1 and retried[0]["attempts"] == 1
    assert "lost" in retried[0]["last_error"] or "closed" in retried[0]["last_error"].lower()
    _drain_at(app, utcnow() + dt.timedelta(minutes=2))
    assert smtp.counts() == {f"d{i}@example.org": 1 for i in range(4)}


def test_a_stalled_server_times_out_into_a_retry(make_app, sqlite_url, smtp):
    app = make_app(sqlite_url, smtp_toml(smtp, smtp_connections=1).replace("smtp_timeout = 5.0", "smtp_timeout = 0.5"))
    smtp.stall(3, at="data", times=1)
    ids = enqueue_test(app.engine, ["slow@example.org", "next@example.org"])
    _drain(app)
    rows = rows_by_id(app.engine, ids)
    assert rows[ids[0]]["state"] == "retry" and "timed out" in rows[ids[0]]["last_error"]
    assert rows[ids[1]]["state"] == "sent"


def test_connections_are_reused_smtp5(smtp_app, smtp):
    app = smtp_app(messages_per_connection=10, smtp_connections=1)
    enqueue_test(app.engine, [f"m{i}@example.org" for i in range(35)])
    assert _drain(app, batch_size=7).sent == 35
    assert smtp.connections <= math.ceil(35 / 10)


def test_k_connections_run_in_parallel(smtp_app, smtp):
    app = smtp_app(messages_per_connection=1000, smtp_connections=3)
    smtp.data_delay = 0.01  # a slow server, so every lane has work before the queue is empty
    enqueue_test(app.engine, [f"k{i}@example.org" for i in range(60)])
    assert _drain(app).sent == 60
    assert smtp.connections == 3
    assert len({m.session for m in smtp.messages}) == 3


def test_hourly_cap_holds_and_the_rest_waits_for_the_window(smtp_app, smtp):
    app = smtp_app(max_per_hour=5, max_per_day=100)
    ids = enqueue_test(app.engine, [f"h{i}@example.org" for i in range(8)])
    report = _drain(app)
    assert report.sent == 5 and len(smtp.messages) == 5
    rows = rows_by_id(app.engine, ids)
    waiting = [r for r in rows.values() if r["state"] == "queued"]
    assert len(waiting) == 3
    assert all(as_utc(r["next_attempt_at"]) > utcnow() + dt.timedelta(minutes=55) for r in waiting)
    assert _drain(app).sent == 0  # still inside the hour
    assert len(smtp.messages) == 5


def test_n_consecutive_failures_pause_the_channel(smtp_app, smtp):
    app = smtp_app(max_consecutive_failures=3)
    smtp.answer("data", "451 4.3.0 Try later")
    enqueue_test(app.engine, [f"f{i}@example.org" for i in range(5)])
    _drain(app)
    state = get_state(app.engine, "email")
    assert state.paused and "consecutive failures" in state.paused_reason


def test_starttls_required_but_not_offered_refuses_to_send_bulk3(make_app, db_url, smtp):
    app = make_app(db_url, smtp_toml(smtp, security="starttls"))
    ids = enqueue_test(app.engine, ["tls@example.org"])
    _drain(app)
    assert smtp.messages == []
    row = rows_by_id(app.engine, ids)[ids[0]]
    assert row["state"] in ("queued", "retry") and "STARTTLS" in row["last_error"]
    assert get_state(app.engine, "email").paused


def test_starttls_and_auth_when_offered(make_app, sqlite_url):
    with SMTPTestServer(starttls=True, auth=("mailer", "s3cret")) as server:
        app = make_app(
            sqlite_url,
            smtp_toml(server, security="starttls").replace("[delivery]", "[email]\n" if False else "[delivery]"),
        )
        app.settings.email._values["smtp_username"] = "mailer"
        app.settings.email._values["smtp_password"] = "s3cret"
        enqueue_test(app.engine, ["secure@example.org"])
        assert _drain(app).sent == 1
        assert server.logins == ["mailer"]
        assert server.counts() == {"secure@example.org": 1}


def test_implicit_tls(make_app, sqlite_url):
    with SMTPTestServer(implicit_tls=True) as server:
        app = make_app(sqlite_url, smtp_toml(server, security="tls"))
        enqueue_test(app.engine, ["tls@example.org"])
        assert _drain(app).sent == 1


def test_suppression_is_checked_at_send_time_bulk4(smtp_app, smtp):
    from pipeline.subscribers.suppression import suppress

    app = smtp_app()
    ids = enqueue_test(app.engine, ["stays@example.org", "left@example.org"])
    with app.engine.begin() as conn:  # unsubscribed after the digest was composed
        suppress(conn, app.settings, "LEFT@example.org", reason="unsubscribed", source="web")
    _drain(app)
    rows = rows_by_id(app.engine, ids)
    assert rows[ids[1]]["state"] == "suppressed"
    assert smtp.counts() == {"stays@example.org": 1}


def test_header_injection_in_a_subject_is_refused_msg5(smtp_app, smtp):
    app = smtp_app()
    [rid] = enqueue_test(app.engine, ["inj@example.org"], subject="Hello\r\nBcc: x@evil.example")
    _drain(app)
    row = rows_by_id(app.engine, [rid])[rid]
    assert row["state"] == "failed" and "could not build" in row["last_error"]
    assert smtp.messages == []


def test_an_expired_lease_makes_a_claim_due_again(app):
    [rid] = enqueue_test(app.engine, ["lease@example.org"])
    claimed = outbox.claim_due(app.engine, worker="dead-worker", lease_seconds=60)
    assert [r["id"] for r in claimed] == [rid]
    assert outbox.claim_due(app.engine, worker="other") == []
    later = utcnow() + dt.timedelta(seconds=61)
    again = outbox.claim_due(app.engine, worker="other", now=later)
    assert [r["id"] for r in again] == [rid]
    with app.engine.begin() as conn:  # the dead worker's late answer no longer counts
        assert not outbox.mark_sent(conn, rid, answer="250", worker="dead-worker")
        assert outbox.mark_sent(conn, rid, answer="250", worker="other")


def test_journal_of_a_dead_worker_marks_its_sends(app):
    import os

    from pipeline.delivery.journal import Journal, journal_dir, recover

    ids = enqueue_test(app.engine, ["j1@example.org", "j2@example.org"])
    outbox.claim_due(app.engine, worker="w")
    journal = Journal(journal_dir(app.settings))
    journal.sent(ids[0], "250 2.0.0 OK queued as X")
    assert recover(journal_dir(app.settings), app.engine) == 0  # its process is alive
    os.close(journal.fd)  # as SIGKILL would: the lock goes, the file stays
    journal.fd = None
    assert recover(journal_dir(app.settings), app.engine) == 1
    rows = rows_by_id(app.engine, ids)
    assert rows[ids[0]]["state"] == "sent" and "journal" in rows[ids[0]]["provider_answer"]
    assert rows[ids[1]]["state"] == "sending"
    assert list(journal_dir(app.settings).glob("*.log")) == []


def test_recover_skips_a_journal_its_live_owner_finishes_while_recover_looks_at_it(app, monkeypatch):
    """Two processes send at once (the web service's confirmation mail and a `deliver`
    run): the owner of a journal may commit, close (releasing its lock) and delete it
    between recover's open and its lock. Recover then holds a deleted file: it skips
    it. Before, it read the journal again by name and `deliver` died with
    FileNotFoundError (seen in CI, tests/test_browser.py)."""
    import fcntl
    import types

    from pipeline.delivery import journal as journal_module
    from pipeline.delivery.journal import Journal, journal_dir, recover

    [rid] = enqueue_test(app.engine, ["live@example.org"])
    owner = Journal(journal_dir(app.settings))
    owner.sent(rid, "250 2.0.0 OK")
    owner.committed()  # in the database now: the journal is empty

    def flock(fd, op):
        if owner.fd is not None:
            owner.close()  # the owner finishes here: lock released, file deleted
        return fcntl.flock(fd, op)

    monkeypatch.setattr(
        journal_module, "fcntl", types.SimpleNamespace(LOCK_EX=fcntl.LOCK_EX, LOCK_NB=fcntl.LOCK_NB, flock=flock)
    )
    assert recover(journal_dir(app.settings), app.engine) == 0
    assert owner.fd is None and list(journal_dir(app.settings).iterdir()) == []
    assert rows_by_id(app.engine, [rid])[rid]["state"] == "queued"  # nothing replayed


def test_a_new_journal_is_locked_before_recover_can_see_it(app, monkeypatch):
    """A journal appears under its *.log name only once its lock is held (created as
    *.log.new, locked, renamed). Before, it was created as *.log and locked after: a
    recover() in between took it for a dead worker's, deleted it, and the live process
    went on journalling into a file no successor could find."""
    import fcntl
    import types

    from pipeline.delivery import journal as journal_module
    from pipeline.delivery.journal import Journal, journal_dir

    folder = journal_dir(app.settings)
    seen = []

    def flock(fd, op):
        seen.append(sorted(p.name for p in folder.glob("*.log")))
        return fcntl.flock(fd, op)

    monkeypatch.setattr(
        journal_module, "fcntl", types.SimpleNamespace(LOCK_EX=fcntl.LOCK_EX, LOCK_NB=fcntl.LOCK_NB, flock=flock)
    )
    journal = Journal(folder)
    monkeypatch.undo()
    assert seen == [[]]  # no *.log yet when the lock was taken
    assert [p.name for p in folder.iterdir()] == [journal.path.name]
    fd = os.open(journal.path, os.O_RDONLY)
    try:
        with pytest.raises(BlockingIOError):  # the visible file is locked
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)
        journal.close()


def test_recover_removes_a_stale_half_made_journal_and_leaves_a_fresh_one(app):
    """A process killed between creating its journal (*.log.new) and renaming it wrote
    nothing to it: recover deletes it once it is older than a minute, and never touches
    a younger one, which may belong to a live process about to lock it."""
    from pipeline.delivery.journal import STALE_UNLOCKED_SECONDS, journal_dir, recover

    folder = journal_dir(app.settings)
    folder.mkdir(parents=True, exist_ok=True)
    stale, fresh = folder / "host-1-aa.log.new", folder / "host-2-bb.log.new"
    stale.write_bytes(b"")
    fresh.write_bytes(b"")
    old = time.time() - STALE_UNLOCKED_SECONDS - 5
    os.utime(stale, (old, old))
    assert recover(folder, app.engine) == 0
    assert [p.name for p in folder.iterdir()] == [fresh.name]


def test_hard_bounces_are_journalled_like_250s_and_replayed_after_a_kill(smtp_app, smtp):
    """Issue 19 item 8: the journal records final refusals too, so a worker killed
    before its commit does not make its successor try a hard-bounced address again."""
    import os

    from pipeline.delivery.email.channel import EmailChannel
    from pipeline.delivery.journal import journal_dir, read_journal, recover

    app = smtp_app(smtp_connections=1)
    smtp.refuse("gone@example.org")
    ids = enqueue_test(app.engine, ["ok@example.org", "gone@example.org"])
    rows = outbox.claim_due(app.engine, worker="doomed")
    channel = EmailChannel(app.settings, app.engine)
    channel.deliver(channel.prepare(rows))  # sent and refused; then "killed" before the commit
    [journal] = [j for j in channel._journals if j is not None]
    entries = {i: kind for i, _, kind in read_journal(journal.path)}
    assert entries == {ids[0]: "", ids[1]: "hard_bounce"}
    os.close(journal.fd)  # as SIGKILL would: the lock goes, the file stays
    journal.fd = None
    assert recover(journal_dir(app.settings), app.engine, settings=app.settings) == 2
    after = rows_by_id(app.engine, ids)
    assert after[ids[0]]["state"] == "sent"
    assert after[ids[1]]["state"] == "failed" and "hard_bounce" in after[ids[1]]["last_error"]
    with app.engine.connect() as conn:
        assert [r[0] for r in conn.execute(select(suppressions.c.email))] == ["gone@example.org"]
    assert _drain(app).claimed == 0
    assert smtp.counts() == {"ok@example.org": 1}


def test_a_non_ascii_local_part_without_smtputf8_fails_for_good_visibly(smtp_app, smtp):
    """Issue 19 item 7: an address this relay can never take is a permanent failure
    with the reason in `deliveries list`, not a transient retried for four days; an
    internationalised domain alone is sent IDNA-encoded."""
    from click.testing import CliRunner

    from pipeline.cli import main

    app = smtp_app()
    ids = enqueue_test(app.engine, ["jörg@bücher.example", "anna@bücher.example"])
    _drain(app)
    rows = rows_by_id(app.engine, ids)
    assert rows[ids[0]]["state"] == "failed" and rows[ids[0]]["attempts"] == 1
    assert "SMTPUTF8" in rows[ids[0]]["last_error"]
    assert rows[ids[1]]["state"] == "sent"
    assert smtp.counts() == {"anna@xn--bcher-kva.example": 1}
    listed = (
        CliRunner()
        .invoke(main, ["--config", str(app.settings.source), "deliveries", "list", "--state", "failed", "--json"])
        .output
    )
    assert "SMTPUTF8" in listed


def test_a_classifier_error_ends_the_row_failed_never_stuck_in_sending(smtp_app, smtp):
    """Issue 18 item 7: a retry schedule that does not parse raised while judging the
    answers and left the batch in `sending` until its lease ran out."""
    app = smtp_app()
    app.settings.delivery._values["retry_schedule"] = ["5min"]  # what validation at load will refuse
    smtp.answer("data", "451 4.3.0 Try later", times=1)
    ids = enqueue_test(app.engine, ["x1@example.org", "x2@example.org"])
    _drain(app)
    rows = rows_by_id(app.engine, ids)
    assert {r["state"] for r in rows.values()} == {"failed", "sent"}
    [failed] = [r for r in rows.values() if r["state"] == "failed"]
    assert failed["attempts"] == 1 and "451" in failed["last_error"] and "5min" in failed["last_error"]
