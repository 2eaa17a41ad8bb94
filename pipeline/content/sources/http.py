"""Fetching a source's URL: one GET with everything a polite, safe feed reader does.

Conditional (If-None-Match / If-Modified-Since from the cursor), gzip (requests
decodes it; the size cap counts decoded bytes, so a gzip bomb stops at the cap too),
redirects followed by hand up to `max_redirects` so that each hop passes the SSRF guard
(pipeline.netguard) and a 301 can be remembered, a size cap read in chunks, and a
(connect, read) timeout. Every failure becomes a SourceError whose `kind` names it:
timeout, connection, refused, too-large, redirect-loop, too-many-redirects, http-401, ...
"""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC
from urllib.parse import urljoin

import requests

from pipeline import __version__
from pipeline.content.sources.base import SourceError
from pipeline.netguard import AddressRefused, GuardedAdapter, check_url

CHUNK = 64 * 1024
STATUS_HINTS = {
    401: "The server wants credentials: set username and SYNDICATE_SOURCES__<NAME>__PASSWORD, or check them.",
    403: "The server refuses us: check the URL, the credentials, or whether it blocks our User-Agent.",
    404: "Nothing at this URL: check the source's url.",
    410: "The server says this URL is gone for good: remove or update the source.",
    429: "The server asks us to slow down; the source backs off and tries later.",
}


@dataclasses.dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    url: str  # where the body came from, after redirects
    moved_to: str = ""  # set when a 301/308 moved the requested URL for good

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")


