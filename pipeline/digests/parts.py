"""What recipients share, rendered once per (edition, selection): the views the
templates get (articles, images fit for email, the preheader) and `PartRenderer`, which
renders a selection into a MIME skeleton (pipeline.digests.render) and stores it in
`digest_parts`, keeping the HTML part under the SIZE-1 limit."""

from __future__ import annotations

import logging
import textwrap

from markupsafe import Markup
from sqlalchemy import insert, select
from sqlalchemy.engine import Connection, Engine

from pipeline.config import Settings
from pipeline.content.editorial import ApprovedArticle
from pipeline.digests import render
from pipeline.digests.editions import _tz, edition_label
from pipeline.digests.selection import Selection
from pipeline.store.schema import digest_parts, revisions
from pipeline.timeutil import utcnow

log = logging.getLogger(__name__)


# --- views for templates ------------------------------------------------------------------


def _image_sizes(conn: Connection, articles: list[ApprovedArticle]) -> dict[int, tuple]:
    ids = [a.revision_id for a in articles if a.image]
    if not ids:
        return {}
    rows = conn.execute(
        select(revisions.c.id, revisions.c.image_width, revisions.c.image_height).where(revisions.c.id.in_(ids))
    )
    return {r.id: (r.image_width, r.image_height) for r in rows}


def article_view(settings: Settings, site: render.Site, a: ApprovedArticle, size: tuple | None = None) -> dict:
    local = a.published_at.astimezone(_tz(settings))
    width, height = size or (None, None)
    return {
        "id": a.article_id,
        "slug": a.slug,
        "title": a.title,
        "url": a.url,
        "summary": a.summary,
        "summary_wrapped": textwrap.fill(a.summary, 72, initial_indent="   ", subsequent_indent="   "),
        "author_name": a.author_name,
        "date_label": f"{local.day} {local:%B %Y}",
        "published_at": a.published_at,
        "reading_minutes": a.reading_minutes,
        "category": a.category,
        "tags": a.tags,
        "image": render.image_view(settings, site, a.image, a.image_alt, width, height),
    }


def _preheader(titles: list[str], more: int) -> str:
    text = " · ".join(titles)
    if more:
        text += f" · and {more} more"
    return text if len(text) <= 100 else text[:99].rsplit(" ", 1)[0] + "…"


def email_body(settings: Settings, site: render.Site, body_html: str) -> Markup:
    """Sanitised article HTML made fit for email: every <img> gets alt, width and height
    (IMG-1), and images an https site cannot link safely are dropped."""
    import lxml.html

    if not body_html.strip():
        return Markup("")
    fragments = lxml.html.fragments_fromstring(body_html)
    out = []
    for frag in fragments:
        if isinstance(frag, str):
            out.append(Markup.escape(frag))
            continue
        for img in list(frag.iter("img")) + ([frag] if frag.tag == "img" else []):
            view = render.image_view(
                settings, site, img.get("src", ""), img.get("alt", ""), _int(img.get("width")), _int(img.get("height"))
            )
            if view is None:
                if img is frag:
                    frag = None
                    break
                img.drop_tree()
                continue
            img.set("src", view["src"])  # e.g. the PNG copy of an SVG (issue 12)
            img.set("alt", view["alt"])
            img.set("width", str(view["width"]))
            img.set("height", str(view["height"]))
            img.set("style", f"display:block;border:0;width:{view['width']}px;height:auto;")
        if frag is not None:
            out.append(Markup(lxml.html.tostring(frag, encoding="unicode")))
    return Markup("").join(out)


def _int(value) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


# --- rendering parts -----------------------------------------------------------------------


