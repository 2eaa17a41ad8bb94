"""The web service through its ASGI client, on every database: every route and error,
enumeration, rate limits, one-click unsubscribe (LIST-3), GET never changes state
(LIST-4, DOI-2), CSRF, health, public files."""

from __future__ import annotations

import re
import warnings

import pytest
from sqlalchemy import func, select

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from pipeline import subscribers as subs
from pipeline.store.schema import confirm_tokens, deliveries, subscriber_events, subscribers
from pipeline.web.app import create_app

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
BASE = "https://news.example.com"


def client_for(app) -> TestClient:
    return TestClient(create_app(app), base_url=BASE, follow_redirects=False)


@pytest.fixture
def client(app):
    with client_for(app) as c:
        yield c


@pytest.fixture
def lite(sqlite_app):
    """For tests of HTTP handling alone: SQLite only."""
    with client_for(sqlite_app) as c:
        yield sqlite_app, c


def snapshot(app):
    """Everything a request could change."""
    with app.engine.connect() as conn:
        return (
            [tuple(r) for r in conn.execute(select(subscribers).order_by(subscribers.c.id))],
            conn.execute(select(func.count()).select_from(subscriber_events)).scalar_one(),
            [tuple(r) for r in conn.execute(select(confirm_tokens).order_by(confirm_tokens.c.id))],
            conn.execute(select(func.count()).select_from(deliveries)).scalar_one(),
        )


def confirm_path(app, index=-1) -> str:
    with app.engine.connect() as conn:
        rows = conn.execute(
            select(deliveries.c.payload).where(deliveries.c.kind == "confirm").order_by(deliveries.c.id)
        ).all()
    return "/confirm/" + subs.confirm_token(app.settings, rows[index][0]["nonce"])


