"""Edition reports and click counts (issue 14 item 3; RPT-1..4, CLK-1..5), on every
database: a real digest composed and delivered to a Maildir, its signed /r/ links
followed through the web app, bounces and unsubscribes, then the report."""

from __future__ import annotations

import datetime as dt
import re
import warnings

import pytest
from sqlalchemy import select, update

from pipeline import subscribers as subs
from pipeline import tokens
from pipeline.digests import clicks
from pipeline.digests.editions import compose
from pipeline.digests.reports import edition_report, list_editions
from pipeline.errors import NotFound
from pipeline.store.schema import articles, bounce_events, deliveries, digest_editions, edition_clicks
from pipeline.timeutil import utcnow

from .digest_helpers import add_articles, add_subscriber, at, body, drain, maildir_messages

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from pipeline.web.app import create_app  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
TRACK = "\n[digests]\ntrack_clicks = true\n"


def edition_of(app) -> dict:
    with app.engine.connect() as conn:
        return dict(conn.execute(select(digest_editions)).mappings().one())


def setup_edition(app, subscribers=("ada@example.com", "bob@example.com", "cy@example.com")):
    add_articles(
        app,
        [
            {"slug": "first-light", "title": "First Light", "approved_at": at(hours=2)},
            {"slug": "second-wind", "title": "Second Wind", "approved_at": at(hours=3)},
        ],
    )
    for address in subscribers:
        add_subscriber(app, address, confirmed_at=at())
    compose(app.engine, app.settings, "daily", now=at(days=1, hours=1))
    drain(app)
    return edition_of(app)


def links(msg) -> list[str]:
    return sorted(set(re.findall(r'href="(https://news\.example\.com/r/[^"]+)"', body(msg, "html"))))


@pytest.fixture
def tracked(make_app, db_url):
    return make_app(db_url, TRACK)


def test_digest_links_go_through_signed_redirects_and_count_in_aggregate_clk1_clk2(tracked):
    """CLK-1, CLK-2: one link per article and edition, the same in every recipient's
    email (nothing in it names the person); following it redirects to the article
    and adds one to that article's count."""
    app = tracked
    edition = setup_edition(app)
    messages = [m for _, m in maildir_messages(app)]
    assert len(messages) == 3
    per_message = [links(m) for m in messages]
    assert len(per_message[0]) == 2
    assert per_message[0] == per_message[1] == per_message[2]  # no per-person token
    assert "r/" in body(messages[0], "plain")
    with TestClient(create_app(app), base_url="https://news.example.com", follow_redirects=False) as client:
        for url in per_message[0] + per_message[0][:1] + per_message[1][:1]:
            r = client.get(url.removeprefix("https://news.example.com"))
            assert r.status_code == 302
            assert r.headers["location"].startswith("https://news.example.com/articles/")
        head = client.head(per_message[0][0].removeprefix("https://news.example.com"))
        assert head.status_code == 302  # a link checker is redirected but not counted
    first = clicks.read_token(app.settings, per_message[0][0].rsplit("/", 1)[1])
    with app.engine.connect() as conn:
        report = edition_report(conn, edition["key"])
        slug0 = conn.execute(select(articles.c.slug).where(articles.c.id == first[1])).scalar()
    counts = {a["slug"]: a["clicks"] for a in report["clicks"]["per_article"]}
    assert counts[slug0] == 3 and sum(counts.values()) == 4
    with app.engine.connect() as conn:
        assert set(conn.execute(select(edition_clicks)).keys()) == {
            "edition_id",
            "article_id",
            "count",
            "first_at",
            "last_at",
        }


