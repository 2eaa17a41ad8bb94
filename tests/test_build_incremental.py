"""The incremental plan (pipeline.site.incremental) against the full plan.

The incremental plan renders only what a change can touch; the claim is that nothing
else could be stale. The random-walk test checks it the strong way: after every build
of a sequence of adds, edits, retractions, restores, retags, redates and author
renames, a full plan of the same database finds no output to render and none to
remove, and a forced full render at the end writes no byte."""

from __future__ import annotations

import json
import random

import pytest
from sqlalchemy import select

from pipeline.site import feeds
from pipeline.site.build import build
from pipeline.site.plan import STATE_ROWS, _stored, plan_full
from pipeline.store.schema import articles, feed_entries
from pipeline.timeutil import utcnow

from .articles import write_article, write_author
from .feedsite import CATEGORIES, TOPICS, public, publish, read

SMALL = """
[feeds]
max_entries = 3
archive_size = 2
listing_size = 2
"""
AUTHORS = ("ana-lee", "bo-chen", "cy-diaz")


def stale_under_a_full_plan(app) -> tuple[list[str], list[str]]:
    """(outputs a full plan would render, outputs it would remove), in a transaction
    rolled back: the full plan assigns positions as a build would."""
    with app.engine.connect() as conn:
        trans = conn.begin()
        try:
            stored = _stored(conn)
            plan = plan_full(conn, app.settings, feeds.hub_urls(app.settings), utcnow())
            stale = sorted(
                p for job in plan.jobs for p in job.paths if stored.get(p) is None or stored[p].deps != job.deps
            )
            extra = sorted(set(stored) - plan.keep - set(STATE_ROWS))
        finally:
            trans.rollback()
    return stale, extra


def write(app, rng: random.Random, slug: str) -> None:
    tags = rng.sample(TOPICS, rng.randint(0, 3))
    write_article(
        app.settings.root,
        slug,
        title=f"{slug} take {rng.randint(1, 10**6)}",
        author=rng.choice(AUTHORS),
        date=f"2026-{rng.randint(1, 9):02d}-{rng.randint(1, 28):02d}T08:00:00Z",
        tags=json.dumps(tags),
        category=rng.choice([*CATEGORIES, ""]),
        body=f"Body of {slug}, {rng.random()}.\n",
    )


@pytest.mark.parametrize("seed", [1, 2])
def test_after_every_incremental_build_a_full_plan_finds_nothing_to_do(make_app, db_url, seed):
    app = make_app(db_url, SMALL)
    root = app.settings.root
    rng = random.Random(seed)
    for slug in AUTHORS:
        write_author(root, slug, slug.replace("-", " ").title())
    live: list[str] = []
    gone: dict[str, bytes] = {}
    for i in range(8):
        write(app, rng, f"a-{i:02d}")
        live.append(f"a-{i:02d}")
    publish(app)
    assert build(app).plan == "full"
    hows = []
    for step in range(40):
        op = rng.choice(["add", "add", "edit", "edit", "retract", "restore", "author", "two"])
        if op == "add" or (op == "restore" and not gone) or (op in ("edit", "retract") and len(live) < 3):
            slug = f"b-{step:02d}"
            write(app, rng, slug)
            live.append(slug)
        elif op == "edit":
            write(app, rng, rng.choice(live))
        elif op == "retract":
            slug = live.pop(rng.randrange(len(live)))
            path = root / "content" / "articles" / f"{slug}.md"
            gone[slug] = path.read_bytes()
            path.unlink()
        elif op == "restore":
            slug = rng.choice(sorted(gone))
            (root / "content" / "articles" / f"{slug}.md").write_bytes(gone.pop(slug))
            live.append(slug)
        elif op == "author":
            who = rng.choice(AUTHORS)
            write_author(root, who, f"{who.title()} {step}")
        else:  # two changes in one build
            write(app, rng, rng.choice(live))
            write(app, rng, f"c-{step:02d}")
            live.append(f"c-{step:02d}")
        publish(app)
        report = build(app)
        assert not report.errors, (step, op, report.errors)
        hows.append(report.plan)
        assert stale_under_a_full_plan(app) == ([], []), (step, op, report.plan)
    assert hows.count("incremental") >= 30, hows  # the walk did test the incremental plan
    assert build(app, force=True).written == []  # the files are what a full render makes


