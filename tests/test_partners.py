"""Partner push over Standard Webhooks, on every database: signatures (SW-1..3),
answer classes (SW-4), retries and dead letters (SW-5), timeouts (SW-6), the SSRF
guard (SW-7), idempotency keys (IDEM-1), canonical URL and noindex (CANON-1/2), and
the end-to-end publish / update / retract flow."""

from __future__ import annotations

import ast
import datetime as dt
import random
import re
import time
from pathlib import Path

import pytest
import requests

from pipeline.partners import signing
from pipeline.partners.config import parse_duration
from pipeline.partners.http import retry_delay
from pipeline.partners.ops import overview, resume, retry, status
from pipeline.timeutil import utcnow

from .partner_server import Reply, WebhookPartner
from .partners_helpers import (
    OLD_SECRET,
    PUSH_TOML,
    SECRET,
    SECRET_ENV,
    make_due,
    publish,
    push,
    retract,
    rows,
    webhook_partner_toml,
)

# --- signatures: no database ------------------------------------------------------------


def test_sw2_standard_webhooks_test_vector():
    """STANDARDS finding 0.9: the spec's own vector."""
    sig = signing.sign(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}'
    )
    assert sig == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_sw1_rotation_sends_one_signature_per_secret_and_either_verifies():
    body = b'{"type":"ping"}'
    headers = signing.headers([SECRET, OLD_SECRET], "msg_abc", body, timestamp=int(time.time()))
    sigs = headers["webhook-signature"].split(" ")
    assert len(sigs) == 2 and all(s.startswith("v1,") for s in sigs)
    assert headers["webhook-timestamp"].isdigit()
    # a receiver that still only knows the old secret accepts it, and one with the new one too
    assert signing.verify([OLD_SECRET], headers, body) == "msg_abc"
    assert signing.verify([SECRET], headers, body) == "msg_abc"
    with pytest.raises(signing.VerificationError):
        signing.verify([SECRET], headers, body + b" ")  # not the exact bytes


def test_sw3_partner_server_rejects_stale_timestamp_and_dedupes_webhook_id():
    with WebhookPartner([SECRET]) as partner:
        body = b'{"type":"ping"}'
        stale = signing.headers([SECRET], "msg_stale", body, timestamp=int(time.time()) - 6 * 60)
        r = requests.post(partner.url, data=body, headers=stale, timeout=5)
        assert r.status_code == 400 and "too old" in r.json()["error"]
        fresh = signing.headers([SECRET], "msg_once", body)
        assert requests.post(partner.url, data=body, headers=fresh, timeout=5).json()["duplicate"] is False
        assert requests.post(partner.url, data=body, headers=fresh, timeout=5).json()["duplicate"] is True
        forged = dict(fresh, **{"webhook-signature": "v1," + "A" * 44})
        assert requests.post(partner.url, data=body, headers=forged, timeout=5).status_code == 401
        assert partner.seen == {"msg_once": 2} and len(partner.events) == 1


def test_sw5_default_schedule_is_the_spec_example_about_three_days_and_jitter_stays_in_bounds():
    from pipeline.config import declared

    schedule = [parse_duration(s) for s in declared("partner_push", "retry_schedule").default]
    assert [s.total_seconds() for s in schedule] == [5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400]
    assert dt.timedelta(days=3) <= sum(schedule, dt.timedelta()) <= dt.timedelta(days=3.5)
    rng = random.Random(7)
    for attempt, base in enumerate(schedule, start=1):
        for _ in range(50):
            d = retry_delay(tuple(schedule), attempt, 0.2, rng).total_seconds()
            assert base.total_seconds() * 0.8 <= d <= base.total_seconds() * 1.2
    assert retry_delay(tuple(schedule), len(schedule) + 1, 0.2, rng) is None  # then: dead letter


def test_sw6_every_request_in_the_push_code_passes_a_timeout():
    """requests has no default timeout; every call in pipeline/partners must pass one."""
    folder = Path(__file__).resolve().parent.parent / "pipeline" / "partners"
    calls = 0
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if node.func.attr not in ("get", "post", "put", "patch", "delete", "head", "request", "send"):
                continue
            receiver = ast.unparse(node.func.value)
            if re.fullmatch(r"requests|\w*session|self\.session\(.*\)", receiver):
                calls += 1
                assert any(k.arg == "timeout" for k in node.keywords), f"{path.name}:{node.lineno} has no timeout"
    assert calls >= 1


