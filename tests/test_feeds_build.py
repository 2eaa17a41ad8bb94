"""The build: RFC 5005 archives (PAGE-2/3), incremental writes, byte-identical rebuilds,
dry runs; on every database."""

from __future__ import annotations

import json
import os

import feedparser
import pytest
from lxml import etree

from pipeline.site.build import MANIFEST, build
from pipeline.site.pages import listing_path

from .feedsite import NS, add_articles, build_site, feeds_toml, public, publish, read, tree_digest


def walk_archive_chain(app, fmt: str, key: str = "all") -> list[list[str]]:
    """Follow prev-archive (next_url in JSON Feed) from the subscription document; the
    ids of each document, newest document first."""
    base = app.settings.site.base_url.rstrip("/") + "/"
    url = f"{base}feeds/{key}.{fmt}"
    docs, seen = [], set()
    while url:
        assert url not in seen, f"loop at {url}"
        seen.add(url)
        data = read(app, url[len(base) :])
        if fmt == "json":
            feed = json.loads(data)
            docs.append([i["id"] for i in feed["items"]])
            url = feed.get("next_url")
        else:
            root = etree.fromstring(data)
            if fmt == "atom":
                docs.append(root.xpath("a:entry/a:id/text()", namespaces=NS))
                links = root.xpath("a:link[@rel='prev-archive']/@href", namespaces=NS)
            else:
                docs.append(root.xpath("channel/item/guid/text()"))
                links = root.xpath("channel/atom:link[@rel='prev-archive']/@href", namespaces=NS)
            assert all(link.startswith("https://") for link in links)  # PAGE-2: absolute
            url = links[0] if links else None
    return docs


def test_page_3_archive_chain_walks_back_to_every_entry_without_duplicates(make_app, db_url):
    app = make_app(db_url, feeds_toml(max_entries=3, archive_size=2))
    build_site(app, 11)
    expected = {f"https://news.example.com/articles/article-{i:03d}/" for i in range(11)}
    for fmt in ("atom", "rss", "json"):
        docs = walk_archive_chain(app, fmt)
        ids = [i for doc in docs for i in doc]
        assert len(ids) == len(set(ids)) == 11 and set(ids) == expected, fmt
        assert len(docs[0]) == 3  # the subscription document holds max_entries
        assert [len(d) for d in docs[1:]] == [2, 2, 2, 2]  # archives of archive_size
    # every feed, not only "all": tag feeds walk back completely too
    tag_ids = [i for doc in walk_archive_chain(app, "atom", "tags/habits") for i in doc]
    assert len(tag_ids) == len(set(tag_ids))
    assert {p.id for p in feedparser.parse(read(app, "feeds/tags/habits.atom")).entries} <= set(tag_ids)


def test_adding_an_article_touches_only_its_feeds_and_pages_and_never_a_sealed_archive(make_app, db_url):
    app = make_app(db_url, feeds_toml(max_entries=3, archive_size=2))
    build_site(app, 10)
    manifest = json.loads(read(app, MANIFEST))["immutable"]
    assert "feeds/archive/all/3.atom" in manifest and "feeds/archive/all/4.atom" not in manifest  # 4: the newest, open
    sealed = {rel: (public(app) / rel).stat().st_mtime_ns for rel in manifest}
    assert sealed

    slug = add_articles(app, 1, start=10)[0]  # tags habits+work (10 % 5 = 0), category wellbeing, ana-lee
    publish(app)
    report = build(app)
    keys = {"all", "tags/habits", "tags/work", "categories/wellbeing", "authors/ana-lee"}
    listings = {listing_path(k).removesuffix("/index.html") for k in keys}  # "all": articles/
    allowed = {"index.html", f"articles/{slug}/index.html"} | {f"{k}/index.html" for k in listings}
    for rel in report.written:
        if rel.startswith("feeds/"):
            key = (
                rel[len("feeds/archive/") :].rsplit("/", 1)[0]
                if rel.startswith("feeds/archive/")
                else rel[6:].rsplit(".", 1)[0]
            )
            assert key in keys, rel
        else:  # a listing's archive pages are cut like its feed's: only the open one changes
            assert rel in allowed or rel.split("/page/")[0] in listings, rel
    assert {f"feeds/{k}.{fmt}" for k in keys for fmt in ("atom", "rss", "json")} <= set(report.written)
    assert not set(report.written) & set(sealed)  # PAGE-3: full archives never rewritten
    for rel, mtime in sealed.items():
        assert (public(app) / rel).stat().st_mtime_ns == mtime
    assert set(report.changed_topics) == {
        f"https://news.example.com/feeds/{k}.{fmt}" for k in keys for fmt in ("atom", "rss", "json")
    }


