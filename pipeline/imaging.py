"""The one image module (IMG-2, issue 12 item 5): what type an image is, how big it is,
and a PNG of it for email. The bundled illustrations (pipeline.digests.images) and
fetched media (pipeline.content.sources.media) both come here, so an SVG is sized and
rasterised the same way whichever path it took.

- `sniff(data)`: the type from the bytes, never from a name or a Content-Type.
- `size_of(data)` / `intrinsic_size(path)`: (width, height) of PNG, GIF, JPEG, WebP
  and SVG. An SVG's size is its `width`/`height` (px, or pt/pc/in/cm/mm converted at
  96 dpi), else its `viewBox`; a percentage or a missing size falls back to the viewBox.
- `to_png(data, max_width, scale)`: SVG rasterised with cairosvg (`unsafe=False`: no
  external files, entities or network) at `scale` times its intrinsic size, capped at
  `max_width` wide, never at cairosvg's default size (the bundled illustrations use
  scale 2 for dense screens; fetched media 1, their intrinsic size); anything else
  Pillow reads converted and scaled down to `max_width`. A result over `MAX_PIXELS`
  is refused before rendering.
- `set_img_sizes(html, size_for)`: `width`/`height` on every `<img>` whose size is
  known (IMG-3), at render time, in pages, feeds and email alike.

Core module: imports nothing from the stages.
"""

from __future__ import annotations

import html as html_lib
import io
import re
import struct
from collections.abc import Callable
from pathlib import Path

from pipeline.errors import SyndicateError

RASTER_WIDTH = 1104  # 2 x the 552-pixel content column of the email templates
MAX_PIXELS = 40_000_000
EMAIL_TYPES = ("image/png", "image/jpeg", "image/gif")  # what every email client shows
_UNITS = {"": 1.0, "px": 1.0, "pt": 96 / 72, "pc": 16.0, "in": 96.0, "cm": 96 / 2.54, "mm": 96 / 25.4}


class ImageError(SyndicateError):
    """An image cannot be used or made fit for email (unreadable, unsupported, too big)."""


def sniff(data: bytes) -> str:
    """The image type from the bytes themselves; ImageError when it is none we take."""
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


def _length(value: str | None) -> float | None:
    m = re.fullmatch(r"\s*([\d.]+)\s*(px|pt|pc|in|cm|mm)?\s*", value or "")
    if not m:
        return None  # a percentage, "auto", or nothing
    try:
        number = float(m.group(1)) * _UNITS[m.group(2) or ""]
    except ValueError:
        return None
    return number if number > 0 else None


