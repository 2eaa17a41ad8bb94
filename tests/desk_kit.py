"""Helpers for the desk tests: users with passwords, signed-in ASGI clients, CSRF tokens."""

from __future__ import annotations

import re
import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from pipeline import accounts
from pipeline.web.app import create_app

BASE = "https://news.example.com"
PASSWORD = "correct horse battery staple"
ROLE_USERS = {"author": ["author"], "editor": ["editor"], "operator": ["operator"], "admin": ["admin"]}


def make_user(app, email: str, roles, *, name: str = "", password: str = PASSWORD, state: str = "active"):
    with app.engine.begin() as conn:
        return accounts.create_user(
            conn, email, roles=roles, name=name or email.split("@")[0].title(), state=state, password=password
        )


def client_for(app) -> TestClient:
    return TestClient(create_app(app), base_url=BASE, follow_redirects=False)


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, "no CSRF token in the page"
    return m.group(1)


def sign_in(client: TestClient, email: str, password: str = PASSWORD):
    page = client.get("/desk/login")
    r = client.post(
        "/desk/login", data={"email": email, "password": password, "csrf_token": csrf_of(page.text), "next": "/desk/"}
    )
    return r


def signed_in(app, email: str, password: str = PASSWORD) -> TestClient:
    client = client_for(app)
    r = sign_in(client, email, password)
    assert r.status_code == 303 and r.headers["location"] == "/desk/", r.text[:500]
    return client


def token(client: TestClient, path: str = "/desk/") -> str:
    return csrf_of(client.get(path).text)
