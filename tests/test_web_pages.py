"""Pages that keep their promises (issue 16 item 23): each tag, category and author page
advertises its own feeds (DISC-1), the "Feeds" link opens a page for people that says
how to subscribe, and the unsubscribe pages read well whatever the site is called."""

from __future__ import annotations

import re
import warnings

import lxml.html
import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from pipeline import subscribers as subs
from pipeline.site.build import build
from pipeline.web.app import create_app

from .feedsite import add_articles, publish, read

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
BASE = "https://news.example.com"


@pytest.fixture
def site(make_app, sqlite_url):
    app = make_app(sqlite_url)
    add_articles(app, 4)
    publish(app)
    assert not build(app).errors
    return app


def alternates(app, rel) -> list[tuple[str, str]]:
    doc = lxml.html.fromstring(read(app, rel))
    return [(link.get("type"), link.get("href")) for link in doc.xpath("//head/link[@rel='alternate']")]


@pytest.mark.parametrize("key", ["tags/habits", "categories/work", "authors/ana-lee"])
def test_listing_pages_advertise_their_own_feeds_disc1(site, key):
    assert alternates(site, f"{key}/index.html") == [
        ("application/atom+xml", f"{BASE}/feeds/{key}.atom"),
        ("application/rss+xml", f"{BASE}/feeds/{key}.rss"),
        ("application/feed+json", f"{BASE}/feeds/{key}.json"),
    ]


def test_home_and_article_pages_advertise_the_site_feeds_disc1(site):
    for rel in ("index.html", "articles/article-001/index.html"):
        assert [href for _type, href in alternates(site, rel)] == [
            f"{BASE}/feeds/all.atom",
            f"{BASE}/feeds/all.rss",
            f"{BASE}/feeds/all.json",
        ]


def test_feeds_link_opens_a_page_for_people_with_every_feed(site):
    home = lxml.html.fromstring(read(site, "index.html"))
    assert home.xpath("//nav//a[text()='Feeds']/@href") == [f"{BASE}/feeds/"]
    doc = lxml.html.fromstring(read(site, "feeds/index.html"))
    text = doc.text_content()
    assert "feed reader" in text and "Copy its link" in text
    hrefs = set(doc.xpath("//main//a/@href"))
    for key in ("all", "tags/habits", "categories/work", "authors/ana-lee"):
        assert {f"{BASE}/feeds/{key}.{fmt}" for fmt in ("atom", "rss", "json")} <= hrefs, key
    assert f"{BASE}/subscribe" in hrefs


def test_feeds_page_is_served_at_feeds_slash(site):
    with TestClient(create_app(site), base_url=BASE) as client:
        r = client.get("/feeds/")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert "Follow Test Journal in a feed reader" in r.text


@pytest.mark.parametrize("title", ["The Community Journal", "Test Journal"])
def test_unsubscribe_pages_do_not_double_the_article(make_app, sqlite_url, title):
    app = make_app(sqlite_url, "")
    app.settings.site._values["title"] = title
    with app.engine.begin() as conn:
        sub, _ = subs.add(conn, app.settings, "ann@example.com", confirmed=True, source="test")
    url = subs.unsubscribe_url(app.settings, sub["id"])
    with TestClient(create_app(app), base_url=BASE) as client:
        page = client.get(url)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        done = client.post(url, data={"csrf_token": token}, headers={"Origin": BASE})
    for html in (page.text, done.text):
        assert not re.search(r"\bthe The\b", html), html
        assert f"the digest from {title}" in html
