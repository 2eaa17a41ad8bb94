"""The public web version of an edition ("view in browser") and the archive page of
every edition, written into public/digests/."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.engine import Engine

from pipeline.config import Settings
from pipeline.content.editorial import approved_articles
from pipeline.digests import render
from pipeline.digests.editions import edition_label, get_edition, web_path
from pipeline.digests.parts import article_view
from pipeline.errors import NotFound
from pipeline.files import write_atomic
from pipeline.store.schema import digest_editions


def _web_env(settings: Settings):
    return render.envs(settings)[0]


def write_web_version(engine: Engine, settings: Settings, key: str) -> Path:
    """public/digests/<key>/index.html ("view in browser") and the archive page."""
    with engine.connect() as conn:
        edition = get_edition(conn, key)
        if edition is None:
            raise NotFound(f"no digest edition {key!r}")
        ids = list(edition["article_ids"] or [])
        articles = (
            {a.article_id: a for a in approved_articles(conn, settings) if a.article_id in set(ids)} if ids else {}
        )
    site = render.site_for_email(settings)
    views = [article_view(settings, site, articles[i]) for i in ids if i in articles]
    page = (
        _web_env(settings)
        .get_template("web/digest.html")
        .render(
            site=settings.site,
            edition={
                **edition,
                "label": edition_label(settings, edition["frequency"], edition["cutoff"], key),
                "url": f"{site.base_url}/{web_path(key)}",
            },
            articles=views,
            archive_url=f"{site.base_url}/digests/",
        )
    )
    path = settings.path("paths.public") / web_path(key) / "index.html"
    _write(path, page)
    write_archive(engine, settings)
    return path


def write_archive(engine: Engine, settings: Settings) -> Path:
    site = render.site_for_email(settings)
    with engine.connect() as conn:
        rows = (
            conn.execute(
                select(digest_editions)
                .where(digest_editions.c.frequency != "instant")
                .order_by(digest_editions.c.cutoff.desc(), digest_editions.c.id.desc())
            )
            .mappings()
            .all()
        )
    editions = [
        {
            "key": r["key"],
            "frequency": r["frequency"],
            "cutoff": r["cutoff"],
            "label": edition_label(settings, r["frequency"], r["cutoff"], r["key"]),
            "articles": len(r["article_ids"] or []),
            "url": f"{site.base_url}/{web_path(r['key'])}",
        }
        for r in rows
        if r["article_ids"]
    ]  # an edition that had nothing new has no page
    page = _web_env(settings).get_template("web/digests_index.html").render(site=settings.site, editions=editions)
    path = settings.path("paths.public") / "digests" / "index.html"
    _write(path, page)
    return path


def _write(path: Path, text: str) -> None:
    write_atomic(path, text)  # a unique temp name: concurrent chunks never collide
