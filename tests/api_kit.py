"""The API's test kit: the whole web service under uvicorn on 127.0.0.1, httpx clients,
and tokens with chosen scopes (issue 14 item 1)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import uvicorn

from pipeline.accounts import api_tokens
from pipeline.web.app import create_app

API = "/api/v1"


@contextlib.contextmanager
def running(app) -> Iterator[str]:
    """create_app(app) served by uvicorn on a socket bound to 127.0.0.1 port 0; yields the base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(create_app(app), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def token(app, *scopes: str, name: str = "test", expires_in=None) -> str:
    with app.engine.begin() as conn:
        _, raw = api_tokens.create_token(
            conn, name=name, scopes=list(scopes), created_by="tests", expires_in=expires_in
        )
    return raw


def client(base: str, raw: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {raw}"} if raw else {}
    return httpx.Client(base_url=base + API, headers=headers, timeout=30)


def api_tokens_table():
    from pipeline.store.schema import api_tokens as table

    return table
