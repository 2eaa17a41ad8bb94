"""Bad input to the API never gets a 5xx, and every error is a problem (API-4): hypothesis
bodies for every write, against uvicorn on 127.0.0.1 (SQLite)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.accounts import api_tokens

from .api_kit import client, running, token

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
RELAXED = (
    "[subscribers]\nmax_signups_per_address = 100000\nmax_signups_per_client = 100000\n[api]\nrate_limit = 100000\n"
)
FUZZ = settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)

text = st.text(max_size=200)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), text),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(text, inner, max_size=4)),
    max_leaves=10,
)
FIELDS = ["email", "name", "frequency", "topics", "timezone", "confirmed", "source", "key", "title", "body_html",
          "tags", "published_at", "reason", "note", "override", "expected_hash", "dry_run", "include_failed"]  # fmt: skip
header_chars = st.characters(codec="latin-1", exclude_categories=["Cc", "Zs"])  # what a header line may carry
bodies = st.one_of(json_values, st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=8))
WRITES = [
    ("POST", "/articles/revisions"),
    ("POST", "/articles/x/approve"),
    ("POST", "/articles/x/reject"),
    ("POST", "/subscribers"),
    ("PATCH", "/subscribers/1"),
    ("POST", "/subscribers/1/unsubscribe"),
    ("DELETE", "/subscribers/2"),
    ("POST", "/deliveries/1/retry"),
    ("POST", "/partners/x/retry"),
    ("POST", "/imports"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from pipeline.app import App
    from pipeline.config import load_settings
    from pipeline.store import dispose_engines
    from tests.conftest import write_project

    root = tmp_path_factory.mktemp("apifuzz")
    config = write_project(root / "site", f"sqlite:///{root / 'site' / 'var' / 'fuzz.db'}", RELAXED)
    app = App(load_settings(config, env={}))
    raw = token(app, *api_tokens.SCOPES)
    with running(app) as base, client(base, raw) as c:
        c.post("/subscribers", json={"email": "one@example.com", "confirmed": True, "source": "fuzz"})
        yield c
    dispose_engines()


@FUZZ
@given(
    route=st.sampled_from(WRITES),
    body=bodies,
    key=st.one_of(st.none(), st.text(header_chars, min_size=1, max_size=300)),
)
def test_any_json_body_gets_an_answer_never_a_crash(server, route, body, key):
    """API-4: whatever JSON arrives, the answer is 2xx or a 4xx problem."""
    method, path = route
    headers = {"Idempotency-Key": key.encode("latin-1")} if key else {}
    r = server.request(method, path, json=body, headers=headers)
    assert r.status_code < 500, (method, path, body, r.text)
    if r.status_code >= 400:
        assert r.headers["content-type"].startswith("application/problem+json"), r.text


@FUZZ
@given(raw=st.binary(max_size=300), query=st.dictionaries(st.sampled_from(["limit", "cursor", "state"]), text))
def test_raw_bytes_and_queries_get_problems(server, raw, query):
    """API-4: undecodable bodies and odd query strings: 4xx problems, never 5xx."""
    r = server.post("/subscribers", content=raw, headers={"Content-Type": "application/json"})
    assert 400 <= r.status_code < 500 or r.status_code in (201, 202), r.text
    listing = server.get("/subscribers", params=query)
    assert listing.status_code < 500, listing.text