def test_tampered_or_foreign_click_link_is_400_without_redirect_clk3(tracked):
    """CLK-3: a flipped byte, another purpose's token, or a validly signed token for
    an article the edition did not carry: 400, no Location, nothing counted."""
    app = tracked
    add_articles(app, [{"slug": "elsewhere", "approved_at": at(days=5)}])  # after the cutoff
    edition = setup_edition(app, subscribers=("ada@example.com",))
    url = links(maildir_messages(app)[0][1])[0]
    token = url.rsplit("/", 1)[1]
    i = len(token) - 10  # inside the signature (the last base64 character has spare bits)
    flipped = token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :]
    with app.engine.connect() as conn:
        other = conn.execute(select(articles.c.id).where(articles.c.slug == "elsewhere")).scalar()
    foreign = clicks.click_token(app.settings, edition["id"], other)
    wrong_purpose = tokens.sign(app.settings, "unsubscribe", [edition["id"], other])
    with TestClient(create_app(app), base_url="https://news.example.com", follow_redirects=False) as client:
        for bad in (flipped, foreign, wrong_purpose, "not-a-token"):
            r = client.get(f"/r/{bad}")
            assert r.status_code == 400, bad
            assert "location" not in r.headers
    with app.engine.connect() as conn:
        assert conn.execute(select(edition_clicks)).all() == []


def test_links_are_plain_when_tracking_is_off_by_default_clk4(make_app, db_url):
    app = make_app(db_url)
    setup_edition(app, subscribers=("ada@example.com",))
    html = body(maildir_messages(app)[0][1], "html")
    assert "/r/" not in html
    assert "https://news.example.com/articles/first-light/" in html


def test_edition_report_counts_sent_failed_bounces_unsubscribes_rpt1(tracked):
    """RPT-1: recipients, sent, failed, bounced hard/soft, unsubscribed within 7 days."""
    app = tracked
    edition = setup_edition(app, subscribers=[f"r{i}@example.com" for i in range(6)])
    with app.engine.begin() as conn:
        rows = conn.execute(select(deliveries.c.id, deliveries.c.subscriber_id).order_by(deliveries.c.id)).all()
        sent_at = utcnow() - dt.timedelta(days=10)
        conn.execute(update(deliveries).values(sent_at=sent_at))
        conn.execute(update(deliveries).where(deliveries.c.id == rows[0].id).values(state="failed", sent_at=None))
        conn.execute(update(deliveries).where(deliveries.c.id == rows[1].id).values(state="dead", sent_at=None))
        for i, (row, kind) in enumerate(((rows[2], "hard"), (rows[3], "soft"), (rows[3], "soft"))):
            conn.execute(
                bounce_events.insert().values(
                    source_key=f"k{i}",
                    email="x@example.com",
                    kind=kind,
                    decision="counted",
                    delivery_id=row.id,
                    created_at=utcnow(),
                )
            )
        # withdrew 2 days after the send: counted; 9 days after: not
        subs.unsubscribe(conn, app.settings, rows[4].subscriber_id, now=sent_at + dt.timedelta(days=2))
        subs.unsubscribe(conn, app.settings, rows[5].subscriber_id, now=sent_at + dt.timedelta(days=9))
    with app.engine.connect() as conn:
        report = edition_report(conn, edition["key"])
    assert report["recipients"] == 6
    assert report["sent"] == 4
    assert report["failed"] == 2
    assert report["bounced"] == {"hard": 1, "soft": 1}
    assert report["unsubscribed_7d"] == 1
    assert [a["clicks"] for a in report["clicks"]["per_article"]] == [0, 0]
    assert report["first_sent_at"] is not None


def test_list_editions_is_newest_first_with_a_stable_cursor_rpt2(tracked):
    app = tracked
    setup_edition(app, subscribers=("ada@example.com",))
    compose(app.engine, app.settings, "daily", now=at(days=2, hours=1))  # an empty edition
    add_articles(app, [{"slug": "third", "approved_at": at(days=2, hours=2)}])
    compose(app.engine, app.settings, "daily", now=at(days=3, hours=1))
    with app.engine.connect() as conn:
        everything = list_editions(conn, limit=10)
        keys = [e["key"] for e in everything]
        assert keys == sorted(keys, reverse=True)
        page1 = list_editions(conn, limit=1)
        page2 = list_editions(conn, limit=1, before=page1[-1]["key"])
        assert [p["key"] for p in page1 + page2] == keys[:2]
        assert everything[-1]["sent"] == 1 and everything[-1]["recipients"] == 1
        with pytest.raises(NotFound):
            list_editions(conn, before="no-such-edition")
        with pytest.raises(NotFound):
            edition_report(conn, "no-such-edition")