def test_rebuild_with_nothing_changed_writes_nothing_and_a_fresh_build_is_byte_identical(make_app, db_url, tmp_path):
    """HTTP-1, FG-6: the same approved content gives byte-identical files, also from
    an empty database and an empty public/."""
    app = make_app(db_url, feeds_toml(max_entries=3, archive_size=2))
    first = build_site(app, 7)
    assert first.written and not first.errors
    again = build(app)
    assert again.written == [] and again.removed == [] and again.rendered == 0 and again.pings == 0
    other = make_app(
        f"sqlite:///{tmp_path / 'other.db'}", feeds_toml(max_entries=3, archive_size=2), root=tmp_path / "other"
    )
    build_site(other, 7)
    assert tree_digest(public(app)) == tree_digest(public(other))


def test_dry_run_writes_nothing(make_app, db_url):
    app = make_app(db_url)
    add_articles(app, 3)
    publish(app)
    report = build(app, dry_run=True)
    assert report.written and not any(public(app).rglob("*.atom"))
    real = build(app)
    assert sorted(real.written) == sorted(report.written)


def test_a_broken_template_is_reported_and_the_rest_still_builds(make_app, sqlite_url, tmp_path):
    """A bad item is recorded and skipped; the batch goes on (and is retried next time)."""
    import re

    from pipeline.app import App
    from pipeline.config import load_settings

    templates = tmp_path / "custom"
    (templates / "web").mkdir(parents=True)
    (templates / "web" / "article.html").write_text(
        "{% extends 'web/base.html' %}{% block content %}{{ article.title | nosuchfilter }}{% endblock %}"
    )
    config = make_app(sqlite_url).settings.root / "syndicate.toml"
    config.write_text(re.sub(r'templates = ".*"', f'templates = "{templates}"', config.read_text(), count=1))
    app = App(load_settings(config, env={}))
    add_articles(app, 2)
    publish(app)
    report = build(app)
    assert len(report.errors) == 2 and all("articles/" in e for e in report.errors)
    assert "feeds/all.atom" in report.written
    assert not (public(app) / "articles" / "article-000" / "index.html").exists()
    assert len(build(app).errors) == 2  # not recorded as built: tried again


def test_a_deleted_output_is_written_again_and_nothing_else(make_app, db_url):
    app = make_app(db_url)
    build_site(app, 4)
    (public(app) / "feeds" / "all.rss").unlink()
    (public(app) / "articles" / "article-002" / "index.html").unlink()
    report = build(app)
    assert sorted(report.written) == ["articles/article-002/index.html", "feeds/all.rss"]
    assert report.pings == 0  # the bytes are what the hubs already know
    assert build(app).written == []


def test_an_author_rename_rebuilds_only_that_authors_outputs(make_app, db_url):
    from .articles import write_author

    app = make_app(db_url)
    build_site(app, 4)  # ana-lee: article-000 and -002, bo-chen: -001 and -003
    write_author(app.settings.root, "bo-chen", "Bo Chen-Li")
    publish(app)
    report = build(app)
    assert "authors/bo-chen/index.html" in report.written and "feeds/authors/bo-chen.atom" in report.written
    assert "articles/article-001/index.html" in report.written
    assert "articles/article-000/index.html" not in report.written
    assert "feeds/authors/ana-lee.atom" not in report.written
    assert "Bo Chen-Li" in read(app, "feeds/all.atom").decode()


@pytest.mark.xdist_group("processes")
def test_a_build_rendered_by_worker_processes_gives_the_same_files(make_app, sqlite_url, tmp_path, monkeypatch):
    """Big builds render in forked workers (feeds.build_processes); same bytes, same report."""
    import threading

    import pipeline.site.build as build_module

    if threading.active_count() > 1:
        import pytest

        pytest.skip("worker processes are only used from a single-threaded process")
    serial = make_app(sqlite_url, "\n[feeds]\nbuild_processes = 1\nmax_entries = 3\narchive_size = 2\n")
    one = build_site(serial, 6)
    monkeypatch.setattr(build_module, "PARALLEL_MIN_JOBS", 4)
    forked = make_app(
        f"sqlite:///{tmp_path / 'forked.db'}",
        "\n[feeds]\nbuild_processes = 2\nmax_entries = 3\narchive_size = 2\n",
        root=tmp_path / "forked",
    )
    assert build_module._processes(forked.settings, 40) == 2
    from pipeline.site import feeds

    made = tmp_path / "entries-made"
    real = feeds._feed_entry

    def counting(settings, article):  # the forked workers inherit this, and append to one file
        with open(made, "a") as fh:
            fh.write(f"{os.getpid()} {article.slug}\n")
        return real(settings, article)

    monkeypatch.setattr(feeds, "_feed_entry", counting)
    two = build_site(forked, 6)
    assert sorted(one.written) == sorted(two.written) and not two.errors
    assert tree_digest(public(serial)) == tree_digest(public(forked))
    # FG-12: each article's entries are made once, in one worker, however many feed
    # documents (and workers) it is spliced into.
    slugs = [line.split()[1] for line in made.read_text().splitlines()]
    assert sorted(slugs) == sorted(set(slugs)) and len(slugs) == 6


