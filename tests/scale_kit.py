"""Helpers for the scale-out tests (tests/test_scale.py) and bench/scale.py.

- A `scale` email kind whose builder hand-assembles a small message from the row
  (no EmailMessage: the test measures the fleet, not the MIME library). Worker
  subprocesses load it with SYNDICATE_DELIVERY_PLUGINS=tests.scale_kit (the
  delivery engine's plugin hook), the test process by importing this module.
- `CountingSMTPServer`: a real aiosmtpd server on 127.0.0.1 (port 0) in a thread that
  records, per accepted message, each recipient and the arrival time
  (time.monotonic), so a test can count duplicates per recipient and measure the
  fleet's send rate over a sliding window against the server's own clock.
"""

from __future__ import annotations

import bisect
import threading
import time

from pipeline.delivery import register_email_kind
from pipeline.delivery.email.channel import OutgoingEmail

KIND = "scale"
FROM = "digest@news.example.com"


def build_scale_email(conn, settings, row) -> OutgoingEmail:
    rid = str(row["id"]).encode()
    to = row["target"].encode()
    data = (
        b"From: Test Journal <" + FROM.encode() + b">\r\nTo: " + to + b"\r\n"
        b"Subject: Scale test " + rid + b"\r\nMessage-ID: <scale." + rid + b"@news.example.com>\r\n"
        b"List-Id: Test digest <digest.news.example.com>\r\n"
        b"List-Unsubscribe: <https://news.example.com/u/" + rid + b">\r\n"
        b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
        b"Hello. This is delivery " + rid + b" of the scale-out test.\r\n"
    )
    return OutgoingEmail(FROM, [row["target"]], data)


register_email_kind(KIND, build_scale_email)


def scale_rows(start: int, stop: int, tag: str = "scale") -> list[dict]:
    """Outbox rows (the keyword arguments of outbox.enqueue) for reader{start..stop-1}."""
    return [
        dict(channel="email", target=f"reader{i}@example.org", kind=KIND, key=f"{tag}:{i}", payload={})
        for i in range(start, stop)
    ]


def enqueue_scale(engine, count: int, *, tag: str = "scale", chunk: int = 5000) -> int:
    from pipeline.delivery import outbox

    new = 0
    for start in range(0, count, chunk):
        with engine.begin() as conn:
            new += outbox.enqueue_many(conn, scale_rows(start, min(start + chunk, count), tag))
    return new


class _Recorder:
    def __init__(self, owner: CountingSMTPServer):
        self.owner = owner

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if self.owner.pipelining:
            responses.insert(len(responses) - 1, "250-PIPELINING")
        return responses

    async def handle_DATA(self, server, session, envelope):
        self.owner._arrived(envelope.rcpt_tos)
        return "250 2.0.0 OK"


class CountingSMTPServer:
    """aiosmtpd on 127.0.0.1:0 that counts per recipient and keeps arrival times.

    with CountingSMTPServer(pipelining=True) as smtp:
        ... smtp.host, smtp.port ...
        smtp.counts()        # {recipient: messages}
        smtp.arrivals()      # [monotonic time of each accepted message], sorted
    """

    def __init__(self, *, pipelining: bool = False):
        from aiosmtpd.controller import Controller

        class _Controller(Controller):
            def _trigger_server(self):
                # bound to port 0: learn the real port before aiosmtpd connects to itself
                self.port = self.server.sockets[0].getsockname()[1]
                super()._trigger_server()

        self.host = "127.0.0.1"
        self.port = 0
        self.pipelining = pipelining  # advertise PIPELINING (RFC 2920), the client's default path
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._times: list[float] = []
        self._controller = _Controller(
            _Recorder(self), hostname=self.host, port=0, data_size_limit=1_000_000, decode_data=False
        )

    def _arrived(self, rcpts) -> None:
        now = time.monotonic()
        with self._lock:
            self._times.append(now)
            for r in rcpts:
                r = r.lower()
                self._counts[r] = self._counts.get(r, 0) + 1

    def start(self) -> CountingSMTPServer:
        self._controller.start()
        self.port = self._controller.port
        return self

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> CountingSMTPServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()
            self._times.clear()

    def total(self) -> int:
        with self._lock:
            return len(self._times)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def arrivals(self) -> list[float]:
        with self._lock:
            return sorted(self._times)


def max_in_window(times: list[float], window: float) -> int:
    """The most arrivals within any `window` seconds (a sliding window over sorted times)."""
    best = 0
    for i, t in enumerate(times):
        j = bisect.bisect_right(times, t + window, lo=i)
        best = max(best, j - i)
    return best
