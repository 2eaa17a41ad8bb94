"""`syndicate ingest --strict` means the same for every source type (ING-1): one bad
item (a Markdown file, a feed entry, a WordPress post) and the exit status is 1, every
bad item is named, and nothing is written for that run: no article, no revision, no
author, no image row, and the source's cursor (ETag, watermark) stays where it was.
Against the real feed/WordPress test server (tests/source_server.py)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from pipeline.cli import main
from tests.articles import write_article, write_author
from tests.source_server import SourceServer
from tests.test_sources import counts_of_writes, source_toml, state


@pytest.fixture
def server():
    srv = SourceServer()
    yield srv
    srv.close()


NOTHING = (0, 0, 0, 0, 0)  # articles, revisions, approvals, authors, media


def invoke(app, *args):
    return CliRunner().invoke(
        main, ["--config", str(app.settings.source), *args], catch_exceptions=False, env={"COLUMNS": "200"}
    )


def json_feed(server, path: str, items: list) -> str:
    return server.set(
        path,
        200,
        json.dumps({"version": "https://jsonfeed.org/version/1.1", "title": "Notes", "items": items}),
        content_type="application/feed+json",
    )


GOOD = {"id": "good-1", "url": "https://example.org/good-1", "title": "A good note", "content_text": "Fine text."}
BAD = {"id": "bad-1", "url": "https://example.org/bad-1"}  # neither a title nor content
BAD2 = {"id": "bad-2", "url": "https://example.org/bad-2", "date_published": "not a date", "title": "x"}


def test_strict_feed_source_writes_nothing_and_names_each_bad_item_ing1(make_app, sqlite_url, server):
    """Before ING-1 the good item was stored and the cursor saved although --strict was given."""
    url = json_feed(server, "/notes.json", [GOOD, BAD, {**BAD, "id": "bad-3"}])
    app = make_app(sqlite_url, source_toml("notes", "feed", url))
    r = invoke(app, "ingest", "--strict")
    assert r.exit_code == 1, r.output
    assert "bad-1" in r.output and "bad-3" in r.output and "strict mode wrote nothing" in r.output
    assert counts_of_writes(app) == NOTHING
    assert (state(app, "notes")["cursor"] or {}) == {}
    # without --strict the good item goes in and the bad ones are still named (exit 1)
    r = invoke(app, "ingest")
    assert r.exit_code == 1 and "bad-1" in r.output
    assert counts_of_writes(app)[0] == 1


def test_strict_wordpress_source_writes_nothing_and_keeps_its_watermark_ing1(make_app, db_url, server):
    server.load_wp()
    server.wp_posts[1]["title"] = None  # a post that cannot be read
    app = make_app(db_url, source_toml("blog", "wordpress", server.base, per_page=2))
    r = invoke(app, "ingest", "blog", "--strict")
    assert r.exit_code == 1, r.output
    assert "source:blog:12 [title]: item has no title" in r.output and "strict mode wrote nothing" in r.output
    assert "2 new" not in r.output and "new authors" not in r.output  # nothing was written
    assert counts_of_writes(app) == NOTHING
    assert "modified_after" not in (state(app, "blog")["cursor"] or {})


def test_strict_markdown_names_every_bad_file_ing1(make_app, sqlite_url):
    """The default configuration (content/ only): every bad file is named, not only the first."""
    app = make_app(sqlite_url)
    root = app.settings.root
    write_author(root)
    write_article(root, "good-one")
    write_article(root, "bad-one", title="")
    write_article(root, "bad-two", title="")
    r = invoke(app, "ingest", "--strict")
    assert r.exit_code == 1
    assert "bad-one.md" in r.output and "bad-two.md" in r.output and "strict mode wrote nothing" in r.output
    assert counts_of_writes(app)[:2] == (0, 0)


def test_strict_markdown_source_in_sources_is_strict_too_ing1(make_app, sqlite_url, server):
    """A `type = "markdown"` entry in [[sources]] beside a feed: --strict applies to it
    (before ING-1 the flag was ignored whenever [[sources]] was configured)."""
    url = json_feed(server, "/ok.json", [GOOD])
    app = make_app(
        sqlite_url, '\n[[sources]]\nname = "content"\ntype = "markdown"\n' + source_toml("notes", "feed", url)
    )
    root = app.settings.root
    write_author(root)
    write_article(root, "good-one")
    write_article(root, "bad-one", title="")
    r = invoke(app, "ingest", "--strict")
    assert r.exit_code == 1 and "bad-one.md" in r.output and "strict mode wrote nothing" in r.output
    assert counts_of_writes(app)[:2] == (0, 0)  # the good feed was not written either
    assert (state(app, "notes") or {}).get("cursor") in (None, {})


def test_strict_with_a_bad_item_in_one_source_writes_no_source_ing1(make_app, sqlite_url, server):
    good = json_feed(server, "/good.json", [GOOD])
    bad = json_feed(server, "/bad.json", [{**GOOD, "id": "other"}, BAD])
    app = make_app(sqlite_url, source_toml("a-good", "feed", good) + source_toml("z-bad", "feed", bad))
    r = invoke(app, "ingest", "--strict")
    assert r.exit_code == 1 and "bad-1" in r.output and "z-bad" in r.output
    assert counts_of_writes(app) == NOTHING
    r = invoke(app, "ingest", "--strict", "a-good")  # a clean source alone goes in
    assert r.exit_code == 0, r.output
    assert counts_of_writes(app)[0] == 1


def test_the_ingest_setting_makes_the_scheduled_stage_strict_for_feeds_too_ing1(make_app, sqlite_url, server):
    """`[ingest] strict = true` applies to every source in the `ingest` stage, not only
    to the Markdown folder."""
    from pipeline.content.sources.runner import ingest_stage

    url = json_feed(server, "/notes.json", [GOOD, BAD])
    app = make_app(sqlite_url, "[ingest]\nstrict = true\n" + source_toml("notes", "feed", url))
    counts = ingest_stage(app)
    assert counts["failed"] == 1 and counts["new"] == 0 and counts["sources_failed"] == 1
    assert counts_of_writes(app) == NOTHING
    assert "strict mode wrote nothing" in (state(app, "notes")["last_error"] or "")
