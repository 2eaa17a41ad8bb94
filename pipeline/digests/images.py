"""Images an email client shows: PNG, JPEG or GIF (IMG-1, issue 16 item 3).

Gmail and Outlook show no SVG, and Outlook no WebP; pages keep the original file, email
links a PNG made from it. `email_image(path, out_dir)` is the one entry point:

- PNG, JPEG and GIF are used as they are;
- SVG is rasterised with cairosvg (`unsafe=False`: no external files, no entities, no
  network), at twice the email column so it stays sharp on dense screens;
- WebP, and anything else Pillow reads, is converted with Pillow (and scaled down to
  the same width when wider).

The PNG's name carries a hash of the source bytes and the width, so an unchanged image
is converted once, however many digests use it, and a changed one gets a new URL that
no client has cached. Dimensions of PNG/GIF/JPEG/SVG are read from the file headers.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import struct
from pathlib import Path

from pipeline.errors import SyndicateError

log = logging.getLogger(__name__)

EMAIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif")  # what every email client shows
RASTER_WIDTH = 1104  # 2 x the 552-pixel content column of the email templates


class ImageError(SyndicateError):
    """An image cannot be made fit for email (unreadable or unsupported)."""


def is_email_safe(name: str) -> bool:
    """True when a file name or URL path ends in a type every email client shows."""
    return name.lower().rsplit("?", 1)[0].endswith(EMAIL_SUFFIXES)


def intrinsic_size(path: Path) -> tuple[int, int] | None:
    """(width, height) of a PNG, GIF, JPEG or SVG file, or None."""
    try:
        data = path.read_bytes()[: 256 * 1024]
    except OSError:
        return None
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
        text = data.decode("utf-8", "replace")
        m = re.search(r"<svg\b[^>]*>", text)
        if m:
            tag = m.group(0)
            w = re.search(r'\swidth="([\d.]+)(px)?"', tag)
            h = re.search(r'\sheight="([\d.]+)(px)?"', tag)
            if w and h:
                return round(float(w.group(1))), round(float(h.group(1)))
            vb = re.search(r'viewBox="\s*[-\d.]+[\s,]+[-\d.]+[\s,]+([\d.]+)[\s,]+([\d.]+)"', tag)
            if vb:
                return round(float(vb.group(1))), round(float(vb.group(2)))
    except (struct.error, ValueError):
        return None
    return None


def email_image(path: Path, out_dir: Path, *, max_width: int = RASTER_WIDTH) -> tuple[Path, int, int]:
    """(file to link from an email, its width, its height) for the image at `path`.

    PNG/JPEG/GIF: `path` itself. Anything else: a PNG in `out_dir` (created), made
    once per source content and width. Raises `ImageError` when the file cannot be
    read or converted."""
    path = Path(path)
    if is_email_safe(path.name):
        size = intrinsic_size(path)
        if size is None:
            raise ImageError(f"cannot read the size of image {path}", hint="Is the file a valid image?")
        return path, size[0], size[1]
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(f"cannot read image {path}: {exc}", hint="Check the path under content/.") from None
    tag = hashlib.sha256(data + f"|{max_width}".encode("ascii")).hexdigest()[:12]
    out = Path(out_dir) / f"{path.stem}.{tag}.png"
    if not out.exists():
        png = _svg_to_png(path, data, max_width) if _is_svg(path, data) else _pillow_to_png(path, max_width)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        tmp.write_bytes(png)
        tmp.replace(out)  # atomic: a client never fetches half a file
        log.info("rasterised %s for email: %s", path, out)
    size = intrinsic_size(out)
    if size is None:  # pragma: no cover - we just wrote a PNG
        raise ImageError(f"the PNG made from {path} is unreadable")
    return out, size[0], size[1]


def _is_svg(path: Path, data: bytes) -> bool:
    return path.suffix.lower() in (".svg", ".svgz") or b"<svg" in data[:4096]


def _svg_to_png(path: Path, data: bytes, max_width: int) -> bytes:
    import cairosvg

    size = intrinsic_size(path)
    kwargs = {}
    if size and size[0] > 0 and size[1] > 0:
        width = min(max_width, 2 * size[0])
        kwargs = {"output_width": width, "output_height": max(1, round(width * size[1] / size[0]))}
    try:
        return cairosvg.svg2png(bytestring=data, unsafe=False, **kwargs)
    except Exception as exc:  # cairosvg raises many kinds (parse errors, ValueError, ...)
        raise ImageError(f"cannot rasterise SVG {path}: {exc}", hint="Open it in a browser: is it valid SVG?") from None


def _pillow_to_png(path: Path, max_width: int) -> bytes:
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.width > max_width:
                im = im.resize((max_width, max(1, round(im.height * max_width / im.width))), Image.LANCZOS)
            has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
            im = im.convert("RGBA" if has_alpha else "RGB")
            buf = io.BytesIO()
            im.save(buf, format="PNG", optimize=True)
            return buf.getvalue()
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise ImageError(
            f"cannot convert image {path} to PNG: {exc}", hint="Use a PNG, JPEG, GIF, WebP or SVG file."
        ) from None
