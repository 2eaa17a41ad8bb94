"""Digest selection and composition, on every database: who gets which articles, once.

BULK-4 / BULK-6: no digest to unconfirmed, unsubscribed or suppressed addresses, checked
at compose time and again at send time.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select, update

from pipeline.digests import editions as digests
from pipeline.store.schema import articles, deliveries, digest_editions, digest_parts, subscribers

from .digest_helpers import add_articles, add_subscriber, at, body, by_recipient, drain, suppress, titles


def queued(app, kind=None) -> list[dict]:
    q = select(deliveries).order_by(deliveries.c.id)
    if kind:
        q = q.where(deliveries.c.kind == kind)
    with app.engine.connect() as conn:
        return [dict(r) for r in conn.execute(q).mappings()]


def compose(app, frequency, when, **kw):
    return digests.compose(app.engine, app.settings, frequency, now=when, **kw)


ARTICLES = [
    {
        "slug": "sleep-one",
        "tags": "[sleep]",
        "category": "wellbeing",
        "approved_at": at(days=1),
        "date": "2026-11-03T08:00:00Z",
    },
    {
        "slug": "work-one",
        "tags": "[remote-work]",
        "category": "work",
        "approved_at": at(days=1, hours=2),
        "date": "2026-11-03T10:00:00Z",
    },
    {
        "slug": "tech-one",
        "tags": "[privacy]",
        "category": "technology",
        "approved_at": at(days=1, hours=4),
        "date": "2026-11-03T12:00:00Z",
    },
]


def test_topics_filter_and_only_confirmed_get_mail(app):
    """Topic filtering on tags or category; BULK-6: nothing for unconfirmed, unsubscribed
    or suppressed addresses."""
    add_articles(app, ARTICLES)
    everything = add_subscriber(app, "all@example.com", confirmed_at=at(-1))
    add_subscriber(app, "sleep@example.com", topics=["sleep"], confirmed_at=at(-1))
    add_subscriber(app, "work@example.com", topics=["work", "privacy"], confirmed_at=at(-1))  # category + tag
    add_subscriber(app, "none@example.com", topics=["gardening"], confirmed_at=at(-1))
    add_subscriber(app, "new@example.com", state="unconfirmed")
    add_subscriber(app, "gone@example.com", state="unsubscribed", confirmed_at=at(-1))
    add_subscriber(app, "bounced@example.com", confirmed_at=at(-1))
    suppress(app, "bounced@example.com")
    add_subscriber(app, "weekly@example.com", frequency="weekly", confirmed_at=at(-1))

    report = compose(app, "daily", at(days=1, hours=6))
    assert report.queued == 3 and report.empty == 1
    rows = queued(app)
    assert sorted(r["target"] for r in rows) == ["all@example.com", "sleep@example.com", "work@example.com"]
    assert {r["kind"] for r in rows} == {"digest"}
    assert rows[0]["idempotency_key"] == f"digest:daily-2026-11-03:{everything}"

    drain(app)
    got = by_recipient(app)
    assert titles(got["all@example.com"][0]) == ["Tech One", "Work One", "Sleep One"]  # newest first
    assert titles(got["sleep@example.com"][0]) == ["Sleep One"]
    assert titles(got["work@example.com"][0]) == ["Tech One", "Work One"]


def test_compose_is_idempotent(app):
    """Re-running compose for the same edition adds nothing, even with new articles."""
    add_articles(app, ARTICLES[:2])
    add_subscriber(app, "a@example.com", confirmed_at=at(-1))
    add_subscriber(app, "b@example.com", confirmed_at=at(-1))
    first = compose(app, "daily", at(days=1, hours=6))
    assert first.queued == 2
    again = compose(app, "daily", at(days=1, hours=8))
    assert again.queued == 0
    with app.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(deliveries)).scalar_one() == 2
        assert conn.execute(select(func.count()).select_from(digest_editions)).scalar_one() == 1
        # one selection shared by both: rendered once
        assert conn.execute(select(func.count()).select_from(digest_parts)).scalar_one() == 1
        edition = digests.get_edition(conn, "daily-2026-11-03")
    assert edition["completed_at"] is not None and edition["recipients"] == 2


def test_no_blast_on_joining_and_welcome_latest(app, make_app, db_url):
    """A new subscriber's watermark starts at confirmation; welcome_latest K is opt-in."""
    add_articles(app, ARTICLES)
    add_subscriber(app, "late@example.com", confirmed_at=at(days=2))
    assert compose(app, "daily", at(days=2, hours=6)).queued == 0  # nothing approved since joining

    welcoming = make_app(db_url, "[digests]\nwelcome_latest = 2\n")
    with welcoming.engine.begin() as conn:
        conn.execute(update(subscribers).values(last_digest_at=None))
    report = digests.compose(welcoming.engine, welcoming.settings, "daily", now=at(days=3, hours=6))
    assert report.queued == 1
    drain(welcoming)
    (msg,) = by_recipient(welcoming)["late@example.com"]
    assert titles(msg) == ["Tech One", "Work One"]


def test_two_day_gap_is_covered_once(app):
    """Compose ran on day 1, missed day 2; day 3 covers days 2 and 3, once each."""
    add_articles(
        app,
        [
            {"slug": "day-one", "approved_at": at(days=1, hours=1), "date": "2026-11-03T08:00:00Z"},
            {"slug": "day-two", "approved_at": at(days=2, hours=1), "date": "2026-11-04T08:00:00Z"},
            {"slug": "day-three", "approved_at": at(days=3, hours=1), "date": "2026-11-05T08:00:00Z"},
        ],
    )
    add_subscriber(app, "reader@example.com", confirmed_at=at(-1))
    assert compose(app, "daily", at(days=1, hours=6)).queued == 1
    assert compose(app, "daily", at(days=3, hours=6)).queued == 1
    assert compose(app, "daily", at(days=3, hours=9)).queued == 0
    drain(app)
    msgs = by_recipient(app)["reader@example.com"]
    assert sorted(tuple(titles(m)) for m in msgs) == [("Day One",), ("Day Three", "Day Two")]


def test_articles_never_twice_across_editions(app):
    add_articles(app, ARTICLES[:1])
    add_subscriber(app, "r@example.com", frequency="weekly", confirmed_at=at(-1))
    assert compose(app, "weekly", at(days=2)).queued == 1
    add_articles(app, [{"slug": "next-week", "approved_at": at(days=8), "date": "2026-11-10T08:00:00Z"}])
    assert compose(app, "weekly", at(days=9)).queued == 1
    drain(app)
    msgs = by_recipient(app)["r@example.com"]
    assert sorted(tuple(titles(m)) for m in msgs) == [("Next Week",), ("Sleep One",)]


def test_instant_sends_one_email_per_new_article(app):
    add_articles(app, ARTICLES)
    add_subscriber(app, "fast@example.com", frequency="instant", topics=["sleep", "privacy"], confirmed_at=at(-1))
    report = compose(app, "instant", at(days=1, hours=5))
    assert report.queued == 2
    assert compose(app, "instant", at(days=1, hours=6)).queued == 0
    rows = queued(app, "instant")
    with app.engine.connect() as conn:
        ids = dict(conn.execute(select(articles.c.slug, articles.c.id)).all())
    assert sorted(r["payload"]["edition"] for r in rows) == sorted(
        f"instant-{ids[s]}" for s in ("sleep-one", "tech-one")
    )
    drain(app)
    subjects = sorted(m["Subject"] for m in by_recipient(app)["fast@example.com"])
    assert subjects == ["Sleep One", "Tech One"]


def test_unsubscribe_or_suppression_after_compose_is_honoured_at_send_time(app):
    """BULK-4: the check happens at send time, not only when composing."""
    from pipeline import subscribers as subs

    add_articles(app, ARTICLES[:1])
    leaver = add_subscriber(app, "leaver@example.com", confirmed_at=at(-1))
    add_subscriber(app, "bounced@example.com", confirmed_at=at(-1))
    add_subscriber(app, "stays@example.com", confirmed_at=at(-1))
    assert compose(app, "daily", at(days=1, hours=6)).queued == 3
    with app.engine.begin() as conn:
        subs.unsubscribe(conn, app.settings, leaver)
    suppress(app, "bounced@example.com")
    report = drain(app)
    assert report.sent == 1 and report.suppressed == 2
    assert list(by_recipient(app)) == ["stays@example.com"]
    states = {r["target"]: r["state"] for r in queued(app)}
    assert states == {
        "leaver@example.com": "suppressed",
        "bounced@example.com": "suppressed",
        "stays@example.com": "sent",
    }


def test_dry_run_writes_nothing(app):
    add_articles(app, ARTICLES)
    add_subscriber(app, "a@example.com", confirmed_at=at(-1))
    add_subscriber(app, "b@example.com", topics=["sleep"], confirmed_at=at(-1))
    plan = []
    report = compose(app, "daily", at(days=1, hours=6), dry_run=True, on_plan=lambda e, n: plan.append((e, n)))
    assert sorted(plan) == [("a@example.com", 3), ("b@example.com", 1)]
    assert report.queued == 2
    assert queued(app) == []
    with app.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(digest_editions)).scalar_one() == 0
        assert conn.execute(select(subscribers.c.last_digest_at)).scalars().all() == [None, None]


