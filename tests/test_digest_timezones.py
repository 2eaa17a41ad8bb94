"""Daily and weekly digests arrive at the configured local hour in each subscriber's
time zone (issue 16 item 21): one edition per time-zone slot, composed when its
period begins, as Mailchimp's send-time option does. Zones with the same UTC offset at
that moment share an edition; the site's own slot keeps the plain key."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from sqlalchemy import select

from pipeline.digests import editions as digests
from pipeline.store.schema import deliveries, digest_editions

from .digest_helpers import add_articles, add_subscriber, at, by_recipient, drain

UTC = dt.UTC
ZONES = {
    "utc@example.com": "UTC",
    "lisbon@example.com": "Europe/Lisbon",
    "paris@example.com": "Europe/Paris",
    "kolkata@example.com": "Asia/Kolkata",
    "ny@example.com": "America/New_York",
}


def _set_zone(app, email_addr, zone):
    from sqlalchemy import update

    from pipeline.store.schema import subscribers

    with app.engine.begin() as conn:
        conn.execute(update(subscribers).where(subscribers.c.email == email_addr).values(timezone=zone))


def test_period_keys_name_the_slot_when_it_differs_from_the_site(make_app, sqlite_url):
    app = make_app(sqlite_url, '[digests]\ndaily_hour = 7\nweekly_day = "monday"\nweekly_hour = 8\n')
    s = app.settings
    now = dt.datetime(2026, 11, 3, 2, 0, tzinfo=UTC)
    assert digests.period(s, "daily", now, "Asia/Kolkata") == (
        "daily-2026-11-03-utc+0530",
        dt.datetime(2026, 11, 3, 1, 30, tzinfo=UTC),
    )
    assert digests.period(s, "daily", now, "Europe/Lisbon") == digests.period(s, "daily", now)  # +0000 in November
    assert digests.period(s, "daily", now, "America/New_York") == (
        "daily-2026-11-02-utc-0500",
        dt.datetime(2026, 11, 2, 12, 0, tzinfo=UTC),
    )
    summer = dt.datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
    assert digests.period(s, "daily", summer, "Europe/Lisbon")[0] == "daily-2026-07-01-utc+0100"
    assert digests.period(s, "weekly", now, "Asia/Tokyo") == (
        "weekly-2026-11-02-utc+0900",
        dt.datetime(2026, 11, 1, 23, 0, tzinfo=UTC),
    )
    assert digests.next_period(s, "daily", now, "Asia/Kolkata")[0] == "daily-2026-11-04-utc+0530"
    assert (
        digests.edition_label(s, "daily", now, "daily-2026-11-03-utc+0530") == "Daily digest, Tuesday 3 November 2026"
    )


def test_daily_digest_arrives_at_the_local_hour_in_each_time_zone(make_app, sqlite_url):
    """Composed every 30 minutes for 29 hours: each subscriber's digest is queued when
    07:00 comes in their own time zone, once, in their slot's edition; an article
    approved mid-period waits for the next edition."""
    app = make_app(sqlite_url, "[digests]\ndaily_hour = 7\n")
    for email_addr, zone in ZONES.items():
        add_subscriber(app, email_addr, confirmed_at=at(-1))
        _set_zone(app, email_addr, zone)
    add_articles(app, [{"slug": "news", "approved_at": at(hours=1)}])  # Monday 2 Nov, 10:00 UTC
    queued_at: dict[str, list[dt.datetime]] = {}
    now = at(hours=0.5)  # Monday 09:30 UTC: every slot's current period gets its (empty) edition
    while now <= dt.datetime(2026, 11, 3, 14, 0, tzinfo=UTC):
        digests.compose(app.engine, app.settings, "daily", now=now)
        with app.engine.connect() as conn:
            for row in conn.execute(select(deliveries.c.target)):
                if row.target not in queued_at:
                    queued_at[row.target] = [now]
        now += dt.timedelta(minutes=30)
    assert set(queued_at) == set(ZONES)
    for email_addr, (when,) in queued_at.items():
        local = when.astimezone(ZoneInfo(ZONES[email_addr]))
        assert (local.hour, local.minute) == (7, 0), (email_addr, local)
    with app.engine.connect() as conn:
        keys = {
            r.key: r.recipients
            for r in conn.execute(select(digest_editions.c.key, digest_editions.c.recipients))
            if r.recipients
        }
    assert keys == {
        "daily-2026-11-03": 2,
        "daily-2026-11-03-utc+0100": 1,
        "daily-2026-11-03-utc+0530": 1,
        "daily-2026-11-02-utc-0500": 1,
    }
    drain(app)
    received = by_recipient(app)
    assert {k: len(v) for k, v in received.items()} == {k: 1 for k in ZONES}
    assert str(received["kolkata@example.com"][0]["Subject"]).startswith("Test Journal")
    assert "digests/daily-2026-11-03-utc+0530/" in received["kolkata@example.com"][0].get_body(("html",)).get_content()


def test_is_due_and_the_stage_follow_each_slot(make_app, sqlite_url):
    app = make_app(sqlite_url, "[digests]\ndaily_hour = 7\n")
    add_subscriber(app, "utc@example.com", confirmed_at=at(-1))
    add_subscriber(app, "kolkata@example.com", confirmed_at=at(-1))
    _set_zone(app, "kolkata@example.com", "Asia/Kolkata")
    add_articles(app, [{"slug": "news", "approved_at": at(hours=-8)}])  # Monday 01:00 UTC
    monday_noon = at(hours=3)
    digests.compose(app.engine, app.settings, "daily", now=monday_noon)
    with app.engine.connect() as conn:
        assert not digests.is_due(conn, app.settings, "daily", monday_noon)
        # Tuesday 01:30 UTC is 07:00 in Kolkata: that slot is due, the UTC one is not
        assert digests.is_due(conn, app.settings, "daily", dt.datetime(2026, 11, 3, 1, 30, tzinfo=UTC))
        assert [
            s.key for s in digests.slots(conn, app.settings, "daily", dt.datetime(2026, 11, 3, 1, 30, tzinfo=UTC))
        ] == ["daily-2026-11-02", "daily-2026-11-03-utc+0530"]
        # issue 16 item 20 with item 21: the preview names the subscriber's own next edition
        from pipeline.store.schema import subscribers

        sub = dict(
            conn.execute(select(subscribers).where(subscribers.c.email == "kolkata@example.com")).mappings().one()
        )
        assert digests.next_edition_for(conn, app.settings, sub, "daily", monday_noon)[0] == "daily-2026-11-03-utc+0530"