# --- issue 19 item 5: only images an approved revision references, never outside content/ --

SVG = '<svg xmlns="http://www.w3.org/2000/svg" width="2" height="2"/>'


def _images_site(app):
    from .articles import write_article, write_author

    root = app.settings.root
    images = root / "content" / "images"
    images.mkdir(parents=True)
    for name in ("lead.svg", "in-body.svg", "unused.svg", "draft-only.svg", "with space.svg"):
        (images / name).write_text(SVG)
    (images / "key.png").symlink_to(root / "var" / "secret_key")  # the token-signing key
    (images / "linked-dir").symlink_to(root / "var", target_is_directory=True)
    write_author(root)
    write_article(
        root,
        "with-images",
        extra="image: images/lead.svg\nimage_alt: Lead\n",
        body="Text.\n\n![in body](../images/in-body.svg) ![spaced](images/with%20space.svg)\n",
    )
    publish(app)
    write_article(root, "a-draft", status="draft", extra="image: images/draft-only.svg\nimage_alt: D\n")
    from pipeline.content.ingest import ingest

    ingest(app)
    return root


def test_issue19_5_build_publishes_only_images_approved_revisions_reference(make_app, db_url):
    app = make_app(db_url)
    root = _images_site(app)
    report = build(app)
    assert not report.errors, report.errors
    published = sorted(p.relative_to(public(app)).as_posix() for p in (public(app) / "images").rglob("*"))
    assert published == ["images/in-body.svg", "images/lead.svg", "images/with space.svg"]
    assert read(app, "images/lead.svg") == SVG.encode()
    assert not (public(app) / "var").exists()
    secret = (root / "var" / "secret_key").read_bytes()
    assert not any(p.is_file() and secret in p.read_bytes() for p in public(app).rglob("*"))
    from starlette.testclient import TestClient

    from pipeline.site.serving import make_public_app

    client = TestClient(make_public_app(app.settings))
    assert client.get("/images/lead.svg").status_code == 200
    assert client.get("/images/with%20space.svg").status_code == 200
    assert (
        'src="https://news.example.com/images/with%20space.svg"'
        in read(app, "articles/with-images/index.html").decode()
    )
    for path in ("/images/key.png", "/images/unused.svg", "/images/draft-only.svg", "/images/linked-dir/secret_key"):
        assert client.get(path).status_code == 404, path


def test_issue19_5_an_image_swapped_for_a_symlink_to_the_secret_key_is_refused_and_removed(make_app, db_url):
    app = make_app(db_url)
    root = _images_site(app)
    assert not build(app).errors
    lead = root / "content" / "images" / "lead.svg"
    lead.unlink()
    lead.symlink_to(root / "var" / "secret_key")  # after approval: the file is not what was reviewed
    report = build(app)
    (error,) = report.errors
    assert error.startswith("images/lead.svg: image of with-images") and "outside" in error
    assert not (public(app) / "images" / "lead.svg").exists()
    assert (public(app) / "images" / "in-body.svg").exists()
    secret = (root / "var" / "secret_key").read_bytes()
    assert not any(p.is_file() and secret in p.read_bytes() for p in public(app).rglob("*"))
    assert build(app).errors == report.errors  # reported on every build until fixed, never cached
    lead.unlink()
    lead.write_text(SVG)
    assert not build(app).errors and read(app, "images/lead.svg") == SVG.encode()


def test_issue19_5_an_image_no_approved_revision_references_any_more_leaves_public(make_app, db_url):
    from .articles import write_article

    app = make_app(db_url)
    root = _images_site(app)
    assert not build(app).errors
    write_article(root, "with-images", body="No pictures now.\n")
    publish(app)
    assert not build(app).errors
    assert not (public(app) / "images").exists()


