"""Reading and sanitising articles (SAN-1..5, FG-8, ATOM-8) and ingest on every database."""

from __future__ import annotations

import html
import json
import re

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from pipeline.content.ingest import (
    TITLE_MAX_CHARS,
    clean_text,
    derive_summary,
    html_to_text,
    http_url,
    ingest,
    read_article,
    read_author,
    sanitize_html,
    strip_control_chars,
)
from pipeline.errors import ContentError
from pipeline.store.schema import articles, authors, revisions

from .articles import write_article, write_author

BASE = "https://news.example.com/articles/x/"


# --- SAN-3: one fixture per XSS vector; none may survive ----------------------------
XSS = {
    "script": "<p>hi</p><script>alert(1)</script>",
    "svg-script": "<svg><script>alert(1)</script></svg>",
    "math-mxss": "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    "onerror": '<img src="x.png" onerror="alert(1)">',
    "javascript-href": '<a href="javascript:alert(1)">x</a>',
    "vbscript-href": '<a href="vbscript:msgbox(1)">x</a>',
    "data-html": '<a href="data:text/html;base64,PHNjcmlwdD4=">x</a>',
    "iframe": '<iframe src="https://evil.example"></iframe>',
    "object": '<object data="x.swf"></object><embed src="x.swf">',
    "frame": '<frameset><frame src="x"></frameset>',
    "base": '<base href="https://evil.example/">',
    "meta-refresh": '<meta http-equiv="refresh" content="0;url=https://evil.example">',
    "form": '<form action="https://evil.example"><input name="password"></form>',
    "style-block": "<style>body{display:none}</style>",
    "style-attr": '<p style="position:fixed;top:0">overlay</p>',
    "comment": "<!-- secret --><!--[if IE]><script>x</script><![endif]-->",
}
FORBIDDEN = re.compile(
    r"<script|onerror|javascript:|vbscript:|data:text|<iframe|<object|<embed|<frame|<base|<meta|"
    r"<form|<input|<style|style=|<!--|<svg|<math",
    re.I,
)


@pytest.mark.parametrize("name", sorted(XSS))
def test_SAN3_xss_vectors_are_stripped(name):
    out = sanitize_html(XSS[name], BASE)
    assert not FORBIDDEN.search(out), out


def test_SAN3_target_blank_gets_rel():
    out = sanitize_html('<a href="https://example.org" target="_blank">x</a>', BASE)
    assert 'rel="noopener noreferrer"' in out and "target" not in out


@pytest.mark.parametrize("html", list(XSS.values()) + ['<p><a href="/a">rel</a> <img src="i.png" alt="i"></p>'])
def test_SAN1_sanitising_is_idempotent(html):
    once = sanitize_html(html, BASE)
    assert sanitize_html(once, BASE) == once


def test_ATOM8_relative_urls_become_absolute():
    out = sanitize_html('<a href="/articles/y/">y</a><img src="pic.png" alt="">', BASE)
    assert 'href="https://news.example.com/articles/y/"' in out
    assert 'src="https://news.example.com/articles/x/pic.png"' in out


def test_summary_is_first_paragraph_cut_at_a_word():
    html = "<h2>Head</h2><p>" + "word " * 100 + "</p><p>second</p>"
    s = derive_summary(html, limit=50)
    assert s.endswith("…") and len(s) <= 51 and "second" not in s and "<" not in s


@pytest.fixture
def root(tmp_path, make_app, sqlite_url):
    app = make_app(sqlite_url)
    write_author(app.settings.root)
    return app


def parse(app, path):
    return read_article(path, app.settings, {"ana-lee"})


def test_good_article_parses(root):
    path = write_article(root.settings.root, "small-rituals")
    a = parse(root, path)
    assert a.title == "Small Rituals" and a.tags == ["relationships", "habits"]
    assert a.published_at.tzinfo is not None
    assert a.summary.startswith("Small rituals keep people close.")
    assert a.reading_minutes >= 1 and a.word_count > 30
    assert 'href="https://news.example.com/articles/other-piece/"' in a.body_html
    assert len(a.content_hash) == 64


