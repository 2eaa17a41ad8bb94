"""Outgoing events (issue 14 item 2; EVT-1..6): subscriber and send events to the
operator's endpoints, signed per Standard Webhooks and verified here with the spec's
reference library (`standardwebhooks`), sent and retried through the outbox exactly
like partner pushes. The receiver is a real http.server on 127.0.0.1."""

from __future__ import annotations

import base64
import json

import pytest
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from pipeline import subscribers as subs
from pipeline.delivery.worker import drain
from pipeline.digests.editions import compose
from pipeline.errors import ConfigError
from pipeline.store.schema import deliveries

from .digest_helpers import add_articles, add_subscriber, at
from .partner_server import LoopbackServer, Received, Reply
from .partners_helpers import make_due

SECRET = "whsec_" + base64.b64encode(b"events-test-secret-0123456789abc").decode()
SECRET_ENV = "SYNDICATE_TEST_EVENTS_SECRET"


class EventReceiver(LoopbackServer):
    """An integrator's endpoint: verifies with the reference library, dedupes webhook-id."""

    def __init__(self, secret: str):
        super().__init__()
        self.webhook = Webhook(secret)
        self.events: list[dict] = []
        self.seen: set[str] = set()

    @property
    def url(self) -> str:
        return self.base_url + "/events"

    def _handle(self, handler, method: str):
        body = handler._read()
        headers = {k.lower(): v for k, v in handler.headers.items()}
        record = Received(method, handler.path, headers, body)
        with self.lock:
            self.requests.append(record)
        try:
            self.webhook.verify(body, headers)
            record.verified = True
        except WebhookVerificationError as exc:
            record.reason = str(exc)
        if self._scripted(handler, record):
            return
        if not record.verified:
            handler._answer(401, b"bad signature")
            return
        with self.lock:
            record.duplicate = headers["webhook-id"] in self.seen
            if not record.duplicate:
                self.seen.add(headers["webhook-id"])
                self.events.append(json.loads(body))
        handler._answer(204)


@pytest.fixture
def receiver():
    with EventReceiver(SECRET) as server:
        yield server


def endpoint_toml(url: str, events: str = "[]", name: str = "crm") -> str:
    return f"""
[partner_push]
retry_jitter = 0.0

[[events.endpoints]]
name = "{name}"
url = "{url}"
secret_env = "{SECRET_ENV}"
events = {events}
allow_private = true
connect_timeout = 1.0
read_timeout = 10.0
retry_schedule = ["5s", "5m"]
"""


@pytest.fixture
def events_app(make_app, db_url, receiver, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, SECRET)
    return make_app(db_url, endpoint_toml(receiver.url))


def event_rows(app) -> list[dict]:
    with app.engine.connect() as conn:
        return [
            dict(r)
            for r in conn.execute(
                select(deliveries).where(deliveries.c.channel == "events").order_by(deliveries.c.id)
            ).mappings()
        ]


def signup_and_confirm(app, address="ada@example.com"):
    with app.engine.begin() as conn:
        subs.request_subscription(conn, app.settings, address, client=subs.Client(source="web:/"))
    with app.engine.connect() as conn:
        row = conn.execute(select(deliveries).where(deliveries.c.kind == "confirm")).mappings().first()
    token = subs.confirm_token(app.settings, row["payload"]["nonce"])
    with app.engine.begin() as conn:
        return subs.confirm(conn, app.settings, token)