# --- end to end -------------------------------------------------------------------------


@pytest.fixture
def partner(monkeypatch):
    monkeypatch.setenv(SECRET_ENV, SECRET)
    with WebhookPartner([SECRET]) as server:
        yield server


@pytest.fixture
def site(make_app, db_url, partner):
    return make_app(db_url, PUSH_TOML + webhook_partner_toml(partner.url))


def test_end_to_end_publish_update_retract_each_once_and_signed(site, partner):
    publish(site, "rituals", title="Small Rituals")
    counts, report = push(site)
    assert counts["article.published"] == 1 and report.sent == 1
    assert len(partner.requests) == 1 and partner.requests[0].verified
    first = partner.requests[0]
    event = first.json()
    assert event["type"] == "article.published"
    data = event["data"]
    assert data["canonical_url"] == "https://news.example.com/articles/rituals/"  # CANON-1
    assert 'Originally published at <a href="https://news.example.com/articles/rituals/">' in data["content_html"]
    assert data["noindex"] is True and event["meta"]["require_partner_noindex"] is True  # CANON-2
    assert data["title"] == "Small Rituals" and data["author"]["name"] == "Ana Lee"
    assert data["tags"] == ["relationships", "habits"] and data["published_at"] == "2026-10-01T08:00:00Z"
    assert first.headers["webhook-id"].startswith("msg_") and first.headers["content-type"] == "application/json"
    key1 = first.headers["idempotency-key"]

    # nothing new: running the stage again queues nothing
    counts, report = push(site)
    assert counts["queued"] == 0 and len(partner.requests) == 1

    # edit + re-approve -> exactly one update, with a new idempotency key (IDEM-1)
    publish(site, "rituals", title="Small Rituals, Revised")
    counts, report = push(site)
    assert counts == {"partners": 1, "queued": 1, "article.published": 0, "article.updated": 1, "article.retracted": 0}
    assert [r.json()["type"] for r in partner.requests] == ["article.published", "article.updated"]
    second = partner.requests[1]
    assert second.json()["data"]["title"] == "Small Rituals, Revised"
    assert second.headers["idempotency-key"] != key1
    assert second.headers["webhook-id"] != first.headers["webhook-id"]

    # delete the file -> one retraction
    retract(site, "rituals")
    counts, report = push(site)
    assert counts["article.retracted"] == 1 and report.sent == 1
    counts, _ = push(site)
    assert counts["queued"] == 0
    assert [e["type"] for e in partner.events] == ["article.published", "article.updated", "article.retracted"]
    assert all(r.verified and not r.duplicate for r in partner.requests)
    sent = rows(site, target="acme")
    assert [r["sequence"] for r in sent] == [1, 2, 3] and {r["state"] for r in sent} == {"sent"}
    assert len({r["ordering_key"] for r in sent}) == 1


def test_restored_article_is_published_again_after_its_retraction(site, partner):
    publish(site, "rituals")
    push(site)
    path = site.settings.root / "content" / "articles" / "rituals.md"
    saved = path.read_bytes()
    retract(site, "rituals")
    push(site)
    path.write_bytes(saved)  # the same file comes back: the approved revision is live again
    from pipeline.content.ingest import ingest

    ingest(site)
    counts, _ = push(site)
    assert counts["article.published"] == 1
    assert [e["type"] for e in partner.events] == ["article.published", "article.retracted", "article.published"]


def test_update_never_overtakes_its_publish(site, partner):
    partner.reply(Reply(500))
    publish(site, "rituals")
    push(site)
    publish(site, "rituals", title="Edited")
    counts, report = push(site)  # the update is queued but blocked behind the failed publish
    assert counts["article.updated"] == 1 and report.claimed == 0
    assert len(partner.requests) == 1
    make_due(site)
    push(site)
    assert [e["type"] for e in partner.events] == ["article.published", "article.updated"]


