"""Serving public/ over real HTTP: conditional GET, headers, gzip, Link (HTTP-1..4,
RSS-10, ATOM-9, JF-4, WS-1, DISC-1), against uvicorn on 127.0.0.1 and against a
running `syndicate serve`."""

from __future__ import annotations

import contextlib
import email.utils
import gzip
import hashlib
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import lxml.html
import pytest
import requests
import uvicorn

from pipeline.app import App
from pipeline.config import load_settings
from pipeline.site.build import build
from pipeline.site.serving import make_public_app
from pipeline.store import dispose_engines

from .conftest import write_project
from .feedsite import add_articles, feeds_toml, publish

HUB = "https://hub.example.net/"
IDENTITY = {"Accept-Encoding": "identity"}
GZIP = {"Accept-Encoding": "gzip"}
TYPES = {
    "atom": "application/atom+xml; charset=utf-8",
    "rss": "application/rss+xml; charset=utf-8",
    "json": "application/feed+json; charset=utf-8",
}


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def make_site(root: Path, base_url: str, count: int = 9) -> App:
    config = write_project(
        root, f"sqlite:///{root / 'var' / 'syndicate.db'}", feeds_toml(max_entries=3, archive_size=2, hubs=[HUB])
    )
    config.write_text(config.read_text().replace('base_url = "https://news.example.com"', f'base_url = "{base_url}"'))
    app = App(load_settings(config, env={}))
    add_articles(app, count)
    publish(app)
    assert not build(app).errors
    return app


