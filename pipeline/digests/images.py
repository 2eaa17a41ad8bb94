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
no client has cached. Sizes and rasterising are pipeline.imaging's (IMG-2: one
rasteriser for bundled and fetched images); this module adds the file naming.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from pipeline import imaging
from pipeline.imaging import RASTER_WIDTH, ImageError, intrinsic_size

log = logging.getLogger(__name__)

EMAIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif")  # what every email client shows
__all__ = ["RASTER_WIDTH", "ImageError", "email_image", "intrinsic_size", "is_email_safe"]


def is_email_safe(name: str) -> bool:
    """True when a file name or URL path ends in a type every email client shows."""
    return name.lower().rsplit("?", 1)[0].endswith(EMAIL_SUFFIXES)


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
        png = imaging.to_png(data, max_width=max_width, name=str(path))
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        tmp.write_bytes(png)
        tmp.replace(out)  # atomic: a client never fetches half a file
        log.info("rasterised %s for email: %s", path, out)
    size = intrinsic_size(out)
    if size is None:  # pragma: no cover - we just wrote a PNG
        raise ImageError(f"the PNG made from {path} is unreadable")
    return out, size[0], size[1]
