"""Remote images of source articles: fetched once, stored by content hash under
public/media/, with an email copy in a format every mail client shows.

An image URL is fetched through the source's SSRF guard and size cap
(pipeline.content.sources.http), its type sniffed from the bytes (never trusted from
the URL or the Content-Type), its pixel count capped (a decompression bomb is refused
before decoding), and stored as public/media/<sha256>.<ext>. SVG and WebP also get a
PNG rasterised for email (public/media/<sha256>.png), since Gmail and Outlook show
neither. The media table remembers every URL, so an image is fetched once; one that
cannot be fetched is reported on its article and left out, never a broken <img>.

Sniffing, sizes and rasterising are pipeline.imaging's, the one rasteriser the bundled
illustrations use too (IMG-2): an SVG is rasterised from its intrinsic size (width/
height, else viewBox; capped at the email width), never at a renderer's default size.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import io
import logging
import os
import re
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.engine import Connection

from pipeline import imaging
from pipeline.content.sources.base import SourceError
from pipeline.imaging import ImageError, sniff
from pipeline.store.schema import media
from pipeline.timeutil import utcnow

log = logging.getLogger(__name__)

MAX_IMAGE_BYTES = 10_000_000
MAX_PIXELS = imaging.MAX_PIXELS
EMAIL_MAX_WIDTH = imaging.RASTER_WIDTH  # 2x the email column
RETRY_FAILED_AFTER = dt.timedelta(hours=6)
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/gif": "gif", "image/webp": "webp", "image/svg+xml": "svg"}
EMAIL_SAFE = {"image/png", "image/jpeg", "image/gif"}
IMG_SRC_RE = re.compile(r"""<img\b[^>]*?\bsrc\s*=\s*(["'])(.*?)\1[^>]*>""", re.I | re.S)


@dataclasses.dataclass
class StoredImage:
    sha256: str
    content_type: str
    width: int | None
    height: int | None
    length: int
    email_sha256: str | None


def media_dir(settings) -> Path:
    return settings.path("paths.public") / "media"


def media_url(settings, sha256: str, content_type: str) -> str:
    return f"{settings.site.base_url.rstrip('/')}/media/{sha256}.{EXTENSIONS[content_type]}"


def _raster_size(data: bytes) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            if width * height > MAX_PIXELS:
                raise ImageError(f"{width}x{height} pixels, over the cap of {MAX_PIXELS:,}")
            img.verify()
    except ImageError:
        raise
    except Exception as exc:  # Pillow raises many kinds for broken files
        raise ImageError(f"image is broken: {type(exc).__name__}") from None
    return width, height


def _png(data: bytes, content_type: str) -> tuple[bytes, int, int]:
    """An SVG or WebP as PNG for email (pipeline.imaging.to_png, IMG-2)."""
    png = imaging.to_png(data, max_width=EMAIL_MAX_WIDTH, scale=1, name=content_type)
    size = imaging.size_of(png)
    if size is None:  # pragma: no cover - to_png made a PNG
        raise ImageError("the PNG made for email is unreadable")
    return png, size[0], size[1]


def _svg_size(data: bytes) -> tuple[int | None, int | None]:
    size = imaging.svg_size(data)
    return size if size else (None, None)


def _write(path: Path, data: bytes) -> None:
    if path.exists():
        return  # content-addressed: same name, same bytes
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def store_image(settings, data: bytes) -> StoredImage:
    """Check and store image bytes; returns what the media row records."""
    content_type = sniff(data)
    if content_type == "image/svg+xml":
        width, height = _svg_size(data)
    else:
        width, height = _raster_size(data)
    digest = hashlib.sha256(data).hexdigest()
    folder = media_dir(settings)
    email_sha = None
    if content_type not in EMAIL_SAFE:
        png, pw, ph = _png(data, content_type)
        email_sha = digest  # the PNG is stored beside the original under the same hash
        _write(folder / f"{digest}.png", png)
        width, height = width or pw, height or ph
    _write(folder / f"{digest}.{EXTENSIONS[content_type]}", data)
    return StoredImage(digest, content_type, width, height, len(data), email_sha)


def fetch_image(conn: Connection, settings, config: dict, session, url: str) -> tuple[str, dict | None, str]:
    """(local URL, {width, height, type, length} or None, error) for a remote image;
    fetched at most once (a failure is retried after RETRY_FAILED_AFTER)."""
    row = conn.execute(select(media).where(media.c.url == url)).first()
    now = utcnow()
    if row is not None and row.sha256:
        return (
            media_url(settings, row.sha256, row.content_type),
            {"width": row.width, "height": row.height, "type": row.content_type, "length": row.length},
            "",
        )
    if row is not None and row.error and now - row.fetched_at < RETRY_FAILED_AFTER:
        return "", None, row.error
    from pipeline.content.sources import http  # requests: only when an image is fetched, not when sizes are read

    image_config = dict(config, max_bytes=MAX_IMAGE_BYTES, max_redirects=3)
    try:
        resp = http.get(session, image_config, url)
        stored = store_image(settings, resp.body)
        error = ""
    except SourceError as exc:
        stored, error = None, f"{exc.kind}: {exc.message.split(': ', 2)[-1]}"
    except ImageError as exc:
        stored, error = None, str(exc)
    values = dict(
        url=url,
        fetched_at=now,
        error=error or None,
        sha256=stored.sha256 if stored else None,
        content_type=stored.content_type if stored else "",
        width=stored.width if stored else None,
        height=stored.height if stored else None,
        length=stored.length if stored else None,
        email_sha256=stored.email_sha256 if stored else None,
    )
    if row is None:
        conn.execute(media.insert().values(**values))
    else:
        conn.execute(media.update().where(media.c.id == row.id).values(**values))
    if stored is None:
        log.warning("image %s left out: %s", url, error)
        return "", None, error
    return (
        media_url(settings, stored.sha256, stored.content_type),
        {"width": stored.width, "height": stored.height, "type": stored.content_type, "length": stored.length},
        "",
    )


def localise(conn: Connection, settings, config: dict, session, item) -> list[str]:
    """Point the item's featured image and inline <img>s at their stored copies; drop
    the ones that cannot be fetched. Returns one problem per image left out."""
    from urllib.parse import urljoin

    problems = []
    if item.image:
        local, info, error = fetch_image(conn, settings, config, session, item.image)
        if local:
            item.image = local
        else:
            problems.append(f"featured image {item.image} left out: {error}")
            item.image = ""

    def replace(match: re.Match) -> str:
        src = urljoin(item.base_url or item.link, match.group(2).strip())
        if not src.startswith(("http://", "https://")):
            return match.group(0)
        local, _, error = fetch_image(conn, settings, config, session, src)
        if not local:
            problems.append(f"image {src} left out: {error}")
            return ""
        return match.group(0).replace(match.group(2), local, 1)

    item.body_html = IMG_SRC_RE.sub(replace, item.body_html)
    return problems


def email_src(settings, src: str) -> str:
    """The URL an email should use for `src`: the PNG copy of a stored SVG or WebP
    (public/media/, made at ingest) or of one under content/images/ (made by the build,
    see `email_copy_name`)."""
    site = settings.site.base_url.rstrip("/")
    ext = src.rsplit(".", 1)[-1].lower() if "." in src.rsplit("/", 1)[-1] else ""
    if ext not in ("svg", "webp"):
        return src
    if src.startswith(f"{site}/media/") and re.fullmatch(r"[0-9a-f]{64}", src[len(site) + 7 :].rsplit(".", 1)[0]):
        return src.rsplit(".", 1)[0] + ".png"
    if src.startswith(f"{site}/images/") and "?" not in src and "#" not in src:
        rel = email_copy_name(src[len(site) + 1 :])
        if rel and ".." not in rel.split("/") and (settings.path("paths.public") / rel).is_file():
            return f"{site}/{rel}"  # only once the build has written it
    return src


def email_copy_name(rel: str) -> str | None:
    """The PNG the build writes beside content image `rel` for email ("images/a.svg" ->
    "images/a.svg.png"; the full name is kept so a.svg and a.webp never collide)."""
    return rel + ".png" if rel.lower().endswith((".svg", ".webp")) and rel.startswith("images/") else None


def email_png(data: bytes) -> bytes | None:
    """PNG bytes for email from SVG/WebP bytes, or None when they cannot be rasterised."""
    try:
        content_type = sniff(data)
        if content_type in EMAIL_SAFE:
            return None
        return _png(data, content_type)[0]
    except ImageError as exc:
        log.warning("no PNG for email: %s", exc)
        return None


def known_sizes(conn: Connection, settings, urls: set[str]) -> dict[str, tuple[int, int]]:
    """(width, height) of the images at `urls` that are ours (IMG-3): fetched media
    (`<site>/media/<sha256>.<ext>`, from the media table) and files under content/
    (`<site>/<path>`, from their headers). Other URLs are left out."""
    site = settings.site.base_url.rstrip("/")
    out: dict[str, tuple[int, int]] = {}
    by_sha: dict[str, list[str]] = {}
    content = settings.path("paths.content")
    for url in urls:
        if not url.startswith(site + "/") or "?" in url or "#" in url:
            continue
        rel = url[len(site) + 1 :]
        m = re.fullmatch(r"media/([0-9a-f]{64})\.[a-z]+", rel)
        if m:
            by_sha.setdefault(m.group(1), []).append(url)
            continue
        from urllib.parse import unquote

        rel = unquote(rel)
        if not rel or ".." in rel.split("/") or rel.startswith("/"):
            continue
        path = content / rel
        try:
            inside = path.resolve().is_relative_to(content.resolve()) and path.is_file()
        except OSError:
            inside = False
        size = imaging.intrinsic_size(path) if inside else None
        if size:
            out[url] = size
    if by_sha:
        rows = conn.execute(
            select(media.c.sha256, media.c.width, media.c.height).where(media.c.sha256.in_(sorted(by_sha)))
        ).all()
        for sha, width, height in rows:
            if width and height:
                for url in by_sha[sha]:
                    out[url] = (width, height)
    return out
