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
