"""WebSub publish pings through the outbox to loopback hubs (WS-2, WS-3, WS-4)."""

from __future__ import annotations

import datetime as dt
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import pytest
from sqlalchemy import select

from pipeline.delivery.worker import drain
from pipeline.site import websub
from pipeline.site.build import build
from pipeline.store.schema import deliveries

from .feedsite import add_articles, build_site, publish


class Hub:
    """A hub on 127.0.0.1:0 that records each publish POST and answers `status`."""

    def __init__(self, public=None, status: int = 204):
        self.status = status
        self.requests: list[dict] = []
        self.public = public
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                form = {k: v for k, v in parse_qs(body).items()}
                record = {"path": self.path, "content_type": self.headers.get("Content-Type"), "form": form}
                if hub.public is not None:  # WS-3: what a hub fetching the topic would see now
                    topic = (form.get("hub.url") or form.get("hub.topic") or [""])[0]
                    rel = topic.split("://", 1)[-1].split("/", 1)[-1]
                    path = hub.public / rel
                    record["topic_bytes"] = path.read_bytes() if path.exists() else None
                hub.requests.append(record)
                self.send_response(hub.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hub"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def topics(self, param="hub.url") -> list[str]:
        return [r["form"][param][0] for r in self.requests]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hubs():
    made = []

    def factory(**kwargs):
        hub = Hub(**kwargs)
        made.append(hub)
        return hub

    yield factory
    for hub in made:
        hub.close()


def hub_toml(hubs, partner_hub=None, param="hub.url"):
    toml = (
        f'\n[feeds]\nmax_entries = 3\narchive_size = 2\nhubs = {[h.url for h in hubs]!r}\nhub_url_param = "{param}"\n'
    )
    toml = toml.replace("'", '"')
    if partner_hub:
        toml += (
            f'\n[[partners]]\nname = "partner-hub"\nkind = "websub"\nurl = "{partner_hub.url}"\nallow_private = true\n'
        )
    return toml


def topics_of(keys):
    return sorted(f"https://news.example.com/feeds/{k}.{fmt}" for k in keys for fmt in ("atom", "rss", "json"))


def test_ws_2_one_publish_ping_per_changed_feed_per_hub(make_app, db_url, hubs):
    hub = hubs()
    app = make_app(db_url, hub_toml([hub]))
    hub.public = app.settings.path("paths.public")
    first = build_site(app, 6)
    assert first.pings == len(first.changed_topics) > 0
    report = drain(app.settings, app.engine, channels=["websub"])
    assert report.sent == first.pings
    assert sorted(hub.topics()) == sorted(first.changed_topics)
    for r in hub.requests:
        assert r["content_type"] == "application/x-www-form-urlencoded"
        assert r["form"]["hub.mode"] == ["publish"] and len(r["form"]["hub.url"]) == 1
    # nothing changed: no ping
    hub.requests.clear()
    assert build(app).pings == 0
    drain(app.settings, app.engine, channels=["websub"])
    assert hub.requests == []
    # one new article: exactly the feeds it belongs to
    slug = add_articles(app, 1, start=6)[0]  # 6 % 5 = 1: tags sleep + focus, category wellbeing, ana-lee
    publish(app)
    build(app)
    drain(app.settings, app.engine, channels=["websub"])
    keys = ["all", "tags/sleep", "tags/focus", "categories/wellbeing", "authors/ana-lee"]
    assert sorted(hub.topics()) == topics_of(keys)
    # WS-3: when the hub heard of it, the new feed was already in place
    for r in hub.requests:
        assert slug.encode() in r["topic_bytes"], r["form"]


def test_ws_4_a_failing_hub_is_retried_while_the_other_hubs_are_pinged(make_app, db_url, hubs, monkeypatch):
    good, bad = hubs(), hubs(status=500)
    app = make_app(db_url, hub_toml([good], partner_hub=bad))  # the partner of kind websub is a hub too
    first = build_site(app, 3)  # the build is not blocked by the failing hub
    assert not first.errors and first.pings == 2 * len(first.changed_topics)
    report = drain(app.settings, app.engine, channels=["websub"])
    assert sorted(good.topics()) == sorted(bad.topics()) == sorted(first.changed_topics)
    assert report.sent == len(first.changed_topics) and report.retry == len(first.changed_topics)
    with app.engine.connect() as conn:
        rows = conn.execute(
            select(deliveries.c.state, deliveries.c.next_attempt_at, deliveries.c.last_error).where(
                deliveries.c.target == bad.url
            )
        ).all()
    assert {r.state for r in rows} == {"retry"} and all("500" in r.last_error for r in rows)
    # not due yet: nothing is sent again
    bad.requests.clear()
    drain(app.settings, app.engine, channels=["websub"])
    assert bad.requests == []
    # the hub recovers; after the backoff the same pings go out once
    bad.status = 202
    later = max(r.next_attempt_at for r in rows) + dt.timedelta(seconds=1)
    monkeypatch.setenv("SYNDICATE_FROZEN_NOW", later.isoformat())
    report = drain(app.settings, app.engine, channels=["websub"])
    assert sorted(bad.topics()) == sorted(first.changed_topics) and report.sent == len(first.changed_topics)
    assert len(good.requests) == len(first.changed_topics)  # the good hub got each ping once


def test_hub_topic_parameter_is_configurable_and_retries_end_dead(make_app, sqlite_url, hubs, monkeypatch):
    hub = hubs(status=503)
    app = make_app(sqlite_url, hub_toml([hub], param="hub.topic"))
    first = build_site(app, 1)
    schedule = app.settings.feeds.hub_retry_schedule
    now = dt.datetime.now(dt.UTC)
    for attempt in range(len(schedule) + 1):
        monkeypatch.setenv("SYNDICATE_FROZEN_NOW", (now + dt.timedelta(days=2 * attempt)).isoformat())
        drain(app.settings, app.engine, channels=["websub"])
    assert hub.requests and all("hub.topic" in r["form"] and "hub.url" not in r["form"] for r in hub.requests)
    with app.engine.connect() as conn:
        states = {r[0] for r in conn.execute(select(deliveries.c.state))}
    assert states == {"dead"}
    assert len(hub.requests) == first.pings * (len(schedule) + 1)  # each tried 1 + len(schedule) times


def test_ping_keys_are_idempotent_per_content():
    a = websub.ping_key("https://hub/", "https://t/feeds/all.atom", "abc")
    assert a == websub.ping_key("https://hub/", "https://t/feeds/all.atom", "abc")
    assert a != websub.ping_key("https://hub/", "https://t/feeds/all.atom", "abd")
    assert len(a) <= 255
    assert websub.parse_duration("2m") == dt.timedelta(minutes=2)
