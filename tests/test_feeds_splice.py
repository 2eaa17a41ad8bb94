"""FG-12: every entry is serialised once per build and its bytes are spliced into each
document it is in. A spliced document must be, byte for byte, the document serialised
whole (`render_xml(..., splice=False)`, the tree with the entries in place): the same
indentation at every depth, the same namespace declarations on the root, nothing lost
around the slot. Checked on fixed edge cases and on generated text."""

from __future__ import annotations

import datetime as dt
import types

import feedparser
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from pipeline.site import feeds

BASE = dt.datetime(2026, 3, 2, 8, tzinfo=dt.UTC)


def _article(i: int, **over):
    a = types.SimpleNamespace(
        slug=f"a-{i}",
        title=f"Title {i}",
        author_name="Ana Lee",
        author_url="https://ana.example.net/",
        published_at=BASE - dt.timedelta(hours=i),
        updated_at=BASE - dt.timedelta(hours=i) + dt.timedelta(minutes=5),
        tags=["sleep", "work"],
        category="wellbeing",
        summary=f"Summary {i}",
        body_html=f"<p>Body {i}</p>\n<ul><li>one</li><li>two</li></ul>\n<pre>  kept\n    as is</pre>",
        image="",
        image_length=None,
        image_type="",
        image_alt="",
        url=f"https://news.example.com/articles/a-{i}/",
        canonical_url=f"https://news.example.com/articles/a-{i}/",
        content_hash=f"h{i}",
    )
    for k, v in over.items():
        setattr(a, k, v)
    return a


EDGE = [
    _article(0),
    _article(1, image="https://news.example.com/i.png", image_type="image/png", image_length=1234),
    _article(2, canonical_url="https://elsewhere.example.org/orig", author_url="", tags=[], category=""),
    _article(3, title="A & B <i> \u202e’quoted’ 日本語", summary="", body_html="text only, no element"),
    _article(4, body_html="<p>a]]>b &amp; c</p><!-- not a comment in the output -->"),
]


def _docs(settings_, entries):
    spec = feeds.make_spec(settings_, "tags/sleep", "sleep")
    yield feeds.FeedDocument(spec, None, 0, entries, BASE)  # complete
    yield feeds.FeedDocument(spec, None, 3, entries, BASE)  # subscription document with archives
    yield feeds.FeedDocument(spec, 2, 3, entries, BASE)  # an archive in the middle
    yield feeds.FeedDocument(spec, 1, 3, [], BASE)  # an empty archive: no slot at all


@pytest.mark.parametrize("hubs", [(), ("https://hub.example.net/",)])
def test_fg_12_spliced_documents_equal_whole_ones(sqlite_app, hubs):
    s = sqlite_app.settings
    for doc in _docs(s, EDGE):
        cache = feeds.EntryCache(s)
        spliced = feeds.render_xml(s, doc, hubs, cache)
        whole = feeds.render_xml(s, doc, hubs, feeds.EntryCache(s), splice=False)
        assert spliced == whole
        for fmt, data in spliced.items():
            etree.fromstring(data)  # a strict parser reads it
            parsed = feedparser.parse(data)
            assert parsed.bozo == 0, (fmt, parsed.bozo_exception)
            assert len(parsed.entries) == len(doc.entries)
            assert b"syndicate-entries" not in data


def test_fg_12_an_entry_spliced_into_many_documents_is_made_once(sqlite_app):
    s = sqlite_app.settings
    cache = feeds.EntryCache(s)
    made = []
    real = feeds._spliceable

    def counting(element, depth, nsmap):
        made.append(depth)
        return real(element, depth, nsmap)

    feeds._spliceable = counting
    try:
        for doc in _docs(s, EDGE):
            feeds.render_xml(s, doc, (), cache)
    finally:
        feeds._spliceable = real
    assert len(made) == 2 * len(EDGE)  # one Atom entry and one RSS item per article


text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(title=text, summary=text, body=text, name=text, tags=st.lists(st.from_regex(r"[a-z]{1,8}", fullmatch=True)))
def test_fg_12_spliced_equals_whole_for_any_text(sqlite_app, title, summary, body, name, tags):
    s = sqlite_app.settings
    entries = [
        _article(0, title="t" + title, summary=summary, body_html=body, author_name=name, tags=tags),
        _article(1, body_html=f"<p>{body}</p>"),
    ]
    doc = feeds.FeedDocument(feeds.make_spec(s, "all"), None, 0, entries, BASE)
    assert feeds.render_xml(s, doc, (), feeds.EntryCache(s)) == feeds.render_xml(
        s, doc, (), feeds.EntryCache(s), splice=False
    )