def test_the_build_plans_in_full_whenever_the_incremental_plan_cannot_be_shown_complete(make_app, sqlite_url):
    app = make_app(sqlite_url, SMALL)
    root = app.settings.root
    write_author(root)
    for i in range(6):
        write_article(root, f"a-{i}", date=f"2026-01-0{i + 1}T08:00:00Z")
    publish(app)
    assert build(app).plan == "full"  # no earlier build

    write_article(root, "a-6", date="2026-01-07T08:00:00Z")
    publish(app)
    assert build(app).plan == "incremental"
    assert build(app).plan == ""  # nothing changed: nothing planned

    write_article(root, "a-7", date="2026-01-08T08:00:00Z")
    publish(app)
    (public(app) / "feeds" / "all.rss").unlink()  # a file gone: the full plan writes it again
    report = build(app)
    assert report.plan == "full" and "feeds/all.rss" in report.written

    config = root / "syndicate.toml"
    config.write_text(config.read_text().replace("listing_size = 2", "listing_size = 3"))
    from pipeline.app import App
    from pipeline.config import load_settings

    app = App(load_settings(config, env={}))
    write_article(root, "a-8", date="2026-01-09T08:00:00Z")
    publish(app)
    assert build(app).plan == "full"  # other settings: every output's salt changed

    for i in range(9, 9 + 25):  # more than 20 at once (and 2% of them): cheaper in full
        write_article(root, f"a-{i}", date="2026-02-01T08:00:00Z")
    publish(app)
    assert build(app).plan == "full"

    write_author(root, "ana-lee", "Ana Lee-Smith")
    publish(app)
    assert build(app).plan == "full"  # every document of her feed carries her name

    with app.engine.connect() as conn:  # the articles on the subscription document and the newest archive
        newest = conn.execute(
            select(articles.c.slug)
            .join(feed_entries, feed_entries.c.article_id == articles.c.id)
            .where(feed_entries.c.feed_key == "all")
            .order_by(feed_entries.c.seq.desc())
            .limit(5)
        ).scalars()
        for slug in newest:  # ... leave
            (root / "content" / "articles" / f"{slug}.md").unlink()
    publish(app)
    report = build(app)
    assert report.plan == "incremental" and not report.errors
    assert stale_under_a_full_plan(app) == ([], [])
    assert b"<entry>" not in read(app, "feeds/all.atom")


def test_after_a_build_with_an_error_the_next_build_plans_in_full(make_app, sqlite_url, tmp_path):
    """A failed output is tried again: the state rows are only written by a build
    without errors, and without them the plan is full."""
    import re

    from pipeline.app import App
    from pipeline.config import load_settings

    templates = tmp_path / "custom"
    (templates / "web").mkdir(parents=True)
    article = templates / "web" / "article.html"
    article.write_text("{% extends 'web/base.html' %}{% block content %}{{ article.title | nosuch }}{% endblock %}")
    config = make_app(sqlite_url, SMALL).settings.root / "syndicate.toml"
    config.write_text(re.sub(r'templates = ".*"', f'templates = "{templates}"', config.read_text(), count=1))
    app = App(load_settings(config, env={}))
    write_author(app.settings.root)
    write_article(app.settings.root, "one")
    publish(app)
    assert build(app).errors
    with app.engine.connect() as conn:
        assert not set(_stored(conn)) & set(STATE_ROWS)
    write_article(app.settings.root, "two", date="2026-10-02T08:00:00Z")
    publish(app)
    report = build(app)
    assert report.plan == "full" and len(report.errors) == 2  # both article pages, the old one again


def test_a_new_article_does_not_rewrite_an_archive_every_article_left(make_app, sqlite_url):
    """An emptied archive was dated by its feed's newest update, so every new article
    rewrote it, sealed or not (found by the random walk above). It is dated by the epoch
    now: it has no entry to take a date from, and its bytes hang on nothing elsewhere."""
    app = make_app(sqlite_url, SMALL)  # max_entries 3, archive_size 2
    root = app.settings.root
    write_author(root)
    for i in range(8):
        write_article(root, f"a-{i}", date=f"2026-01-0{i + 1}T08:00:00Z")
    publish(app)
    build(app)  # "all": positions 1..8; archive 1 = {1, 2} (sealed), 2 = {3, 4} (sealed), 3 = {5}
    with app.engine.connect() as conn:
        first = conn.execute(
            select(articles.c.slug)
            .join(feed_entries, feed_entries.c.article_id == articles.c.id)
            .where(feed_entries.c.feed_key == "all", feed_entries.c.seq <= 2)
        ).scalars()
        for slug in first:
            (root / "content" / "articles" / f"{slug}.md").unlink()
    publish(app)
    build(app)
    emptied = read(app, "feeds/archive/all/1.atom").decode()
    assert "<entry>" not in emptied and "<updated>1970-01-01T00:00:00Z</updated>" in emptied
    assert b"1970" in read(app, "feeds/archive/all/1.rss")  # lastBuildDate

    write_article(root, "a-9", date="2026-02-01T08:00:00Z")
    publish(app)
    report = build(app)
    assert "feeds/all.atom" in report.written
    assert not [p for p in report.written if p.startswith("feeds/archive/all/1.")]
    assert stale_under_a_full_plan(app) == ([], [])


def test_cut_spans_are_the_positions_of_the_documents_merged():
    """The incremental plan reads only these positions (Cut.spans): the subscription
    document's (archived, total], archive k's ((k-1)*size, k*size], adjacent merged."""
    from pipeline.site.plan import Cut

    rule = Cut(max_entries=3, archive_size=2)
    archived, pages = rule.cut(10)
    assert (archived, pages) == (7, 4)
    assert rule.spans({None}, archived, 10) == [(7, 10)]
    assert rule.spans({None, 4, 3}, archived, 10) == [(4, 10)]  # archive 4 (6, 8] overlaps the newest
    assert rule.spans({None, 1, 4}, archived, 10) == [(0, 2), (6, 10)]
    held = {seq: rule.page_of(seq, archived) for seq in range(1, 11)}
    for pages_ in ({None}, {1}, {2, None}, {1, 3}):
        spans = rule.spans(pages_, archived, 10)
        inside = {seq for seq in held if any(lo < seq <= hi for lo, hi in spans)}
        assert {seq for seq, page in held.items() if page in pages_} <= inside