def svg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of an SVG from its root element: width/height, else the viewBox
    (also for the missing side, keeping the viewBox's proportions)."""
    tag = re.search(rb"<svg\b[^>]*>", data[:16384], re.I)
    if not tag:
        return None
    text = tag.group(0).decode("utf-8", "replace")

    def attr(name: str) -> str | None:
        m = re.search(rf"""\s{name}\s*=\s*(["'])(.*?)\1""", text)
        return m.group(2) if m else None

    w, h = _length(attr("width")), _length(attr("height"))
    box = None
    vb = re.fullmatch(r"\s*[-\d.eE]+[\s,]+[-\d.eE]+[\s,]+([\d.eE]+)[\s,]+([\d.eE]+)\s*", attr("viewBox") or "")
    if vb:
        try:
            box = float(vb.group(1)), float(vb.group(2))
        except ValueError:
            box = None
        if box and (box[0] <= 0 or box[1] <= 0):
            box = None
    if w and h:
        return round(w), round(h)
    if box:
        if w:
            return round(w), round(w * box[1] / box[0])
        if h:
            return round(h * box[0] / box[1]), round(h)
        return round(box[0]), round(box[1])
    return None


def size_of(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a PNG, GIF, JPEG, WebP or SVG from its bytes, or None."""
    try:
        if data[:8] == b"\x89PNG\r\n\x1a\n":
            return struct.unpack(">II", data[16:24])
        if data[:6] in (b"GIF87a", b"GIF89a"):
            return struct.unpack("<HH", data[6:10])
        if data[:2] == b"\xff\xd8":
            i = 2
            while i + 9 < len(data):
                if data[i] != 0xFF:
                    i += 1
                    continue
                marker = data[i + 1]
                length = struct.unpack(">H", data[i + 2 : i + 4])[0]
                if marker in (0xC0, 0xC1, 0xC2):
                    h, w = struct.unpack(">HH", data[i + 5 : i + 9])
                    return w, h
                i += 2 + length
            return None
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            from PIL import Image

            with Image.open(io.BytesIO(data)) as im:
                return im.size
        return svg_size(data)
    except (struct.error, ValueError, OSError):
        return None


def intrinsic_size(path: Path) -> tuple[int, int] | None:
    """(width, height) of the image file at `path`, or None."""
    try:
        with open(path, "rb") as f:
            data = f.read(256 * 1024)
    except OSError:
        return None
    return size_of(data)


def is_svg(data: bytes, name: str = "") -> bool:
    return name.lower().endswith((".svg", ".svgz")) or b"<svg" in data[:4096]


def to_png(data: bytes, *, max_width: int = RASTER_WIDTH, scale: int = 2, name: str = "image") -> bytes:
    """PNG bytes for email from an SVG, WebP or other image (see the module docstring)."""
    if is_svg(data, name):
        return _svg_to_png(data, max_width, scale, name)
    return _pillow_to_png(data, max_width, name)


def _svg_to_png(data: bytes, max_width: int, scale: int, name: str) -> bytes:
    import cairosvg

    size = svg_size(data)
    kwargs = {}
    if size and size[0] > 0 and size[1] > 0:
        width = min(max_width, scale * size[0])
        height = max(1, round(width * size[1] / size[0]))
        if width * height > MAX_PIXELS:
            raise ImageError(f"SVG {name} would be {width}x{height} pixels, over the cap of {MAX_PIXELS:,}")
        kwargs = {"output_width": width, "output_height": height}
    try:
        png: bytes = cairosvg.svg2png(bytestring=data, unsafe=False, **kwargs)
        return png
    except Exception as exc:  # cairosvg raises many kinds (parse errors, ValueError, ...)
        raise ImageError(f"cannot rasterise SVG {name}: {exc}", hint="Open it in a browser: is it valid SVG?") from None


def _pillow_to_png(data: bytes, max_width: int, name: str) -> bytes:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as opened:
            if opened.width * opened.height > MAX_PIXELS:
                raise ImageError(f"{name}: {opened.width}x{opened.height} pixels, over the cap of {MAX_PIXELS:,}")
            opened.load()
            im: Image.Image = opened
            if im.width > max_width:
                size = (max_width, max(1, round(im.height * max_width / im.width)))
                im = im.resize(size, Image.Resampling.LANCZOS)
            has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
            im = im.convert("RGBA" if has_alpha else "RGB")
            buf = io.BytesIO()
            im.save(buf, format="PNG", optimize=True)
            return buf.getvalue()
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise ImageError(
            f"cannot convert image {name} to PNG: {exc}", hint="Use a PNG, JPEG, GIF, WebP or SVG file."
        ) from None


# --- sizes on <img> at render time ----------------------------------------------------------

_IMG_TAG = re.compile(r"<img\b[^>]*>", re.I)
_ATTR = r"""\s{name}\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))"""


def _attr(tag: str, name: str) -> str | None:
    m = re.search(_ATTR.format(name=name), tag, re.I)
    if not m:
        return None
    value: str = next(g for g in m.groups() if g is not None)
    return html_lib.unescape(value)


def img_srcs(html: str) -> list[str]:
    """The `src` of every <img> in `html` (unescaped)."""
    return [s for s in (_attr(t, "src") for t in _IMG_TAG.findall(html or "")) if s]


def set_img_sizes(html: str, size_for: Callable[[str], tuple[int, int] | None]) -> str:
    """`html` with `width` and `height` on every <img> that has neither and whose size
    `size_for(src)` knows (IMG-3). One the author sized is left as written."""
    if "<img" not in (html or "").lower():
        return html

    def one(match: re.Match[str]) -> str:
        tag = match.group(0)
        if _attr(tag, "width") is not None or _attr(tag, "height") is not None:
            return tag
        src = _attr(tag, "src")
        size = size_for(src) if src else None
        if not size or size[0] <= 0 or size[1] <= 0:
            return tag
        end = "/>" if tag.endswith("/>") else ">"
        return f'{tag[: -len(end)].rstrip()} width="{int(size[0])}" height="{int(size[1])}"{end}'

    return _IMG_TAG.sub(one, html)