def test_idem1_retry_sends_the_same_webhook_id_and_idempotency_key(site, partner):
    partner.reply(Reply(500, body=b"oops"))
    publish(site, "rituals")
    push(site)
    make_due(site)
    push(site)
    a, b = partner.requests
    assert a.headers["webhook-id"] == b.headers["webhook-id"]
    assert a.headers["idempotency-key"] == b.headers["idempotency-key"]
    assert a.body == b.body  # the same bytes, signed afresh with a new timestamp
    assert b.verified and rows(site)[0]["state"] == "sent"


# --- answer classes (SW-4) ------------------------------------------------------------------


def _one(site):
    (row,) = rows(site, target="acme")
    return row


def test_sw4_500_retries_on_the_schedule(site, partner):
    partner.reply(Reply(500, body=b"database down"))
    publish(site, "rituals")
    before = utcnow()
    push(site)
    row = _one(site)
    assert row["state"] == "retry" and row["attempts"] == 1
    assert "HTTP 500" in row["last_error"] and "database down" in row["provider_answer"]
    wait = (row["next_attempt_at"] - before).total_seconds()
    assert 4 <= wait <= 7  # the first step of the partner's schedule, 5 s, no jitter


def test_sw4_redirect_is_not_followed_and_counts_as_failure(site, partner):
    partner.reply(Reply(301, headers={"Location": partner.base_url + "/elsewhere"}))
    publish(site, "rituals")
    push(site)
    row = _one(site)
    assert row["state"] == "retry" and "redirect" in row["last_error"] and "/elsewhere" in row["last_error"]
    assert [r.path for r in partner.requests] == ["/hooks/syndicate"]  # /elsewhere never requested


def test_sw4_410_disables_the_partner_keeps_the_event_and_resume_sends_it(site, partner):
    partner.reply(Reply(410))
    publish(site, "rituals")
    publish(site, "sleep", title="On Sleep")
    push(site)
    assert len(partner.requests) == 1  # the second row was held back, not sent to a gone endpoint
    (info,) = overview(site)
    assert info["state"] == "disabled" and "410" in info["alert"] and info["backlog"] == 2
    assert {r["state"] for r in rows(site)} <= {"queued", "retry"}
    assert all(r["attempts"] == 0 for r in rows(site))
    make_due(site)
    push(site)
    assert len(partner.requests) == 1  # still disabled
    before, n = resume(site, "acme")
    assert before["state"] == "disabled" and n == 2
    push(site)
    assert len(partner.events) == 2 and {r["state"] for r in rows(site)} == {"sent"}


def test_sw4_429_honours_retry_after_without_spending_an_attempt(site, partner):
    partner.reply(Reply(429, headers={"Retry-After": "120"}))
    publish(site, "rituals")
    before = utcnow()
    push(site)
    row = _one(site)
    assert row["state"] == "retry" and row["attempts"] == 0
    assert 115 <= (row["next_attempt_at"] - before).total_seconds() <= 125
    assert overview(site)[0]["state"] == "throttled"


def test_sw4_503_honours_retry_after(site, partner):
    partner.reply(Reply(503, headers={"Retry-After": "600"}))
    publish(site, "rituals")
    before = utcnow()
    push(site)
    row = _one(site)
    assert row["state"] == "retry" and row["attempts"] == 1
    assert 595 <= (row["next_attempt_at"] - before).total_seconds() <= 605


def test_sw4_other_4xx_fails_for_good_with_the_response_saved(site, partner):
    partner.reply(Reply(422, body=b'{"error":"title too long"}'))
    publish(site, "rituals")
    push(site)
    row = _one(site)
    assert row["state"] == "failed" and "title too long" in row["provider_answer"] and "422" in row["provider_answer"]
    make_due(site)
    push(site)
    assert len(partner.requests) == 1


def test_sw6_a_partner_hanging_past_the_read_timeout_is_retried(make_app, db_url, partner):
    # 1 s, not less: the retry's answer comes from a thread of this process, and under a
    # loaded suite 0.5 s was once not enough for it (the retry timed out too)
    site = make_app(db_url, PUSH_TOML + webhook_partner_toml(partner.url, read_timeout=1.0))
    partner.reply(Reply(200, hang=5))
    publish(site, "rituals")
    push(site)
    row = _one(site)
    assert row["state"] == "retry" and row["last_error"].startswith("timeout")
    make_due(site)
    push(site)
    row = _one(site)
    assert row["state"] == "sent", row


