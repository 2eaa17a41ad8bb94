"""Remote images of source articles: fetched once, stored by content hash under
public/media/, with an email copy in a format every mail client shows.

An image URL is fetched through the source's SSRF guard and size cap
(pipeline.content.sources.http), its type sniffed from the bytes (never trusted from
the URL or the Content-Type), its pixel count capped (a decompression bomb is refused
before decoding), and stored as public/media/<sha256>.<ext>. SVG and WebP also get a
PNG rasterised for email (public/media/<sha256>.png), since Gmail and Outlook show
neither. The media table remembers every URL, so an image is fetched once; one that
cannot be fetched is reported on its article and left out, never a broken <img>.

(Another engineer is writing the email rasteriser for local images at the same
time; this small one covers remote images of sources until they are merged.)
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

from pipeline.content.sources import http
from pipeline.content.sources.base import SourceError
from pipeline.store.schema import media
from pipeline.timeutil import utcnow

log = logging.getLogger(__name__)

MAX_IMAGE_BYTES = 10_000_000
MAX_PIXELS = 40_000_000
EMAIL_MAX_WIDTH = 1200  # 2x the email column
RETRY_FAILED_AFTER = dt.timedelta(hours=6)
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/gif": "gif", "image/webp": "webp", "image/svg+xml": "svg"}
EMAIL_SAFE = {"image/png", "image/jpeg", "image/gif"}
IMG_SRC_RE = re.compile(r"""<img\b[^>]*?\bsrc\s*=\s*(["'])(.*?)\1[^>]*>""", re.I | re.S)


class ImageError(Exception):
    """This image cannot be used (not an image, too big, too many pixels)."""


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


def sniff(data: bytes) -> str:
    """The image type from the bytes themselves."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    head = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith(b"<svg") or (
        head.startswith((b"<?xml", b"<!--", b"<!doctype svg")) and b"<svg" in data[:4096].lower()
    ):
        return "image/svg+xml"
    raise ImageError("not a PNG, JPEG, GIF, WebP or SVG image")


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
    """An SVG or WebP as PNG for email, at most EMAIL_MAX_WIDTH wide."""
    from PIL import Image

    if content_type == "image/svg+xml":
        import cairosvg

        try:
            # unsafe=False (the default): no external entities or files are read.
            png = cairosvg.svg2png(bytestring=data)
        except Exception as exc:
            raise ImageError(f"SVG cannot be rasterised: {type(exc).__name__}") from None
    else:
        png = data
    with Image.open(io.BytesIO(png)) as img:
        if img.width * img.height > MAX_PIXELS:
            raise ImageError(f"{img.width}x{img.height} pixels, over the cap of {MAX_PIXELS:,}")
        img = img.convert("RGBA")
        if img.width > EMAIL_MAX_WIDTH:
            img = img.resize((EMAIL_MAX_WIDTH, max(1, round(img.height * EMAIL_MAX_WIDTH / img.width))))
        out = io.BytesIO()
        img.save(out, "PNG", optimize=True)
        return out.getvalue(), img.width, img.height


def _svg_size(data: bytes) -> tuple[int | None, int | None]:
    tag = re.search(rb"<svg\b[^>]*>", data[:8192], re.I)
    if not tag:
        return None, None
    w = re.search(rb'\swidth="([\d.]+)(px)?"', tag.group(0))
    h = re.search(rb'\sheight="([\d.]+)(px)?"', tag.group(0))
    if w and h:
        return round(float(w.group(1))), round(float(h.group(1)))
    vb = re.search(rb'viewBox="\s*[-\d.]+[\s,]+[-\d.]+[\s,]+([\d.]+)[\s,]+([\d.]+)"', tag.group(0))
    if vb:
        return round(float(vb.group(1))), round(float(vb.group(2)))
    return None, None


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
