"""Serving public/ over HTTP: `make_public_app(settings)`, an ASGI (Starlette) app that
`pipeline.web.app` mounts at "/" for `syndicate serve`.

Feed readers poll; an unchanged feed must cost a 304 (HTTP-1..4):

- Content-Type per format with charset (RSS-10, ATOM-9, JF-4), `nosniff`.
- A strong ETag from the bytes (sha256) and Last-Modified from the file (the build
  writes a file only when its bytes change). The gzip variant has its own ETag
  (RFC 9110 §8.8.3), and every response says `Vary: Accept-Encoding`.
- If-None-Match is evaluated first and, when present, If-Modified-Since is ignored
  (RFC 9110 §13.2.2); a 304 carries the ETag, Cache-Control, Vary, Last-Modified and
  Link headers the 200 would have (HTTP-3), and no body.
- Cache-Control: `feeds.max_age` for subscription feeds and pages; sealed archives
  and the full pages of a listing (listed by the build in public/.build-manifest.json)
  `feeds.archive_max_age` and `immutable`.
- Feeds carry `Link: <hub>; rel="hub"` and `<topic>; rel="self"` (WS-1).
- GET and HEAD only; dot files (the manifest, temporary files) and anything outside
  public/ are never served.
"""

from __future__ import annotations

import email.utils
import gzip
import hashlib
import json
import os
import threading
from collections import OrderedDict
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from pipeline.site import feeds

MANIFEST = ".build-manifest.json"
CONTENT_TYPES = {
    ".atom": "application/atom+xml; charset=utf-8",
    ".rss": "application/rss+xml; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".xml": "application/xml; charset=utf-8",
    ".json": "application/json; charset=utf-8",
    ".svg": "image/svg+xml; charset=utf-8",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".ico": "image/x-icon",
}
FEED_JSON_TYPE = "application/feed+json; charset=utf-8"
GZIP_MIN_BYTES = 256
CACHE_ENTRIES = 512


def content_type(rel: str) -> str:
    suffix = os.path.splitext(rel)[1].lower()
    if suffix == ".json" and rel.startswith("feeds/"):
        return FEED_JSON_TYPE
    return CONTENT_TYPES.get(suffix, "application/octet-stream")


def compressible(ctype: str) -> bool:
    base = ctype.split(";")[0]
    return base.startswith("text/") or base.endswith(("+xml", "json")) or base in ("application/xml", "image/svg+xml")


def is_feed(rel: str) -> bool:
    return rel.startswith("feeds/") and os.path.splitext(rel)[1] in (".atom", ".rss", ".json")


def is_subscription_feed(rel: str) -> bool:
    return is_feed(rel) and not rel.startswith("feeds/archive/")


def accepts_gzip(header: str | None) -> bool:
    for part in (header or "").split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() in ("gzip", "x-gzip", "*"):
            q = params.strip()
            if q.startswith("q="):
                try:
                    return float(q[2:]) > 0
                except ValueError:
                    return False
            return True
    return False


def etag_matches(header: str, etag: str) -> bool:
    """If-None-Match uses the weak comparison (RFC 9110 §13.1.2)."""
    if header.strip() == "*":
        return True
    want = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == want for tag in header.split(","))


class _Entry:
    __slots__ = ("stamp", "data", "etag", "last_modified", "mtime", "_gz", "_gz_etag")

    def __init__(self, stamp, data: bytes, mtime: float):
        self.stamp = stamp
        self.data = data
        digest = hashlib.sha256(data).hexdigest()[:40]
        self.etag = f'"{digest}"'
        self._gz_etag = f'"{digest}-gzip"'
        self.mtime = int(mtime)
        self.last_modified = email.utils.formatdate(self.mtime, usegmt=True)
        self._gz = None

    def gzipped(self) -> tuple[bytes, str]:
        if self._gz is None:
            self._gz = gzip.compress(self.data, compresslevel=6, mtime=0)  # same bytes every time
        return self._gz, self._gz_etag


