"""A real HTTP server on 127.0.0.1 for the source tests: serves the recorded feeds,
images and WordPress REST answers from tests/data/sources/ (with `{base}` replaced by
the server's own URL), answers conditional GETs with 304, gzips when asked, and has
routes for every bad case (redirect loops, slow and endless bodies, error statuses).

The WordPress part answers `/wp-json/wp/v2/posts` the way WordPress does from the
recorded posts: `page`/`per_page` with X-WP-Total / X-WP-TotalPages, a 400
rest_post_invalid_page_number past the end, `modified_after`, `orderby=modified`,
`_embed` (without it `_embedded` is left out), `_fields=id`, and non-public statuses
only with HTTP Basic auth (an application password).
"""

from __future__ import annotations

import base64
import copy
import gzip
import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

DATA = Path(__file__).resolve().parent / "data" / "sources"
TYPES = {
    ".xml": "application/rss+xml; charset=utf-8",
    ".rdf": "application/rdf+xml",
    ".json": "application/feed+json",
    ".html": "text/html; charset=utf-8",
    ".png": "image/png",
    ".webp": "image/webp",
    ".svg": "image/svg+xml",
}
WP_USER, WP_PASSWORD = "editor", "abcd EFGH ijkl MNOP"


class Route:
    def __init__(self, status=200, body=b"", headers=None, gzip_ok=True, etag=True, delay=0.0, stream=None):
        self.status, self.body, self.headers = status, body, dict(headers or {})
        self.gzip_ok, self.etag, self.delay, self.stream = gzip_ok, etag, delay, stream


class SourceServer:
    def __init__(self):
        self.routes: dict[str, Route] = {}
        self.requests: list[tuple[str, dict]] = []
        self.wp_posts: list[dict] = []
        self.wp_fail_page: int | None = None  # this page of the posts list answers 500
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server._handle(self)

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                import sys

                if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
                    super().handle_error(request, client_address)  # a client hanging up early is normal here

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    # --- set-up ---------------------------------------------------------------------

    def recorded(self, name: str) -> bytes:
        data = (DATA / name).read_bytes()
        return (
            data.replace(b"{base}", self.base.encode())
            if (DATA / name).suffix in (".xml", ".rdf", ".json", ".html")
            else data
        )

    def serve_file(self, path: str, name: str, **kw) -> str:
        self.routes[path] = Route(
            body=self.recorded(name),
            headers={"Content-Type": TYPES.get(Path(name).suffix, "application/octet-stream")},
            **kw,
        )
        return self.base + path

    def set(self, path: str, status=200, body=b"", content_type="text/plain", **kw) -> str:
        headers = {"Content-Type": content_type, **kw.pop("headers", {})}
        self.routes[path] = Route(
            status=status, body=body if isinstance(body, bytes) else body.encode(), headers=headers, **kw
        )
        return self.base + path

    def redirect(self, path: str, to: str, status=301) -> str:
        self.routes[path] = Route(status=status, headers={"Location": to}, etag=False)
        return self.base + path

    def serve_images(self) -> None:
        for img in ("seeds-hero.svg", "seeds.png", "tidy-hero.webp", "tidy-shelf.png"):
            prefix = "/wp-content/uploads/2026/11/" if img.startswith("tidy") else "/images/"
            self.serve_file(prefix + img, f"images/{img}")

    def load_wp(self) -> None:
        self.wp_posts = json.loads(self.recorded("wp/posts.json"))

    def paths(self) -> list[str]:
        return [p for p, _ in self.requests]

    # --- answering ------------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        headers = {k.lower(): v for k, v in h.headers.items()}
        with self.lock:
            self.requests.append((h.path, headers))
        parts = urlsplit(h.path)
        if parts.path == "/wp-json/wp/v2/posts" and parts.path not in self.routes:
            route = self._wp_posts(parse_qs(parts.query), headers)
        else:
            route = self.routes.get(parts.path)
        if route is None:
            route = Route(404, b'{"code":"rest_no_route"}', {"Content-Type": "application/json"})
        if route.delay:
            time.sleep(route.delay)
        body = route.body
        out_headers = dict(route.headers)
        if route.stream is not None:
            h.send_response(route.status)
            for k, v in out_headers.items():
                h.send_header(k, v)
            h.end_headers()
            try:
                for chunk in route.stream():
                    h.wfile.write(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass
            return
        if route.etag and route.status == 200:
            etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
            out_headers["ETag"] = etag
            out_headers.setdefault("Last-Modified", "Thu, 12 Nov 2026 10:00:00 GMT")
            if headers.get("if-none-match") == etag:
                h.send_response(304)
                h.send_header("ETag", etag)
                h.end_headers()
                return
        if route.gzip_ok and "gzip" in headers.get("accept-encoding", "") and body:
            body = gzip.compress(body)
            out_headers["Content-Encoding"] = "gzip"
        h.send_response(route.status)
        for k, v in out_headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def _wp_posts(self, q: dict, headers: dict) -> Route:
        def arg(name, default=""):
            return q.get(name, [default])[0]

        statuses = arg("status", "publish").split(",")
        if statuses != ["publish"]:
            auth = headers.get("authorization", "")
            expected = "Basic " + base64.b64encode(f"{WP_USER}:{WP_PASSWORD.replace(' ', '')}".encode()).decode()
            if auth != expected:
                return Route(
                    401,
                    b'{"code":"rest_invalid_param","message":"Status is forbidden.","data":{"status":401}}',
                    {"Content-Type": "application/json; charset=UTF-8"},
                )
        posts = [p for p in self.wp_posts if p["status"] in statuses]
        if arg("modified_after"):
            after = arg("modified_after").rstrip("Z").split("+")[0]
            posts = [p for p in posts if p["modified_gmt"] > after]
        if arg("orderby") == "modified":
            posts.sort(key=lambda p: p["modified_gmt"], reverse=arg("order", "desc") == "desc")
        else:
            posts.sort(key=lambda p: p["date_gmt"], reverse=True)
        per_page, page = int(arg("per_page", "10")), int(arg("page", "1"))
        if page == self.wp_fail_page and arg("_fields") != "id":
            return Route(500, b"<h1>Error establishing a database connection</h1>", {"Content-Type": "text/html"})
        total = len(posts)
        pages = (total + per_page - 1) // per_page
        if page > max(pages, 1):
            return Route(
                400,
                b'{"code":"rest_post_invalid_page_number","message":"The page number requested is larger than the number of pages available.","data":{"status":400}}',
                {"Content-Type": "application/json; charset=UTF-8"},
            )
        chunk = [copy.deepcopy(p) for p in posts[(page - 1) * per_page : page * per_page]]
        if arg("_fields") == "id":
            chunk = [{"id": p["id"]} for p in chunk]
        elif "_embed" not in q:
            for p in chunk:
                p.pop("_embedded", None)
        body = json.dumps(chunk).encode()
        return Route(
            200,
            body,
            {
                "Content-Type": "application/json; charset=UTF-8",
                "X-WP-Total": str(total),
                "X-WP-TotalPages": str(pages),
            },
        )


def endless(chunk_size: int = 64 * 1024, total: int = 300 * 1024 * 1024):
    """A body of `total` bytes made on the fly (a 300 MB answer without the memory)."""

    def stream():
        sent = 0
        block = b"<item>" + b"x" * (chunk_size - 13) + b"</item>"
        while sent < total:
            yield block
            sent += len(block)

    return stream
