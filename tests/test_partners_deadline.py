"""A partner that answers one byte at a time (issue 19, item 4): each byte comes well
within the read timeout, so only a total deadline per request (connect + headers +
body) ends the wait; and a slow partner never holds up the other channels."""

from __future__ import annotations

import time

import pytest

from pipeline.delivery.worker import drain
from pipeline.partners.config import partners
from pipeline.partners.http import make_session, request
from tests.delivery_kit import enqueue_test, rows_by_id

from .partner_server import Reply, WebhookPartner
from .partners_helpers import PUSH_TOML, SECRET, SECRET_ENV, publish, queue_partner_events, rows, webhook_partner_toml


@pytest.fixture
def partner(monkeypatch):
    monkeypatch.setenv(SECRET_ENV, SECRET)
    with WebhookPartner([SECRET]) as server:
        yield server


def test_a_trickling_partner_is_cut_off_at_the_total_deadline(make_app, sqlite_url, partner):
    """SW-6: before, the per-read timeout never fired and the push waited for the
    partner's whole 30 s trickle (then failed as a broken connection)."""
    app = make_app(sqlite_url, PUSH_TOML + webhook_partner_toml(partner.url, read_timeout=0.5))  # connect 1 + read 0.5
    [p] = partners(app.settings)
    partner.reply(Reply(200, trickle=0.05))
    answer = request(make_session(p), p, "POST", partner.url, data=b"{}")
    assert answer.status_code is None and answer.failure == "timeout", answer.summary()
    assert "total deadline of 1.5s" in answer.error


def test_the_deadline_also_holds_on_a_kept_alive_connection(make_app, sqlite_url, partner):
    app = make_app(sqlite_url, PUSH_TOML + webhook_partner_toml(partner.url, read_timeout=0.5))
    [p] = partners(app.settings)
    session = make_session(p)
    assert request(session, p, "POST", partner.url, data=b"{}").status_code == 400  # unsigned: refused, fast
    partner.reply(Reply(200, trickle=0.05))
    answer = request(session, p, "POST", partner.url, data=b"{}")
    assert answer.failure == "timeout", answer.summary()


def test_a_slow_partner_never_holds_up_email(make_app, sqlite_url, partner):
    """The webhook push waits (in the partner) until every email row is sent. Before,
    the drain sent the push on its own thread and claimed nothing else meanwhile, so
    the email rows waited behind it; now each channel has its own thread."""
    app = make_app(
        sqlite_url,
        PUSH_TOML + webhook_partner_toml(partner.url, read_timeout=15.0) + "\n[delivery]\nbatch_size = 2\n",
    )
    publish(app, "rituals")
    queue_partner_events(app)  # the push is queued first, so it is claimed first
    ids = enqueue_test(app.engine, [f"e{i}@example.org" for i in range(6)])
    seen = {}

    def wait_for_email() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if {r["state"] for r in rows_by_id(app.engine, ids).values()} == {"sent"}:
                seen["email_done_while_partner_waited"] = True
                return
            time.sleep(0.05)
        seen["email_done_while_partner_waited"] = False

    partner.reply(Reply(200, before=wait_for_email))
    report = drain(app.settings, app.engine)
    assert seen == {"email_done_while_partner_waited": True}
    assert report.sent == 7
    assert [r["state"] for r in rows(app, channel="webhook")] == ["sent"]