def test_stage_composes_what_is_due_once(app):
    add_articles(app, ARTICLES)
    add_subscriber(app, "d@example.com", confirmed_at=at(-1))
    add_subscriber(app, "w@example.com", frequency="weekly", confirmed_at=at(-1))
    add_subscriber(app, "i@example.com", frequency="instant", confirmed_at=at(-1))
    counts = digests.digest_stage(app, now=at(days=1, hours=6))
    assert counts == {
        "instant_queued": 3,
        "daily_queued": 1,
        "daily_editions": 1,
        "weekly_queued": 1,
        "weekly_editions": 1,
    }
    with app.engine.connect() as conn:
        assert not digests.is_due(conn, app.settings, "daily", at(days=1, hours=7))
        assert digests.is_due(conn, app.settings, "daily", at(days=2, hours=7))
    assert digests.digest_stage(app, now=at(days=1, hours=7)) == {"instant_queued": 0}


def test_max_articles_and_more_link(app, make_app, db_url):
    capped = make_app(db_url, "[digests]\nmax_articles = 2\n")
    add_articles(capped, ARTICLES)
    add_subscriber(capped, "c@example.com", confirmed_at=at(-1))
    compose(capped, "daily", at(days=1, hours=6))
    drain(capped)
    (msg,) = by_recipient(capped)["c@example.com"]
    assert titles(msg) == ["Tech One", "Work One"]
    text = body(msg, "plain")
    assert "And 1 more article: https://news.example.com/digests/daily-2026-11-03/" in text
    assert "and 2 more" in msg["Subject"]


def test_web_version_and_archive(app):
    add_articles(app, ARTICLES[:2])
    add_subscriber(app, "a@example.com", confirmed_at=at(-1))
    compose(app, "daily", at(days=1, hours=6))
    public = app.settings.path("paths.public")
    page = (public / "digests" / "daily-2026-11-03" / "index.html").read_text()
    assert "Daily digest, Tuesday 3 November 2026" in page
    assert "Work One" in page and "Sleep One" in page
    archive = (public / "digests" / "index.html").read_text()
    assert 'href="https://news.example.com/digests/daily-2026-11-03/"' in archive
    drain(app)
    (msg,) = by_recipient(app)["a@example.com"]
    assert "https://news.example.com/digests/daily-2026-11-03/" in msg.get_body(("html",)).get_content()


def test_periods_follow_the_site_timezone_and_configured_hours(make_app, db_url):
    """Edition keys: a local day from daily_hour; a week from weekly_day at weekly_hour."""
    from pipeline.config import load_settings

    app = make_app(db_url, '[digests]\ndaily_hour = 7\nweekly_day = "friday"\nweekly_hour = 9\n')
    s = app.settings
    utc = dt.UTC
    assert digests.period(s, "daily", dt.datetime(2026, 11, 25, 6, 59, tzinfo=utc))[0] == "daily-2026-11-24"
    assert digests.period(s, "daily", dt.datetime(2026, 11, 25, 7, 0, tzinfo=utc)) == (
        "daily-2026-11-25",
        dt.datetime(2026, 11, 25, 7, 0, tzinfo=utc),
    )
    # Wednesday 25 Nov: the week began on Friday 20 Nov at 09:00
    assert digests.period(s, "weekly", dt.datetime(2026, 11, 25, 12, 0, tzinfo=utc)) == (
        "weekly-2026-11-20",
        dt.datetime(2026, 11, 20, 9, 0, tzinfo=utc),
    )
    assert digests.period(s, "weekly", dt.datetime(2026, 11, 27, 8, 59, tzinfo=utc))[0] == "weekly-2026-11-20"
    assert digests.period(s, "weekly", dt.datetime(2026, 11, 27, 9, 0, tzinfo=utc))[0] == "weekly-2026-11-27"
    # In Tokyo (UTC+9) 23:30 UTC is already the next local day.
    tokyo = load_settings(
        s.source, env={"SYNDICATE_SITE__TIMEZONE": "Asia/Tokyo", "SYNDICATE_DIGESTS__DAILY_HOUR": "0"}
    )
    assert digests.period(tokyo, "daily", dt.datetime(2026, 11, 25, 23, 30, tzinfo=utc)) == (
        "daily-2026-11-26",
        dt.datetime(2026, 11, 25, 15, 0, tzinfo=utc),
    )
