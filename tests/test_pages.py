"""Static pages: home, article and listing pages (DISC-1, TPL-1, CANON-1)."""

from __future__ import annotations

from urllib.parse import urlparse

import lxml.html
import pytest

from pipeline.site.build import build

from .articles import write_article, write_author
from .feedsite import add_articles, public, publish, read

FEED_TYPES = ("application/rss+xml", "application/atom+xml", "application/feed+json")


@pytest.fixture
def site(make_app, sqlite_url):
    app = make_app(sqlite_url)
    add_articles(app, 4)
    write_article(
        app.settings.root,
        "syndicated",
        title="<script>alert(1)</script> & friends",
        author="bo-chen",
        date="2026-07-01T08:00:00Z",
        tags="[habits]",
        category="work",
        extra="canonical_url: https://origin.example.org/post/1\n",
    )
    publish(app)
    report = build(app)
    assert not report.errors
    return app


def page(app, rel):
    return lxml.html.fromstring(read(app, rel))


@pytest.mark.parametrize(
    "rel",
    [
        "index.html",
        "articles/article-001/index.html",
        "tags/habits/index.html",
        "categories/work/index.html",
        "authors/ana-lee/index.html",
    ],
)
def test_disc_1_every_page_lists_each_feed_type_once_with_absolute_urls(site, rel):
    doc = page(site, rel)
    links = doc.xpath("//head/link[@rel='alternate']")
    types = [link.get("type") for link in links]
    assert sorted(types) == sorted(FEED_TYPES)
    for link in links:
        assert urlparse(link.get("href")).scheme == "https" and link.get("title")


def test_home_page_lists_latest_articles_topics_and_the_subscribe_form(site):
    doc = page(site, "index.html")
    titles = doc.xpath("//ul[@class='articles']/li/a[1]/text()")
    assert titles[0].startswith("<script>")  # newest first (2026-07-01), as text
    assert "Article 3" in titles
    form = doc.xpath("//form[contains(@class, 'subscribe')]")
    assert form and form[0].get("method") == "post"
    assert form[0].get("action") == "https://news.example.com/subscribe"
    assert doc.xpath("//input[@name='topics' and @value='habits']")
    assert not doc.xpath("//input[@checked and @type='checkbox']")  # nothing pre-ticked (GDPR-2)
    assert doc.xpath("//a[@href='https://news.example.com/tags/habits/']")


def test_tpl_1_titles_are_escaped_and_only_the_body_is_html(site):
    raw = read(site, "articles/syndicated/index.html").decode()
    assert "<script>alert(1)" not in raw and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; friends" in raw
    assert "<script>alert(1)" not in read(site, "index.html").decode()
    doc = page(site, "articles/article-001/index.html")
    body = doc.xpath("//div[@class='body']")[0]
    assert body.xpath(".//p") and body.xpath(".//a[@href='https://news.example.com/articles/']")


def test_canon_1_article_page_canonical_and_back_link(site):
    own = page(site, "articles/article-001/index.html")
    assert own.xpath("//link[@rel='canonical']/@href") == ["https://news.example.com/articles/article-001/"]
    synd = page(site, "articles/syndicated/index.html")
    assert synd.xpath("//link[@rel='canonical']/@href") == ["https://origin.example.org/post/1"]
    assert synd.xpath("//a[@href='https://origin.example.org/post/1']")  # "Originally published at"


def test_listing_pages_for_tags_categories_and_authors_link_their_feeds(site):
    doc = page(site, "tags/habits/index.html")
    hrefs = doc.xpath("//a/@href")
    for fmt in ("atom", "rss", "json"):
        assert f"https://news.example.com/feeds/tags/habits.{fmt}" in hrefs
    listed = doc.xpath("//ul[@class='articles']/li/a/@href")
    assert "https://news.example.com/articles/syndicated/" in listed
    assert (public(site) / "categories" / "wellbeing" / "index.html").exists()
    assert "Articles by Ana Lee" in read(site, "authors/ana-lee/index.html").decode()


