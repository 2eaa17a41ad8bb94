"""The desk's role matrix: every route in pipeline.web.desk.ROUTES, requested as
anonymous, author, editor, operator and admin, against the answer written down here.

EXPECTED is kept by hand, apart from the rules in the route table: a route added
without an entry here fails `test_every_route_has_an_expectation`, and a rule that
drifts from what is written here fails the matrix.
"""

from __future__ import annotations

import shutil

import pytest

from pipeline import accounts, tokens
from pipeline import subscribers as subs
from pipeline.content import desk as desk_source
from pipeline.web.desk import ROUTES

from .conftest import REPO
from .desk_kit import client_for, make_user

ANON, AUTHOR, EDITOR, OPERATOR, ADMIN = "anonymous", "author", "editor", "operator", "admin"
EVERYONE = {ANON, AUTHOR, EDITOR, OPERATOR, ADMIN}
SIGNED = {AUTHOR, EDITOR, OPERATOR, ADMIN}

EXPECTED: dict[tuple[str, str], set[str]] = {
    ("GET", "/"): SIGNED,
    ("GET", "/login"): EVERYONE,
    ("POST", "/login"): EVERYONE,
    ("POST", "/logout"): SIGNED,
    ("GET", "/join"): EVERYONE,
    ("POST", "/join"): EVERYONE,
    ("GET", "/join/confirm/{token}"): EVERYONE,
    ("POST", "/join/confirm/{token}"): EVERYONE,
    ("GET", "/invite/{token}"): EVERYONE,
    ("POST", "/invite/{token}"): EVERYONE,
    ("GET", "/reset"): EVERYONE,
    ("POST", "/reset"): EVERYONE,
    ("GET", "/reset/{token}"): EVERYONE,
    ("POST", "/reset/{token}"): EVERYONE,
    ("GET", "/media/{name}"): SIGNED,
    ("GET", "/articles"): {AUTHOR, ADMIN},
    ("GET", "/articles/new"): {AUTHOR, ADMIN},
    ("POST", "/articles/new"): {AUTHOR, ADMIN},
    ("GET", "/articles/{article_id}"): {AUTHOR, ADMIN},
    ("POST", "/articles/{article_id}"): {AUTHOR, ADMIN},
    ("GET", "/review"): {EDITOR, ADMIN},
    ("GET", "/review/{slug}"): {EDITOR, ADMIN},
    ("GET", "/review/{slug}/page"): {EDITOR, ADMIN},
    ("GET", "/review/{slug}/digest"): {EDITOR, ADMIN},
    ("GET", "/review/{slug}/feed"): {EDITOR, ADMIN},
    ("GET", "/review/{slug}/history"): {EDITOR, ADMIN},
    ("POST", "/review/{slug}/approve"): {EDITOR, ADMIN},
    ("POST", "/review/{slug}/reject"): {EDITOR, ADMIN},
    ("POST", "/review/{slug}/retract"): {EDITOR, ADMIN},
    ("GET", "/applicants"): {EDITOR, ADMIN},
    ("POST", "/applicants/{user_id}/accept"): {EDITOR, ADMIN},
    ("GET", "/ops"): {OPERATOR, ADMIN},
    ("GET", "/ops/outbox"): {OPERATOR, ADMIN},
    ("POST", "/ops/outbox/retry"): {OPERATOR, ADMIN},
    ("POST", "/ops/channels/{channel}/pause"): {OPERATOR, ADMIN},
    ("POST", "/ops/channels/{channel}/resume"): {OPERATOR, ADMIN},
    ("GET", "/ops/jobs"): {OPERATOR, ADMIN},
    ("POST", "/ops/jobs/{job_id}/run"): {OPERATOR, ADMIN},
    ("POST", "/ops/jobs/{job_id}/pause"): {OPERATOR, ADMIN},
    ("POST", "/ops/jobs/{job_id}/resume"): {OPERATOR, ADMIN},
    ("GET", "/ops/partners"): {OPERATOR, ADMIN},
    ("POST", "/ops/partners/{name}/resume"): {OPERATOR, ADMIN},
    ("GET", "/ops/editions"): {OPERATOR, ADMIN},
    ("GET", "/ops/editions/{key}"): {OPERATOR, ADMIN},
    ("GET", "/ops/subscribers"): {OPERATOR, ADMIN},
    ("POST", "/ops/subscribers/export"): {OPERATOR, ADMIN},
    ("GET", "/ops/subscribers/{subscriber_id}"): {OPERATOR, ADMIN},
    ("POST", "/ops/subscribers/{subscriber_id}/suppress"): {OPERATOR, ADMIN},
    ("GET", "/users"): {ADMIN},
    ("POST", "/users/invite"): {ADMIN},
    ("POST", "/users/{user_id}/role"): {ADMIN},
    ("POST", "/users/{user_id}/disable"): {ADMIN},
    ("GET", "/audit"): {ADMIN},
    ("GET", "/tokens"): {ADMIN},
    ("POST", "/tokens"): {ADMIN},
    ("POST", "/tokens/{token_id}/revoke"): {ADMIN},
}