def make_session(config: dict, site_url: str = "") -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # no proxies or .netrc from the environment (SW-7)
    session.headers["User-Agent"] = f"Syndicate/{__version__}" + (f" (+{site_url})" if site_url else "")
    session.headers["Accept-Encoding"] = "gzip, deflate"
    if not config.get("allow_private"):
        adapter = GuardedAdapter(max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
    return session


def get(
    session: requests.Session,
    config: dict,
    url: str,
    *,
    headers: dict | None = None,
    auth=None,
    accept_status: tuple[int, ...] = (),
) -> Response:
    """GET `url` following redirects by hand. Returns 2xx and 304 answers (and any
    status in `accept_status`); raises SourceError for everything else."""
    name = config["name"]
    timeout = float(config.get("timeout") or 20.0)
    max_bytes = int(config.get("max_bytes") or 10_000_000)
    max_redirects = int(config.get("max_redirects") if config.get("max_redirects") is not None else 5)
    allow_private = bool(config.get("allow_private"))
    seen: list[str] = []
    moved_to = ""
    permanent = True
    current = url
    while True:
        if current in seen:
            raise SourceError(
                name,
                "redirect-loop",
                f"{url} redirects in a loop ({' -> '.join(seen + [current])})",
                hint="Fix the redirects on the server, or point the source at the final URL.",
            )
        if len(seen) > max_redirects:
            raise SourceError(
                name,
                "too-many-redirects",
                f"{url}: more than {max_redirects} redirects",
                hint="Point the source at the final URL, or raise max_redirects.",
            )
        seen.append(current)
        try:
            check_url(current, allow_private=allow_private)
            resp = session.get(
                current,
                headers=headers or {},
                auth=auth,
                timeout=(timeout, timeout),
                allow_redirects=False,
                stream=True,
            )
        except AddressRefused as exc:
            raise SourceError(
                name, "refused", str(exc), hint="Set allow_private = true on the source if it is an intranet server."
            ) from None
        except requests.Timeout:
            raise SourceError(
                name,
                "timeout",
                f"{current}: no answer within {timeout:g}s",
                hint="The server is slow or down; the source is tried again later (raise timeout if it is just slow).",
            ) from None
        except requests.RequestException as exc:
            cause = exc.__context__ or exc
            if isinstance(cause, AddressRefused) or "AddressRefused" in repr(exc):
                raise SourceError(
                    name,
                    "refused",
                    str(cause),
                    hint="Set allow_private = true on the source if it is an intranet server.",
                ) from None
            raise SourceError(
                name, "connection", f"{current}: {str(exc)[:300]}", hint="Check the URL and that the server is up."
            ) from None
        try:
            if resp.status_code in (301, 302, 303, 307, 308) and resp.headers.get("Location"):
                permanent = permanent and resp.status_code in (301, 308)
                current = urljoin(current, resp.headers["Location"])
                if permanent:
                    moved_to = current
                continue
            hdrs = {k.lower(): v for k, v in resp.headers.items()}
            if resp.status_code == 304:
                return Response(304, hdrs, b"", current, moved_to)
            if not (200 <= resp.status_code < 300) and resp.status_code not in accept_status:
                text = _read(resp, 2000, name, current, hard=False).decode("utf-8", "replace")
                snippet = " ".join(text.split())[:200]
                raise SourceError(
                    name,
                    f"http-{resp.status_code}",
                    f"{current} answered {resp.status_code}" + (f": {snippet}" if snippet else ""),
                    hint=STATUS_HINTS.get(resp.status_code, "The server failed; the source is tried again later."),
                    retry_after=retry_after_seconds(resp.headers.get("Retry-After", "")),
                )
            declared = hdrs.get("content-length", "")
            if declared.isdigit() and int(declared) > max_bytes and "gzip" not in hdrs.get("content-encoding", ""):
                raise SourceError(
                    name,
                    "too-large",
                    f"{current} is {int(declared):,} bytes, over max_bytes {max_bytes:,}",
                    hint="Raise max_bytes on the source if the feed is really that big.",
                )
            body = _read(resp, max_bytes, name, current, hard=True, timeout=timeout)
            return Response(resp.status_code, hdrs, body, current, moved_to)
        finally:
            resp.close()


def _read(resp, limit: int, name: str, url: str, *, hard: bool, timeout: float = 0.0) -> bytes:
    """The decoded body up to `limit` bytes; past it, SourceError (hard) or the start.
    A body that trickles in slower than the whole timeout is a timeout too."""
    chunks, size = [], 0
    started = time.monotonic()
    try:
        for chunk in resp.iter_content(CHUNK):
            size += len(chunk)
            if size > limit:
                if not hard:
                    chunks.append(chunk[: limit - (size - len(chunk))])
                    break
                raise SourceError(
                    name,
                    "too-large",
                    f"{url} sent more than max_bytes ({limit:,} bytes)",
                    hint="Raise max_bytes on the source if the feed is really that big.",
                )
            chunks.append(chunk)
            if hard and timeout and time.monotonic() - started > 4 * timeout:
                raise SourceError(
                    name,
                    "timeout",
                    f"{url}: the body did not arrive within {4 * timeout:g}s",
                    hint="The server is too slow; the source is tried again later.",
                )
    except requests.RequestException as exc:
        if not hard:
            return b"".join(chunks)
        kind = "timeout" if "timed out" in str(exc).lower() or isinstance(exc, requests.Timeout) else "truncated"
        raise SourceError(
            name,
            kind,
            f"{url}: the body broke off after {size:,} bytes ({type(exc).__name__})",
            hint="The server dropped the connection; the source is tried again later.",
        ) from None
    return b"".join(chunks)


def retry_after_seconds(value: str, cap: float = 86400.0) -> float | None:
    """Retry-After as seconds or an HTTP date -> seconds to wait (capped), or None."""
    import email.utils

    from pipeline.timeutil import utcnow

    value = (value or "").strip()
    if not value:
        return None
    if value.isdigit():
        return min(float(value), cap)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max((when - utcnow()).total_seconds(), 0.0), cap)


def conditional_headers(cursor: dict) -> dict:
    headers = {}
    if cursor.get("etag"):
        headers["If-None-Match"] = cursor["etag"]
    if cursor.get("last_modified"):
        headers["If-Modified-Since"] = cursor["last_modified"]
    return headers