def test_connection_refused_is_retried_then_dead_lettered_then_retried_by_the_operator(make_app, db_url, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, SECRET)
    server = WebhookPartner([SECRET]).start()
    url = server.url
    server.stop()  # nobody listens on that port any more
    app = make_app(db_url, PUSH_TOML + webhook_partner_toml(url, schedule='["1s"]'))
    publish(app, "rituals")
    push(app)
    assert _one(app)["state"] == "retry" and "connection" in _one(app)["last_error"]
    make_due(app)
    push(app)
    row = _one(app)
    assert row["state"] == "dead" and row["attempts"] == 2 and "gave up after 2 attempts" in row["last_error"]
    assert overview(app)[0]["dead"] == 1
    assert retry(app, "acme") == 1
    assert _one(app)["state"] == "queued"


def test_circuit_breaker_pauses_a_failing_partner_and_the_other_partner_goes_on(make_app, db_url, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, SECRET)
    with WebhookPartner([SECRET]) as bad, WebhookPartner([SECRET]) as good:
        app = make_app(
            db_url,
            PUSH_TOML
            + webhook_partner_toml(bad.url, "bad", extra="max_consecutive_failures = 2")
            + webhook_partner_toml(good.url, "good"),
        )
        for i in range(4):
            bad.reply(Reply(500))
            publish(app, f"piece-{i}", title=f"Piece {i}")
        push(app)
        assert len(good.events) == 4  # not held up
        for _ in range(3):
            make_due(app)
            push(app)
        assert len(bad.requests) == 2  # one per batch until the breaker opened after 2 failures in a row
        info = {o["name"]: o for o in overview(app)}
        assert info["bad"]["state"] == "paused" and info["bad"]["backlog"] == 4
        assert info["good"]["state"] == "active" and info["good"]["backlog"] == 0
        assert retry(app, "bad") == 0  # nothing dead; but the pause is lifted
        bad.script.clear()  # the partner is back
        make_due(app)
        push(app)
        assert len(bad.events) == 4 and overview(app)[0]["state"] == "active"


# --- SSRF (SW-7) ---------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "169.254.169.254", "localhost", "10.0.0.8"])
def test_sw7_private_loopback_and_link_local_urls_are_refused(make_app, sqlite_url, monkeypatch, host):
    monkeypatch.setenv(SECRET_ENV, SECRET)
    with WebhookPartner([SECRET]) as server:
        port = server.server.server_address[1]
        url = f"http://{host}:{port}/hooks/syndicate"
        toml = webhook_partner_toml(url).replace("allow_private = true", "allow_private = false")
        app = make_app(sqlite_url, PUSH_TOML + toml)
        publish(app, "rituals")
        push(app)
        row = _one(app)
        assert row["state"] == "failed" and "SSRF" in row["last_error"]
        assert server.requests == []
        assert "private" in overview(app)[0]["alert"]


def test_sw7_guard_checks_the_connected_address_too():
    """DNS rebinding: even when the resolve-time check is skipped, the socket's peer
    address is checked before anything is written."""
    from pipeline.partners.config import Partner
    from pipeline.partners.http import AddressRefused, make_session

    with WebhookPartner([SECRET]) as server:
        p = Partner("x", "webhook", server.url, "", (), (), (), True, False, 1.0, 1.0, (), 0, True, None, False)
        with pytest.raises(AddressRefused):
            make_session(p).post(server.url, data=b"{}", timeout=(1, 1))
        assert server.requests == []


# --- filters, canonical, secrets -----------------------------------------------------------


