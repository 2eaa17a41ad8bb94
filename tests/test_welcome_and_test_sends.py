"""Welcome emails and test sends (issue 14 item 4; WEL-1..3, SEED-1..3), delivered to a
real aiosmtpd server on 127.0.0.1, on every database."""

from __future__ import annotations

import email
import email.policy

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from pipeline import subscribers as subs
from pipeline.cli import main
from pipeline.delivery.worker import drain
from pipeline.digests.editions import compose
from pipeline.digests.testsend import queue_test_send
from pipeline.store.schema import deliveries, digest_editions, digest_parts, subscribers

from .delivery_kit import smtp_toml
from .digest_helpers import add_articles, add_subscriber, at
from .smtp_server import SMTPTestServer


@pytest.fixture
def smtp():
    with SMTPTestServer() as server:
        yield server


def parsed(received) -> email.message.EmailMessage:
    return email.message_from_bytes(received.data, policy=email.policy.default)


def signup_and_confirm(app, address="ada@example.com", name="Ada"):
    with app.engine.begin() as conn:
        subs.request_subscription(conn, app.settings, address, client=subs.Client(source="web:/"), name=name)
    with app.engine.connect() as conn:
        row = (
            conn.execute(
                select(deliveries)
                .where(deliveries.c.kind == "confirm", deliveries.c.target == address)
                .order_by(deliveries.c.id.desc())
            )
            .mappings()
            .first()
        )
    token = subs.confirm_token(app.settings, row["payload"]["nonce"])
    with app.engine.begin() as conn:
        return subs.confirm(conn, app.settings, token)


WELCOME = "\n[subscribers]\nwelcome_email = true\nwelcome_articles = 2\n"


