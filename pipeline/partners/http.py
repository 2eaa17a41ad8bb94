"""Outbound HTTP to partners: one `requests.Session` per partner, connect and read
timeouts on every request (SW-6), a total deadline per request, redirects never
followed (SW-4), and the SSRF guard (SW-7).

The read timeout of requests applies to each read, so a partner that answers one
byte at a time could hold a worker for as long as it likes. Every request therefore
also has a total deadline (connect + headers + body = the partner's connect_timeout
+ read_timeout): a watchdog timer shuts the request's socket down when it passes,
and the answer is a `timeout` (issue 19, item 4).

The guard refuses a URL whose host resolves to a loopback, private, link-local or
otherwise non-global address, unless the partner has `allow_private = true`. It checks
twice: when resolving (a clear error before anything is sent), and on the connected
socket's peer address before a byte is written, so a DNS answer that changes between
the two (DNS rebinding) cannot reach an internal address either. Proxy settings from
the environment are ignored for the same reason.
"""

from __future__ import annotations

import contextvars
import dataclasses
import datetime as dt
import email.utils
import random
import socket
import threading
import time

import requests
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from pipeline import __version__, netguard
from pipeline.durations import retry_delay as schedule_step
from pipeline.netguard import AddressRefused, address_allowed, check_url  # noqa: F401 (re-exported)
from pipeline.partners.config import Partner

MAX_SAVED_RESPONSE = 2000
MAX_READ_RESPONSE = 64 * 1024


