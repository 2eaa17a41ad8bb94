"""Golden files: the feeds and pages of a small fixed site, byte for byte.

Nothing is volatile: every date comes from the articles (never "now"), so no
normalising is needed. After a deliberate change of the output, regenerate and
review the diff:

    make goldens        # SYNDICATE_REGENERATE_GOLDENS=1 pytest -k golden
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from pipeline.site.build import build

from .articles import write_article, write_author
from .feedsite import feeds_toml, public, publish

GOLDEN = Path(__file__).parent / "data" / "golden" / "site"
REGENERATE = os.environ.get("SYNDICATE_REGENERATE_GOLDENS") == "1"
FILES = [
    "feeds/all.atom",
    "feeds/all.rss",
    "feeds/all.json",
    "feeds/archive/all/1.atom",
    "feeds/archive/all/1.rss",
    "feeds/archive/all/1.json",
    "feeds/tags/sleep.atom",
    "feeds/tags/sleep.rss",
    "feeds/tags/sleep.json",
    "feeds/authors/ana-lee.atom",
    "index.html",
    "articles/rest-and-work/index.html",
    "tags/sleep/index.html",
    "authors/ana-lee/index.html",
    "feeds/index.html",
]


@pytest.fixture
def golden_site(make_app, sqlite_url):
    app = make_app(sqlite_url, feeds_toml(max_entries=2, archive_size=1, hubs=["https://hub.example.net/"]))
    root = app.settings.root
    write_author(root, "ana-lee", "Ana Lee")
    write_author(root, "bo-chen", "Bo Chen")
    images = root / "content" / "images"
    images.mkdir(parents=True)
    (images / "moon.svg").write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"><circle cx="4" cy="4" r="3"/></svg>\n'
    )
    write_article(
        root,
        "small-rituals",
        title="Small Rituals",
        author="ana-lee",
        date="2026-09-01T08:00:00Z",
        tags="[relationships, habits]",
        category="relationships",
    )
    write_article(
        root,
        "sleep-debt",
        title="Sleep Debt & You",
        author="bo-chen",
        date="2026-09-05T21:30:00Z",
        tags="[sleep, habits]",
        category="wellbeing",
        extra="image: images/moon.svg\nimage_alt: A small moon\nsummary: Sleep keeps accounts.\n",
        body="Most of us borrow from sleep.\n\n## Paying it back\n\nSlowly, with [a plan](/articles/small-rituals/).\n",
    )
    write_article(
        root,
        "rest-and-work",
        title="Rest <and> Work",
        author="ana-lee",
        date="2026-09-10T12:00:00Z",
        tags="[sleep, work]",
        category="work",
        extra="updated: 2026-09-12T09:00:00Z\n",
        body="Rest is part of the work.\n\n> A quote, *emphasised*.\n\n1. one\n2. two\n",
    )
    publish(app)
    report = build(app)
    assert not report.errors
    return app


def normalise(rel: str, data: bytes) -> bytes:
    """Pages inline the shared stylesheet (templates/web/style.css, owned by the web
    service); it is replaced by a marker so a CSS change does not touch these goldens."""
    if rel.endswith(".html"):
        data = re.sub(rb"(?s)<style>.*?</style>", b"<style>/* templates/web/style.css */</style>", data)
    return data


def test_golden_site_feeds_and_pages(golden_site):
    out = public(golden_site)
    mismatched = []
    for rel in FILES:
        data = normalise(rel, (out / rel).read_bytes())
        golden = GOLDEN / rel
        if REGENERATE:
            golden.parent.mkdir(parents=True, exist_ok=True)
            golden.write_bytes(data)
            continue
        assert golden.exists(), f"no golden file {golden}; run `make goldens`"
        if golden.read_bytes() != data:
            mismatched.append(rel)
    assert not mismatched, (
        f"output differs from tests/data/golden/site for {mismatched}; if intended, run `make goldens` and review the diff"
    )


def test_golden_feeds_parse_strictly_and_rss_descriptions_are_inert_html():
    """The stored goldens themselves: well-formed XML (no recovering parser), valid JSON,
    and every RSS <description> is HTML with no element in it (plain text, escaped once:
    issue 19 item 6), so a regenerated golden cannot lock in live markup."""
    import json

    import lxml.html
    from lxml import etree

    strict = etree.XMLParser(recover=False, resolve_entities=False, no_network=True)
    for rel in FILES:
        path = GOLDEN / rel
        assert path.exists(), f"no golden file {path}; run `make goldens`"
        if rel.endswith((".atom", ".rss")):
            root = etree.fromstring(path.read_bytes(), strict)
            for description in root.xpath("channel/item/description/text()"):
                fragment = lxml.html.fragment_fromstring(description, create_parent="div")
                assert len(fragment) == 0, (rel, description)
        elif rel.endswith(".json"):
            json.loads(path.read_bytes())