@pytest.mark.xdist_group("processes")
def test_a_broken_template_in_a_forked_build_is_reported_and_leaves_no_empty_folder(
    make_app, sqlite_url, tmp_path, monkeypatch
):
    """The forked build compiles the templates before it forks and makes the output
    folders while its workers render: a template that does not compile is still each
    page's own error (not the build's), and a page that failed leaves no empty folder."""
    import re
    import threading

    import pipeline.site.build as build_module
    from pipeline.app import App
    from pipeline.config import load_settings

    if threading.active_count() > 1:
        pytest.skip("worker processes are only used from a single-threaded process")
    monkeypatch.setattr(build_module, "PARALLEL_MIN_JOBS", 4)
    templates = tmp_path / "custom"
    (templates / "web").mkdir(parents=True)
    (templates / "web" / "article.html").write_text(
        "{% extends 'web/base.html' %}{% block content %}{{ article.title | nosuchfilter }}{% endblock %}"
    )
    config = make_app(sqlite_url, "\n[feeds]\nbuild_processes = 2\n").settings.root / "syndicate.toml"
    config.write_text(re.sub(r'templates = ".*"', f'templates = "{templates}"', config.read_text(), count=1))
    app = App(load_settings(config, env={}))
    assert build_module._processes(app.settings, 40) == 2
    add_articles(app, 6)
    publish(app)
    report = build(app)
    assert len(report.errors) == 6 and all("articles/" in e for e in report.errors)
    assert "feeds/all.atom" in report.written
    # no empty articles/<slug>/ folders; articles/index.html is the listing of every article
    assert sorted(p.name for p in (public(app) / "articles").iterdir()) == ["index.html"]


def test_a_build_reads_its_templates_once_and_the_next_build_sees_an_edit(make_app, sqlite_url, tmp_path, monkeypatch):
    """A build renders every page from the templates as they were when it planned
    (their fingerprint is in every page's dependency hash): loaded once, never stat'ed
    again per page (before, Jinja2 checked each template's mtime on every render: 83
    stats for these pages). A template edited between two builds in the same process (the
    scheduler's) is what the second build renders."""
    import re

    from pipeline.app import App
    from pipeline.config import load_settings

    templates = tmp_path / "custom"
    (templates / "web").mkdir(parents=True)
    article = templates / "web" / "article.html"
    article.write_text("{% extends 'web/base.html' %}{% block content %}<p>one {{ article.title }}</p>{% endblock %}")
    config = make_app(sqlite_url).settings.root / "syndicate.toml"
    config.write_text(re.sub(r'templates = ".*"', f'templates = "{templates}"', config.read_text(), count=1))
    app = App(load_settings(config, env={}))
    add_articles(app, 30)
    publish(app)

    stats = []
    real_getmtime = os.path.getmtime

    def counting(path):
        if str(path).endswith(".html"):
            stats.append(path)
        return real_getmtime(path)

    monkeypatch.setattr(os.path, "getmtime", counting)
    report = build(app)
    assert not report.errors and len([p for p in report.written if p.startswith("articles/article-")]) == 30
    assert len(stats) <= 8, f"{len(stats)} template stats for 30 article pages"
    page = public(app) / "articles" / "article-000" / "index.html"
    assert "<p>one " in page.read_text()

    article.write_text("{% extends 'web/base.html' %}{% block content %}<p>two {{ article.title }}</p>{% endblock %}")
    again = build(app)
    assert not again.errors and "articles/article-000/index.html" in again.written
    assert "<p>two " in page.read_text()


@pytest.mark.xdist_group("processes")
def test_after_a_forked_build_the_next_build_in_the_process_compiles_no_template(make_app, sqlite_url, monkeypatch):
    """A build that renders in forked workers compiles the site's templates, and the
    ones they extend (base.html), in the parent before it forks: the workers inherit
    them, and the next build in the same process (the scheduler's add-one rebuild,
    rendered in this process) compiles nothing. Before, base.html was compiled in each
    worker and again by the next build."""
    import threading

    import jinja2

    import pipeline.site.build as build_module

    if threading.active_count() > 1:
        pytest.skip("worker processes are only used from a single-threaded process")
    monkeypatch.setattr(build_module, "PARALLEL_MIN_JOBS", 20)
    app = make_app(sqlite_url, "\n[feeds]\nbuild_processes = 2\n")
    assert build_module._processes(app.settings, 40) == 2  # the first build forks
    first = build_site(app, 12)
    assert not first.errors and len(first.written) >= 20
    compiled = []
    real = jinja2.Environment.compile

    def counting(self, source, name=None, filename=None, raw=False, defer_init=False):
        compiled.append(name)
        return real(self, source, name, filename, raw, defer_init)

    monkeypatch.setattr(jinja2.Environment, "compile", counting)
    add_articles(app, 1, start=12)
    publish(app)
    again = build(app)
    assert not again.errors and "articles/article-012/index.html" in again.written
    assert compiled == []


