"""Images (issue 12 item 5): one rasteriser for bundled and fetched images (IMG-2), SVGs
sized from their own width/height/viewBox, and width/height on every <img> of our
media in pages, feeds and email (IMG-3), from what is stored. Real files, a real
WordPress-shaped server on 127.0.0.1, the real build and the real digest path."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import re

import pytest

from pipeline import imaging
from pipeline.content.sources.media import store_image
from pipeline.content.sources.runner import run_sources
from tests.source_server import SourceServer
from tests.test_sources import article_rows, source_toml


@pytest.fixture
def server():
    srv = SourceServer()
    srv.serve_images()
    yield srv
    srv.close()


# --- one rasteriser, intrinsic sizes (IMG-2) -------------------------------------------------


@pytest.mark.parametrize(
    ("root", "size"),
    [
        ('width="640" height="320"', (640, 320)),
        ('width="640px" height="320px" viewBox="0 0 10 5"', (640, 320)),
        ('viewBox="0 0 300 200"', (300, 200)),
        ('width="100%" height="100%" viewBox="0 0 300 200"', (300, 200)),  # a percentage: the viewBox
        ('width="600" viewBox="0 0 300 200"', (600, 400)),  # one side: the viewBox's proportions
        ('width="3in" height="2in"', (288, 192)),  # 96 dpi
    ],
)
def test_svg_intrinsic_size_img2(root, size):
    svg = f'<svg xmlns="http://www.w3.org/2000/svg" {root}><rect width="10" height="5"/></svg>'.encode()
    assert imaging.svg_size(svg) == size


def test_a_fetched_svg_is_rasterised_at_its_intrinsic_size_not_a_default_img2(sqlite_app):
    """Before IMG-2 a viewBox-only or percentage-sized SVG from a source was rasterised at
    whatever size cairosvg chose; now at its own size (capped at the email width)."""
    from PIL import Image

    svg = (
        b'<svg xmlns="http://www.w3.org/2000/svg" width="100%" height="100%" viewBox="0 0 500 250">'
        b'<rect width="500" height="250" fill="#246"/></svg>'
    )
    stored = store_image(sqlite_app.settings, svg)
    assert (stored.width, stored.height) == (500, 250)
    png = sqlite_app.settings.path("paths.public") / "media" / f"{stored.sha256}.png"
    with Image.open(png) as im:
        assert im.size == (500, 250)
    wide = b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 4000 1000"><rect width="4000" height="1000"/></svg>'
    stored = store_image(sqlite_app.settings, wide)
    with Image.open(sqlite_app.settings.path("paths.public") / "media" / f"{stored.sha256}.png") as im:
        assert im.size == (imaging.RASTER_WIDTH, imaging.RASTER_WIDTH // 4)  # capped, proportions kept


def test_both_paths_use_the_one_rasteriser_img2():
    """The bundled path (digests.images) and fetched media (content.sources.media) call
    pipeline.imaging; neither carries its own copy of cairosvg or Pillow code."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "pipeline"
    for rel in ("digests/images.py", "content/sources/media.py"):
        text = (root / rel).read_text()
        assert "pipeline.imaging" in text or "from pipeline import imaging" in text, rel
        assert "cairosvg" not in text.replace("cairosvg (", ""), rel
        assert "Image.open" not in text or rel.endswith("media.py"), rel  # media only verifies raster bytes


def test_set_img_sizes_keeps_author_sizes_and_unknown_images_img3():
    html = (
        '<p><img src="https://s.example/a.png" alt="a"><img src="https://s.example/b.png" width="10" alt="b">'
        '<img src="https://elsewhere.example/c.png" alt="c"/></p>'
    )
    sizes = {"https://s.example/a.png": (40, 30), "https://s.example/b.png": (80, 60)}
    out = imaging.set_img_sizes(html, sizes.get)
    assert '<img src="https://s.example/a.png" alt="a" width="40" height="30">' in out
    assert '<img src="https://s.example/b.png" width="10" alt="b">' in out  # the author's size stays
    assert '<img src="https://elsewhere.example/c.png" alt="c"/>' in out  # unknown: untouched


# --- width/height on every <img> of our media, pages, feeds and email (IMG-3) ---------------------


def _imgs(text: str) -> list[str]:
    return re.findall(r"<img\b[^>]*>", text)


def _size(tag: str) -> tuple[str | None, str | None]:
    w = re.search(r'\swidth="(\d+)"', tag)
    h = re.search(r'\sheight="(\d+)"', tag)
    return (w.group(1) if w else None, h.group(1) if h else None)