def test_welcome_email_on_confirmation_lists_the_latest_articles_wel1(make_app, db_url, smtp):
    """WEL-1: confirming queues a welcome (kind `welcome`) in the confirmation's
    transaction; it goes through the outbox and lists the latest K approved articles."""
    app = make_app(db_url, smtp_toml(smtp) + WELCOME)
    add_articles(
        app,
        [
            {"slug": "oldest-one", "title": "Oldest One", "approved_at": at(hours=1), "date": "2026-09-01T08:00:00Z"},
            {"slug": "middle-one", "title": "Middle One", "approved_at": at(hours=2), "date": "2026-09-15T08:00:00Z"},
            {"slug": "newest-one", "title": "Newest One", "approved_at": at(hours=3), "date": "2026-10-01T08:00:00Z"},
        ],
    )
    sub = signup_and_confirm(app)
    drain(app.settings, app.engine)
    (welcome,) = [m for m in map(parsed, smtp.received_by("ada@example.com")) if "Welcome" in m["Subject"]]
    assert welcome["Subject"] == "Welcome to Test Journal"
    text = welcome.get_body(("plain",)).get_content()
    html = welcome.get_body(("html",)).get_content()
    assert "Newest One" in text and "Middle One" in text and "Oldest One" not in text
    assert "Hello Ada," in text and "https://news.example.com/articles/newest-one/" in html
    assert welcome["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert welcome["List-Unsubscribe"] == f"<{subs.unsubscribe_url(app.settings, sub['id'])}>"  # LIST-1: not encoded
    with app.engine.connect() as conn:
        (row,) = conn.execute(select(deliveries).where(deliveries.c.kind == "welcome")).mappings().all()
    assert row["idempotency_key"] == f"welcome:{sub['id']}" and row["state"] == "sent"


def test_one_welcome_per_subscriber_and_none_after_leaving_wel2_wel3(make_app, db_url, smtp):
    """WEL-2: leaving and confirming again queues no second welcome. WEL-3: a welcome
    still queued when the subscriber leaves is not sent."""
    app = make_app(db_url, smtp_toml(smtp) + WELCOME)
    sub = signup_and_confirm(app)
    with app.engine.begin() as conn:
        subs.unsubscribe(conn, app.settings, sub["id"])
    drain(app.settings, app.engine)
    assert smtp.received_by("ada@example.com") == [] or all(
        "Welcome" not in parsed(m)["Subject"] for m in smtp.received_by("ada@example.com")
    )
    signup_and_confirm(app)
    with app.engine.connect() as conn:
        assert len(conn.execute(select(deliveries).where(deliveries.c.kind == "welcome")).all()) == 1


def test_no_welcome_by_default(make_app, db_url):
    app = make_app(db_url)
    signup_and_confirm(app)
    with app.engine.connect() as conn:
        assert conn.execute(select(deliveries).where(deliveries.c.kind == "welcome")).all() == []


def watermarks(app) -> dict:
    with app.engine.connect() as conn:
        return {
            r.email: (r.last_digest_at, r.confirmed_at)
            for r in conn.execute(select(subscribers.c.email, subscribers.c.last_digest_at, subscribers.c.confirmed_at))
        }


def test_test_send_goes_to_the_seed_list_marked_and_moves_no_watermark_test1_test2(make_app, db_url, smtp):
    """SEED-1, SEED-2: the subscriber's next digest, Subject [TEST], to every seed
    address; no edition, no part, no watermark moved; the real compose afterwards
    sends the subscriber the same articles."""
    app = make_app(db_url, smtp_toml(smtp))
    add_articles(app, [{"slug": "first-light", "title": "First Light", "approved_at": at(hours=2)}])
    sid = add_subscriber(app, "ada@example.com", confirmed_at=at(), name="Ada")
    before = watermarks(app)
    result = queue_test_send(
        app.engine, app.settings, ["editor@example.com", "Second@Example.com"], as_subscriber="ada@example.com"
    )
    drain(app.settings, app.engine)
    assert watermarks(app) == before
    with app.engine.connect() as conn:
        assert conn.execute(select(digest_editions)).all() == []
        assert conn.execute(select(digest_parts)).all() == []
    assert smtp.received_by("ada@example.com") == []
    for seed in ("editor@example.com", "second@example.com"):
        (msg,) = map(parsed, smtp.received_by(seed))
        assert msg["Subject"].startswith("[TEST] ") and msg["X-Syndicate-Test"] == "yes"
        assert "First Light" in msg.get_body(("plain",)).get_content()
        html = msg.get_body(("html",)).get_content()
        # SEED-3: the real subscriber's links are not in the copy
        assert subs.list_token(app.settings, "unsubscribe", sid) not in html
        assert subs.list_token(app.settings, "preferences", sid) not in html
        assert "List-Unsubscribe" not in msg
    assert result.subject.startswith("[TEST] ")
    # the real send is unchanged
    compose(app.engine, app.settings, "daily", now=at(days=1, hours=1))
    drain(app.settings, app.engine)
    (real,) = map(parsed, smtp.received_by("ada@example.com"))
    assert not real["Subject"].startswith("[TEST]") and "First Light" in real.get_body(("plain",)).get_content()


def test_digest_test_cli_dry_run_sends_nothing_and_bad_address_is_named(make_app, sqlite_url, smtp):
    app = make_app(sqlite_url, smtp_toml(smtp))
    add_articles(app, [{"slug": "first-light", "title": "First Light", "approved_at": at(hours=2)}])
    add_subscriber(app, "ada@example.com", confirmed_at=at())
    config = str(app.settings.source)
    runner = CliRunner()
    dry = runner.invoke(
        main, ["--config", config, "digest", "test", "--to", "ed@example.com", "--as", "ada@example.com", "--dry-run"]
    )
    assert dry.exit_code == 0, dry.output
    assert "[TEST]" in dry.output and "nothing was queued" in dry.output
    with app.engine.connect() as conn:
        assert conn.execute(select(deliveries).where(deliveries.c.kind == "digest_test")).all() == []
    sent = runner.invoke(
        main, ["--config", config, "digest", "test", "--to", "ed@example.com", "--as", "ada@example.com"]
    )
    assert sent.exit_code == 0, sent.output
    assert "sent 1 of 1" in sent.output
    assert len(smtp.received_by("ed@example.com")) == 1
    bad = runner.invoke(main, ["--config", config, "digest", "test", "--to", "not an address"])
    assert bad.exit_code == 1 and "not an address" in bad.output


def test_confirming_on_the_web_sends_the_welcome_at_once_wel1(make_app, db_url):
    """WEL-1 through the web service: the welcome is sent right after the confirmation
    page (as the confirmation link was), not at the next `deliver`."""
    import re
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    from pipeline.web.app import create_app

    from .digest_helpers import maildir_messages

    app = make_app(db_url, WELCOME)
    base = "https://news.example.com"
    with TestClient(create_app(app), base_url=base, follow_redirects=False) as client:
        client.post("/subscribe", data={"email": "ada@example.com"}, headers={"Origin": base})
        with app.engine.connect() as conn:
            nonce = conn.execute(select(deliveries.c.payload).where(deliveries.c.kind == "confirm")).scalar()["nonce"]
        path = "/confirm/" + subs.confirm_token(app.settings, nonce)
        token = re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).text).group(1)
        assert client.post(path, data={"csrf_token": token}, headers={"Origin": base}).status_code == 200
    subjects = [m["Subject"] for _, m in maildir_messages(app)]
    assert "Welcome to Test Journal" in subjects
    with app.engine.connect() as conn:
        assert conn.execute(select(deliveries.c.state).where(deliveries.c.kind == "welcome")).scalar() == "sent"


def test_golden_welcome_and_test_send_emails(sqlite_app, monkeypatch):
    """The exact bytes of a welcome and a test send (Date, Message-ID and the MIME
    boundary normalised); `make goldens` regenerates them after a deliberate change."""
    from .digest_helpers import maildir_messages
    from .test_digests_golden import check_golden

    monkeypatch.setenv("SYNDICATE_FROZEN_NOW", "2026-11-03T12:00:00Z")
    app = sqlite_app
    app.settings.subscribers._values["welcome_email"] = True
    add_articles(
        app,
        [
            {
                "slug": "sleep-debt",
                "title": "Sleep Debt Is Real",
                "approved_at": at(hours=1),
                "summary": "Nights add up.",
            },
            {"slug": "fair-fights", "title": "Fair Fights & Kind Words", "approved_at": at(hours=2)},
        ],
    )
    signup_and_confirm(app, "chloe@example.com", name="Chloé Martin")
    drain(app.settings, app.engine)
    (welcome,) = [data for data, m in maildir_messages(app) if m["Subject"].startswith("Welcome")]
    check_golden("welcome.eml", welcome)
    add_subscriber(app, "ana@example.com", name="Ana Ferreira", confirmed_at=at(-1))
    queue_test_send(app.engine, app.settings, ["editor@example.com"], as_subscriber="ana@example.com")
    drain(app.settings, app.engine)
    (test_send,) = [data for data, m in maildir_messages(app) if m["Subject"].startswith("[TEST]")]
    check_golden("digest_test.eml", test_send)