def test_hostile_body_is_sanitised_and_control_chars_removed_FG8(root):
    body = "Hello\x0b world\x1b.\n\n<script>alert(1)</script>\n\n[click](javascript:alert(1))\n\n<img src=https://img.example/x.png onerror=alert(1)>\n"
    a = parse(root, write_article(root.settings.root, "hostile", body=body, title="A & B <i>\x07"))
    assert "\x0b" not in a.body_html and "\x1b" not in a.body_html
    assert "<script" not in a.body_html and "alert(1)</script" not in a.body_html and "onerror" not in a.body_html
    assert 'href="javascript' not in a.body_html  # CommonMark leaves it as inert text
    assert a.title == "A & B <i>"


BAD = {
    "broken-yaml": (dict(extra="summary: [unclosed\n"), None, "not valid YAML"),
    "missing-title": (dict(title=""), "title", "'title' is missing"),
    "bad-date": (dict(date="yesterday-ish"), "date", "not a date"),
    "unknown-author": (dict(author="nobody"), "author", "unknown author"),
    "bad-status": (dict(status="approved"), "status", "must be draft or submitted"),
    "unknown-field": (dict(extra="colour: blue\n"), "colour", "unknown front matter"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_files_name_path_field_and_fix(root, case):
    kwargs, field, message = BAD[case]
    path = write_article(root.settings.root, case, **kwargs)
    with pytest.raises(ContentError) as info:
        parse(root, path)
    assert str(path) in info.value.message and message in info.value.message
    assert info.value.field == field and info.value.hint


def test_not_utf8_and_too_large(root):
    p = write_article(root.settings.root, "latin1", raw="---\ntitle: caf\xe9\n---\n".encode("latin-1"))
    with pytest.raises(ContentError, match="not UTF-8"):
        parse(root, p)
    big = write_article(root.settings.root, "big", body="x" * 1_100_000)
    with pytest.raises(ContentError, match="over the limit"):
        parse(root, big)


def test_no_front_matter(root):
    p = write_article(root.settings.root, "plain", raw=b"just text\n")
    with pytest.raises(ContentError, match="no YAML front matter"):
        parse(root, p)


# --- ingest, on SQLite and PostgreSQL -------------------------------------------------


def test_ingest_reports_bad_files_and_goes_on(app):
    root = app.settings.root
    write_author(root)
    write_article(root, "good-one")
    write_article(root, "bad-one", date="not a date")
    report = ingest(app)
    assert report.new == ["good-one"]
    assert [e.field for e in report.errors] == ["date"] and "bad-one.md" in report.errors[0].message
    with app.engine.connect() as conn:
        assert conn.execute(select(articles.c.slug)).scalars().all() == ["good-one"]


def test_strict_ingest_writes_nothing(app):
    root = app.settings.root
    write_author(root)
    write_article(root, "good-one")
    write_article(root, "bad-one", title="")
    with pytest.raises(ContentError, match="strict mode wrote nothing"):
        ingest(app, strict=True)
    with app.engine.connect() as conn:
        assert conn.execute(select(articles.c.slug)).scalars().all() == []


def test_unchanged_files_are_not_reparsed(app, monkeypatch):
    root = app.settings.root
    write_author(root)
    write_article(root, "one")
    assert ingest(app).new == ["one"]
    import pipeline.content.ingest as content

    def boom(*a, **k):
        raise AssertionError("re-parsed an unchanged file")

    monkeypatch.setattr(content, "read_article", boom)
    report = ingest(app)
    assert report.unchanged == 1 and not report.new and not report.changed


def test_edit_creates_revision_and_deletion_retracts(app):
    root = app.settings.root
    write_author(root)
    path = write_article(root, "one")
    ingest(app)
    write_article(root, "one", title="Small Rituals, revised")
    assert ingest(app).changed == ["one"]
    path.unlink()
    assert ingest(app).retracted == ["one"]
    with app.engine.connect() as conn:
        row = conn.execute(select(articles.c.retracted_at)).one()
        assert row.retracted_at is not None  # kept, marked retracted
        states = conn.execute(select(revisions.c.number, revisions.c.state).order_by(revisions.c.number)).all()
    assert [tuple(s) for s in states] == [(1, "superseded"), (2, "submitted")]


def test_large_batches_parse_in_worker_processes_with_errors_kept(sqlite_app, monkeypatch):
    import pipeline.content.ingest as content

    monkeypatch.setattr(content, "PARALLEL_THRESHOLD", 2)
    root = sqlite_app.settings.root
    write_author(root)
    for i in range(6):
        write_article(root, f"piece-{i}", date=f"2026-10-0{i + 1}T08:00:00Z")
    write_article(root, "broken", date="nope")
    report = ingest(sqlite_app)
    assert sorted(report.new) == [f"piece-{i}" for i in range(6)]
    (err,) = report.errors
    assert err.field == "date" and err.message.startswith(str(root / "content" / "articles" / "broken.md"))
    assert err.message.count("broken.md") == 1


@pytest.mark.xdist_group("processes")
def test_a_process_with_threads_parses_in_spawned_workers(sqlite_app, monkeypatch):
    """The scheduler has threads, so ingest must not fork there: its workers are spawned,
    which sends them the settings by pickle. A Section used to recurse forever while
    being unpickled (its __getattr__ read self._values before it existed), so every
    ingest of a large batch from a threaded process broke the pool."""
    import threading

    import pipeline.content.ingest as content

    monkeypatch.setattr(content, "PARALLEL_THRESHOLD", 2)
    monkeypatch.setattr(content, "SPAWN_THRESHOLD", 2)
    root = sqlite_app.settings.root
    write_author(root)
    for i in range(4):
        write_article(root, f"piece-{i}", date=f"2026-10-0{i + 1}T08:00:00Z")
    write_article(root, "broken", date="nope")
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, daemon=True)
    thread.start()
    try:
        report = ingest(sqlite_app)
    finally:
        stop.set()
        thread.join()
    assert sorted(report.new) == [f"piece-{i}" for i in range(4)]
    (err,) = report.errors
    assert err.field == "date"


def yaml_str(value: str) -> str:
    """A YAML double-quoted scalar (JSON's escapes, minus surrogate pairs YAML refuses)."""
    return json.dumps(value, ensure_ascii=False)


# --- issue 16 item 7: plain text from a real parser, every character kept ---------------

EVERY_CHARACTER = "Summary with & and < and ]]> and 🎉"


def test_issue16_7_summary_written_by_the_author_keeps_every_character(root):
    a = parse(root, write_article(root.settings.root, "chars", extra=f"summary: {yaml_str(EVERY_CHARACTER)}\n"))
    assert a.summary == EVERY_CHARACTER


def test_issue16_7_summary_derived_from_the_body_keeps_every_character(root):
    body = "Text with & and < and ]]> and 🎉, a&nbsp;no-break space and &amp;lt;b&amp;gt; written out.\n"
    a = parse(root, write_article(root.settings.root, "derived", body=body))
    assert a.summary == "Text with & and < and ]]> and 🎉, a\xa0no-break space and &lt;b&gt; written out."


def test_issue16_7_issue19_6_entities_are_decoded_exactly_once_into_text(root):
    """`&lt;script&gt;` in a summary is the text `<script>`: plain text, escaped again by
    every output (see test_feeds for RSS), never markup and never decoded twice."""
    summary = "&lt;script&gt;alert(1)&lt;/script&gt; &amp;amp; <b>bold</b> <script>x()</script>"
    a = parse(root, write_article(root.settings.root, "entities", extra=f"summary: {yaml_str(summary)}\n"))
    assert a.summary == "<script>alert(1)</script> &amp; bold"


def test_issue16_7_block_boundaries_separate_words_inline_ones_do_not():
    assert html_to_text("<table><tr><td>vote</td><td>for</td></tr></table>") == "vote\nfor"
    assert html_to_text("<p><b>vo</b>te <em>for</em></p><p>next</p>x<br>y") == "vote for\nnext\nx\ny"
    assert html_to_text("<p>a</p>tail<!-- hidden -->end") == "a\ntailend"
    assert html_to_text("") == "" and html_to_text("  \n ") == ""


XML_FORBIDDEN = set(
    chr(c)
    for c in [*range(9), 11, 12, *range(14, 32), 0x7F, 0xFFFE, 0xFFFF, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_issue16_7_property_text_escaped_as_html_comes_back_unchanged(text):
    """For any text: escape it as HTML, take the plain text back: every character is
    there, except the forbidden controls and HTML's own whitespace runs (one space)."""
    kept = "".join(ch for ch in text if ch not in XML_FORBIDDEN)
    expected = re.sub(r"[ \t\n\r\f]+", " ", kept.replace("\r\n", "\n")).strip(" ")
    assert html_to_text(html.escape(text)) == expected


# --- issue 16 item 10: a title length limit --------------------------------------------


def test_issue16_10_a_title_over_the_limit_is_refused_with_the_limit_named(root):
    ok = parse(root, write_article(root.settings.root, "ok-title", title="T" * TITLE_MAX_CHARS))
    assert len(ok.title) == TITLE_MAX_CHARS
    path = write_article(root.settings.root, "long-title", title="Ü" * 500)
    with pytest.raises(ContentError) as info:
        parse(root, path)
    assert info.value.field == "title" and f"limit of {TITLE_MAX_CHARS}" in info.value.message
    assert "500 characters" in info.value.message and info.value.hint


# --- issue 16 item 9: relative images in the body --------------------------------------


def _image(root, rel: str) -> None:
    path = root / "content" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="2" height="2"/>')


def test_issue16_9_relative_body_images_resolve_against_the_article_folder(root):
    site = root.settings.root
    _image(site, "articles/figures/next-to-it.svg")
    _image(site, "images/shared.svg")
    body = (
        "![a](figures/next-to-it.svg) ![b](../images/shared.svg) ![c](images/shared.svg) "
        "![d](/images/shared.svg) ![e](https://cdn.example.org/e.png)\n"
    )
    a = parse(root, write_article(site, "pictures", body=body))
    srcs = re.findall(r'src="([^"]+)"', a.body_html)
    assert srcs == [
        "https://news.example.com/articles/figures/next-to-it.svg",
        "https://news.example.com/images/shared.svg",
        "https://news.example.com/images/shared.svg",
        "https://news.example.com/images/shared.svg",
        "https://cdn.example.org/e.png",
    ]


def test_issue16_9_a_missing_body_image_names_the_article_at_ingest(app):
    site = app.settings.root
    write_author(site)
    write_article(site, "good-one")
    path = write_article(site, "broken-picture", body="Text.\n\n![gone](images/missing.png)\n")
    report = ingest(app)
    assert report.new == ["good-one"]
    (err,) = report.errors
    assert err.field == "body" and str(path) in err.message and "images/missing.png" in err.message and err.hint


def test_issue16_9_an_article_with_an_original_keeps_its_relative_images_there(root):
    extra = "canonical_url: https://origin.example.org/posts/one/\n"
    a = parse(root, write_article(root.settings.root, "syndicated", extra=extra, body="![x](pics/x.png)\n"))
    assert 'src="https://origin.example.org/posts/one/pics/x.png"' in a.body_html


def test_issue16_9_issue19_5_a_body_image_outside_the_content_folder_is_refused(root):
    site = root.settings.root
    (site / "content" / "images").mkdir(parents=True, exist_ok=True)
    (site / "content" / "images" / "key.png").symlink_to(site / "var" / "secret_key")
    (site / "outside.png").write_bytes(b"\x89PNG")
    for body in ("![k](images/key.png)\n", "![o](../../outside.png)\n"):
        with pytest.raises(ContentError, match="image\\(s\\) not found in") as info:
            parse(root, write_article(site, "escape", body=body))
        assert info.value.field == "body"


def test_issue19_5_a_header_image_symlinked_outside_the_content_folder_is_refused(root):
    site = root.settings.root
    (site / "content" / "images").mkdir(parents=True, exist_ok=True)
    (site / "content" / "images" / "key.png").symlink_to(site / "var" / "secret_key")
    with pytest.raises(ContentError, match="resolves outside") as info:
        parse(root, write_article(site, "leak", extra="image: images/key.png\n"))
    assert info.value.field == "image"
    # a symlink that stays inside the folder is fine
    _image(site, "images/real.svg")
    (site / "content" / "images" / "alias.svg").symlink_to(site / "content" / "images" / "real.svg")
    a = parse(root, write_article(site, "alias", extra="image: images/alias.svg\n"))
    assert a.image == "https://news.example.com/images/alias.svg" and a.image_length > 0


# --- issue 18 item 4: URL fields of authors and articles ---------------------------------

HOSTILE_URLS = [
    "javascript:alert(1)",
    "JavaScript:alert(1)",
    " javascript:alert(1)",
    "java\tscript:alert(1)",
    "data:text/html;base64,PHNjcmlwdD4=",
    "vbscript:msgbox(1)",
    "//evil.example/x",
    "/relative/",
    "https:no-host",
    "mailto:someone@example.org",
    "ftp://files.example.org/",
]


@pytest.mark.parametrize("url", HOSTILE_URLS)
def test_issue18_4_an_author_url_outside_the_allow_list_is_refused(tmp_path, url):
    path = tmp_path / "mallory.md"
    path.write_text(f"---\nname: Mallory\nurl: {yaml_str(url)}\n---\nBio.\n")
    with pytest.raises(ContentError, match="must be an absolute http\\(s\\) URL") as info:
        read_author(path)
    assert info.value.field == "url"


@pytest.mark.parametrize("field", ["canonical_url", "image"])
@pytest.mark.parametrize("url", ["javascript:alert(1)", "java\tscript:alert(1)", "data:image/png;base64,AAAA"])
def test_issue18_4_article_url_fields_use_the_same_allow_list(root, field, url):
    path = write_article(root.settings.root, "bad-url", extra=f"{field}: {yaml_str(url)}\n")
    with pytest.raises(ContentError) as info:
        parse(root, path)
    assert info.value.field == field


def test_issue18_4_a_bad_author_edit_is_reported_and_the_last_good_version_stays(app):
    site = app.settings.root
    write_author(site)
    write_article(site, "one")
    ingest(app)
    (site / "content" / "authors" / "ana-lee.md").write_text("---\nname: Ana Lee\nurl: javascript:alert(1)\n---\n")
    write_article(site, "two")
    report = ingest(app)
    assert report.new == ["two"]  # her articles still go in
    assert [e.field for e in report.errors] == ["url"]
    with app.engine.connect() as conn:
        assert conn.execute(select(authors.c.url)).scalar_one() == "https://example.org/ana-lee"


@settings(max_examples=300, deadline=None)
@given(
    st.text()
    | st.builds(
        lambda s, t: s + ":" + t,
        st.sampled_from(["javascript", "JAVASCRIPT", " data", "java\nscript", "http", "https"]),
        st.text(),
    )
)
def test_issue18_4_property_http_url_lets_only_http_and_https_through(value):
    from urllib.parse import urlsplit

    out = http_url(value)
    assert out is None or (urlsplit(out).scheme.lower() in ("http", "https") and urlsplit(out).hostname)


# --- issue 18 item 5: bidirectional controls --------------------------------------------

BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"


def test_issue18_5_bidi_controls_are_removed_from_titles_names_alt_summaries_and_link_texts(root):
    site = root.settings.root
    write_author(site, "ana-lee", "Ana\u202e Lee\u2066")
    body = "Please [click gn\u202ep.exe](https://example.org/file) today \u2067ok\u2069.\n"
    a = parse(
        root,
        write_article(
            site,
            "bidi",
            title="Title \u202egnp.exe",
            body=body,
            extra='summary: "Sum\u202dmary"\nimage_alt: "Alt\u202b text"\n',
        ),
    )
    author = read_author(site / "content" / "authors" / "ana-lee.md")
    for value in (a.title, a.summary, a.image_alt, a.body_html, a.body_markdown, author.name):
        assert not any(ch in value for ch in BIDI), repr(value)
    assert a.title == "Title gnp.exe" and author.name == "Ana Lee" and ">click gnp.exe<" in a.body_html


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(list(BIDI)) | st.text(max_size=8) | st.sampled_from(["<a href='x'>", "</a>", "&#8238;"]),
        min_size=1,
    ).map("".join)
)
def test_issue18_5_property_no_bidi_control_survives_sanitising_or_cleaning(text):
    assume(any(ch in text for ch in BIDI) or "&#8238;" in text)
    for out in (sanitize_html(text, BASE), clean_text(text), html_to_text(text), strip_control_chars(text)):
        assert not any(ch in out for ch in BIDI)


def test_an_articles_folder_that_cannot_be_listed_fails_the_ingest_and_retracts_nothing(app, unlistable):
    """An articles folder that exists but cannot be listed (permissions, an I/O error)
    stops the ingest with an error naming the folder, and every article stays
    published. Before, globbing it gave no files, and ingest retracted every article
    made from a file (as if the folder had been emptied)."""
    root = app.settings.root
    write_author(root)
    write_article(root, "one")
    write_article(root, "two")
    assert sorted(ingest(app).new) == ["one", "two"]
    folder = root / "content" / "articles"
    unlistable(folder)
    with pytest.raises(ContentError, match="cannot list the folder: Permission denied") as caught:
        ingest(app)
    assert str(folder) in caught.value.message and "permissions" in caught.value.hint
    with app.engine.connect() as conn:
        rows = conn.execute(select(articles.c.slug, articles.c.retracted_at).order_by(articles.c.slug)).all()
    assert [tuple(r) for r in rows] == [("one", None), ("two", None)]