def csrf(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def state(app, address="ada@example.com"):
    with app.engine.connect() as conn:
        return subs.get(conn, address)


def subscribe(client, address="ada@example.com", **fields):
    return client.post("/subscribe", data={"email": address, **fields}, headers={"Origin": BASE})


def confirmed(app, client, address="ada@example.com") -> int:
    assert subscribe(client, address).status_code == 200
    path = confirm_path(app)
    page = client.get(path)
    r = client.post(path, data={"csrf_token": csrf(page.text)}, headers={"Origin": BASE})
    assert r.status_code == 200, r.text
    return state(app, address)["id"]


# --- pages ------------------------------------------------------------------------


def test_subscribe_page_has_form_and_feed_autodiscovery_disc1(lite):
    app, client = lite
    r = client.get("/subscribe")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    for kind, path in (
        ("application/atom+xml", "all.atom"),
        ("application/rss+xml", "all.rss"),
        ("application/feed+json", "all.json"),
    ):
        links = re.findall(rf'<link rel="alternate" type="{re.escape(kind)}"[^>]*href="([^"]+)"', html)
        assert links == [f"{BASE}/feeds/{path}"]
    assert 'action="https://news.example.com/subscribe"' in html
    assert '<label for="sub-email">' in html and 'id="sub-email"' in html
    assert "checked" not in re.sub(r'value="weekly" checked', "", html), "nothing pre-ticked but the default frequency"
    assert (
        r.headers["referrer-policy"] == "same-origin"
        and "frame-ancestors 'none'" in r.headers["content-security-policy"]
    )
    assert "form-action 'self' https://news.example.com;" in r.headers["content-security-policy"]


def test_home_page_without_built_index_shows_form_and_articles(lite):
    app, client = lite
    r = client.get("/")
    assert r.status_code == 200
    assert 'name="email"' in r.text and "Latest articles" in r.text


def test_public_tree_is_served_and_missing_files_404(lite):
    app, client = lite
    public = app.settings.path("paths.public")
    (public / "feeds").mkdir(parents=True, exist_ok=True)
    (public / "feeds" / "all.atom").write_text("<feed/>")
    (public / "index.html").write_text("<!DOCTYPE html><title>Built</title><p>built home")
    assert client.get("/feeds/all.atom").text == "<feed/>"
    assert "built home" in client.get("/").text
    r = client.get("/no/such/page")
    assert r.status_code == 404


def test_healthz_reports_the_database(lite):
    app, client = lite
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json()["ok"] is True
    assert r.json()["database"]["ok"] is True


def test_metrics(lite):
    app, client = lite
    r = client.get("/metrics")
    assert r.status_code == 200 and "text/plain" in r.headers["content-type"]


# --- subscribe --------------------------------------------------------------------


def test_subscribe_form_queues_confirmation(app, client):
    r = subscribe(client, "Ada@Example.com", name="Ada", frequency="daily")
    assert r.status_code == 200 and "Check your inbox" in r.text
    sub = state(app)
    assert sub["state"] == "unconfirmed" and sub["frequency"] == "daily"
    with app.engine.connect() as conn:
        ev = conn.execute(select(subscriber_events).where(subscriber_events.c.kind == "signup")).mappings().one()
    assert ev["source"] == "web:/subscribe" and ev["ip"] == "testclient" and ev["wording_version"].startswith("sha256:")


def test_subscribe_json(lite):
    app, client = lite
    r = client.post("/subscribe", json={"email": "ada@example.com", "topics": ["work"], "frequency": "weekly"})
    assert r.status_code == 202 and r.json()["ok"] is True
    assert state(app)["topics"] == ["work"]
    r = client.post("/subscribe", json={"email": "nope"})
    assert r.status_code == 400 and "email" in r.json()["errors"]
    r = client.post("/subscribe", content=b"[1,2]", headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    r = client.post("/subscribe", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    r = client.post("/subscribe", json={"email": ["a@example.com"]})
    assert r.status_code == 400


def test_subscribe_invalid_form_shows_errors_and_keeps_values(lite):
    app, client = lite
    r = subscribe(client, "not an address", name="Ada <b>")
    assert r.status_code == 400
    assert 'aria-invalid="true"' in r.text and "not a valid email" in r.text
    assert 'value="Ada &lt;b&gt;"' in r.text
    assert snapshot(app)[0] == []


def test_same_answer_for_new_and_known_addresses_doi2(app, client):
    """Enumeration: new, unconfirmed, confirmed, unsubscribed and suppressed all look alike."""
    confirmed(app, client, "known@example.com")
    confirmed(app, client, "left@example.com")
    with app.engine.begin() as conn:
        sid = subs.get(conn, "left@example.com")["id"]
        subs.unsubscribe(conn, app.settings, sid)
        subs.mark_suppressed(conn, app.settings, "known@example.com", reason="manual")
    confirmed(app, client, "happy@example.com")
    subscribe(client, "pending@example.com")
    answers = set()
    for address in (
        "new@example.com",
        "pending@example.com",
        "happy@example.com",
        "left@example.com",
        "known@example.com",
    ):
        r = subscribe(client, address)
        answers.add((r.status_code, r.text))
        j = client.post("/subscribe", json={"email": address})
        answers.add((j.status_code, j.text))
    assert len(answers) == 2  # one for the form, one for JSON


def test_subscribe_rate_limits_per_address_and_client_doi2(make_app, db_url):
    app = make_app(db_url, "[subscribers]\nmax_signups_per_address = 2\nmax_signups_per_client = 4\n")
    with client_for(app) as c:
        assert subscribe(c, "a@example.com").status_code == 200
        assert subscribe(c, "a@example.com").status_code == 200
        r = subscribe(c, "a@example.com")
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
        j = c.post("/subscribe", json={"email": "a@example.com"})
        assert j.status_code == 429 and int(j.headers["retry-after"]) > 0
        assert subscribe(c, "b@example.com").status_code == 200
        assert subscribe(c, "c@example.com").status_code == 200
        r = subscribe(c, "d@example.com")  # the client's 5th
        assert r.status_code == 429 and "retry-after" in r.headers
    with app.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(deliveries)).scalar_one() == 4


def test_subscribe_from_another_site_is_refused(lite):
    app, client = lite
    r = client.post("/subscribe", data={"email": "ada@example.com"}, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    r = client.post(
        "/subscribe",
        data={"email": "ada@example.com"},
        headers={"Referer": "https://evil.example/form", "Sec-Fetch-Site": "cross-site"},
    )
    assert r.status_code == 403
    r = client.post("/subscribe", data={"email": "ada@example.com"}, headers={"Origin": "null"})
    assert r.status_code == 403
    assert snapshot(app)[0] == []


def test_subscribe_from_an_allowed_origin(make_app, sqlite_url):
    app = make_app(sqlite_url, '[web]\nallowed_origins = ["https://www.example.org"]\n')
    with client_for(app) as c:
        r = c.post("/subscribe", data={"email": "ada@example.com"}, headers={"Origin": "https://www.example.org"})
    assert r.status_code == 200


def test_honeypot_gets_the_same_answer_and_does_nothing(lite):
    app, client = lite
    r = subscribe(client, "bot@example.com", website="http://spam.example")
    assert r.status_code == 200 and "Check your inbox" in r.text
    assert snapshot(app)[0] == []


def test_subscribe_bad_bodies(lite):
    app, client = lite
    assert (
        client.post(
            "/subscribe", content=b"x" * 70_000, headers={"Content-Type": "application/x-www-form-urlencoded"}
        ).status_code
        == 413
    )
    assert client.post("/subscribe", content=b"email=a", headers={"Content-Type": "text/plain"}).status_code == 415
    r = client.post("/subscribe", files={"email": ("a.txt", b"ada@example.com")})
    assert r.status_code == 400
    assert client.put("/subscribe").status_code == 405


# --- confirm ----------------------------------------------------------------------


def test_get_confirm_shows_a_button_and_changes_nothing_doi2(app, client):
    subscribe(client)
    before = snapshot(app)
    r = client.get(confirm_path(app))
    assert r.status_code == 200 and 'method="post"' in r.text and "Yes, subscribe me" in r.text
    assert r.headers["cache-control"] == "no-store"
    client.head(confirm_path(app))
    assert snapshot(app) == before and state(app)["state"] == "unconfirmed"


def test_confirm_post_then_reuse_is_gone(app, client):
    subscribe(client)
    path = confirm_path(app)
    token = csrf(client.get(path).text)
    r = client.post(path, data={"csrf_token": token}, headers={"Origin": BASE})
    assert r.status_code == 200 and "You are subscribed" in r.text
    assert state(app)["state"] == "confirmed"
    prefs = re.search(r'id="preferences-link" href="([^"]+)"', r.text).group(1)
    assert prefs == subs.preferences_url(app.settings, state(app)["id"])
    again = client.post(path, data={"csrf_token": token}, headers={"Origin": BASE})
    assert again.status_code == 410 and "used already" in again.text
    assert client.get(path).status_code == 410


def test_confirm_needs_the_form_token(lite):
    app, client = lite
    subscribe(client)
    path = confirm_path(app)
    assert client.post(path, data={}, headers={"Origin": BASE}).status_code == 403
    assert client.post(path, data={"csrf_token": "forged"}, headers={"Origin": BASE}).status_code == 403
    other = client.get(path)
    assert (
        client.post(path, data={"csrf_token": csrf(other.text)}, headers={"Origin": "https://evil.example"}).status_code
        == 403
    )
    # A form token made for another link does not fit this one.
    assert (
        client.post(
            path,
            data={
                "csrf_token": csrf(client.get("/unsubscribe/" + subs.list_token(app.settings, "unsubscribe", 1)).text)
            },
            headers={"Origin": BASE},
        ).status_code
        == 403
    )
    assert state(app)["state"] == "unconfirmed"


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "x" * 500, "%00"])
def test_bad_confirm_tokens_are_refused(lite, token):
    app, client = lite
    assert client.get(f"/confirm/{token}").status_code in (403, 404)
    assert client.post(f"/confirm/{token}", data={"csrf_token": "x"}).status_code == 403


def test_cross_purpose_tokens_are_refused(app, client):
    sid = confirmed(app, client)
    unsub = subs.list_token(app.settings, "unsubscribe", sid)
    prefs = subs.list_token(app.settings, "preferences", sid)
    assert client.get(f"/confirm/{unsub}").status_code == 403
    assert client.get(f"/preferences/{unsub}").status_code == 403
    assert client.get(f"/unsubscribe/{prefs}").status_code == 403
    r = client.post(f"/unsubscribe/{prefs}", data={"List-Unsubscribe": "One-Click"})
    assert r.status_code == 403 and state(app)["state"] == "confirmed"
    subscribe(client, "new@example.com")
    confirm_token = confirm_path(app).rsplit("/", 1)[1]
    assert client.get(f"/unsubscribe/{confirm_token}").status_code == 403
    assert client.get(f"/preferences/{confirm_token}").status_code == 403


def test_expired_confirm_link_offers_send_it_again(app, client, monkeypatch):
    subscribe(client)
    path = confirm_path(app)
    monkeypatch.setenv("SYNDICATE_FROZEN_NOW", "2999-01-01T00:00:00Z")
    r = client.get(path)
    assert r.status_code == 410 and "expired" in r.text and "Send it again" in r.text
    assert client.post(path, data={"csrf_token": csrf(r.text)}, headers={"Origin": BASE}).status_code == 410
    r2 = client.post(path + "/resend", data={"csrf_token": csrf(r.text)}, headers={"Origin": BASE})
    assert r2.status_code == 200 and "Check your inbox" in r2.text
    new_path = confirm_path(app)
    assert new_path != path
    page = client.get(new_path)
    assert page.status_code == 200
    assert client.post(new_path, data={"csrf_token": csrf(page.text)}, headers={"Origin": BASE}).status_code == 200
    assert state(app)["state"] == "confirmed"
    assert client.post(path + "/resend", data={}, headers={"Origin": BASE}).status_code == 403


def test_resend_is_rate_limited(make_app, db_url, monkeypatch):
    app = make_app(db_url, "[subscribers]\nmax_signups_per_address = 1\n")
    with client_for(app) as c:
        subscribe(c)
        path = confirm_path(app)
        monkeypatch.setenv("SYNDICATE_FROZEN_NOW", "2999-01-01T00:00:00Z")
        token = csrf(c.get(path).text)
        assert c.post(path + "/resend", data={"csrf_token": token}, headers={"Origin": BASE}).status_code == 200
        r = c.post(path + "/resend", data={"csrf_token": token}, headers={"Origin": BASE})
        assert r.status_code == 429 and "retry-after" in r.headers


# --- preferences ------------------------------------------------------------------


def test_preferences_get_shows_current_and_post_changes(app, client):
    sid = confirmed(app, client)
    path = "/preferences/" + subs.list_token(app.settings, "preferences", sid)
    before = snapshot(app)
    page = client.get(path)
    assert page.status_code == 200 and snapshot(app) == before
    assert 'value="weekly" checked' in page.text and "<option selected>UTC</option>" in page.text
    r = client.post(
        path,
        data={
            "csrf_token": csrf(page.text),
            "name": "Ada",
            "frequency": "daily",
            "topics": ["work", "wellbeing"],
            "timezone": "Europe/Paris",
        },
        headers={"Origin": BASE},
    )
    assert r.status_code == 200 and 'id="saved"' in r.text
    sub = state(app)
    assert (sub["name"], sub["frequency"], sub["topics"], sub["timezone"]) == (
        "Ada",
        "daily",
        ["wellbeing", "work"],
        "Europe/Paris",
    )
    kinds = [e["kind"] for e in _history(app, sid)]
    assert kinds[-1] == "preferences"


def _history(app, sid):
    with app.engine.connect() as conn:
        return subs.history(conn, sid)


def test_preferences_errors(lite):
    app, client = lite
    sid = confirmed(app, client)
    path = "/preferences/" + subs.list_token(app.settings, "preferences", sid)
    token = csrf(client.get(path).text)
    r = client.post(path, data={"csrf_token": token, "frequency": "hourly"}, headers={"Origin": BASE})
    assert r.status_code == 400 and "frequency must be one of" in r.text
    r = client.post(path, data={"csrf_token": token, "timezone": "Nowhere/Land"}, headers={"Origin": BASE})
    assert r.status_code == 400 and "time zone" in r.text
    r = client.post(path, data={"frequency": "daily"}, headers={"Origin": BASE})
    assert r.status_code == 403
    assert state(app)["frequency"] == "weekly"
    bad = path[:-3] + ("AAA" if not path.endswith("AAA") else "BBB")
    assert client.get(bad).status_code == 403
    assert client.post(bad, data={"csrf_token": token}).status_code == 403


def test_preferences_and_unsubscribe_answer_alike_for_an_erased_subscriber(app, client):
    """Issue 18 item 8: the links of an erased subscriber (GDPR erasure, purge) get the same
    answer from both pages, before and after their POST: 200, "not subscribed", nothing done."""
    sid = confirmed(app, client)
    prefs, unsub = subs.preferences_url(app.settings, sid), subs.unsubscribe_url(app.settings, sid)
    prefs_token = csrf(client.get(prefs).text)
    unsub_token = csrf(client.get(unsub).text)
    with app.engine.begin() as conn:
        subs.remove(conn, app.settings, "ada@example.com", erase=True)
    before = snapshot(app)
    answers = [
        client.get(prefs),
        client.get(unsub),
        client.post(prefs, data={"csrf_token": prefs_token, "frequency": "daily"}, headers={"Origin": BASE}),
        client.post(unsub, data={"csrf_token": unsub_token}, headers={"Origin": BASE}),
    ]
    assert [r.status_code for r in answers] == [200] * 4
    assert all("not subscribed any more" in r.text for r in answers)
    assert client_for(app).post(unsub, data={"List-Unsubscribe": "One-Click"}).status_code == 200
    assert snapshot(app) == before


# --- unsubscribe (LIST-3, LIST-4, GDPR-2) -------------------------------------------


def test_get_unsubscribe_shows_a_page_and_changes_nothing_list4(app, client):
    sid = confirmed(app, client)
    url = subs.unsubscribe_url(app.settings, sid)
    before = snapshot(app)
    r = client.get(url)
    assert r.status_code == 200 and "unsubscribe-button" in r.text
    assert snapshot(app) == before and state(app)["state"] == "confirmed"


@pytest.mark.parametrize("kind", ["urlencoded", "multipart"])
def test_one_click_unsubscribe_list3(app, client, kind):
    sid = confirmed(app, client)
    url = subs.unsubscribe_url(app.settings, sid)

    def one_click():
        # RFC 8058: no cookies, no Origin, no form token; the URL is the credential.
        fresh = client_for(app)
        if kind == "urlencoded":
            return fresh.post(
                url,
                content=b"List-Unsubscribe=One-Click",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
        return fresh.post(url, files={"List-Unsubscribe": (None, "One-Click")})

    r = one_click()
    assert r.status_code == 200 and "location" not in r.headers
    sub = state(app)
    assert sub["state"] == "unsubscribed" and sub["unsubscribed_at"] is not None
    with app.engine.connect() as conn:
        assert not subs.may_receive(conn, sid)
    again = one_click()
    assert again.status_code == 200 and "location" not in again.headers
    withdrawals = [e for e in _history(app, sid) if e["kind"] == "unsubscribed"]
    assert len(withdrawals) == 1 and withdrawals[0]["source"] == "one-click"


def test_unsubscribe_page_button(app, client):
    sid = confirmed(app, client)
    url = subs.unsubscribe_url(app.settings, sid)
    page = client.get(url)
    r = client.post(url, data={"csrf_token": csrf(page.text)}, headers={"Origin": BASE})
    assert r.status_code == 200 and "You are unsubscribed" in r.text
    assert state(app)["state"] == "unsubscribed"
    assert "not subscribed" in client.get(url).text
    r = client.post(url, data={"csrf_token": csrf(page.text)}, headers={"Origin": BASE})
    assert r.status_code == 200


def test_unsubscribe_without_one_click_or_form_token_is_refused(lite):
    app, client = lite
    sid = confirmed(app, client)
    url = subs.unsubscribe_url(app.settings, sid)
    assert client.post(url, data={"List-Unsubscribe": "Two-Clicks"}).status_code == 403
    assert (
        client.post(url, content=b"List-Unsubscribe=One-Click", headers={"Content-Type": "text/plain"}).status_code
        == 415
    )
    assert state(app)["state"] == "confirmed"


def test_unsubscribe_flipped_byte_is_403_uns1(lite):
    app, client = lite
    sid = confirmed(app, client)
    url = subs.unsubscribe_url(app.settings, sid)
    bad = url[:-1] + ("A" if url[-1] != "A" else "B")
    r = client.post(bad, data={"List-Unsubscribe": "One-Click"})
    assert r.status_code == 403 and state(app)["state"] == "confirmed"
    assert client.get(bad).status_code == 403


def test_one_click_for_an_unknown_subscriber_is_still_200(lite):
    app, client = lite
    url = subs.unsubscribe_url(app.settings, 12345)
    r = client_for(app).post(url, data={"List-Unsubscribe": "One-Click"})
    assert r.status_code == 200


def test_whole_flow_builds_the_consent_record_gdpr1(app, client):
    sid = confirmed(app, client)
    url = subs.unsubscribe_url(app.settings, sid)
    client_for(app).post(url, data={"List-Unsubscribe": "One-Click"})
    kinds = [e["kind"] for e in _history(app, sid)]
    assert kinds == ["signup", "confirm_sent", "confirmed", "unsubscribed"]


def test_missing_secret_is_a_503_not_a_traceback(lite):
    app, client = lite
    url = subs.unsubscribe_url(app.settings, 1)
    (app.settings.path("paths.var") / "secret_key").unlink()
    r = client.get(url)
    assert r.status_code == 503 and "not set up" in r.text and "SECRET" not in r.text


def test_one_click_between_compose_and_send_stops_the_digest_bulk4(app, client, monkeypatch):
    """BULK-4: the digest queued before the one-click POST is not sent after it."""
    from pipeline.digests import editions as digests

    from .digest_helpers import add_articles, at

    monkeypatch.setenv("SYNDICATE_FROZEN_NOW", "2026-11-03T12:00:00Z")
    sid = confirmed(app, client, "reader@example.com")
    with app.engine.begin() as conn:
        from pipeline.store.schema import subscribers as table

        conn.execute(table.update().where(table.c.id == sid).values(frequency="daily", last_digest_at=at(-1)))
    add_articles(app, [{"slug": "sleep-debt", "approved_at": at(days=1, hours=1)}])
    from pipeline.delivery.worker import drain

    drain(app.settings, app.engine)  # the confirmation email
    report = digests.compose(app.engine, app.settings, "daily", now=at(days=1, hours=3))
    assert report.queued == 1, report
    r = client_for(app).post(subs.unsubscribe_url(app.settings, sid), data={"List-Unsubscribe": "One-Click"})
    assert r.status_code == 200
    result = drain(app.settings, app.engine)
    assert result.sent == 0 and result.suppressed == 1
