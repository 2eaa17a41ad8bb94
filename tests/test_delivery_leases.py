"""Leases while a batch is in the air (issue 19, item 1): a batch that takes longer than
delivery.lease_seconds is renewed while it is sent, a row whose lease this worker lost
is never sent by it, and a completing write counts only while the claim is ours; on
SQLite and PostgreSQL, against the real aiosmtpd server."""

from __future__ import annotations

import datetime as dt
import threading

import pytest

from pipeline.delivery import Outcome, outbox, record
from pipeline.delivery.lease import LeaseKeeper
from pipeline.delivery.worker import drain
from pipeline.timeutil import utcnow
from tests.delivery_kit import enqueue_test, rows_by_id, smtp_toml
from tests.smtp_server import SMTPTestServer


@pytest.fixture(params=[True, False], ids=["pipelining", "stepwise"])
def smtp(request):
    with SMTPTestServer(pipelining=request.param) as server:
        yield server


def test_two_workers_never_send_a_batch_that_outlives_its_lease_twice(make_app, db_url, smtp):
    """Two drains at once, lease 1 s, batches of 10 with slow recipients (1.5 s each):
    before the fix the second worker claimed the first one's expired rows and sent them
    again; now the leases are renewed in the air and every message arrives once."""
    app = make_app(db_url, smtp_toml(smtp, lease_seconds=1, smtp_connections=1, batch_size=10))
    targets = [f"r{i}@example.org" for i in range(40)]
    for t in targets[::10]:
        smtp.slow(t, 1.5)
    enqueue_test(app.engine, targets)
    reports = {}

    def run(name: str) -> None:
        reports[name] = drain(app.settings, app.engine, worker=name)

    threads = [threading.Thread(target=run, args=(f"worker-{n}",)) for n in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counts = smtp.counts()
    duplicates = {t: n for t, n in counts.items() if n > 1}
    assert duplicates == {}
    assert sorted(counts) == sorted(targets)
    assert sum(r.sent for r in reports.values()) == 40
    assert {r["state"] for r in rows_by_id(app.engine, range(1, 10_000)).values()} == {"sent"}


def test_a_lease_taken_over_is_dropped_and_its_late_outcome_changes_nothing(app):
    """The keeper's check is local; a renewal that finds the row claimed by another
    worker forgets it; the first worker's completing write is conditional."""
    [rid] = enqueue_test(app.engine, ["lease@example.org"])
    keeper = LeaseKeeper(app.engine, worker="first", lease_seconds=60)
    import time

    since = time.monotonic()
    assert [r["id"] for r in outbox.claim_due(app.engine, worker="first", lease_seconds=60)] == [rid]
    keeper.claimed([rid], since)
    assert keeper.holds(rid)
    keeper.renew()  # still ours: renewed
    assert keeper.holds(rid) and keeper.lost == set()
    # the lease ran out in the database (the first worker stalled) and another claimed it
    later = utcnow() + dt.timedelta(seconds=61)
    assert [r["id"] for r in outbox.claim_due(app.engine, worker="second", now=later)] == [rid]
    keeper.renew()
    assert not keeper.holds(rid) and keeper.lost == {rid}
    counts = record(app.engine, [Outcome(rid, "sent", answer="250 late")], "first")
    assert counts == {"lost": 1}
    assert rows_by_id(app.engine, [rid])[rid]["claimed_by"] == "second"
    assert record(app.engine, [Outcome(rid, "sent", answer="250 ok")], "second") == {"sent": 1}


def test_the_local_deadline_runs_out_before_the_lease_in_the_database(app):
    """No renewal (the database was unreachable): the keeper stops answering yes before
    another worker could claim the row."""
    now = [100.0]
    keeper = LeaseKeeper(app.engine, worker="w", lease_seconds=10, clock=lambda: now[0])
    keeper.claimed([7], since=100.0)
    now[0] = 100.0 + 10 - keeper.margin - 0.01
    assert keeper.holds(7)
    now[0] = 100.0 + 10 - keeper.margin
    assert not keeper.holds(7)
    assert not keeper.holds(8)  # never claimed


def test_rows_a_starved_worker_gave_up_are_taken_back_before_the_drain_ends(make_app, db_url, smtp, monkeypatch):
    """A drain whose lease ran out locally before a renewal (a starved process under
    load: found by the crash test at load 7, 44 rows left `sending` after the final
    `deliver` exited 0) skips those rows unsent. It now waits for their database lease
    to run out and takes them back itself: nothing is left `sending`, every message
    arrives once, and the run reports them sent."""
    app = make_app(db_url, smtp_toml(smtp, lease_seconds=1, smtp_connections=1, batch_size=10))
    targets = [f"s{i}@example.org" for i in range(30)]
    ids = enqueue_test(app.engine, targets)
    starved = set(ids[3:8])  # the keeper says "not ours any more" once for each of these
    real = LeaseKeeper.holds

    def holds(self, delivery_id):
        if delivery_id in starved:
            starved.discard(delivery_id)
            return False
        return real(self, delivery_id)

    monkeypatch.setattr(LeaseKeeper, "holds", holds)
    report = drain(app.settings, app.engine, worker="starved")
    assert report.lost == 5
    counts = smtp.counts()
    assert sorted(counts) == sorted(targets) and set(counts.values()) == {1}
    assert {r["state"] for r in rows_by_id(app.engine, ids).values()} == {"sent"}
    assert report.sent == 30