@contextlib.contextmanager
def serving_site(root: Path, count: int = 9):
    """uvicorn serving make_public_app for a site of `count` articles, on a socket bound
    to 127.0.0.1 port 0: (base URL, app)."""
    sock = free_socket()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    app = make_site(root, base, count)
    srv = uvicorn.Server(uvicorn.Config(make_public_app(app.settings), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield base, app
    finally:
        srv.should_exit = True
        thread.join(10)
        sock.close()
        dispose_engines()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with serving_site(tmp_path_factory.mktemp("serving") / "site") as served:
        yield served


def public_bytes(app, rel):
    return (app.settings.path("paths.public") / rel).read_bytes()


@pytest.mark.parametrize("fmt", ["atom", "rss", "json"])
def test_rss_10_atom_9_jf_4_http_1_content_type_strong_etag_last_modified(server, fmt):
    base, app = server
    r = requests.get(f"{base}/feeds/all.{fmt}", headers=IDENTITY, timeout=5)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == TYPES[fmt]
    assert r.content == public_bytes(app, f"feeds/all.{fmt}")  # the bytes unchanged (FG-9)
    etag = r.headers["ETag"]
    assert not etag.startswith("W/") and etag.strip('"') == hashlib.sha256(r.content).hexdigest()[:40]
    lm = r.headers["Last-Modified"]
    assert lm.endswith(" GMT") and email.utils.parsedate_to_datetime(lm).tzinfo is not None
    assert r.headers["Cache-Control"] == f"public, max-age={app.settings.feeds.max_age}"  # HTTP-4
    assert r.headers["Vary"] == "Accept-Encoding"
    if fmt != "json":
        assert r.text.startswith("<?xml version='1.0' encoding='UTF-8'?>")  # matches the charset


def test_ws_1_link_headers_on_get_and_head(server):
    base, app = server
    for method in ("GET", "HEAD"):
        r = requests.request(method, f"{base}/feeds/tags/habits.rss", headers=IDENTITY, timeout=5)
        assert r.status_code == 200
        links = requests.utils.parse_header_links(r.headers["Link"])
        assert [l["url"] for l in links if l["rel"] == "hub"] == [HUB]
        assert [l["url"] for l in links if l["rel"] == "self"] == [f"{base}/feeds/tags/habits.rss"]
    head = requests.head(f"{base}/feeds/all.atom", headers=IDENTITY, timeout=5)
    get = requests.get(f"{base}/feeds/all.atom", headers=IDENTITY, timeout=5)
    assert head.content == b"" and head.headers["Content-Length"] == str(len(get.content))
    for name in ("ETag", "Last-Modified", "Cache-Control", "Content-Type", "Vary", "Link"):
        assert head.headers[name] == get.headers[name]


def test_http_2_if_none_match_first_then_if_modified_since(server):
    base, _ = server
    url = f"{base}/feeds/all.atom"
    first = requests.get(url, headers=IDENTITY, timeout=5)
    etag, lm = first.headers["ETag"], first.headers["Last-Modified"]
    assert requests.get(url, headers={**IDENTITY, "If-None-Match": etag}, timeout=5).status_code == 304
    assert requests.get(url, headers={**IDENTITY, "If-None-Match": f'"nope", W/{etag}'}, timeout=5).status_code == 304
    future = email.utils.formatdate(time.time() + 3600, usegmt=True)
    # a non-matching If-None-Match wins over an If-Modified-Since that alone would give 304
    r = requests.get(url, headers={**IDENTITY, "If-None-Match": '"other"', "If-Modified-Since": future}, timeout=5)
    assert r.status_code == 200 and r.content
    assert requests.get(url, headers={**IDENTITY, "If-Modified-Since": lm}, timeout=5).status_code == 304
    old = email.utils.formatdate(0, usegmt=True)
    assert requests.get(url, headers={**IDENTITY, "If-Modified-Since": old}, timeout=5).status_code == 200


def test_http_3_a_304_has_no_body_and_the_headers_of_the_200(server):
    base, _ = server
    url = f"{base}/feeds/all.json"
    ok = requests.get(url, headers=IDENTITY, timeout=5)
    r = requests.get(url, headers={**IDENTITY, "If-None-Match": ok.headers["ETag"]}, timeout=5)
    assert r.status_code == 304 and r.content == b""
    for name in ("ETag", "Cache-Control", "Vary", "Last-Modified", "Link"):
        assert r.headers[name] == ok.headers[name], name
    assert "Date" in r.headers


def test_http_4_gzip_has_its_own_etag_and_the_same_content(server):
    base, app = server
    url = f"{base}/feeds/all.atom"
    plain = requests.get(url, headers=IDENTITY, timeout=5)
    zipped = requests.get(url, headers=GZIP, timeout=5, stream=True)
    raw = zipped.raw.read()
    assert zipped.headers["Content-Encoding"] == "gzip" and zipped.headers["Vary"] == "Accept-Encoding"
    assert zipped.headers["ETag"] != plain.headers["ETag"]
    assert gzip.decompress(raw) == plain.content == public_bytes(app, "feeds/all.atom")
    assert requests.get(url, headers={**GZIP, "If-None-Match": zipped.headers["ETag"]}, timeout=5).status_code == 304
    # the identity tag does not validate the gzip variant
    assert requests.get(url, headers={**GZIP, "If-None-Match": plain.headers["ETag"]}, timeout=5).status_code == 200


def test_http_4_sealed_archives_are_cached_long_and_the_open_one_short(server):
    base, app = server
    # 9 articles, 3 in the subscription document, archives of 2: pages 1-2 sealed, 3 open
    sealed = requests.get(f"{base}/feeds/archive/all/1.atom", headers=IDENTITY, timeout=5)
    assert sealed.headers["Cache-Control"] == f"public, max-age={app.settings.feeds.archive_max_age}, immutable"
    assert "hub" not in sealed.headers["Link"]
    open_page = requests.get(f"{base}/feeds/archive/all/3.atom", headers=IDENTITY, timeout=5)
    assert open_page.headers["Cache-Control"] == f"public, max-age={app.settings.feeds.max_age}"


def test_http_4_full_listing_pages_are_cached_long_and_the_open_ones_short(tmp_path):
    """A listing's pages are cut like its feed: the full ones are sealed too."""
    with serving_site(tmp_path / "site", count=15) as (base, app):
        long = f"public, max-age={app.settings.feeds.archive_max_age}, immutable"
        short = f"public, max-age={app.settings.feeds.max_age}"
        # categories/wellbeing: 8 of the 15; 3 on the newest page, archives of 2: 1-2 full, 3 open
        full = requests.get(f"{base}/categories/wellbeing/page/1/", headers=IDENTITY, timeout=5)
        assert full.status_code == 200 and full.headers["Cache-Control"] == long
        for rel in ("categories/wellbeing/page/3/", "categories/wellbeing/"):
            page = requests.get(f"{base}/{rel}", headers=IDENTITY, timeout=5)
            assert page.status_code == 200 and page.headers["Cache-Control"] == short, rel


def test_disc_1_autodiscovery_links_answer_200_with_their_type(server):
    base, _ = server
    home = requests.get(f"{base}/", timeout=5)
    assert home.status_code == 200 and home.headers["Content-Type"] == "text/html; charset=utf-8"
    links = lxml.html.fromstring(home.content).xpath("//head/link[@rel='alternate']")
    assert len(links) == 3
    for link in links:
        r = requests.get(link.get("href"), timeout=5)
        assert r.status_code == 200 and r.headers["Content-Type"].split(";")[0] == link.get("type")


def test_pages_directories_and_hidden_files(server):
    base, _ = server
    r = requests.get(f"{base}/articles/article-001", allow_redirects=False, timeout=5)
    assert r.status_code == 301 and r.headers["Location"] == "/articles/article-001/"
    assert requests.get(f"{base}/articles/article-001/", timeout=5).status_code == 200
    assert requests.get(f"{base}/.build-manifest.json", timeout=5).status_code == 404
    assert requests.get(f"{base}/feeds/../../var/syndicate.db", timeout=5).status_code == 404
    assert requests.get(f"{base}/%2e%2e/var/secret_key", timeout=5).status_code == 404
    assert requests.get(f"{base}/nothing-here", timeout=5).status_code == 404
    assert requests.post(f"{base}/feeds/all.atom", timeout=5).status_code == 405
    img = requests.get(f"{base}/articles/article-001/index.html", headers=GZIP, timeout=5)
    assert img.headers["Content-Encoding"] == "gzip"


def test_a_rebuilt_feed_gets_a_new_etag(server, tmp_path):
    base, app = server
    url = f"{base}/feeds/authors/bo-chen.atom"
    before = requests.get(url, headers=IDENTITY, timeout=5).headers["ETag"]
    path = app.settings.path("paths.public") / "feeds" / "authors" / "bo-chen.atom"
    original = path.read_bytes()
    try:
        tmp = path.with_name(".swap.tmp")
        tmp.write_bytes(original.replace(b"</feed>", b"<!-- changed --></feed>"))
        os.replace(tmp, path)
        r = requests.get(url, headers={**IDENTITY, "If-None-Match": before}, timeout=5)
        assert r.status_code == 200 and r.headers["ETag"] != before
    finally:
        tmp = path.with_name(".swap.tmp")
        tmp.write_bytes(original)
        os.replace(tmp, path)


@contextlib.contextmanager
def syndicate_serve(app, port: int, probe: str = "/healthz"):
    """A real `syndicate serve` process for `app`'s project on 127.0.0.1:port, started
    and answering `probe`; terminated afterwards."""
    config = app.settings.root / "syndicate.toml"
    dispose_engines()
    exe = Path(sys.executable).with_name("syndicate")
    proc = subprocess.Popen(
        [str(exe), "--config", str(config), "serve", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=app.settings.root,
        env={**os.environ, "SYNDICATE_SECRET_KEY": "x" * 40},
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                requests.get(f"http://127.0.0.1:{port}{probe}", timeout=2)
                break
            except requests.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"syndicate serve did not start: {proc.stderr.read().decode()[-2000:]}")
                time.sleep(0.1)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def free_port() -> int:
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()  # syndicate serve binds it itself; a race with another process is unlikely
    return port


@pytest.mark.xdist_group("processes")  # a real `syndicate serve` process (TEST-2)
def test_syndicate_serve_answers_304_on_repeat_requests(tmp_path):
    """The issue's acceptance check: `syndicate serve` on the built public/."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app = make_site(tmp_path / "site", base)
    with syndicate_serve(app, port):
        first = requests.get(f"{base}/feeds/all.atom", headers=GZIP, timeout=5)
        assert first.status_code == 200 and first.headers["Content-Type"] == TYPES["atom"]
        assert first.headers["Content-Encoding"] == "gzip" and first.headers["Vary"] == "Accept-Encoding"
        again = requests.get(
            f"{base}/feeds/all.atom", headers={**GZIP, "If-None-Match": first.headers["ETag"]}, timeout=5
        )
        assert again.status_code == 304 and again.headers["ETag"] == first.headers["ETag"]
        since = requests.get(
            f"{base}/feeds/all.rss", headers={"If-Modified-Since": first.headers["Last-Modified"]}, timeout=5
        )
        assert since.status_code == 304
        assert requests.get(f"{base}/", timeout=5).status_code == 200


@pytest.mark.xdist_group("processes")  # a real `syndicate serve` process (TEST-2)
def test_syndicate_serve_keeps_the_signup_limit_against_spoofed_forwarded_for_doi2(tmp_path):
    """Issue 18 item 3: a local process sending a new X-Forwarded-For per request is still
    one client (no proxy is trusted by default), so the per-client limit holds."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = write_project(
        tmp_path / "site",
        f"sqlite:///{tmp_path / 'site' / 'var' / 'syndicate.db'}",
        "[subscribers]\nmax_signups_per_client = 3\n",
    )
    config.write_text(config.read_text().replace('base_url = "https://news.example.com"', f'base_url = "{base}"'))
    app = App(load_settings(config, env={}))
    with app.engine.begin():
        pass  # the database exists before the server opens it
    with syndicate_serve(app, port):
        answers = [
            requests.post(
                f"{base}/subscribe",
                data={"email": f"s{i}@example.com"},
                headers={"Origin": base, "X-Forwarded-For": f"198.51.100.{i}"},
                timeout=10,
            ).status_code
            for i in range(5)
        ]
    assert answers == [200, 200, 200, 429, 429]