class PublicFiles:
    """Files under public/, with a small cache keyed on (path, mtime, size, inode)."""

    def __init__(self, settings):
        self.settings = settings
        self.root = settings.path("paths.public").resolve()
        self.base = feeds.site_base(settings)
        self.hubs = feeds.hub_urls(settings)
        self.max_age = int(settings.feeds.max_age)
        self.archive_max_age = int(settings.feeds.archive_max_age)
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._manifest: tuple[object, frozenset[str]] = (None, frozenset())

    def resolve(self, rel: str) -> tuple[str, Path] | str | None:
        """(rel path, file) to serve; a str is a redirect target; None is 404."""
        if "\x00" in rel or "\\" in rel:
            return None
        parts = [p for p in rel.split("/") if p]
        if any(p.startswith(".") for p in parts):
            return None
        clean = "/".join(parts)
        path = self.root.joinpath(*parts) if parts else self.root
        if rel == "" or rel.endswith("/"):
            clean = (clean + "/" if clean else "") + "index.html"
            path = path / "index.html"
        elif path.is_dir():
            return "/" + clean + "/"
        try:
            real = path.resolve()
        except OSError:
            return None
        if real != self.root and self.root not in real.parents:
            return None
        if not real.is_file():
            return None
        return clean, real

    def entry(self, rel: str, path: Path) -> _Entry:
        st = path.stat()
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        with self._lock:
            cached = self._cache.get(rel)
            if cached is not None and cached.stamp == stamp:
                self._cache.move_to_end(rel)
                return cached
        entry = _Entry(stamp, path.read_bytes(), st.st_mtime)
        with self._lock:
            self._cache[rel] = entry
            self._cache.move_to_end(rel)
            while len(self._cache) > CACHE_ENTRIES:
                self._cache.popitem(last=False)
        return entry

    def immutable(self, rel: str) -> bool:
        """Whether the build sealed `rel` (a full feed archive or listing page): the
        manifest it writes says so, whatever the path looks like."""
        manifest = self.root / MANIFEST
        try:
            st = manifest.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            return False
        if self._manifest[0] != stamp:
            try:
                paths = frozenset(json.loads(manifest.read_text("utf-8")).get("immutable", []))
            except (OSError, ValueError):
                paths = frozenset()
            self._manifest = (stamp, paths)
        return rel in self._manifest[1]

    def cache_control(self, rel: str) -> str:
        if self.immutable(rel):
            return f"public, max-age={self.archive_max_age}, immutable"
        return f"public, max-age={self.max_age}"

    def links(self, rel: str) -> str | None:
        if not is_feed(rel):
            return None
        links = [f'<{hub}>; rel="hub"' for hub in self.hubs] if is_subscription_feed(rel) else []
        links.append(f'<{self.base}/{rel}>; rel="self"')
        return ", ".join(links)


def make_public_app(settings) -> Starlette:
    files = PublicFiles(settings)

    async def serve(request: Request) -> Response:
        rel = request.path_params.get("path", "")
        found = files.resolve(rel)
        if found is None:
            return PlainTextResponse("Not found\n", status_code=404, headers={"Cache-Control": "no-cache"})
        if isinstance(found, str):
            target = found + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(target, status_code=301)
        rel, path = found
        try:
            entry = files.entry(rel, path)
        except FileNotFoundError:  # replaced between resolve and read
            return PlainTextResponse("Not found\n", status_code=404, headers={"Cache-Control": "no-cache"})
        ctype = content_type(rel)
        body, etag = entry.data, entry.etag
        headers = {
            "Cache-Control": files.cache_control(rel),
            "Last-Modified": entry.last_modified,
            "Vary": "Accept-Encoding",
            "X-Content-Type-Options": "nosniff",
        }
        if compressible(ctype) and len(body) >= GZIP_MIN_BYTES and accepts_gzip(request.headers.get("accept-encoding")):
            body, etag = entry.gzipped()
            headers["Content-Encoding"] = "gzip"
        headers["ETag"] = etag
        link = files.links(rel)
        if link:
            headers["Link"] = link
        if _not_modified(request, etag, entry.mtime):
            headers.pop("Content-Encoding", None)
            return Response(status_code=304, headers=headers)
        headers["Content-Type"] = ctype
        headers["Content-Length"] = str(len(body))
        if request.method == "HEAD":
            return Response(status_code=200, headers=headers)
        return Response(body, status_code=200, headers=headers)

    return Starlette(routes=[Route("/{path:path}", serve, methods=["GET", "HEAD"])])


def _not_modified(request: Request, etag: str, mtime: int) -> bool:
    inm = request.headers.get("if-none-match")
    if inm is not None:  # RFC 9110 §13.2.2: If-Modified-Since is then ignored
        return etag_matches(inm, etag)
    ims = request.headers.get("if-modified-since")
    if ims:
        try:
            since = email.utils.parsedate_to_datetime(ims)
        except (TypeError, ValueError):
            return False
        if since is None:
            return False
        return mtime <= int(since.timestamp())
    return False


__all__ = ["make_public_app", "PublicFiles", "content_type", "etag_matches", "accepts_gzip"]
