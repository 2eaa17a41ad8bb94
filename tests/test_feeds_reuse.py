"""Feed entries taken from the documents the last build wrote (`feeds.split`,
`EntryCache.reuse`, `build._reuse_entries`).

After a complete build, an unchanged article's entry is, byte for byte, what the
documents on disk hold (FG-12: an entry is spliced as the same bytes into every
document it is in). The incremental build takes those bytes instead of reading the
article and making its entries again. Checked here: `split` finds every entry's exact
bytes in all three formats, text that looks like a boundary included; a document made
only of taken entries equals one made from the articles; the namespaces read off the
bytes are those of the element; an add-one build reads one article's text, not those
of every article on the documents it rewrites, and writes what a full render writes.
tests/test_build_incremental.py's random walk checks the same end to end."""

from __future__ import annotations

import dataclasses

import pytest

from pipeline.site import build as build_module
from pipeline.site import feeds
from pipeline.site.build import build

from .articles import write_article
from .feedsite import build_site, publish, read
from .test_feeds_splice import BASE, EDGE, _article

HOSTILE = [
    # text shaped like the boundaries split looks for, in every field it can reach
    _article(5, body_html='x\n  </entry>\n    </item>\n",{"id":"https://evil.example/"}]}\n', summary='"items":['),
    _article(6, title="  <entry>\n    <id>https://news.example.com/articles/a-0/</id>", summary=',{"id":"'),
    _article(8, url='https://news.example.com/articles/a-8/?q="1",&x=<2>', canonical_url="https://x.example/"),
]
# an svg in the text: ` xmlns` appears (escaped) in the bytes; reuse refuses it
SVG = _article(7, body_html='<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"/>')
ARTICLES = [*EDGE, *HOSTILE, SVG]


@dataclasses.dataclass
class Light:
    """What the build has of an unchanged article (plan.Meta): no text."""

    url: str
    content_hash: str


def _documents(s):
    spec = feeds.make_spec(s, "tags/sleep", "sleep")
    yield feeds.FeedDocument(spec, None, 0, ARTICLES, BASE)
    yield feeds.FeedDocument(spec, 2, 3, ARTICLES[::-1], BASE)


@pytest.mark.parametrize("hubs", [(), ("https://hub.example.net/",)])
def test_fg_12_split_finds_every_entry_as_it_was_spliced(sqlite_app, hubs):
    s = sqlite_app.settings
    for doc in _documents(s):
        cache = feeds.EntryCache(s)
        out = feeds.render_document(s, doc, hubs, cache)
        found = {fmt: feeds.split(fmt, data) for fmt, data in out.items()}
        for fmt in feeds.FORMATS:
            assert list(found[fmt]) == [a.url for a in doc.entries], fmt  # no more, no fewer, in order
        for a in doc.entries:
            assert found["atom"][a.url] == cache.atom_bytes(a)
            assert found["rss"][a.url] == cache.rss_bytes(a)
            assert found["json"][a.url] == cache.json_bytes(a)


def test_a_document_of_taken_entries_equals_one_made_from_the_articles(sqlite_app):
    s = sqlite_app.settings
    hubs = ("https://hub.example.net/",)
    for doc in _documents(s):
        out = feeds.render_document(s, doc, hubs, feeds.EntryCache(s))
        found = {fmt: feeds.split(fmt, data) for fmt, data in out.items()}
        cache = feeds.EntryCache(s)
        light = []
        for a in doc.entries:
            m = Light(a.url, a.content_hash)
            if cache.reuse(m, found["atom"][a.url], found["rss"][a.url], found["json"][a.url]):
                assert cache.has(m)
                light.append(m)
            else:
                light.append(a)
        assert sum(isinstance(e, Light) for e in light) == len(ARTICLES) - 1  # all but the svg
        again = feeds.FeedDocument(doc.spec, doc.page, doc.archive_pages, light, doc.updated)
        assert feeds.render_document(s, again, hubs, cache) == out