def test_fetched_media_get_width_and_height_in_pages_feeds_and_email_img3(make_app, db_url, server):
    """A WordPress post (approval = source) with a WebP featured image (800x450) and an
    inline PNG (400x300): the page, the Atom feed and the instant email all carry the
    stored sizes. Before IMG-3 the page had none and email assumed 16:9."""
    from pipeline.delivery.worker import drain
    from pipeline.digests import editions
    from pipeline.site.build import build

    from .digest_helpers import T0, add_subscriber

    server.load_wp()
    app = make_app(db_url, source_toml("blog", "wordpress", server.base, approval="source", per_page=10))
    add_subscriber(app, "reader@example.org", frequency="instant", confirmed_at=T0)
    run_sources(app)
    tidy = article_rows(app)["the-ten-minute-tidy"]
    assert "width=" not in tidy["body_html"]  # stored as ingested; sized when read
    report = build(app)
    assert report.errors == []  # fetched media are in public/media/ already, not missing content files
    public = app.settings.path("paths.public")
    page = (public / "articles" / "the-ten-minute-tidy" / "index.html").read_text()
    sizes = {re.search(r'src="([^"]+)"', t).group(1).rsplit(".", 1)[-1]: _size(t) for t in _imgs(page)}
    assert sizes == {"webp": ("800", "450"), "png": ("400", "300")}, _imgs(page)
    feed = (public / "feeds" / "all.atom").read_text()
    assert "width=&quot;400&quot; height=&quot;300&quot;" in feed or 'width="400" height="300"' in feed
    editions.compose(app.engine, app.settings, "instant", now=T0 + dt.timedelta(days=400))
    drain(app.settings, app.engine)
    html = "\n".join(
        email.message_from_bytes(p.read_bytes(), policy=email.policy.default).get_body(("html",)).get_content()
        for p in (app.settings.path("email.maildir") / "new").iterdir()
    )
    tags = [t for t in _imgs(html) if "/media/" in t]
    assert tags, html[:2000]
    for tag in tags:
        w, h = _size(tag)
        assert w and h, tag
        ratio = int(w) / int(h)
        assert abs(ratio - 4 / 3) < 0.02 or abs(ratio - 16 / 9) < 0.02, tag
    assert any(abs(int(_size(t)[0]) / int(_size(t)[1]) - 4 / 3) < 0.02 for t in tags)  # the 400x300 one


def test_local_images_get_width_and_height_on_the_page_img3(make_app, sqlite_url):
    """A Markdown article's featured SVG and an inline image of its folder: sized on the page."""
    from pipeline.content.editorial import approve
    from pipeline.content.ingest import ingest
    from pipeline.site.build import build

    from .articles import write_article, write_author

    app = make_app(sqlite_url)
    root = app.settings.root
    (root / "content" / "images").mkdir(parents=True, exist_ok=True)
    (root / "content" / "images" / "hero.svg").write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 600 300"><rect width="600" height="300"/></svg>'
    )
    write_author(root)
    write_article(
        root,
        "illustrated",
        extra='image: images/hero.svg\nimage_alt: "A panel"\n',
        body="Text.\n\n![An inline panel](../images/hero.svg)\n",
    )
    report = ingest(app)
    assert not report.errors, [e.message for e in report.errors]
    with app.engine.begin() as conn:
        approve(conn, ["illustrated"], editor="test", override="test")
    build(app)
    page = (app.settings.path("paths.public") / "articles" / "illustrated" / "index.html").read_text()
    tags = [t for t in _imgs(page) if "hero.svg" in t]
    assert tags and all(_size(t) == ("600", "300") for t in tags), tags


def test_a_feed_image_that_cannot_be_fetched_is_reported_on_its_item_and_left_out(make_app, sqlite_url, server):
    """A feed item's inline image answers 404 and its hero is not an image: both are
    named with the item in the run's report, and neither becomes a broken <img> on the
    page, in the feed or anywhere else (issue 12 item 5)."""
    from pipeline.site.build import build

    server.set("/images/seeds.png", 404, "gone")
    server.set("/images/seeds-hero.svg", 200, b"<html>oops</html>", content_type="image/svg+xml")
    url = server.serve_file("/rss2.xml", "rss2.xml")
    app = make_app(sqlite_url, source_toml("coop", "feed", url, approval="source"))
    [run] = run_sources(app)
    problems = "\n".join(run.problems)
    named = "coop-post-101 (article saving-seeds): "
    assert named + "image " in problems and "seeds.png left out: http-404" in problems
    assert named + "featured image " in problems and "not a PNG, JPEG, GIF, WebP or SVG image" in problems
    seeds = article_rows(app)["saving-seeds"]
    assert seeds["image"] == "" and "<img" not in seeds["body_html"]
    build(app)
    page = (app.settings.path("paths.public") / "articles" / "saving-seeds" / "index.html").read_text()
    assert "<img" not in page and "seeds" in page