def test_every_route_has_an_expectation():
    routes = {(m, r.path) for r in ROUTES for m in r.methods}
    assert routes - set(EXPECTED) == set(), "a desk route without a line in EXPECTED: add who may use it"
    assert set(EXPECTED) - routes == set(), "EXPECTED names a route the desk no longer has"


@pytest.fixture
def world(make_app, sqlite_url):
    """One user per role, an author's article submitted for review, an applicant, a subscriber."""
    app = make_app(sqlite_url)
    (app.settings.root / "schedules").mkdir()
    shutil.copy(REPO / "schedules" / "default.toml", app.settings.root / "schedules")
    users = {role: make_user(app, f"{role}@example.com", [role]) for role in (AUTHOR, EDITOR, OPERATOR, ADMIN)}
    applicant = make_user(app, "applicant@example.com", ["author"], state="pending")
    with app.engine.begin() as conn:
        draft = desk_source.Draft(
            title="Tea at Four", summary="", tags=["habits"], category="home", body_markdown="A cup of tea at four.\n"
        )
        desk_id = desk_source.create(conn, users[AUTHOR].id, draft)
        desk_source.submit(conn, app.settings, desk_id, accounts.ensure_author(conn, users[AUTHOR].id))
        sub, _ = subs.add(conn, app.settings, "reader@example.com", confirmed=True)
    params = {
        "token": "not-a-token",
        "article_id": str(desk_id),
        "slug": "tea-at-four",
        "user_id": str(applicant.id),
        "channel": "email",
        "job_id": "ingest",
        "subscriber_id": str(sub["id"]),
        "name": "missing.png",
        "token_id": "1",
        "key": "daily-1999-01-01",
    }
    return app, users, params


def _client(app, user):
    client = client_for(app)
    if user is None:
        client.get("/desk/login")  # sets the pre-sign-in cookie the CSRF token is bound to
        return client, tokens.sign(app.settings, "desk-csrf", client.cookies.get("desk_pre"), timed=True)
    with app.engine.begin() as conn:
        cookie = accounts.start_session(conn, app.settings, user.id)
    client.cookies.set("desk_session", cookie, path="/desk")
    return client, tokens.sign(app.settings, "desk-csrf", tokens.token_hash(cookie), timed=True)


def test_role_matrix(world):
    app, users, params = world
    failures = []
    for role in (ANON, AUTHOR, EDITOR, OPERATOR, ADMIN):
        for route in ROUTES:
            for method in route.methods:
                client, csrf = _client(app, users.get(role))
                path = "/desk" + route.path.format(**params)
                if method == "GET":
                    r = client.get(path)
                else:
                    r = client.post(path, data={"csrf_token": csrf, "revision_id": "0"})
                allowed = role in EXPECTED[(method, route.path)]
                to_login = r.status_code == 303 and r.headers["location"].startswith("/desk/login?next=")
                refused = r.status_code == 403 and "Not for your role" in r.text
                if r.status_code >= 500:
                    failures.append(f"{role} {method} {path}: {r.status_code}")
                elif allowed and (to_login or refused):
                    failures.append(f"{role} {method} {path}: refused ({r.status_code}) but should be allowed")
                elif not allowed and role == ANON and not to_login:
                    failures.append(f"{role} {method} {path}: {r.status_code}, expected a redirect to sign in")
                elif not allowed and role != ANON and not refused:
                    failures.append(f"{role} {method} {path}: {r.status_code}, expected 403 for the role")
                client.close()
    assert not failures, "\n".join(failures)
