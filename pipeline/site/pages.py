"""Static HTML pages in public/: the home page, one page per article, and a listing
page per tag, category and author. Rendered with the Jinja2 templates in
`templates/web/` (autoescape on; the sanitised article body is the only Markup),
which the web service shares. Dates shown to people are formatted here, not with
strftime's locale-dependent names, so pages are the same bytes in any locale.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections import Counter

import jinja2
import jinja2.meta
from markupsafe import Markup

from pipeline import templating
from pipeline.site import feeds
from pipeline.templating import human_date

log = logging.getLogger(__name__)


_pinned: tuple | None = None  # (settings, environment) while a build runs (see `pinned`)


def environment(settings) -> jinja2.Environment:
    if _pinned is not None and _pinned[0] is settings:
        return _pinned[1]
    return templating.environment(settings, html=True)


_pinned_envs: dict[tuple, jinja2.Environment] = {}  # the last build's, for the next one


@contextlib.contextmanager
def pinned(settings, fingerprint: str):
    """While a build renders: the site's templates as they were when the build planned
    (`fingerprint` is `template_fingerprint`, part of every page's dependency hash),
    every one loaded at the start and never checked for changes on disk again. Every
    page of a build comes from the same templates, and a page costs no stat of its
    templates nor a lookup of the template folders (Jinja2's mtime check on every render, and two stats for the folders). The
    environment is kept for the next build with the same fingerprint; one whose files
    changed while it loaded them is used for this build only."""
    global _pinned
    dirs = tuple(str(d) for d in templating.template_dirs(settings))
    env = _pinned_envs.get((dirs, fingerprint))
    if env is None:
        env = templating.new_environment(dirs, True, False, True, auto_reload=False)
        _load(env, SITE_TEMPLATES, references=False)  # the ones they extend and include load on first use
        if template_fingerprint(settings) == fingerprint:
            _pinned_envs.clear()
            _pinned_envs[(dirs, fingerprint)] = env
    before = _pinned
    _pinned = (settings, env)
    try:
        yield
    finally:
        _pinned = before


def template_fingerprint(settings) -> str:
    """A hash of every web template that may be used: a changed template re-renders pages."""
    h = hashlib.sha256()
    for d in templating.template_dirs(settings):
        web = d / "web"
        if web.is_dir():
            for p in sorted(web.rglob("*")):
                if p.is_file():
                    h.update(p.relative_to(d).as_posix().encode())
                    h.update(p.read_bytes())
    return h.hexdigest()


SITE_TEMPLATES = ("web/article.html", "web/listing.html", "web/index.html", "web/feeds_index.html")


def _load(env: jinja2.Environment, names, *, references: bool) -> None:
    """Load `names` and, with `references`, every template they extend, include or
    import (recursively).
    Jinja2 loads a parent template only when a page is first rendered: a build that
    renders in forked workers would otherwise compile `base.html` once in each worker
    and again when the next build, in the same process (the scheduler), renders in
    this one. Parsing to find the references costs about as much as compiling, so
    only the forked path does this; a build in one process loads on first use."""
    todo, seen = list(names), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            env.get_template(name)
            if references and env.loader is not None:
                source = env.loader.get_source(env, name)[0]
                todo.extend(n for n in jinja2.meta.find_referenced_templates(env.parse(source)) if n)
        except Exception:  # a broken template is each page's own error, named by the build
            log.debug("template %s does not compile", name, exc_info=True)


def compile_templates(settings) -> None:
    """Load (compile) the site's templates and the ones they use now: a build forks its
    workers after this, so they inherit them compiled instead of each compiling its own."""
    _load(environment(settings), SITE_TEMPLATES, references=True)


def article_path(slug: str) -> str:
    return f"articles/{slug}/index.html"


ALL_ARTICLES = "articles"  # the folder of the site feed's listing: every article, newest first


def listing_path(key: str, page: int | None = None) -> str:
    """A listing page: `<key>/index.html` holds the newest articles (those of the feed's
    subscription document), `<key>/page/<k>/index.html` those of the feed's archive k
    (page 1 the oldest; every page but the newest never changes again). The site feed's
    listing ("all") lives in `articles/`, beside the article pages."""
    folder = ALL_ARTICLES if key == "all" else key
    return f"{folder}/index.html" if page is None else f"{folder}/page/{page}/index.html"


def listing_url(settings, key: str, page: int | None = None) -> str:
    """The URL of `listing_path`. For "all" that is /articles/, not the home page (the
    site feed's HTML link, which shows only the newest few articles)."""
    return f"{feeds.site_base(settings)}/{listing_path(key, page).removesuffix('index.html')}"


def _common(settings) -> dict:
    return {"site": settings.site, "base": feeds.site_base(settings)}


def _render(settings, name: str, **context) -> bytes:
    template = environment(settings).get_template(name)
    return template.render(**_common(settings), **context).encode("utf-8")


def render_article(settings, article) -> bytes:
    # The body was sanitised at ingest (nh3) and is checked again when read
    # (editorial._to_approved, SAN-5); it is the only thing marked safe.
    return _render(settings, "web/article.html", article=article, body=Markup(article.body_html))


FEEDS_INDEX = "feeds/index.html"
FEED_FORMATS = (
    ("Atom", "atom", "application/atom+xml"),
    ("RSS", "rss", "application/rss+xml"),
    ("JSON Feed", "json", "application/feed+json"),
)


def feed_links(settings, key: str) -> list[tuple[str, str]]:
    return [(label, feeds.doc_url(settings, key, fmt)) for label, fmt, _type in FEED_FORMATS]


def feed_alternates(settings, key: str) -> list[tuple[str, str, str]]:
    """(label, media type, URL) of one listing's feeds, for its autodiscovery links (DISC-1)."""
    return [(label, media_type, feeds.doc_url(settings, key, fmt)) for label, fmt, media_type in FEED_FORMATS]


def render_listing(
    settings, spec, entries, *, page: int | None = None, newer: str | None = None, older: str | None = None
) -> bytes:
    """One page of a listing: `page` None for the newest articles, else the archive
    page's number; `newer` and `older` the URLs of the pages next to it (None at either
    end)."""
    kind, _, slug = spec.key.partition("/")
    label = spec.author_name or slug
    heading = {
        "all": "All articles",
        "tags": f"Tag: {label}",
        "categories": f"Category: {label}",
        "authors": f"Articles by {label}",
    }.get(kind, label)
    return _render(
        settings,
        "web/listing.html",
        heading=heading,
        page=page,
        newer=newer,
        older=older,
        feed=spec,
        entries=entries,
        feed_links=feed_links(settings, spec.key),
        feed_alternates=feed_alternates(settings, spec.key),
    )


def render_feeds_index(settings, topics) -> bytes:
    """public/feeds/index.html: how to follow the site in a feed reader, and every feed
    (all, then each category, tag and author of `topic_list`)."""
    groups: dict[str, list] = {"categories": [], "tags": [], "authors": []}
    for key, label, _count in topics:
        groups[key.split("/")[0]].append((label, feeds.listing_url(settings, key), feed_links(settings, key)))
    everything = [("All articles", feeds.listing_url(settings, "all"), feed_links(settings, "all"))]
    return _render(
        settings,
        "web/feeds_index.html",
        groups=[
            ("Everything", everything),
            ("Categories", groups["categories"]),
            ("Tags", groups["tags"]),
            ("Authors", groups["authors"]),
        ],
    )


def render_index(settings, latest, topics, subscribe_form, all_articles: str | None = None) -> bytes:
    """The home page; `all_articles` the URL of the listing of every article, when there
    are more than `latest` shows."""
    return _render(
        settings,
        "web/index.html",
        latest=latest,
        topics=topics,
        subscribe_form=subscribe_form,
        all_articles=all_articles,
    )


def topic_list(settings, metas) -> list[tuple[str, str, int]]:
    """(key, label, article count) for every category, tag and author, in that order."""
    tags: Counter[str] = Counter()
    categories: Counter[str] = Counter()
    people: Counter[str] = Counter()
    labels: dict[str, str] = {}
    for m in metas:  # the keys of m.feed_keys() but "all", counted without making them
        tags.update(m.tags)
        if m.category:
            categories[m.category] += 1
        people[m.author_slug] += 1
        labels[m.author_slug] = m.author_name
    counts = {f"tags/{t}": n for t, n in tags.items()}
    counts.update((f"categories/{c}", n) for c, n in categories.items())
    counts.update((f"authors/{a}", n) for a, n in people.items())
    labels = {f"authors/{a}": name for a, name in labels.items()}
    order = {"categories": 0, "tags": 1, "authors": 2}
    keys = sorted(counts, key=lambda k: (order[k.split("/")[0]], k))
    out = []
    for k in keys:
        kind, _, slug = k.partition("/")
        label = labels.get(k, slug) if kind == "authors" else ("#" + slug if kind == "tags" else slug)
        out.append((k, label, counts[k]))
    return out


def subscribe_form(settings, metas=()) -> dict:
    """The subscribe form's context (pipeline.subscribers.fields.form_context), with the topics
    taken from the articles already loaded."""
    from pipeline.subscribers import fields as subscribers

    form = dict(subscribers.form_context(settings, None))
    if not settings.subscribers.topics:
        pattern = subscribers.TOPIC_RE
        categories = sorted({m.category for m in metas if m.category})
        tags = sorted({t for m in metas for t in m.tags})
        form["topics"] = [t for t in dict.fromkeys([*categories, *tags]) if pattern.match(t.lower())]
    return form


__all__ = [
    "environment",
    "render_article",
    "render_listing",
    "render_index",
    "render_feeds_index",
    "topic_list",
    "subscribe_form",
    "FEEDS_INDEX",
    "article_path",
    "listing_path",
    "listing_url",
    "human_date",
    "template_fingerprint",
]
