"""Desk accounts on every database: hashing, sessions, throttles, CSRF, single-use links,
and the abuse cases of issue 13 (unknown account, disabled user, tampered links)."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import re

import pytest
from sqlalchemy import select

from pipeline import accounts, tokens
from pipeline.accounts import audit
from pipeline.delivery.worker import drain
from pipeline.errors import TokenError
from pipeline.store.schema import audit_log, deliveries, user_sessions
from pipeline.timeutil import utcnow

from .desk_kit import PASSWORD, client_for, csrf_of, make_user, sign_in, signed_in

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_passwords_are_argon2id_and_verify():
    h = accounts.hash_password("a long enough password")
    assert h.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert accounts.verify_password(h, "a long enough password")
    assert not accounts.verify_password(h, "a long enough passworD")
    assert not accounts.verify_password(None, "anything")  # unknown account: the dummy hash, never True
    assert not accounts.verify_password("garbage", "anything")


def test_an_unknown_account_costs_the_same_argon2_work_as_a_known_one():
    """The dummy hash verified for an unknown account is a fixed string (no Argon2 at
    import time); it must carry exactly the parameters real hashes are made with, or a
    sign-in would say by its timing whether the address has an account."""
    assert not accounts._hasher.check_needs_rehash(accounts._DUMMY_HASH)
    real = accounts.hash_password("a long enough password")
    assert real.split("$")[:4] == accounts._DUMMY_HASH.split("$")[:4]  # id, version, m/t/p


def test_password_rules():
    with pytest.raises(accounts.AccountError, match="at least 10"):
        accounts.check_password_rules("short")
    with pytest.raises(accounts.AccountError, match="longer than"):
        accounts.check_password_rules("x" * 2000)
    with pytest.raises(accounts.AccountError, match="email"):
        accounts.check_password_rules("me@example.com", "me@example.com")


def test_unknown_account_answers_like_a_wrong_password(app):
    make_user(app, "ed@example.com", ["editor"])
    answers = []
    for who, pw in (("ed@example.com", "wrong password!"), ("nobody@example.com", "wrong password!")):
        with app.engine.begin() as conn:
            with pytest.raises(accounts.SignInRefused) as info:
                accounts.authenticate(conn, app.settings, who, pw, ip="192.0.2.1")
        answers.append((info.value.message, info.value.hint))
    assert answers[0] == answers[1]
    client = client_for(app)
    bodies = []
    for who in ("ed@example.com", "nobody@example.com"):
        r = sign_in(client, who, "wrong password!")
        assert r.status_code == 400
        bodies.append(re.sub(r'value="[^"]*"', "", r.text))
    assert bodies[0] == bodies[1]


def test_sign_in_is_throttled_per_account_and_per_address(make_app, db_url):
    app = make_app(db_url, "[desk]\nmax_failures_per_account = 3\nmax_failures_per_address = 5\n")
    make_user(app, "ed@example.com", ["editor"])
    limit = app.settings.desk.max_failures_per_account
    for i in range(limit):
        with app.engine.begin() as conn:
            with pytest.raises(accounts.SignInRefused):
                accounts.authenticate(conn, app.settings, "ed@example.com", "wrong password!", ip=f"192.0.2.{i}")
    with app.engine.begin() as conn:  # even the right password is refused for a while
        with pytest.raises(accounts.Throttled) as info:
            accounts.authenticate(conn, app.settings, "ed@example.com", PASSWORD, ip="198.51.100.7")
    assert 0 < info.value.retry_after <= app.settings.desk.throttle_minutes * 60 + 1
    later = utcnow() + dt.timedelta(minutes=app.settings.desk.throttle_minutes + 1)
    with app.engine.begin() as conn:
        assert accounts.authenticate(conn, app.settings, "ed@example.com", PASSWORD, ip="198.51.100.7", now=later)
    # per address: many accounts tried from one client
    per_ip = app.settings.desk.max_failures_per_address
    for i in range(per_ip):
        with app.engine.begin() as conn:
            with pytest.raises(accounts.SignInRefused):
                accounts.authenticate(conn, app.settings, f"guess{i}@example.com", "wrong password!", ip="203.0.113.9")
    with app.engine.begin() as conn:
        with pytest.raises(accounts.Throttled):
            accounts.authenticate(conn, app.settings, "other@example.com", PASSWORD, ip="203.0.113.9")


def test_throttled_sign_in_is_a_429_page(sqlite_app):
    make_user(sqlite_app, "ed@example.com", ["editor"])
    client = client_for(sqlite_app)
    for _ in range(sqlite_app.settings.desk.max_failures_per_account):
        assert sign_in(client, "ed@example.com", "wrong password!").status_code == 400
    r = sign_in(client, "ed@example.com")
    assert r.status_code == 429 and "too many sign-in attempts" in r.text.lower()
    assert int(r.headers["Retry-After"]) > 0


def test_session_cookie_flags_and_logout_ends_the_session(app):
    make_user(app, "ed@example.com", ["editor"])
    client = client_for(app)
    r = sign_in(client, "ed@example.com")
    cookie = r.headers["set-cookie"]
    assert "desk_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "Secure" in cookie  # the test site is https
    assert "Path=/desk" in cookie
    assert client.get("/desk/review").status_code == 200
    token = csrf_of(client.get("/desk/").text)
    r = client.post("/desk/logout", data={"csrf_token": token})
    assert r.status_code == 303
    with app.engine.connect() as conn:
        assert conn.execute(select(user_sessions)).all() == []
    assert client.get("/desk/review").status_code == 303


def test_session_expires(app):
    user = make_user(app, "ed@example.com", ["editor"])
    past = utcnow() - dt.timedelta(hours=app.settings.desk.session_hours, minutes=1)
    with app.engine.begin() as conn:
        old = accounts.start_session(conn, app.settings, user.id, now=past)
        fresh = accounts.start_session(conn, app.settings, user.id)
    with app.engine.connect() as conn:
        assert accounts.session_user(conn, old) is None
        assert accounts.session_user(conn, fresh)[0].email == "ed@example.com"
        assert accounts.session_user(conn, "forged") is None
    client = client_for(app)
    client.cookies.set("desk_session", old, path="/desk")
    r = client.get("/desk/review")
    assert r.status_code == 303 and r.headers["location"].startswith("/desk/login")


def test_a_disabled_users_cookie_stops_working(app):
    user = make_user(app, "ed@example.com", ["editor"])
    client = signed_in(app, "ed@example.com")
    assert client.get("/desk/review").status_code == 200
    with app.engine.begin() as conn:
        accounts.set_state(conn, user.id, "disabled")
    assert client.get("/desk/review").status_code == 303
    with app.engine.begin() as conn:
        with pytest.raises(accounts.SignInRefused):
            accounts.authenticate(conn, app.settings, "ed@example.com", PASSWORD)


def test_csrf_missing_wrong_or_from_another_session_is_refused(sqlite_app):
    app = sqlite_app
    make_user(app, "ed@example.com", ["editor"])
    make_user(app, "op@example.com", ["operator"])
    ed = signed_in(app, "ed@example.com")
    op = signed_in(app, "op@example.com")
    other = csrf_of(op.get("/desk/").text)
    for data in ({}, {"csrf_token": "nonsense"}, {"csrf_token": other}):
        r = ed.post("/desk/logout", data=data)
        assert r.status_code == 403, data
    good = csrf_of(ed.get("/desk/").text)
    r = ed.post("/desk/logout", data={"csrf_token": good}, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    assert ed.post("/desk/logout", data={"csrf_token": good}).status_code == 303
    # a token expires
    stale = tokens._timed_serializer(app.settings, "desk-csrf")
    old = stale.dumps("x")
    with pytest.raises(TokenError):
        tokens.verify(app.settings, "desk-csrf", old, max_age=-1)


def _link_from_mail(app) -> str:
    drain(app.settings, app.engine)
    files = sorted((app.settings.path("email.maildir") / "new").iterdir(), key=lambda p: p.stat().st_mtime)
    msg = email.message_from_bytes(files[-1].read_bytes(), policy=email.policy.default)
    return re.search(r"https://news\.example\.com(/desk/\S+)", msg.get_body(("plain",)).get_content()).group(1)


def test_invitation_link_is_single_use_and_sets_the_password(app):
    with app.engine.begin() as conn:
        user, token = accounts.invite(conn, app.settings, "new@example.com", ["editor"], name="New Editor")
    with app.engine.connect() as conn:
        assert conn.execute(select(deliveries.c.kind, deliveries.c.target)).all() == [
            ("desk_invite", "new@example.com")
        ]
    path = _link_from_mail(app)
    assert path == f"/desk/invite/{token}"
    client = client_for(app)
    page = client.get(path)
    assert page.status_code == 200 and "Choose your password" in page.text
    r = client.post(
        path,
        data={
            "csrf_token": csrf_of(page.text),
            "password": "a brand new password",
            "password2": "a brand new password",
        },
    )
    assert r.status_code == 303
    assert sign_in(client, "new@example.com", "a brand new password").status_code == 303
    again = client_for(app).get(path)
    assert again.status_code == 410 and "used already" in again.text
    with app.engine.begin() as conn:
        with pytest.raises(TokenError, match="used"):
            accounts.accept_invitation(conn, app.settings, token, "another long password")


def test_invitation_expires_and_tampering_is_refused(app):
    with app.engine.begin() as conn:
        _, token = accounts.invite(conn, app.settings, "new@example.com", ["operator"])
    later = utcnow() + dt.timedelta(hours=app.settings.desk.invite_ttl_hours, minutes=1)
    with app.engine.connect() as conn:
        with pytest.raises(TokenError, match="expired"):
            accounts.check_link(conn, app.settings, "invite", token, now=later)
        tampered = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
        with pytest.raises(TokenError, match="not valid"):
            accounts.check_link(conn, app.settings, "invite", tampered)
        with pytest.raises(TokenError, match="not valid"):  # a link for another purpose
            accounts.check_link(conn, app.settings, "reset", token)


def test_password_reset_by_email_is_single_use_and_ends_sessions(app):
    make_user(app, "ed@example.com", ["editor"])
    old_client = signed_in(app, "ed@example.com")
    client = client_for(app)
    page = client.get("/desk/reset")
    for who in ("ed@example.com", "nobody@example.com"):
        r = client.post("/desk/reset", data={"csrf_token": csrf_of(page.text), "email": who})
        assert r.status_code == 200 and "If that address has a desk account" in r.text
    with app.engine.connect() as conn:
        assert [t for (t,) in conn.execute(select(deliveries.c.target))] == ["ed@example.com"]
    path = _link_from_mail(app)
    page = client.get(path)
    r = client.post(
        path,
        data={"csrf_token": csrf_of(page.text), "password": "new and long enough", "password2": "new and long enough"},
    )
    assert r.status_code == 303
    assert old_client.get("/desk/review").status_code == 303, "a reset signs out every session"
    assert sign_in(client_for(app), "ed@example.com", "new and long enough").status_code == 303
    assert client_for(app).get(path).status_code == 410


def test_self_registration_confirm_then_an_editor_accepts(app):
    client = client_for(app)
    page = client.get("/desk/join")
    r = client.post(
        "/desk/join",
        data={
            "csrf_token": csrf_of(page.text),
            "email": "ann@example.com",
            "name": "Ann Author",
            "password": "my long password",
        },
    )
    assert r.status_code == 200 and "Check your inbox" in r.text
    assert sign_in(client, "ann@example.com", "my long password").status_code == 400  # not confirmed yet
    path = _link_from_mail(app)
    page = client.get(path)
    assert page.status_code == 200
    with app.engine.connect() as conn:
        assert accounts.by_email(conn, "ann@example.com").state == "unconfirmed", "GET confirms nothing"
    r = client.post(path, data={"csrf_token": csrf_of(page.text)})
    assert r.status_code == 200 and "An editor will look" in r.text
    assert sign_in(client_for(app), "ann@example.com", "my long password").status_code == 400
    make_user(app, "ed@example.com", ["editor"])
    ed = signed_in(app, "ed@example.com")
    with app.engine.connect() as conn:
        ann = accounts.by_email(conn, "ann@example.com")
    r = ed.post(f"/desk/applicants/{ann.id}/accept", data={"csrf_token": csrf_of(ed.get("/desk/applicants").text)})
    assert r.status_code == 303
    assert sign_in(client_for(app), "ann@example.com", "my long password").status_code == 303
    with app.engine.connect() as conn:
        assert accounts.by_email(conn, "ann@example.com").author_slug == "ann-author"
        actions = [a for (a,) in conn.execute(select(audit_log.c.action).order_by(audit_log.c.id))]
    assert [a for a in actions if a.startswith("user.")] == ["user.register", "user.confirm", "user.accept"]


def test_open_registration_accepts_at_once(make_app, sqlite_url):
    app = make_app(sqlite_url, "[desk]\nopen_registration = true\n")
    with app.engine.begin() as conn:
        accounts.register_author(conn, app.settings, "ann@example.com", "Ann", "my long password")
    path = _link_from_mail(app)
    with app.engine.begin() as conn:
        user = accounts.confirm_registration(conn, app.settings, path.rsplit("/", 1)[1])
    assert user.state == "active"


def test_registering_an_existing_address_reveals_nothing(app):
    make_user(app, "ed@example.com", ["editor"])
    with app.engine.begin() as conn:
        accounts.register_author(conn, app.settings, "ed@example.com", "Someone", "my long password")
    with app.engine.connect() as conn:
        assert conn.execute(select(deliveries)).all() == []
        assert accounts.by_email(conn, "ed@example.com").roles == ("editor",)


def test_audit_records_who_what_and_where(app):
    make_user(app, "ad@example.com", ["admin"])
    client = signed_in(app, "ad@example.com")
    r = client.post(
        "/desk/users/invite",
        data={"csrf_token": csrf_of(client.get("/desk/users").text), "email": "op@example.com", "roles": ["operator"]},
    )
    assert r.status_code == 303
    with app.engine.connect() as conn:
        rows = audit.entries(conn, action="user.add")
    assert [(r["actor"], r["via"], r["target"], r["detail"]) for r in rows] == [
        ("ad@example.com", "web", "op@example.com", {"roles": ["operator"]})
    ]
    assert rows[0]["ip"] == "testclient"
    page = client.get("/desk/audit")
    assert "user.add" in page.text and "op@example.com" in page.text