def test_confirm_and_unsubscribe_are_signed_events_verified_by_the_reference_library_evt3(events_app, receiver):
    """EVT-2, EVT-3: the transitions queue events in their own transaction; the events
    channel signs them (webhook-id, webhook-timestamp, v1 HMAC-SHA256 with the whsec_
    secret) and the reference library accepts every request."""
    sub = signup_and_confirm(events_app)
    with events_app.engine.begin() as conn:
        assert subs.unsubscribe(conn, events_app.settings, sub["id"])
    assert [r["kind"] for r in event_rows(events_app)] == ["subscriber.confirmed", "subscriber.unsubscribed"]
    report = drain(events_app.settings, events_app.engine, channels=["events"])
    assert report.sent == 2
    assert all(r.verified for r in receiver.requests), [r.reason for r in receiver.requests]
    assert [e["type"] for e in receiver.events] == ["subscriber.confirmed", "subscriber.unsubscribed"]
    first = receiver.events[0]
    assert first["data"]["email"] == "ada@example.com"
    assert first["data"]["subscriber_id"] == sub["id"]
    assert first["data"]["state_before"] == "unconfirmed"
    assert receiver.requests[0].headers["webhook-id"].startswith("msg_")
    assert receiver.requests[0].headers["idempotency-key"]
    assert [r["state"] for r in event_rows(events_app)] == ["sent", "sent"]


def test_a_forged_signature_fails_the_reference_check_evt3(receiver):
    """The receiver in these tests really checks: a body changed after signing fails."""
    from pipeline.partners.webhook import event_body, webhook_headers

    body = event_body({"type": "subscriber.confirmed", "data": {}})
    headers = webhook_headers([SECRET], "msg_1", "", body)
    Webhook(SECRET).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body + b" ", headers)


def test_500_then_200_is_retried_and_delivered_once_evt4(events_app, receiver):
    """EVT-4: retried exactly like a partner push: a 500 leaves the row in retry with
    the answer saved; the next attempt (same webhook-id, new timestamp) succeeds; the
    receiver sees one event."""
    receiver.reply(Reply(status=500, body=b"try later"))
    signup_and_confirm(events_app)
    first = drain(events_app.settings, events_app.engine, channels=["events"])
    assert first.retry == 1
    (row,) = event_rows(events_app)
    assert row["state"] == "retry" and "HTTP 500" in row["last_error"]
    make_due(events_app)
    second = drain(events_app.settings, events_app.engine, channels=["events"])
    assert second.sent == 1
    (row,) = event_rows(events_app)
    assert row["state"] == "sent" and row["attempts"] == 2
    assert len(receiver.requests) == 2
    assert receiver.requests[0].headers["webhook-id"] == receiver.requests[1].headers["webhook-id"]
    assert receiver.requests[0].body == receiver.requests[1].body  # frozen in the row
    assert len(receiver.events) == 1
    make_due(events_app)
    assert drain(events_app.settings, events_app.engine, channels=["events"]).claimed == 0
    assert len(receiver.requests) == 2


def test_endpoint_gets_only_the_types_it_subscribed_to_evt1(make_app, db_url, receiver, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, SECRET)
    app = make_app(db_url, endpoint_toml(receiver.url, events='["subscriber.unsubscribed"]'))
    sub = signup_and_confirm(app)
    assert event_rows(app) == []
    with app.engine.begin() as conn:
        subs.unsubscribe(conn, app.settings, sub["id"])
        subs.unsubscribe(conn, app.settings, sub["id"])  # idempotent: one event
    assert [r["kind"] for r in event_rows(app)] == ["subscriber.unsubscribed"]


def test_unknown_event_type_in_config_is_refused_evt1(make_app, sqlite_url):
    with pytest.raises(ConfigError, match="subscriber.exploded"):
        make_app(sqlite_url, endpoint_toml("http://127.0.0.1:9/x", events='["subscriber.exploded"]'))


def test_no_endpoints_queues_nothing(make_app, sqlite_url):
    app = make_app(sqlite_url)
    signup_and_confirm(app)
    assert event_rows(app) == []


def test_missing_secret_holds_the_event_until_the_operator_sets_it_evt5(make_app, sqlite_url, receiver, monkeypatch):
    """EVT-5: nothing is sent unsigned; the row waits (released, not failed)."""
    monkeypatch.delenv(SECRET_ENV, raising=False)
    app = make_app(sqlite_url, endpoint_toml(receiver.url))
    signup_and_confirm(app)
    drain(app.settings, app.engine, channels=["events"])
    assert receiver.requests == []
    (row,) = event_rows(app)
    assert row["state"] == "queued"