def test_article_pages_exist_for_every_approved_article_with_images_copied(make_app, sqlite_url):
    app = make_app(sqlite_url)
    root = app.settings.root
    write_author(root)
    (root / "content" / "images").mkdir(parents=True)
    (root / "content" / "images" / "dot.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')
    write_article(root, "pictured", extra="image: images/dot.svg\nimage_alt: A dot\n")
    write_article(root, "draft-one", status="draft")
    publish(app)
    build(app)
    assert (public(app) / "images" / "dot.svg").read_bytes() == (root / "content" / "images" / "dot.svg").read_bytes()
    doc = page(app, "articles/pictured/index.html")
    assert doc.xpath("//img[@src='https://news.example.com/images/dot.svg' and @alt='A dot']")
    assert not (public(app) / "articles" / "draft-one").exists()


def listing_chain(app, key: str, rel: str = "next") -> list[tuple[str, list[str]]]:
    """Follow a listing's pager (rel=next: older pages, from the newest page): (path,
    article URLs on the page) of each page, in walking order."""
    from pipeline.site.pages import listing_path

    base = "https://news.example.com/"
    path, out, seen = listing_path(key), [], set()
    while path:
        assert path not in seen, f"loop at {path}"
        seen.add(path)
        doc = page(app, path)
        out.append((path, doc.xpath("//ul[@class='articles']/li/a/@href")))
        links = doc.xpath(f"//nav[@class='pager']/a[@rel='{rel}']/@href")
        assert len(links) <= 1 and all(link.startswith(base) for link in links)
        path = links[0][len(base) :] + "index.html" if links else None
    return out


@pytest.mark.parametrize("key", ["tags/habits", "authors/ana-lee", "all"])
def test_page3_listing_pages_are_cut_like_their_feed_and_walk_back_to_every_article(make_app, sqlite_url, key):
    """A tag, category or author page (and articles/, the listing of the site feed)
    lists the articles of its feed's subscription document; 'Older articles' walks its
    archive pages, each with the articles of the feed archive of the same number, and
    'Newer articles' walks back. Full pages are sealed (immutable in the manifest) like
    full feed archives (PAGE-3)."""
    import json

    from pipeline.site.build import MANIFEST
    from pipeline.site.pages import listing_path

    from .feedsite import build_site, feeds_toml
    from .test_feeds_build import walk_archive_chain

    app = make_app(sqlite_url, feeds_toml(max_entries=3, archive_size=2))
    build_site(app, 21)
    pages = listing_chain(app, key)
    feed_docs = walk_archive_chain(app, "atom", key)
    assert [set(urls) for _, urls in pages] == [set(ids) for ids in feed_docs]
    assert len(pages) >= 4 and len(pages[0][1]) == 3 and all(len(urls) <= 2 for _, urls in pages[1:])
    every = [u for _, urls in pages for u in urls]
    assert len(every) == len(set(every))
    count = len(pages) - 1
    assert [path for path, _ in pages] == [listing_path(key)] + [listing_path(key, k) for k in range(count, 0, -1)]
    # Newest publication first on every page; the page number in the title and heading.
    for path, _ in pages:
        doc = page(app, path)
        times = doc.xpath("//ul[@class='articles']/li//time/@datetime")
        assert times == sorted(times, reverse=True), path
        if "/page/" in path:
            number = path.split("/page/")[1].split("/")[0]
            assert f"(page {number})" in doc.findtext(".//title") and f"(page {number})" in doc.findtext(".//h1/span")
    # Back again by 'Newer articles', from the oldest page to the newest.
    oldest = pages[-1][0]
    back, path = [], oldest
    while path:
        back.append(path)
        links = page(app, path).xpath("//nav[@class='pager']/a[@rel='prev']/@href")
        path = links[0][len("https://news.example.com/") :] + "index.html" if links else None
    assert back == [p for p, _ in reversed(pages)]
    manifest = set(json.loads(read(app, MANIFEST))["immutable"])
    listed = {path for path, _ in pages}
    assert {p for p in listed if p in manifest} == {listing_path(key, k) for k in range(1, count)}
    if key == "all":
        assert len(every) == 21 and pages[0][0] == "articles/index.html"
        assert page(app, "articles/index.html").findtext(".//h1") == "All articles"


def test_a_listing_that_fits_one_page_has_no_pager(site):
    doc = page(site, "tags/habits/index.html")
    assert not doc.xpath("//nav[@class='pager']") and not (public(site) / "tags" / "habits" / "page").exists()


def test_listing_pages_follow_a_new_page_size_and_old_pages_leave_public(make_app, sqlite_url):
    """Pages are cut by the feed settings of the build that writes them: with a bigger
    feeds.max_entries the archive pages are removed (folders too) and the newest page
    lists every article again."""
    from pipeline.app import App
    from pipeline.config import load_settings

    from .feedsite import build_site, feeds_toml

    app = make_app(sqlite_url, feeds_toml(max_entries=3, archive_size=2))
    build_site(app, 11)
    assert (public(app) / "tags" / "habits" / "page" / "1" / "index.html").exists()
    bigger = App(load_settings(app.settings.source, env={"SYNDICATE_FEEDS__MAX_ENTRIES": "50"}))
    report = build(bigger)
    assert not report.errors
    assert "tags/habits/page/1/index.html" in report.removed
    assert not (public(app) / "tags" / "habits" / "page").exists()
    front = listing_chain(bigger, "tags/habits")
    assert len(front) == 1 and len(front[0][1]) == len([i for i in range(11) if "habits" in topics_of(i)])


def topics_of(i: int) -> list[str]:
    from .feedsite import TOPICS

    return [TOPICS[i % len(TOPICS)], TOPICS[(i + 2) % len(TOPICS)]]


def test_the_home_page_links_every_article_when_it_shows_only_the_newest(make_app, sqlite_url):
    """The home page lists the newest `feeds.listing_size`; with more articles than that,
    it links articles/, where every article is, page by page."""
    from .feedsite import build_site

    app = make_app(sqlite_url, "\n[feeds]\nlisting_size = 3\n")
    build_site(app, 3)
    assert not page(app, "index.html").xpath("//a[text()='All articles']")  # all of them are there
    build_site(app, 2, start=3)
    home = page(app, "index.html")
    assert len(home.xpath("//ul[@class='articles']/li")) == 3
    assert home.xpath("//a[text()='All articles']/@href") == ["https://news.example.com/articles/"]
    assert len(listing_chain(app, "all")[0][1]) == 5