PLAN_DEPS = """
import json, sys
from pipeline.app import App
from pipeline.config import load_settings
from pipeline.site import feeds, pages, plan

app = App(load_settings(sys.argv[1], env={}))
s = app.settings
with app.engine.connect() as conn:
    metas, positions, hubs = plan.load_meta(conn, s), plan._positions(conn), feeds.hub_urls(s)
    p = plan.Planner(s, metas, positions, hubs)
    keys = sorted(set(positions) | {"all"})
    jobs = [j for k in keys for j in p.feed_jobs(k)] + [p.article_job(m) for m in metas]
    jobs += [j for k in keys if k != "all" for j in p.listing_jobs(k)]
    jobs.append(p.index_job(pages.topic_list(s, metas), pages.subscribe_form(s, metas)))
print(json.dumps({path: j.deps for j in jobs for path in j.paths}))
"""


def test_dependency_hashes_are_the_same_in_every_process(make_app, sqlite_url):
    """An output's dependency hash must not depend on the process that computes it
    (str hashing is randomised per process: a set's order, an object's id in a repr).
    Otherwise every `syndicate build`, each a new process, would render everything
    again. The hashes a build stored equal those planned by processes with other
    PYTHONHASHSEEDs."""
    import subprocess
    import sys

    from sqlalchemy import select

    from pipeline.store.schema import build_outputs

    app = make_app(sqlite_url, feeds_toml(max_entries=4, archive_size=3))
    add_articles(app, 12)
    publish(app)
    assert not build(app).errors
    with app.engine.connect() as conn:
        stored = {r.path: r.deps for r in conn.execute(select(build_outputs.c.path, build_outputs.c.deps))}
    for seed in ("1", "4242"):
        out = subprocess.run(
            [sys.executable, "-c", PLAN_DEPS, str(app.settings.root / "syndicate.toml")],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        )
        planned = json.loads(out.stdout)
        assert len(planned) > 40
        assert {path: stored[path] for path in planned} == planned


def test_subscription_documents_are_stored_with_the_sha256_of_their_bytes_and_other_files_are_not_hashed(
    make_app, db_url
):
    """WS-3: a hub is pinged when a subscription document's bytes change, which the build
    learns from the sha256 it stores. Nothing compares the hash of any other file (article
    pages, listings, archives: 1.3 GB at 10,000 articles), so it is not computed: ''.
    After an edit, the feeds whose bytes changed are exactly the topics reported."""
    import hashlib

    from sqlalchemy import select

    from pipeline.store.schema import build_outputs

    app = make_app(db_url, feeds_toml(max_entries=3, archive_size=2))
    build_site(app, 8)

    def rows() -> dict[str, tuple[str, str]]:
        with app.engine.connect() as conn:
            q = select(build_outputs.c.path, build_outputs.c.kind, build_outputs.c.sha256)
            return {r.path: (r.kind, r.sha256) for r in conn.execute(q) if r.kind != "state"}

    def subscription(path: str) -> bool:
        return path.startswith("feeds/") and not path.startswith("feeds/archive/") and not path.endswith(".html")

    stored = rows()
    topics = {p for p in stored if subscription(p)}
    assert {"feeds/all.atom", "feeds/all.rss", "feeds/all.json", "feeds/tags/habits.atom"} <= topics
    assert any(kind == "archive" for kind, _ in stored.values())
    for path, (_kind, sha) in stored.items():
        expected = hashlib.sha256(read(app, path)).hexdigest() if path in topics else ""
        assert sha == expected, path

    before = {p: read(app, p) for p in topics}
    add_articles(app, 1, start=8)
    publish(app)
    report = build(app)
    changed = {p for p in topics if read(app, p) != before[p]}
    assert changed and changed != topics
    assert sorted(report.changed_topics) == sorted(f"https://news.example.com/{p}" for p in changed)
    for path, (_kind, sha) in rows().items():
        assert sha == (hashlib.sha256(read(app, path)).hexdigest() if path in topics else ""), path
