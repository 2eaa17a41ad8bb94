"""Micropub partners (MP-1..3) on every database, against a real Micropub server on
127.0.0.1: create as JSON h-entry with a Bearer token, Location kept as the
syndicated URL, update and delete for later revisions and retractions."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from sqlalchemy import select

from pipeline.partners.ops import overview, send_test_event
from pipeline.store.schema import partner_syndications

from .partner_server import MicropubPartner, Reply
from .partners_helpers import PUSH_TOML, make_due, publish, push, retract, rows

TOKEN_ENV = "SYNDICATE_TEST_MICROPUB_TOKEN"
TOKEN = "mp-token-123"
GOLDEN = Path(__file__).resolve().parent / "data" / "partners" / "micropub_create.json"


def micropub_toml(url: str, *, discover: bool = False) -> str:
    return (
        PUSH_TOML
        + f"""
[[partners]]
name = "blog"
kind = "micropub"
url = "{url}"
secret_env = "{TOKEN_ENV}"
allow_private = true
read_timeout = 10.0
discover = {"true" if discover else "false"}
"""
    )


@pytest.fixture
def mp(monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    with MicropubPartner(TOKEN) as server:
        yield server


@pytest.fixture
def site(make_app, db_url, mp):
    return make_app(db_url, micropub_toml(mp.endpoint))


def syndications(app):
    with app.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(partner_syndications)).mappings()]


def test_mp3_create_update_delete_with_the_location_kept(site, mp):
    publish(site, "rituals")
    _, report = push(site)
    assert report.sent == 1
    create = mp.requests[0]
    assert create.headers["authorization"] == f"Bearer {TOKEN}" and create.headers["content-type"] == "application/json"
    (location,) = mp.posts
    (syn,) = syndications(site)
    assert syn["location"] == location and syn["partner"] == "blog"
    props = mp.posts[location]
    assert props["url"] == ["https://news.example.com/articles/rituals/"]  # CANON-1
    assert "Originally published at" in props["content"][0]["html"]

    publish(site, "rituals", title="Small Rituals, Revised")
    push(site)
    update = mp.requests[1].json()
    assert update["action"] == "update" and update["url"] == location
    assert mp.posts[location]["name"] == ["Small Rituals, Revised"]
    assert len(mp.posts) == 1  # updated in place, not a second post

    retract(site, "rituals")
    push(site)
    assert mp.requests[2].json() == {"action": "delete", "url": location}
    assert mp.posts == {} and mp.deleted == [location]
    assert syndications(site)[0]["deleted_at"] is not None
    assert {r["state"] for r in rows(site)} == {"sent"}


def test_mp2_create_body_matches_the_golden_fixture(site, mp):
    publish(site, "rituals")
    push(site)
    body = mp.requests[0].json()
    if os.environ.get("SYNDICATE_REGENERATE_GOLDENS"):
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(json.dumps(body, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    assert body == json.loads(GOLDEN.read_text(encoding="utf-8"))


def test_mp3_401_insufficient_scope_is_not_retried_and_alerts(site, mp):
    mp.scope_error = True
    publish(site, "rituals")
    push(site)
    (row,) = rows(site)
    assert row["state"] == "failed" and "insufficient_scope" in row["last_error"]
    assert "insufficient_scope" in overview(site)[0]["alert"]
    make_due(site)
    push(site)
    assert len(mp.requests) == 1  # no retry


def test_mp3_5xx_is_retried(site, mp):
    mp.reply(Reply(502, body=b"bad gateway"))
    publish(site, "rituals")
    push(site)
    assert rows(site)[0]["state"] == "retry"
    make_due(site)
    push(site)
    assert rows(site)[0]["state"] == "sent" and len(mp.posts) == 1


def test_a_replayed_create_updates_the_existing_post(site, mp):
    import datetime as dt

    from pipeline.partners.ops import replay
    from pipeline.timeutil import utcnow

    publish(site, "rituals")
    push(site)
    assert replay(site, "blog", utcnow() - dt.timedelta(hours=1)) == 1
    push(site)
    assert len(mp.posts) == 1 and mp.requests[1].json()["action"] == "update"


@pytest.mark.parametrize("how", ["link-header", "html"])
def test_mp1_endpoint_discovered_from_link_header_or_html(make_app, sqlite_url, monkeypatch, how):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    with MicropubPartner(TOKEN, discovery=how) as server:
        app = make_app(sqlite_url, micropub_toml(server.home, discover=True))
        publish(app, "rituals")
        push(app)
        assert [r.path for r in server.requests] == ["/", "/micropub"]
        assert len(server.posts) == 1


def test_partners_test_for_micropub_queries_the_config(site, mp):
    result = send_test_event(site, "blog")
    assert result.ok and result.status_code == 200
    assert mp.requests[0].path == "/micropub?q=config"
