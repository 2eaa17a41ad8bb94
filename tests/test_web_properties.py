"""Property tests: arbitrary input in every form field gets a clean 2xx or 4xx, never
a 500 (hypothesis, through the ASGI client, on SQLite; the core's validation is the
same on PostgreSQL, which test_web.py covers with fixed inputs)."""

from __future__ import annotations

import re
import warnings
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from pipeline import subscribers as subs
from pipeline.web.app import create_app

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
BASE = "https://news.example.com"
RELAXED = "[subscribers]\nmax_signups_per_address = 100000\nmax_signups_per_client = 100000\n"
FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)

text = st.text(max_size=300)
maybe_text = st.one_of(
    st.none(),
    text,
    st.sampled_from(["", "daily", "weekly", "instant", "UTC", "Europe/Berlin", "work", "a@example.com", "One-Click"]),
)
emails = st.one_of(
    text,
    st.emails().map(str),
    st.sampled_from(["a@example.com", "A@EXAMPLE.COM", "@", "a@b", "x@localhost", "a@[127.0.0.1]"]),
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), text),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(text, inner, max_size=4)),
    max_leaves=10,
)


def ok(status: int) -> bool:
    return 200 <= status < 300 or 400 <= status < 500


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory):
    from pipeline.app import App
    from pipeline.config import load_settings
    from pipeline.store import dispose_engines
    from tests.conftest import write_project

    root = tmp_path_factory.mktemp("fuzz")
    config = write_project(root / "site", f"sqlite:///{root / 'site' / 'var' / 'fuzz.db'}", RELAXED)
    app = App(load_settings(config, env={}))
    client = TestClient(create_app(app), base_url=BASE, raise_server_exceptions=False)
    with client:
        yield app, client
    dispose_engines()


def form_data(fields: dict) -> dict:
    return {k: v for k, v in fields.items() if v is not None}


@FUZZ
@given(
    email=emails,
    name=maybe_text,
    frequency=maybe_text,
    timezone=maybe_text,
    topics=st.lists(maybe_text.filter(lambda v: v is not None), max_size=5),
    consent_version=maybe_text,
    website=st.one_of(st.none(), st.just(""), text),
)
def test_subscribe_form_fields(fuzz_app, email, name, frequency, timezone, topics, consent_version, website):
    _, client = fuzz_app
    data = form_data(
        {
            "email": email,
            "name": name,
            "frequency": frequency,
            "timezone": timezone,
            "consent_version": consent_version,
            "website": website,
        }
    )
    data["topics"] = topics
    r = client.post("/subscribe", data=data, headers={"Origin": BASE})
    assert ok(r.status_code), (r.status_code, r.text[:300])


@FUZZ
@given(
    body=st.dictionaries(
        st.sampled_from(["email", "name", "frequency", "topics", "timezone", "consent_version", "website", "other"]),
        json_values,
        max_size=8,
    ),
    raw=st.one_of(st.none(), st.binary(max_size=200)),
)
def test_subscribe_json_fields(fuzz_app, body, raw):
    _, client = fuzz_app
    if raw is not None:
        r = client.post("/subscribe", content=raw, headers={"Content-Type": "application/json"})
    else:
        r = client.post("/subscribe", json=body)
    assert ok(r.status_code), (r.status_code, r.text[:300])


@FUZZ
@given(
    raw=st.binary(max_size=400),
    content_type=st.sampled_from(
        [
            "application/x-www-form-urlencoded",
            "multipart/form-data",
            "multipart/form-data; boundary=xyz",
            "text/plain",
            "",
            "application/json; charset=utf-8",
        ]
    ),
)
def test_raw_bodies(fuzz_app, raw, content_type):
    app, client = fuzz_app
    sid = 1
    for path in (
        "/subscribe",
        "/unsubscribe/" + subs.list_token(app.settings, "unsubscribe", sid),
        "/preferences/" + subs.list_token(app.settings, "preferences", sid),
        "/confirm/abc",
    ):
        r = client.post(path, content=raw, headers={"Content-Type": content_type, "Origin": BASE})
        assert ok(r.status_code), (path, r.status_code, r.text[:300])


@pytest.fixture(scope="module")
def subscriber_links(fuzz_app):
    app, client = fuzz_app
    client.post("/subscribe", data={"email": "fuzz@example.com"}, headers={"Origin": BASE})
    with app.engine.connect() as conn:
        sub = subs.get(conn, "fuzz@example.com")
    prefs = "/preferences/" + subs.list_token(app.settings, "preferences", sub["id"])
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get(prefs).text).group(1)
    return {
        "prefs": prefs,
        "csrf": token,
        "unsub": "/unsubscribe/" + subs.list_token(app.settings, "unsubscribe", sub["id"]),
    }


@FUZZ
@given(
    name=maybe_text,
    frequency=maybe_text,
    timezone=maybe_text,
    topics=st.lists(maybe_text.filter(lambda v: v is not None), max_size=5),
    csrf_token=st.one_of(st.none(), text, st.just("VALID")),
)
def test_preferences_form_fields(fuzz_app, subscriber_links, name, frequency, timezone, topics, csrf_token):
    _, client = fuzz_app
    data = form_data(
        {
            "name": name,
            "frequency": frequency,
            "timezone": timezone,
            "csrf_token": subscriber_links["csrf"] if csrf_token == "VALID" else csrf_token,
        }
    )
    data["topics"] = topics
    r = client.post(subscriber_links["prefs"], data=data, headers={"Origin": BASE})
    assert ok(r.status_code), (r.status_code, r.text[:300])


