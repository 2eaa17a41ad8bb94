"""Email images are PNG, JPEG or GIF (IMG-1, issue 16 item 3): Gmail and Outlook show
no SVG (nor Outlook WebP). Our SVG and WebP images are rasterised to PNG under
public/email-images/ for email; pages keep the original; others' are left out."""

from __future__ import annotations

import lxml.html
import pytest
from PIL import Image

from pipeline.digests import editions as digests
from pipeline.digests import images
from pipeline.digests import render as digest_render

from .digest_helpers import add_articles, add_subscriber, at, body, by_recipient, drain

SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="1200" height="630" viewBox="0 0 1200 630">'
    '<rect width="1200" height="630" fill="#123"/><circle cx="600" cy="315" r="200" fill="#fc0"/></svg>'
)


def _webp(path, size=(800, 400)):
    Image.new("RGB", size, (200, 30, 30)).save(path, format="WEBP")


def _png_size(path) -> tuple[int, int]:
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def test_email_image_rasterises_svg_at_twice_the_column(tmp_path):
    src = tmp_path / "hero.svg"
    src.write_text(SVG)
    png, w, h = images.email_image(src, tmp_path / "out")
    assert png.parent == tmp_path / "out" and png.suffix == ".png"
    assert (w, h) == (1104, 580) == _png_size(png)
    with Image.open(png) as im:  # drawn, not blank: the circle's yellow is in the middle
        assert im.convert("RGB").getpixel((552, 290)) == (255, 204, 0)
    mtime = png.stat().st_mtime_ns
    assert images.email_image(src, tmp_path / "out")[0] == png and png.stat().st_mtime_ns == mtime  # once
    src.write_text(SVG.replace("#fc0", "#0cf"))
    assert images.email_image(src, tmp_path / "out")[0] != png  # changed image, new URL


def test_email_image_converts_webp_and_keeps_png_jpeg_gif(tmp_path):
    _webp(tmp_path / "a.webp", (2000, 1000))
    png, w, h = images.email_image(tmp_path / "a.webp", tmp_path / "out")
    assert (w, h) == (1104, 552) == _png_size(png)
    Image.new("RGB", (40, 30)).save(tmp_path / "b.png")
    assert images.email_image(tmp_path / "b.png", tmp_path / "out") == (tmp_path / "b.png", 40, 30)
    (tmp_path / "bad.svg").write_text("<svg this is not xml")
    with pytest.raises(images.ImageError):
        images.email_image(tmp_path / "bad.svg", tmp_path / "out")
    (tmp_path / "bad.webp").write_bytes(b"RIFF....WEBPnot really")
    with pytest.raises(images.ImageError):
        images.email_image(tmp_path / "bad.webp", tmp_path / "out")


def test_img1_remote_svg_and_webp_are_left_out(sqlite_app):
    site = digest_render.site_for_email(sqlite_app.settings)
    for src in ("https://cdn.example.org/a.svg", "https://cdn.example.org/a.webp?x=1"):
        assert digest_render.image_view(sqlite_app.settings, site, src, "x", 100, 100) is None
    assert digest_render.image_view(sqlite_app.settings, site, "https://cdn.example.org/a.jpg", "x", 100, 100)


def test_img1_digest_and_instant_link_png_for_svg_and_webp(sqlite_app):
    root = sqlite_app.settings.root
    (root / "content" / "images").mkdir(parents=True, exist_ok=True)
    (root / "content" / "images" / "hero.svg").write_text(SVG)
    _webp(root / "content" / "images" / "photo.webp")
    add_articles(
        sqlite_app,
        [
            {
                "slug": "svg-hero",
                "tags": "[sleep]",
                "approved_at": at(days=1),
                "extra": 'image: images/hero.svg\nimage_alt: "A yellow sun"\n',
            },
            {
                "slug": "webp-hero",
                "tags": "[sleep]",
                "approved_at": at(days=1, hours=1),
                "extra": 'image: images/photo.webp\nimage_alt: "A red field"\n',
            },
        ],
    )
    add_subscriber(sqlite_app, "d@example.com", confirmed_at=at(-1))
    add_subscriber(sqlite_app, "i@example.com", frequency="instant", confirmed_at=at(-1))
    digests.compose(sqlite_app.engine, sqlite_app.settings, "daily", now=at(days=1, hours=6))
    digests.compose(sqlite_app.engine, sqlite_app.settings, "instant", now=at(days=1, hours=6))
    drain(sqlite_app)
    public = sqlite_app.settings.path("paths.public")
    received = by_recipient(sqlite_app)
    msgs = received["d@example.com"] + received["i@example.com"]
    assert len(msgs) == 3
    seen = {}
    for msg in msgs:
        for img in lxml.html.document_fromstring(body(msg, "html").encode()).iter("img"):
            src = img.get("src")
            assert src.startswith("https://news.example.com/email-images/images/") and src.endswith(".png"), src
            path = public / src.removeprefix("https://news.example.com/")
            assert _png_size(path)[0] == 1104 if "hero" in src else _png_size(path) == (800, 400)
            seen[img.get("alt")] = (img.get("width"), img.get("height"))
    assert seen == {"A yellow sun": ("552", "290"), "A red field": ("552", "276")}
    for msg in msgs:  # no trace of the originals in email
        assert ".svg" not in body(msg, "html") and ".webp" not in body(msg, "html")