def test_edition_sent_once_when_the_edition_is_complete_evt2(make_app, db_url, receiver, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, SECRET)
    app = make_app(db_url, endpoint_toml(receiver.url, events='["edition.sent"]'))
    add_articles(app, [{"slug": "first-light", "approved_at": at(hours=2)}])
    add_subscriber(app, "ada@example.com", confirmed_at=at())
    add_subscriber(app, "bob@example.com", confirmed_at=at())
    compose(app.engine, app.settings, "daily", now=at(days=1, hours=1))
    compose(app.engine, app.settings, "daily", now=at(days=1, hours=2))  # again: nothing new
    rows = event_rows(app)
    assert [r["kind"] for r in rows] == ["edition.sent"]
    drain(app.settings, app.engine, channels=["events"])
    (event,) = receiver.events
    assert event["data"]["recipients"] == 2
    assert event["data"]["edition"].startswith("daily-")


def test_hard_bounce_is_a_subscriber_bounced_event_evt2(make_app, sqlite_url, receiver, monkeypatch, tmp_path):
    from pipeline.delivery.inbound.bounces import Decision, _apply

    monkeypatch.setenv(SECRET_ENV, SECRET)
    app = make_app(sqlite_url, endpoint_toml(receiver.url, events='["subscriber.bounced"]'))
    sid = add_subscriber(app, "ada@example.com", confirmed_at=at())
    d = Decision(
        email="ada@example.com",
        kind="hard",
        status="5.1.1",
        action="failed",
        decision="suppressed",
        delivery_id=1,
        detail="user unknown",
    )
    _apply(app.settings, app.engine, b"raw bounce", "ada@example.com", d, "test")
    _apply(app.settings, app.engine, b"raw bounce", "ada@example.com", d, "test")  # same bounce again
    (row,) = event_rows(app)
    assert row["kind"] == "subscriber.bounced"
    data = row["payload"]["event"]["data"]
    assert data["subscriber_id"] == sid and data["bounce"] == "hard" and data["status"] == "5.1.1"


def test_410_disables_the_endpoint_until_resumed_evt4(events_app, receiver):
    """EVT-4: a 410 disables the endpoint like a partner; `partners resume events:NAME`
    lifts it and the event is delivered."""
    from pipeline.partners import ops, state

    receiver.reply(Reply(status=410))
    signup_and_confirm(events_app)
    drain(events_app.settings, events_app.engine, channels=["events"])
    with events_app.engine.connect() as conn:
        assert state.get_state(conn, "events:crm")["state"] == "disabled"
    ops.resume(events_app, "events:crm")
    drain(events_app.settings, events_app.engine, channels=["events"])
    assert [e["type"] for e in receiver.events] == ["subscriber.confirmed"]


def test_partners_commands_know_event_endpoints_evt5(events_app, receiver):
    """`partners list`, `partners test events:NAME` and `partners status events:NAME`
    cover event endpoints: a signed ping the reference library accepts."""
    from pipeline.partners import ops

    names = [o["name"] for o in ops.overview(events_app)]
    assert "events:crm" in names
    result = ops.send_test_event(events_app, "events:crm")
    assert result.ok and result.self_verified
    assert receiver.requests[-1].verified
    assert ops.status(events_app, "events:crm")["summary"]["state"] == "active"


def test_operator_add_of_a_confirmed_subscriber_is_an_event_evt2(events_app, receiver):
    with events_app.engine.begin() as conn:
        sub, _ = subs.add(conn, events_app.settings, "bo@example.com", confirmed=True, source="import:crm")
    (row,) = event_rows(events_app)
    assert row["kind"] == "subscriber.confirmed"
    assert row["payload"]["event"]["data"]["subscriber_id"] == sub["id"]
