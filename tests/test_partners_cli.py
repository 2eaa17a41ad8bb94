"""`syndicate partners ...` and `syndicate run` with a real partner server (SQLite and
PostgreSQL through the same commands)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.store import dispose_engines

from .partner_server import Reply, WebhookPartner
from .partners_helpers import PUSH_TOML, SECRET, SECRET_ENV, publish, rows, webhook_partner_toml


@pytest.fixture
def partner(monkeypatch):
    monkeypatch.setenv(SECRET_ENV, SECRET)
    with WebhookPartner([SECRET]) as server:
        yield server


@pytest.fixture
def site(make_app, db_url, partner):
    hub = """
[[partners]]
name = "hub"
kind = "websub"
url = "https://hub.example.net/"
"""
    return make_app(db_url, PUSH_TOML + webhook_partner_toml(partner.url) + hub)


def cli(app, *args):
    result = CliRunner().invoke(main, ["--config", str(app.settings.source), *args], catch_exceptions=False)
    dispose_engines()
    return result


def test_partners_test_against_the_partner_server_verifies_the_signature(site, partner):
    result = cli(site, "partners", "test", "acme")
    assert result.exit_code == 0, result.output
    assert "HTTP 200" in result.output and "verified the signature" in result.output
    (req,) = partner.requests
    assert req.verified and req.json()["type"] == "ping"


def test_partners_test_reports_a_refusal_with_exit_1(site, partner):
    partner.secrets = ["whsec_" + "QUJD" * 8]  # the partner has another secret
    result = cli(site, "partners", "test", "acme")
    assert result.exit_code == 1
    assert "HTTP 401" in result.output and "no matching signature" in result.output


def test_partners_test_dry_run_sends_nothing(site, partner):
    result = cli(site, "partners", "test", "acme", "--dry-run")
    assert result.exit_code == 0 and "webhook-signature: v1," in result.output and partner.requests == []


def test_syndicate_run_delivers_to_the_partner_once(site, partner):
    publish(site, "rituals")
    result = cli(site, "run")
    assert "partners" in result.output
    assert len(partner.events) == 1 and partner.requests[0].verified
    cli(site, "run")
    assert len(partner.requests) == 1


def test_list_status_retry_replay_resume(site, partner):
    partner.reply(Reply(410))
    publish(site, "rituals")
    cli(site, "run", "--stage", "partners", "--stage", "deliver")
    out = cli(site, "partners", "list").output
    assert "acme" in out and "disabled" in out and "hub" in out and "410" in out
    out = cli(site, "partners", "status", "acme").output
    assert "410" in out and "article.published" in out and "rituals" in out
    out = cli(site, "partners", "resume", "acme").output
    assert "disabled -> active" in out
    cli(site, "deliver")
    assert len(partner.events) == 1
    out = cli(site, "partners", "replay", "acme", "--since", "2000-01-01").output
    assert "replaying 1 event" in out
    cli(site, "deliver")
    assert len(partner.events) == 2 and partner.events[0]["data"] == partner.events[1]["data"]
    out = cli(site, "partners", "retry", "acme").output
    assert "0 delivery(ies)" in out
    assert cli(site, "partners", "status", "nobody").exit_code == 1
    assert {r["state"] for r in rows(site)} == {"sent"}


def test_websub_partner_is_listed_with_its_hub_pings_and_gets_no_article_events(site, partner):
    """WS-2..4 pings belong to the feed build (pipeline.site.websub); a `websub` partner is
    its hub: the partners stage queues nothing for it, list/status show its pings."""
    from pipeline.delivery import outbox
    from pipeline.partners import queue_partner_events

    publish(site, "rituals")
    assert queue_partner_events(site, dry_run=True)["queued"] == 1  # the webhook partner only, nothing written
    assert rows(site) == []
    queue_partner_events(site)
    assert {r["target"] for r in rows(site)} == {"acme"}
    with site.engine.begin() as conn:
        outbox.enqueue(
            conn,
            channel="websub",
            target="https://hub.example.net/",
            kind="publish",
            key="test-ping-1",
            payload={"topic": "https://news.example.com/feeds/all.atom"},
        )
    from pipeline.partners.ops import overview

    hub = {o["name"]: o for o in overview(site)}["hub"]
    assert hub["kind"] == "websub" and hub["state"] == "hub" and hub["backlog"] == 1
    out = cli(site, "partners", "status", "hub").output
    assert "publish" in out and "queued" in out
    assert cli(site, "partners", "test", "hub").exit_code == 1


def test_partners_list_without_partners_names_the_table_to_add(sqlite_app):
    """rich read "[partners]" as a style tag: the hint said "Add a [] table"."""
    sqlite_app.engine.connect().close()  # the database exists (migrated on first use)
    r = cli(sqlite_app, "partners", "list")
    assert r.exit_code == 0, r.output
    assert "No partners configured. Add a [[partners]] table to syndicate.toml (docs/partners.md)." in r.output