def test_desk_edition_report_has_a_clicks_per_article_chart_rpt3(tracked):
    """RPT-3: the desk shows the report and an SVG bar per article; operators only."""
    from .desk_kit import make_user, signed_in

    app = tracked
    edition = setup_edition(app, subscribers=("ada@example.com",))
    url = links(maildir_messages(app)[0][1])[0]
    with app.engine.begin() as conn:
        clicks.follow(conn, app.settings, url.rsplit("/", 1)[1])
    make_user(app, "op@example.com", ["operator"])
    make_user(app, "au@example.com", ["author"])
    op = signed_in(app, "op@example.com")
    listing = op.get("/desk/ops/editions")
    assert f'href="/desk/ops/editions/{edition["key"]}"' in listing.text
    page = op.get(f"/desk/ops/editions/{edition['key']}")
    assert page.status_code == 200
    assert page.text.count("<rect") == 2 and "Clicks per article" in page.text
    assert "Unsubscribed within 7 days" in page.text
    assert op.get("/desk/ops/editions/no-such-edition").status_code == 404
    author = signed_in(app, "au@example.com")
    assert author.get(f"/desk/ops/editions/{edition['key']}").status_code == 403


def test_editions_cli_list_and_report_rpt4(tracked):
    from click.testing import CliRunner

    from pipeline.cli import main

    from .cli_kit import first_column

    app = tracked
    edition = setup_edition(app, subscribers=("ada@example.com",))
    config = str(app.settings.source)
    runner = CliRunner()
    listed = runner.invoke(main, ["--config", config, "editions", "list"], env={"COLUMNS": "80"})
    assert listed.exit_code == 0, listed.output
    assert edition["key"] in first_column(listed.output)  # whole in 80 columns: `editions report KEY` takes it
    listed = runner.invoke(main, ["--config", config, "editions", "list", "--json"])
    assert edition["key"] in listed.output
    shown = runner.invoke(main, ["--config", config, "editions", "report", edition["key"]])
    assert shown.exit_code == 0, shown.output
    assert "clicks per article" in shown.output
    as_json = runner.invoke(main, ["--config", config, "editions", "report", edition["key"], "--json"])
    assert '"recipients": 1' in as_json.output
    missing = runner.invoke(main, ["--config", config, "editions", "report", "nope"])
    assert missing.exit_code == 1 and "no edition" in missing.output


def test_instant_sends_are_editions_with_their_own_report_and_click_links_rpt1_clk1(tracked):
    app = tracked
    add_articles(app, [{"slug": "first-light", "title": "First Light", "approved_at": at(hours=2)}])
    add_subscriber(app, "ada@example.com", frequency="instant", confirmed_at=at())
    compose(app.engine, app.settings, "instant", now=at(hours=3))
    drain(app)
    (msg,) = [m for _, m in maildir_messages(app)]
    (url,) = links(msg)
    with TestClient(create_app(app), base_url="https://news.example.com", follow_redirects=False) as client:
        r = client.get(url.removeprefix("https://news.example.com"))
    assert r.status_code == 302 and r.headers["location"] == "https://news.example.com/articles/first-light/"
    with app.engine.connect() as conn:
        (edition,) = list_editions(conn, limit=5)
        report = edition_report(conn, edition["key"])
    assert edition["key"].startswith("instant-")
    assert report["sent"] == 1 and report["clicks"]["per_article"][0]["clicks"] == 1
