"""Reading and sanitising articles (SAN-1..5, FG-8, ATOM-8) and ingest on every database."""

from __future__ import annotations

import re

import pytest

from pipeline.content.ingest import derive_summary, ingest, read_article, sanitize_html
from pipeline.errors import ContentError
from pipeline.store.schema import articles, revisions
from sqlalchemy import select

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
FORBIDDEN = re.compile(r"<script|onerror|javascript:|vbscript:|data:text|<iframe|<object|<embed|<frame|<base|<meta|"
                       r"<form|<input|<style|style=|<!--|<svg|<math", re.I)


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