@FUZZ
@given(token=text, field=maybe_text, value=maybe_text)
def test_token_paths_and_fields(fuzz_app, subscriber_links, token, field, value):
    _, client = fuzz_app
    data = form_data({field or "x": value})
    safe = quote(token, safe="") or "x"
    for path in (f"/confirm/{safe}", f"/preferences/{safe}", f"/unsubscribe/{safe}", f"/confirm/{safe}/resend"):
        r = client.post(path, data=data, headers={"Origin": BASE})
        assert ok(r.status_code), (path, r.status_code, r.text[:300])
        if not path.endswith("/resend"):
            g = client.get(path)
            assert ok(g.status_code), (path, g.status_code)
    r = client.post(subscriber_links["unsub"], data=data)
    assert ok(r.status_code)


# --- issue 18: invalid UTF-8, internationalised addresses, spoofed X-Forwarded-For ---------


def _not_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def _subscriber_count(app) -> int:
    from sqlalchemy import func, select

    from pipeline.store.schema import subscribers

    with app.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(subscribers)).scalar_one()


@FUZZ
@given(
    junk=st.binary(min_size=1, max_size=12).filter(_not_utf8),
    escaped=st.booleans(),
    content_type=st.sampled_from(["application/x-www-form-urlencoded", "multipart/form-data; boundary=b"]),
)
def test_undecodable_form_bodies_are_400_and_store_nothing(fuzz_app, junk, escaped, content_type):
    """Issue 18 item 2: bytes that are not UTF-8, raw or %-escaped, never become an address."""
    app, client = fuzz_app
    value = quote(junk, safe="").encode("ascii") if escaped and content_type.startswith("application") else junk
    if content_type.startswith("multipart"):
        body = b'--b\r\nContent-Disposition: form-data; name="email"\r\n\r\n' + value + b"@example.com\r\n--b--\r\n"
    else:
        body = b"email=" + value + b"%40example.com"
    before = _subscriber_count(app)
    r = client.post("/subscribe", content=body, headers={"Content-Type": content_type, "Origin": BASE})
    assert r.status_code == 400, (r.status_code, r.text[:300])
    assert _subscriber_count(app) == before


label = st.text(alphabet=st.characters(whitelist_categories=("Ll", "Lo", "Nd")), min_size=1, max_size=12)


@FUZZ
@given(local=st.one_of(st.from_regex(r"[a-z][a-z0-9._-]{0,10}", fullmatch=True), label), domain=label)
def test_internationalised_addresses_are_refused_or_mailed_with_an_ascii_address(fuzz_app, local, domain):
    """Issue 18 item 1: an IDN address is refused (400) or stored and mailed with its
    domain in IDNA form; a non-ASCII local part is refused (email.smtputf8 is off); the To
    header never holds an encoded-word."""
    import email
    import email.policy

    app, client = fuzz_app
    address = f"{local}@{domain}.example"
    r = client.post("/subscribe", data={"email": address}, headers={"Origin": BASE})
    assert r.status_code in (200, 400), (r.status_code, r.text[:300])
    if not local.isascii():
        assert r.status_code == 400
    if r.status_code != 200:
        return
    with app.engine.connect() as conn:
        from sqlalchemy import select

        from pipeline.store.schema import deliveries

        row = conn.execute(
            select(deliveries.c.target, deliveries.c.idempotency_key, deliveries.c.state)
            .order_by(deliveries.c.id.desc())
            .limit(1)
        ).one()
    assert row.target.isascii() and "@" in row.target
    maildir = app.settings.path("email.maildir") / "new"
    for path in maildir.iterdir():
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.SMTP)
        if message["To"] == row.target:
            assert "=?" not in path.read_bytes().split(b"\r\n\r\n")[0].decode("ascii").split("To:")[1].split("\r\n")[0]
            break
    else:
        raise AssertionError(f"no message to {row.target} (state {row.state})")


@FUZZ
@given(
    forwarded=st.lists(
        st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40), min_size=1, max_size=3
    )
)
def test_spoofed_forwarded_for_never_becomes_the_client(fuzz_app, forwarded):
    """Issue 18 item 3 (DOI-2): no proxy is trusted by default, so whatever X-Forwarded-For
    a local process sends, the consent log and the per-client limit see the peer."""
    from sqlalchemy import select

    from pipeline.store.schema import subscriber_events

    app, _ = fuzz_app
    with TestClient(create_app(app), base_url=BASE, raise_server_exceptions=False, client=("127.0.0.1", 4321)) as local:
        r = local.post(
            "/subscribe",
            data={"email": "spoof@example.com"},
            headers=[("Origin", BASE), *[("X-Forwarded-For", v) for v in forwarded]],
        )
    assert ok(r.status_code)
    with app.engine.connect() as conn:
        ip = conn.execute(
            select(subscriber_events.c.ip)
            .where(subscriber_events.c.kind == "signup")
            .order_by(subscriber_events.c.id.desc())
            .limit(1)
        ).scalar_one()
    assert ip == "127.0.0.1"