def test_filters_tags_categories_authors_and_since(make_app, db_url, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, SECRET)
    with WebhookPartner([SECRET]) as p1:
        toml = (
            PUSH_TOML
            + webhook_partner_toml(p1.url, "sleepers", extra='tags = ["Sleep"]')
            + webhook_partner_toml(p1.url, "bobs", extra='authors = ["bob"]')
            + webhook_partner_toml(p1.url, "rel", extra='categories = ["relationships"]')
            + webhook_partner_toml(p1.url, "future", extra='since = "2999-01-01"')
            + webhook_partner_toml(p1.url, "off", extra="enabled = false")
        )
        app = make_app(db_url, toml)
        from .articles import write_author

        write_author(app.settings.root, "bob", "Bob Stone")
        publish(app, "rituals")
        publish(app, "sleep", title="On Sleep", tags="[sleep]", category="health", author="bob")
        counts, _ = push(app)
        got = {(r["target"], r["article_id"]) for r in rows(app)}
        by_target = {}
        for target, article in got:
            by_target.setdefault(target, set()).add(article)
        assert set(by_target) == {"sleepers", "bobs", "rel"}
        assert len(by_target["sleepers"]) == len(by_target["bobs"]) == len(by_target["rel"]) == 1
        assert by_target["sleepers"] == by_target["bobs"] != by_target["rel"]


def test_canon1_own_canonical_url_and_canon2_noindex_off_per_partner(make_app, db_url, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, SECRET)
    with WebhookPartner([SECRET]) as server:
        app = make_app(db_url, PUSH_TOML + webhook_partner_toml(server.url, extra="noindex = false"))
        publish(app, "rituals", extra="canonical_url: https://ana.example.org/rituals\n")
        push(app)
        event = server.events[0]
        assert event["data"]["canonical_url"] == "https://ana.example.org/rituals"
        assert event["meta"]["canonical_url"] == "https://ana.example.org/rituals"
        assert 'href="https://ana.example.org/rituals"' in event["data"]["content_html"]
        assert event["data"]["noindex"] is False and event["meta"]["require_partner_noindex"] is False


def test_missing_secret_holds_the_event_and_alerts(make_app, db_url, monkeypatch):
    monkeypatch.delenv(SECRET_ENV, raising=False)
    with WebhookPartner([SECRET]) as server:
        app = make_app(db_url, PUSH_TOML + webhook_partner_toml(server.url))
        publish(app, "rituals")
        push(app)
        assert server.requests == [] and _one(app)["state"] == "queued"
        assert SECRET_ENV in overview(app)[0]["alert"]
        monkeypatch.setenv(SECRET_ENV, SECRET)
        make_due(app)
        push(app)
        assert len(server.events) == 1


def test_sw1_rotation_end_to_end_partner_with_old_secret_still_verifies(make_app, db_url, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, f"{SECRET} {OLD_SECRET}")
    with WebhookPartner([OLD_SECRET]) as server:
        app = make_app(db_url, PUSH_TOML + webhook_partner_toml(server.url))
        publish(app, "rituals")
        push(app)
        assert len(server.events) == 1
        assert len(server.requests[0].headers["webhook-signature"].split(" ")) == 2


# --- operator: status, replay -------------------------------------------------------------


def test_status_shows_recent_attempts_with_codes_and_errors(site, partner):
    partner.reply(Reply(500, body=b"boom"))
    publish(site, "rituals")
    push(site)
    make_due(site)
    push(site)
    info = status(site, "acme")
    assert [(a["status_code"], a["outcome"]) for a in info["attempts"]] == [(200, "sent"), (500, "retry")]
    assert "boom" in info["attempts"][1]["error"] and info["attempts"][0]["slug"] == "rituals"


def test_replay_sends_new_ids_with_the_same_idempotency_keys_in_order(site, partner):
    from pipeline.partners.ops import replay

    publish(site, "rituals")
    push(site)
    publish(site, "rituals", title="Edited")
    push(site)
    assert replay(site, "acme", utcnow() - dt.timedelta(hours=1)) == 2
    counts, report = push(site)
    assert counts["queued"] == 0 and report.sent == 2  # replays do not confuse the stage
    first, second, r1, r2 = partner.requests
    assert [r.json()["type"] for r in (r1, r2)] == ["article.published", "article.updated"]
    assert r1.headers["idempotency-key"] == first.headers["idempotency-key"]
    assert r2.headers["idempotency-key"] == second.headers["idempotency-key"]
    assert r1.headers["webhook-id"] != first.headers["webhook-id"] and not r1.duplicate
    publish(site, "rituals", title="Edited again")
    counts, _ = push(site)
    assert counts["article.updated"] == 1