def test_the_namespaces_read_off_the_bytes_are_those_of_the_element(sqlite_app):
    s = sqlite_app.settings
    cache = feeds.EntryCache(s)
    for a in ARTICLES:
        for fmt, nsmap, data in (
            ("atom", feeds.ATOM_SPLICE_NS, cache.atom_bytes(a)),
            ("rss", feeds.RSS_NSMAP, cache.rss_bytes(a)),
        ):
            read_off = feeds._prefixed(data, nsmap)
            if a is SVG:  # refused, never guessed
                assert read_off is None
                continue
            assert read_off == frozenset(cache.namespaces([a], fmt)), (a.slug, fmt)
    assert feeds._prefixed(b"    <item>\n      <media:thumbnail/>\n    </item>\n", feeds.RSS_NSMAP) is None


def _reads(monkeypatch) -> list[set[int]]:
    """The article ids each build reads the text of."""
    seen: list[set[int]] = []
    load = build_module._load_articles

    def counting(conn, settings, ids, total):
        seen.append(set(ids))
        return load(conn, settings, ids, total)

    monkeypatch.setattr(build_module, "_load_articles", counting)
    return seen


def test_an_added_article_is_the_only_one_whose_text_the_build_reads(make_app, db_url, monkeypatch):
    from .feedsite import feeds_toml

    app = make_app(db_url, feeds_toml(max_entries=5, archive_size=4))
    build_site(app, 30)
    reads = _reads(monkeypatch)
    write_article(app.settings.root, "article-new", date="2026-12-01T08:00:00Z", tags='["habits", "sleep"]')
    publish(app)
    report = build(app)
    assert report.plan == "incremental" and not report.errors
    assert len(reads[-1]) == 1  # before the reuse: every article on the rewritten documents (19 here)
    assert sum(1 for p in report.written if p.startswith("feeds/")) >= 9
    assert b"article-new" in read(app, "feeds/all.atom")
    # an edit: the edited article is read, the others on its documents are not
    write_article(app.settings.root, "article-003", title="Article 3, again", tags='["habits"]')
    publish(app)
    report = build(app)
    assert report.plan == "incremental" and len(reads[-1]) == 1
    assert build(app, force=True).written == []  # what a full render writes, byte for byte


def test_an_entry_the_cache_refuses_is_made_from_the_article(make_app, sqlite_url, monkeypatch):
    from .feedsite import feeds_toml

    app = make_app(sqlite_url, feeds_toml(max_entries=5, archive_size=4))
    root = app.settings.root
    build_site(app, 8)
    # raw HTML in Markdown: the sanitiser keeps the text, escaped; ` xmlns` is in the bytes
    write_article(root, "article-svg", date="2026-11-01T08:00:00Z", body='Look: `<svg xmlns="x">` here.\n')
    publish(app)
    build(app)
    reads = _reads(monkeypatch)
    write_article(root, "article-next", date="2026-11-02T08:00:00Z")
    publish(app)
    report = build(app)
    assert report.plan == "incremental" and not report.errors
    assert len(reads[-1]) == 2  # the new article and the one whose entry was refused
    assert build(app, force=True).written == []


def test_a_feed_file_changed_after_the_last_build_is_not_taken_from(make_app, sqlite_url, monkeypatch):
    """A file edited by hand to the same size (the plan's size check passes) or one a
    killed build renamed into place: its change time is after the last build finished,
    so its entries are not carried into the next documents."""
    from .feedsite import feeds_toml, public

    app = make_app(sqlite_url, feeds_toml(max_entries=5, archive_size=4))
    build_site(app, 12)
    path = public(app) / "feeds" / "all.atom"
    data = path.read_bytes()
    assert b"<title>Article 11</title>" in data
    path.write_bytes(data.replace(b"<title>Article 11</title>", b"<title>Article XI</title>"))  # same size
    reads = _reads(monkeypatch)
    write_article(app.settings.root, "article-new", date="2026-12-01T08:00:00Z", tags='["work"]')
    publish(app)
    report = build(app)
    assert report.plan == "incremental" and "feeds/all.atom" in report.written
    assert b"Article XI" not in read(app, "feeds/all.atom")
    assert b"<title>Article 11</title>" in read(app, "feeds/all.atom")
    assert len(reads[-1]) > 1  # entries found in no trusted document were made again
    assert build(app, force=True).written == []