class _Deadline:
    """The total deadline of one request: when it passes, every connection the request
    used is shut down, which ends any read in progress at once."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.expired = False
        self._connections: list = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def watch(self, connection) -> None:
        with self._lock:
            self._connections.append(connection)
            expired = self.expired
        if expired:
            _shut(connection)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            connections = list(self._connections)
        for connection in connections:
            _shut(connection)

    def __enter__(self) -> _Deadline:
        self._token = _DEADLINE.set(self)
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()
        _DEADLINE.reset(self._token)


def _shut(connection) -> None:
    sock = getattr(connection, "sock", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:  # already closed
            pass


_DEADLINE: contextvars.ContextVar[_Deadline | None] = contextvars.ContextVar("partner_request_deadline", default=None)


class _WatchedPool:
    """Hands every connection a request uses (new or kept alive) to its deadline."""

    def _make_request(self, conn, *args, **kwargs):  # type: ignore[override]
        deadline = _DEADLINE.get()
        if deadline is not None:
            deadline.watch(conn)
        return super()._make_request(conn, *args, **kwargs)


class WatchedHTTPPool(_WatchedPool, HTTPConnectionPool):
    pass


class WatchedHTTPSPool(_WatchedPool, HTTPSConnectionPool):
    pass


class GuardedHTTPPool(_WatchedPool, netguard.GuardedHTTPPool):
    pass


class GuardedHTTPSPool(_WatchedPool, netguard.GuardedHTTPSPool):
    pass


class WatchedAdapter(HTTPAdapter):
    pools = {"http": WatchedHTTPPool, "https": WatchedHTTPSPool}

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(self.pools)


class GuardedAdapter(WatchedAdapter):
    """The SSRF guard (pipeline.netguard, SW-7) with the total deadline."""

    pools = {"http": GuardedHTTPPool, "https": GuardedHTTPSPool}


def make_session(partner: Partner, site_url: str = "") -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # no proxies or .netrc from the environment (SW-7)
    session.headers["User-Agent"] = f"Syndicate/{__version__}" + (f" (+{site_url})" if site_url else "")
    adapter = (WatchedAdapter if partner.allow_private else GuardedAdapter)(max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def total_deadline(partner: Partner) -> float:
    """Seconds one request may take from connect to the last byte of the answer."""
    return partner.connect_timeout + partner.read_timeout


@dataclasses.dataclass
class Answer:
    """What came back from one request: an HTTP answer, or why there was none."""

    status_code: int | None
    headers: dict[str, str]
    text: str
    failure: str = ""  # "" | timeout | connection | refused
    error: str = ""
    duration_ms: int = 0

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")

    def summary(self) -> str:
        if self.status_code is None:
            return f"{self.failure}: {self.error}"
        text = " ".join(self.text.split())[:200]
        return f"HTTP {self.status_code}" + (f": {text}" if text else "")

    def saved(self) -> str:
        """The answer as stored with the delivery (status line, Location, body start)."""
        if self.status_code is None:
            return self.summary()[:MAX_SAVED_RESPONSE]
        head = f"HTTP {self.status_code}"
        if self.header("location"):
            head += f"\nLocation: {self.header('location')}"
        if self.header("retry-after"):
            head += f"\nRetry-After: {self.header('retry-after')}"
        return (head + "\n\n" + self.text)[:MAX_SAVED_RESPONSE]


def request(session: requests.Session, partner: Partner, method: str, url: str, **kwargs) -> Answer:
    """One request with the partner's (connect, read) timeouts, a total deadline and
    no redirects. Never raises for network trouble: the Answer says what happened."""
    with _Deadline(total_deadline(partner)) as deadline:
        return _request(session, partner, method, url, deadline, **kwargs)


def _request(session, partner: Partner, method: str, url: str, deadline: _Deadline, **kwargs) -> Answer:
    started = time.monotonic()

    def elapsed() -> int:
        return int((time.monotonic() - started) * 1000)

    def too_slow() -> Answer:
        return Answer(
            None,
            {},
            "",
            "timeout",
            f"no complete answer within the total deadline of "
            f"{deadline.seconds:g}s (connect {partner.connect_timeout:g}s + read "
            f"{partner.read_timeout:g}s): the partner answers too slowly",
            elapsed(),
        )

    try:
        check_url(url, allow_private=partner.allow_private)
        resp = session.request(method, url, timeout=partner.timeout, allow_redirects=False, stream=True, **kwargs)
    except AddressRefused as exc:
        return Answer(None, {}, "", "refused", str(exc), elapsed())
    except requests.Timeout as exc:
        return Answer(
            None,
            {},
            "",
            "timeout",
            f"no answer within {partner.read_timeout:g}s (connect {partner.connect_timeout:g}s): {type(exc).__name__}",
            elapsed(),
        )
    except requests.RequestException as exc:
        cause = exc.__context__ or exc
        if isinstance(cause, AddressRefused) or "AddressRefused" in repr(exc):
            return Answer(None, {}, "", "refused", str(cause), elapsed())
        if deadline.expired:
            return too_slow()
        return Answer(None, {}, "", "connection", _short(exc), elapsed())
    if deadline.expired:  # the head was cut off: what was parsed of it means nothing
        resp.close()
        return too_slow()
    try:
        try:
            raw = resp.raw.read(MAX_READ_RESPONSE, decode_content=True) or b""
        except Exception as exc:  # the body timed out or broke off; the status still counts
            raw = f"(could not read the answer's body: {type(exc).__name__})".encode()
        if deadline.expired:  # the status arrived: it counts (a Micropub 201 must not be sent again)
            raw += b" (body cut off at the total deadline)"
        text = raw.decode(resp.encoding or "utf-8", "replace")
        headers = {k.lower(): v for k, v in resp.headers.items()}
        return Answer(resp.status_code, headers, text, duration_ms=elapsed())
    finally:
        resp.close()


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) < 300 else text[:300] + "..."


# --- what an answer means -----------------------------------------------------------


@dataclasses.dataclass
class Verdict:
    """sent | retry (spend an attempt) | throttle (no attempt spent) | failed
    (permanent, response saved) | gone (410: disable the partner) | refused (SSRF)."""

    kind: str
    error: str = ""
    retry_after: dt.timedelta | None = None


def parse_retry_after(value: str, now: dt.datetime, cap: dt.timedelta) -> dt.timedelta | None:
    """Retry-After as seconds or an HTTP date -> a wait, capped; None when absent or bad."""
    value = (value or "").strip()
    if not value:
        return None
    if value.isdigit():
        wait = dt.timedelta(seconds=int(value))
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        wait = max(when - now, dt.timedelta(0))
    return min(wait, cap)


def classify(answer: Answer, *, now: dt.datetime, retry_after_cap: dt.timedelta) -> Verdict:
    """SW-4: 2xx success; 3xx failure (not followed); 410 gone; 429 slow down; 5xx,
    408, timeouts and connection errors retry; other 4xx fail for good."""
    if answer.status_code is None:
        if answer.failure == "refused":
            return Verdict("refused", f"refused by the SSRF guard: {answer.error}")
        return Verdict("retry", answer.summary())
    code = answer.status_code
    retry_after = parse_retry_after(answer.header("retry-after"), now, retry_after_cap)
    if 200 <= code < 300:
        return Verdict("sent")
    if 300 <= code < 400:
        where = answer.header("location")
        return Verdict(
            "retry",
            f"HTTP {code} redirect{' to ' + where if where else ''} not followed; if the partner moved, update its url",
        )
    if code == 410:
        return Verdict("gone", "HTTP 410 Gone: the partner says this endpoint no longer exists")
    if code == 429:
        return Verdict("throttle", answer.summary(), retry_after)
    if code >= 500 or code == 408:
        return Verdict("retry", answer.summary(), retry_after)
    return Verdict("failed", answer.summary())


def retry_delay(
    schedule: tuple[dt.timedelta, ...], attempts_so_far: int, jitter: float, rng: random.Random | None = None
) -> dt.timedelta | None:
    """SW-5: the wait after `attempts_so_far` failed tries (1-based) with +/- jitter, or
    None when the schedule is used up (dead-letter)."""
    step = schedule_step(schedule, attempts_so_far)
    if step is None:
        return None
    base = step.total_seconds()
    factor = 1.0 + (rng or random).uniform(-jitter, jitter) if jitter else 1.0
    return dt.timedelta(seconds=max(base * factor, 0.0))
