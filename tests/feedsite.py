"""Helpers for the feed, page and serving tests: a small site, built."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from lxml import etree

from pipeline.content.editorial import approve
from pipeline.content.ingest import ingest
from pipeline.site.build import build

from .articles import write_article, write_author

NS = {
    "a": "http://www.w3.org/2005/Atom",
    "atom": "http://www.w3.org/2005/Atom",
    "content": "http://purl.org/rss/1.0/modules/content/",
    "dc": "http://purl.org/dc/elements/1.1/",
    "fh": "http://purl.org/syndication/history/1.0",
}

FEEDS_TOML = """
[feeds]
max_entries = {max_entries}
archive_size = {archive_size}
hubs = {hubs}
"""

TOPICS = ["habits", "sleep", "work", "focus", "family"]
CATEGORIES = ["wellbeing", "work"]


def feeds_toml(max_entries: int = 50, archive_size: int = 50, hubs: list[str] | None = None) -> str:
    return FEEDS_TOML.format(max_entries=max_entries, archive_size=archive_size, hubs=json.dumps(hubs or []))


def add_articles(app, count: int, *, start: int = 0, authors=("ana-lee", "bo-chen")) -> list[str]:
    """Write `count` articles (dates one day apart, tags and categories rotating)."""
    root = app.settings.root
    for slug in authors:
        write_author(root, slug, slug.replace("-", " ").title())
    slugs = []
    for i in range(start, start + count):
        slug = f"article-{i:03d}"
        tags = [TOPICS[i % len(TOPICS)], TOPICS[(i + 2) % len(TOPICS)]]
        write_article(
            root,
            slug,
            title=f"Article {i}",
            author=authors[i % len(authors)],
            date=f"2026-0{1 + (i // 28) % 9}-{1 + i % 28:02d}T08:00:00Z",
            tags=json.dumps(tags),
            category=CATEGORIES[i % len(CATEGORIES)],
            body=f"Paragraph one of article {i}.\n\nSee [the archive](/articles/) and more.\n",
        )
        slugs.append(slug)
    return slugs


def publish(app) -> None:
    """Ingest and approve everything waiting."""
    ingest(app)
    with app.engine.begin() as conn:
        approve(conn, editor="test", all_pending=True)


def build_site(app, count: int, **kwargs):
    add_articles(app, count, **kwargs)
    publish(app)
    return build(app)


def public(app) -> Path:
    return app.settings.path("paths.public")


def read(app, rel: str) -> bytes:
    return (public(app) / rel).read_bytes()


def xml(app, rel: str):
    return etree.fromstring(read(app, rel))


def feed_files(app) -> list[str]:
    root = public(app) / "feeds"
    return sorted(p.relative_to(public(app)).as_posix() for p in root.rglob("*") if p.is_file())


def tree_digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }
