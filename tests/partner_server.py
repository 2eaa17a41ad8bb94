"""Real partner servers on 127.0.0.1 (port 0, a thread in the test process).

`WebhookPartner` is a Standard Webhooks receiver: it verifies every request with the
spec's algorithm (pipeline.partners.signing.verify implements exactly the reference
libraries' check: HMAC-SHA256 over `id.timestamp.body`, constant-time compare, any
of the listed `v1` signatures, timestamp within 5 minutes), rejects stale timestamps,
and dedupes `webhook-id`. It can be told to answer with a script of replies: any
status (500, 410, 429 with Retry-After, 301 ...) or to hang past the client's timeout.

`MicropubPartner` is a Micropub endpoint (JSON create / update / delete, Bearer auth,
201 + Location, q=config) with a home page that advertises it by rel="micropub".
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from pipeline.partners import signing


@dataclasses.dataclass
class Reply:
    status: int = 200
    headers: dict = dataclasses.field(default_factory=dict)
    body: bytes = b""
    hang: float = 0.0  # seconds to wait before answering (longer than the client's read timeout)
    trickle: float = 0.0  # write the answer's head one byte per `trickle` seconds, for up to 30 s
    before: object = None  # a callable run before answering (e.g. wait for something to happen)


@dataclasses.dataclass
class Received:
    method: str
    path: str
    headers: dict
    body: bytes
    verified: bool = False
    reason: str = ""
    duplicate: bool = False
    status: int = 0

    def json(self):
        return json.loads(self.body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False


class LoopbackServer:
    def __init__(self):
        self.requests: list[Received] = []
        self.script: deque[Reply] = deque()
        self.lock = threading.Lock()
        self.answered = threading.Event()  # set after each answer was written
        self._release = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _read(self) -> bytes:
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def _answer(self, status: int, body: bytes = b"", headers: dict | None = None):
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if body:
                    self.wfile.write(body)
                self.wfile.flush()
                owner.answered.set()

            def do_POST(self):
                owner._handle(self, "POST")

            def do_GET(self):
                owner._handle(self, "GET")

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self._release.set()
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def reply(self, *replies: Reply) -> None:
        """The next requests get these replies, in order; after them the normal behaviour."""
        with self.lock:
            self.script.extend(replies)

    def _scripted(self, handler, record: Received) -> bool:
        with self.lock:
            reply = self.script.popleft() if self.script else None
        if reply is None:
            return False
        if reply.hang:
            self._release.wait(reply.hang)
        if reply.before is not None:
            reply.before()
        record.status = reply.status
        if reply.trickle:
            self._trickle(handler, reply)
            return True
        try:
            handler._answer(reply.status, reply.body, reply.headers)
        except OSError:  # the client gave up waiting (timeout test)
            pass
        return True

    def _trickle(self, handler, reply: Reply) -> None:
        """A partner that answers one byte at a time, each byte well within any read
        timeout: only a total deadline stops the client waiting."""
        head = f"HTTP/1.1 {reply.status} OK\r\nX-Slow: ".encode() + b"a" * 10_000
        deadline = time.monotonic() + 30
        try:
            for i in range(len(head)):
                if time.monotonic() > deadline or self._release.is_set():
                    break
                handler.wfile.write(head[i : i + 1])
                handler.wfile.flush()
                time.sleep(reply.trickle)
        except OSError:  # the client gave up: what the test wants
            pass
        handler.close_connection = True


class WebhookPartner(LoopbackServer):
    def __init__(self, secrets: list[str], tolerance: int = signing.TOLERANCE_SECONDS):
        super().__init__()
        self.secrets = list(secrets)
        self.tolerance = tolerance
        self.seen: dict[str, int] = {}  # webhook-id -> verified requests with it
        self.events: list[dict] = []  # verified, first delivery of each webhook-id

    @property
    def url(self) -> str:
        return self.base_url + "/hooks/syndicate"

    def verified(self) -> list[Received]:
        return [r for r in self.requests if r.verified]

    def _handle(self, handler, method: str):
        body = handler._read()
        headers = {k.lower(): v for k, v in handler.headers.items()}
        record = Received(method, handler.path, headers, body)
        with self.lock:
            self.requests.append(record)
        try:
            signing.verify(self.secrets, headers, body, tolerance=self.tolerance)
            record.verified = True
        except signing.VerificationError as exc:
            record.reason = str(exc)
        if self._scripted(handler, record):
            return
        if not record.verified:
            status = 400 if "timestamp" in record.reason else 401
            record.status = status
            handler._answer(status, json.dumps({"error": record.reason}).encode(), {"Content-Type": "application/json"})
            return
        msg_id = headers["webhook-id"]
        with self.lock:
            record.duplicate = msg_id in self.seen
            self.seen[msg_id] = self.seen.get(msg_id, 0) + 1
            if not record.duplicate:
                self.events.append(json.loads(body))
        record.status = 200
        handler._answer(
            200,
            json.dumps({"ok": True, "verified": True, "duplicate": record.duplicate}).encode(),
            {"Content-Type": "application/json"},
        )


class MicropubPartner(LoopbackServer):
    def __init__(self, token: str, *, discovery: str = "link-header"):
        super().__init__()
        self.token = token
        self.discovery = discovery  # link-header | html
        self.posts: dict[str, dict] = {}  # location -> properties
        self.deleted: list[str] = []
        self.scope_error = False  # answer 401 insufficient_scope
        self._n = 0

    @property
    def endpoint(self) -> str:
        return self.base_url + "/micropub"

    @property
    def home(self) -> str:
        return self.base_url + "/"

    def _json(self, handler, status, data, headers=None):
        h = {"Content-Type": "application/json", **(headers or {})}
        handler._answer(status, json.dumps(data).encode(), h)

    def _handle(self, handler, method: str):
        body = handler._read()
        headers = {k.lower(): v for k, v in handler.headers.items()}
        record = Received(method, handler.path, headers, body)
        with self.lock:
            self.requests.append(record)
        parts = urlsplit(handler.path)
        if method == "GET" and parts.path == "/":
            page = b"<!doctype html><title>partner</title>"
            extra = {"Content-Type": "text/html"}
            if self.discovery == "link-header":
                extra["Link"] = '</micropub>; rel="micropub", </auth>; rel="authorization_endpoint"'
            else:
                page = b'<!doctype html><html><head><link rel="micropub" href="/micropub"></head><body>hi</body></html>'
            handler._answer(200, page, extra)
            return
        if self._scripted(handler, record):
            return
        if headers.get("authorization") != f"Bearer {self.token}":
            return self._json(handler, 401, {"error": "unauthorized"})
        if self.scope_error:
            return self._json(handler, 401, {"error": "insufficient_scope", "error_description": "create needed"})
        if method == "GET":
            if parse_qs(parts.query).get("q") == ["config"]:
                return self._json(handler, 200, {"syndicate-to": [], "media-endpoint": self.base_url + "/media"})
            return self._json(handler, 400, {"error": "invalid_request"})
        data = json.loads(body or b"{}")
        record.verified = True
        action = data.get("action")
        with self.lock:
            if action == "update":
                if data.get("url") not in self.posts:
                    return self._json(handler, 400, {"error": "invalid_request", "error_description": "no such post"})
                self.posts[data["url"]].update(data.get("replace", {}))
                return handler._answer(204)
            if action == "delete":
                if self.posts.pop(data.get("url"), None) is None:
                    return self._json(handler, 400, {"error": "invalid_request"})
                self.deleted.append(data["url"])
                return handler._answer(204)
            if data.get("type") != ["h-entry"]:
                return self._json(handler, 400, {"error": "invalid_request"})
            self._n += 1
            location = f"{self.base_url}/posts/{self._n}"
            self.posts[location] = dict(data["properties"])
        handler._answer(201, b"", {"Location": location})


if __name__ == "__main__":  # a partner to try `syndicate partners test` by hand
    import os
    import sys
    import time

    secret = os.environ.get(sys.argv[1] if len(sys.argv) > 1 else "PARTNER_SECRET", "")
    if not secret:
        sys.exit("usage: PARTNER_SECRET=whsec_... python -m tests.partner_server [ENV_NAME]")
    with WebhookPartner(signing.split_secrets(secret)) as partner:
        print(f"partner listening at {partner.url} (Ctrl-C stops)", flush=True)
        seen = 0
        try:
            while True:
                time.sleep(0.2)
                for r in partner.requests[seen:]:
                    print(
                        f"{r.method} {r.path} -> {r.status} verified={r.verified} duplicate={r.duplicate} "
                        f"{r.reason} {r.body[:120]!r}",
                        flush=True,
                    )
                seen = len(partner.requests)
        except KeyboardInterrupt:
            pass