class PartRenderer:
    """Renders and stores one part per (edition, selection), once."""

    def __init__(
        self,
        conn_settings: Settings,
        site: render.Site,
        edition: dict,
        articles: dict[int, ApprovedArticle],
        sizes: dict[int, tuple],
        web_url: str,
        engine: Engine | None = None,
    ):
        self.settings = conn_settings
        # chunks running in parallel: create parts get-or-create style (on PostgreSQL in
        # their own short transaction, so no chunk waits on another's open batch)
        self.engine = engine
        self.site = site
        self.edition = edition
        self.articles = articles
        self.sizes = sizes
        self.web_url = web_url
        self.ids: dict[str, int] = {}
        self.views: dict[int, dict] = {}
        self.rendered = 0

    def view(self, article_id: int) -> dict:
        v = self.views.get(article_id)
        if v is None:
            a = self.articles[article_id]
            v = self.views[article_id] = article_view(self.settings, self.site, a, self.sizes.get(a.revision_id))
            if self.settings.digests.track_clicks and self.edition.get("id"):
                # CLK-1: the link counts the click for this edition and goes to the article
                from pipeline.digests.clicks import click_url

                v["url"] = click_url(self.settings, self.edition["id"], article_id)
        return v

    def load_existing(self, conn: Connection) -> None:
        for r in conn.execute(
            select(digest_parts.c.id, digest_parts.c.variant).where(digest_parts.c.edition_id == self.edition["id"])
        ):
            self.ids[r.variant] = r.id

    def part_id(self, conn: Connection, selection: Selection) -> int:
        variant = selection.variant
        pid = self.ids.get(variant)
        if pid is None:
            part = self.render(selection)
            values = dict(
                edition_id=self.edition["id"],
                variant=variant,
                article_ids=list(part["article_ids"]),
                more_count=part["more_count"],
                subject=part["rendered"].subject,
                headers=part["rendered"].headers,
                text_part=part["rendered"].text_part,
                html_part=part["rendered"].html_part,
                html_bytes=part["rendered"].html_bytes,
                created_at=utcnow(),
            )
            if self.engine is None:
                pid = conn.execute(insert(digest_parts).values(**values)).inserted_primary_key[0]
            elif conn.dialect.name == "postgresql":
                with self.engine.begin() as own:
                    pid = self._get_or_create(own, values)
            else:  # SQLite: one writer at a time anyway, and this connection holds the write lock
                pid = self._get_or_create(conn, values)
            self.ids[variant] = pid
            self.rendered += 1
        return pid

    @staticmethod
    def _get_or_create(conn: Connection, values: dict) -> int:
        from sqlalchemy.dialects import postgresql, sqlite

        ins = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(digest_parts)
        pid = conn.execute(
            ins.values(**values)
            .on_conflict_do_nothing(index_elements=["edition_id", "variant"])
            .returning(digest_parts.c.id)
        ).scalar()
        if pid is None:  # another chunk rendered this variant first
            pid = conn.execute(
                select(digest_parts.c.id).where(
                    digest_parts.c.edition_id == values["edition_id"], digest_parts.c.variant == values["variant"]
                )
            ).scalar_one()
        return pid

    def render(self, selection: Selection) -> dict:
        """Render a selection; when the HTML is over the size limit (SIZE-1), list fewer
        articles and count the rest in 'and N more'."""
        ids = list(selection.article_ids)
        more = selection.more_count
        while True:
            rendered = self._render(ids, more)
            if rendered.html_bytes + render.PERSONAL_ALLOWANCE < render.MAX_HTML_BYTES:
                return {"rendered": rendered, "article_ids": ids, "more_count": more}
            if len(ids) <= 1:
                if self.edition["frequency"] == "instant" and not getattr(self, "_summary_only", False):
                    self._summary_only = True
                    continue
                raise render.DigestTooLarge(
                    f"edition {self.edition['key']}: one article alone renders {rendered.html_bytes:,} bytes of HTML, "
                    f"over the {render.MAX_HTML_BYTES:,} bytes Gmail shows unclipped (SIZE-1)",
                    hint="Shorten the article's summary or the email templates.",
                )
            log.info(
                "edition %s: %d articles render %d bytes; listing one fewer",
                self.edition["key"],
                len(ids),
                rendered.html_bytes,
            )
            ids = ids[:-1]
            more += 1

    def _render(self, ids: list[int], more: int) -> render.RenderedPart:
        views = [self.view(i) for i in ids]
        seed = f"{self.edition['key']}|{ids}|{more}"
        frequency = self.edition["frequency"]
        footer_reason = (
            f"You get this email because you subscribed to the {frequency} "
            f"{'alerts' if frequency == 'instant' else 'digest'} of {self.site.title}."
        )
        if frequency == "instant":
            a = self.articles[ids[0]]
            body = None if getattr(self, "_summary_only", False) else email_body(self.settings, self.site, a.body_html)
            context = {
                "a": views[0],
                "body": body,
                "web_url": a.url,
                "preheader": _preheader([a.summary], 0),
                "footer_reason": footer_reason,
            }
            return render.render_variant(
                self.settings,
                self.site,
                template="instant",
                subject_template="instant_subject.txt",
                context=context,
                seed=seed,
            )
        edition = {
            "key": self.edition["key"],
            "frequency": frequency,
            "web_url": self.web_url,
            "label": edition_label(self.settings, frequency, self.edition["cutoff"], self.edition["key"]),
        }
        context = {
            "edition": edition,
            "articles": views,
            "more_count": more,
            "more_url": self.web_url,
            "preheader": _preheader([v["title"] for v in views], more),
            "web_url": self.web_url,
            "footer_reason": footer_reason,
        }
        return render.render_variant(
            self.settings,
            self.site,
            template="digest",
            subject_template="digest_subject.txt",
            context=context,
            seed=seed,
        )
