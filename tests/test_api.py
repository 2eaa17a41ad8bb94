"""The REST API through httpx against a real uvicorn on 127.0.0.1 (issue 14 item 1):
the OpenAPI contract (API-1), tokens and scopes (API-2, API-3), problem details (API-4),
idempotency (API-5), rate limits (API-6), cursors (API-7), resources (API-8, API-9)."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from sqlalchemy import func, select

from pipeline.accounts import api_tokens
from pipeline.delivery import outbox
from pipeline.store.schema import api_idempotency, audit_log, deliveries, subscriber_events, subscribers, suppressions

from . import api_kit
from .api_kit import client, running, token

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

ALL_SCOPES = list(api_tokens.SCOPES)
PROBLEM = "application/problem+json"


SCHEDULE = """
[[jobs]]
id = "ingest"
stage = "ingest"
interval = "10m"
"""


def with_schedule(app):
    folder = app.settings.path("paths.schedules")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "test.toml").write_text(SCHEDULE)
    return app


@pytest.fixture
def served(sqlite_app):
    with running(with_schedule(sqlite_app)) as base:
        yield sqlite_app, base


def _problem(r, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM), r.headers
    body = r.json()
    assert body["status"] == status and body["title"] and body["type"]
    return body


# --- API-1: the OpenAPI document is the contract ------------------------------------------


def _routes(routes, prefix: str = "") -> set[tuple[str, str]]:
    """(method, path) of every schema route, through included routers (FastAPI keeps
    them as wrappers holding `original_router`; the API includes them without prefix)."""
    from fastapi.routing import APIRoute

    found: set[tuple[str, str]] = set()
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            found |= _routes(inner.routes, prefix)
        elif isinstance(route, APIRoute) and route.include_in_schema:
            found |= {(method, prefix + route.path) for method in route.methods}
    return found


def test_openapi_document_validates_and_matches_the_routes(served):
    """API-1: openapi-spec-validator accepts the document; every route is documented and
    every documented operation is served; every operation names its scope."""
    from openapi_spec_validator import validate

    from pipeline.web.api import create_api

    app, base = served
    with client(base) as c:
        r = c.get("/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    validate(doc)
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert documented == _routes(create_api(app).routes)
    with client(base) as c:  # and each documented operation answers (401: it exists, needs a token)
        for method, _path, concrete, _scope in _operations(doc):
            assert _problem(c.request(method, concrete), 401)
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert op.get("x-required-scope") in api_tokens.SCOPES, (method, path)
            assert "401" in op["responses"] and "403" in op["responses"]


def test_docs_page_lists_every_operation_without_external_assets(served):
    """API-1: /api/v1/docs is our own page from the document: no CDN, no script."""
    _, base = served
    with client(base) as c:
        doc = c.get("/openapi.json").json()
        page = c.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<script" not in page.text and "default-src 'none'" in page.headers["content-security-policy"]
    assert not re.search(r'(src|href)="https?://(?!news\.example\.com)', page.text)
    for path, ops in doc["paths"].items():
        assert f"/api/v1{path}" in page.text
        for op in ops.values():
            assert op["x-required-scope"] in page.text


def test_cli_scopes_are_the_token_scopes():
    import pipeline.cli  # noqa: F401  (registers the command modules; tokens imports cli)
    from pipeline.commands.tokens import SCOPE_NAMES

    assert SCOPE_NAMES == list(api_tokens.SCOPES)


# --- API-3: 401 without a usable token, 403 without the scope -------------------------------

PATH_VALUES = {
    "slug": "no-such-article",
    "subscriber_id": "999",
    "delivery_id": "999",
    "name": "no-such-partner",
    "job_id": "no-such-job",
    "key": "daily-1999-01-01",
    "import_id": "999",
}
BODIES = {
    ("POST", "/articles/revisions"): {"key": "cms-1", "title": "A plain title", "body_html": "<p>Text.</p>"},
    ("POST", "/articles/{slug}/approve"): {},
    ("POST", "/articles/{slug}/reject"): {"reason": "needs sources"},
    ("POST", "/subscribers"): {"email": "matrix@example.com"},
    ("PATCH", "/subscribers/{subscriber_id}"): {"frequency": "daily"},
    ("POST", "/partners/{name}/retry"): {},
    ("POST", "/jobs/{job_id}/run"): {"dry_run": True},
}


def _operations(doc: dict):
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            concrete = re.sub(r"\{(\w+)\}", lambda m: PATH_VALUES[m.group(1)], path)
            yield method.upper(), path, concrete, op["x-required-scope"]


def test_scope_matrix_every_route_with_every_scope(served):
    """API-3: a token with exactly one scope gets 403 on every route needing another,
    and is let through (no 401/403, no 5xx) where that scope is the one required."""
    app, base = served
    raws = {scope: token(app, scope, name=scope) for scope in ALL_SCOPES}
    with client(base) as c:
        doc = c.get("/openapi.json").json()
    outcomes = {}
    for method, path, concrete, required in _operations(doc):
        for scope, raw in raws.items():
            with client(base, raw) as c:
                r = c.request(method, concrete, json=BODIES.get((method, path)))
            outcomes[(method, path, scope)] = r.status_code
            if scope == required:
                assert r.status_code not in (401, 403) and r.status_code < 500, (method, path, scope, r.text)
            else:
                body = _problem(r, 403)
                assert body["required_scope"] == required
                assert 'error="insufficient_scope"' in r.headers["www-authenticate"]
    assert len(outcomes) == len(ALL_SCOPES) * sum(1 for _ in _operations(doc))


def test_missing_unknown_revoked_and_expired_tokens_get_the_same_401(served):
    """API-3: no hint whether a token exists: every unusable token gets one answer."""
    app, base = served
    revoked = token(app, "articles:read", name="revoked")
    with app.engine.begin() as conn:
        tid = max(t.id for t in api_tokens.list_tokens(conn))
        api_tokens.revoke_token(conn, tid)
        _, expired = api_tokens.create_token(
            conn,
            name="expired",
            scopes=["articles:read"],
            created_by="tests",
            now=dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
            expires_in=dt.timedelta(days=1),
        )
    live = token(app, "articles:read")
    candidates = {
        "missing": {},
        "basic scheme": {"Authorization": "Basic " + live},
        "unknown": {"Authorization": "Bearer syn_" + "A" * 43},
        "garbage": {"Authorization": "Bearer " + "x" * 5000},
        "revoked": {"Authorization": f"Bearer {revoked}"},
        "expired": {"Authorization": f"Bearer {expired}"},
    }
    answers = set()
    with client(base) as c:
        for headers in candidates.values():
            r = c.get("/articles", headers=headers)
            body = _problem(r, 401)
            assert r.headers["www-authenticate"] == 'Bearer realm="syndicate-api"'
            answers.add((r.text, r.headers["www-authenticate"]))
        assert c.get("/articles", headers={"Authorization": f"Bearer {live}"}).status_code == 200
        for headers in candidates.values():  # a write: the same 401 before the body is even parsed
            r = c.post("/subscribers", content=b"{not json", headers={**headers, "Content-Type": "application/json"})
            _problem(r, 401)
            answers.add((r.text.replace("/api/v1/subscribers", "/api/v1/articles"), r.headers["www-authenticate"]))
    assert len(answers) == 1, answers
    assert "token" in body["detail"]


# --- API-4: problem details everywhere ---------------------------------------------------


def test_errors_are_problem_details(served):
    """API-4: unknown route 404, wrong method 405, invalid JSON 400, a wrong field 422
    naming it, a domain refusal 409: all application/problem+json (RFC 9457)."""
    app, base = served
    raw = token(app, *ALL_SCOPES)
    with client(base, raw) as c:
        assert _problem(c.get("/no/such/route"), 404)["type"] == "about:blank"
        assert _problem(c.delete("/articles"), 405)["type"] == "about:blank"
        bad = c.post("/subscribers", content=b'{"email": ', headers={"Content-Type": "application/json"})
        assert _problem(bad, 400)["type"].endswith("#problem-invalid-json")
        wrong = _problem(c.post("/subscribers", json={"email": 42}), 422)
        assert wrong["errors"][0]["field"] == "email"
        invalid = _problem(c.post("/subscribers", json={"email": "not-an-address"}), 422)
        assert invalid["errors"][0]["field"] == "email"
        assert _problem(c.get("/subscribers/424242"), 404)["type"].endswith("#problem-not-found")
        assert _problem(c.get("/subscribers", params={"state": "happy"}), 422)["errors"][0]["field"] == "state"
        assert _problem(c.post("/articles/no-such/approve", json={}), 404)
        huge = c.post(
            "/subscribers", content=b"x" * (4 * 1024 * 1024 + 1), headers={"Content-Type": "application/json"}
        )
        assert _problem(huge, 413)
        long_key = c.post("/subscribers", json={"email": "k@example.com"}, headers={"Idempotency-Key": "k" * 256})
        assert _problem(long_key, 400)
        allowed = c.delete("/articles").headers.get("allow", "")
        assert "GET" in allowed


# --- API-7: cursors and page sizes -----------------------------------------------------------


def test_cursor_pagination_is_complete_stable_and_bounded(served):
    """API-7: pages of 2 walk every subscriber once, in order, while new ones arrive;
    a huge limit is refused with the maximum named; a forged cursor is refused."""
    app, base = served
    raw = token(app, "subscribers:read", "subscribers:write", "subscribers:import")
    with client(base, raw) as c:
        for i in range(5):
            r = c.post("/subscribers", json={"email": f"p{i}@example.com", "confirmed": True, "source": "test"})
            assert r.status_code == 201, r.text
        seen, cursor = [], None
        while True:
            r = c.get("/subscribers", params={"limit": 2, **({"cursor": cursor} if cursor else {})})
            assert r.status_code == 200
            page = r.json()
            seen += [s["email"] for s in page["items"]]
            if len(seen) == 2:  # arrives after the first page: must appear at the end, nothing repeated
                c.post("/subscribers", json={"email": "late@example.com", "confirmed": True, "source": "test"})
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert seen == [f"p{i}@example.com" for i in range(5)] + ["late@example.com"]
        filtered = c.get("/subscribers", params={"state": "confirmed", "email": "P3@example.com"}).json()
        assert [s["email"] for s in filtered["items"]] == ["p3@example.com"]
        huge = _problem(c.get("/subscribers", params={"limit": 10**9}), 400)
        assert huge["max_page_size"] == app.settings.api.max_page_size
        assert _problem(c.get("/subscribers", params={"limit": 0}), 400)
        assert _problem(c.get("/subscribers", params={"cursor": "forged"}), 400)["type"].endswith("#problem-bad-cursor")
        first = c.get("/subscribers", params={"limit": 1}).json()["next_cursor"]
    with client(base, token(app, "deliveries:read")) as c:  # one list's cursor is no good on another
        assert _problem(c.get("/deliveries", params={"cursor": first}), 400)


# --- API-5: idempotency ------------------------------------------------------------------------


def test_same_idempotency_key_same_body_one_effect(served):
    """API-5: the repeat gets the stored answer (Idempotent-Replayed) and changes
    nothing; the same key with another body is 422; without a token nothing is stored."""
    app, base = served
    raw = token(app, "subscribers:write", "subscribers:read")
    body = {"email": "once@example.com", "frequency": "weekly"}
    with client(base, raw) as c:
        first = c.post("/subscribers", json=body, headers={"Idempotency-Key": "k-1"})
        again = c.post("/subscribers", json=body, headers={"Idempotency-Key": "k-1"})
        other = c.post("/subscribers", json={"email": "twice@example.com"}, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    assert _problem(other, 422)["type"].endswith("#problem-idempotency-key-reused")
    with app.engine.connect() as conn:
        sid = conn.execute(select(subscribers.c.id).where(subscribers.c.email == "once@example.com")).scalar_one()
        signups = conn.execute(
            select(func.count()).where(subscriber_events.c.subscriber_id == sid, subscriber_events.c.kind == "signup")
        ).scalar()
        confirms = conn.execute(
            select(func.count()).where(deliveries.c.kind == "confirm", deliveries.c.subscriber_id == sid)
        ).scalar()
        assert (signups, confirms) == (1, 1)
        assert conn.execute(select(func.count()).select_from(subscribers)).scalar() == 1
    with app.engine.begin() as conn:  # the first request still running: a repeat waits (409), nothing runs twice
        conn.execute(api_idempotency.update().values(status=None, response=None))
    with client(base, raw) as c:
        busy = c.post("/subscribers", json=body, headers={"Idempotency-Key": "k-1"})
    assert _problem(busy, 409)["type"].endswith("#problem-idempotency-key-in-flight") and busy.headers["retry-after"]
    with client(base) as anonymous:
        r = anonymous.post("/subscribers", json=body, headers={"Idempotency-Key": "k-2"})
    _problem(r, 401)
    with app.engine.connect() as conn:
        keys = set(conn.execute(select(api_idempotency.c.key)).scalars())
    assert keys == {"k-1"}


# --- API-6: rate limits per token ----------------------------------------------------------------


def test_rate_limit_answers_429_with_retry_after_and_spares_other_tokens(make_app, sqlite_url):
    """API-6: a token over api.rate_limit gets 429 + Retry-After; another token does not."""
    app = make_app(sqlite_url, "[api]\nrate_limit = 5\n")
    busy, calm = token(app, "articles:read", name="busy"), token(app, "articles:read", name="calm")
    with running(app) as base:
        with client(base, busy) as c:
            statuses = [c.get("/articles").status_code for _ in range(8)]
            last = c.get("/articles")
            write = c.post("/subscribers", json={"email": "x@example.com"}, headers={"Idempotency-Key": "w"})
        with client(base, calm) as c:
            assert c.get("/articles").status_code == 200
    assert statuses[:5] == [200] * 5 and set(statuses[5:]) == {429}
    assert _problem(write, 429)["type"].endswith("#problem-rate-limited")  # before the scope check
    body = _problem(last, 429)
    assert body["type"].endswith("#problem-rate-limited")
    assert int(last.headers["retry-after"]) >= 1


def test_token_bucket_refills_evenly():
    """API-6: the bucket's arithmetic, on a clock the test moves."""
    from pipeline.web.api.core import TokenBuckets

    now = [0.0]
    buckets = TokenBuckets(60, clock=lambda: now[0])
    assert all(buckets.take(1) == 0 for _ in range(60))
    assert buckets.take(1) == pytest.approx(1.0)
    assert buckets.take(2) == 0  # another token: its own bucket
    now[0] += 1.0
    assert buckets.take(1) == 0 and buckets.take(1) > 0


# --- resources ---------------------------------------------------------------------------------


def test_articles_submitted_by_a_cms_wait_for_an_editor(app):
    """API-8: a CMS revision waits like an ingested one; only articles:approve makes it
    public; repeating it changes nothing; a rejection needs a reason."""
    cms = token(app, "articles:write", name="cms")
    editor = token(app, "articles:approve", name="editor")
    reader = token(app, "articles:read", name="reader")
    article = {
        "key": "post-17",
        "title": "Gardens in winter",
        "body_html": "<p>Frost on the <b>kale</b>.</p><script>alert(1)</script>",
        "summary": "What grows in the cold.",
        "tags": ["Gardening"],
        "author_name": "Ada Gardener",
    }
    with running(app) as base:
        with client(base, cms) as c:
            r = c.post("/articles/revisions", json=article)
            assert r.status_code == 202, r.text
            slug = r.json()["slug"]
            assert r.json()["state"] == "submitted" and r.json()["outcome"] == "new"
            again = c.post("/articles/revisions", json=article).json()
            assert again == {"slug": slug, "outcome": "unchanged", "state": "unchanged", "flags": []}
        with client(base, reader) as c:
            assert c.get("/articles").json()["items"] == []
            _problem(c.get(f"/articles/{slug}"), 404)
        with client(base, editor) as c:
            waiting = c.get("/review").json()["items"]
            assert [(p["slug"], p["revision"]) for p in waiting] == [(slug, 1)]
            _problem(c.post(f"/articles/{slug}/approve", json={"expected_hash": "0" * 64}), 409)
            _problem(c.post(f"/articles/{slug}/reject", json={"reason": ""}), 422)
            r = c.post(f"/articles/{slug}/approve", json={"note": "fine", "expected_hash": waiting[0]["content_hash"]})
            assert r.status_code == 200 and r.json()["outcome"] == "approved", r.text
        with client(base, reader) as c:
            items = c.get("/articles").json()["items"]
            assert [a["slug"] for a in items] == [slug] and items[0]["body_html"] is None
            one = c.get(f"/articles/{slug}").json()
        assert "<script" not in one["body_html"] and "kale" in one["body_html"]
        assert one["tags"] == ["gardening"] and one["title"] == "Gardens in winter"
        with client(base, cms) as c:  # an edit waits again; the approved revision stays public
            r = c.post("/articles/revisions", json={**article, "title": "Gardens in deep winter"})
            assert r.json()["outcome"] == "changed"
        with client(base, reader) as c:
            assert c.get(f"/articles/{slug}").json()["title"] == "Gardens in winter"
        with client(base, editor) as c:
            r = c.post(f"/articles/{slug}/reject", json={"reason": "keep the old title"})
            assert r.json()["outcome"] == "rejected"
            _problem(c.post(f"/articles/{slug}/reject", json={"reason": "again"}), 409)
    with app.engine.connect() as conn:
        rows = conn.execute(select(audit_log.c.action, audit_log.c.actor).where(audit_log.c.via == "api")).all()
    assert ("article.approve", f"api:editor#{2}") in {(r.action, r.actor) for r in rows}
    assert {"api.article.submit", "article.reject"} <= {r.action for r in rows}


def test_subscribers_lifecycle(app):
    """API-9: double opt-in by default; confirmed only with subscribers:import and a
    source; preferences; unsubscribe; erase keeps the suppression (GDPR-2)."""
    writer = token(app, "subscribers:write", "subscribers:read", name="form")
    importer = token(app, "subscribers:write", "subscribers:import", "subscribers:read", name="crm")
    with running(app) as base:
        with client(base, writer) as c:
            assert c.post("/subscribers", json={"email": "ada@example.com", "frequency": "daily"}).status_code == 202
            denied = _problem(c.post("/subscribers", json={"email": "bo@example.com", "confirmed": True}), 403)
            assert denied["type"].endswith("#problem-insufficient-scope")
            ada = c.get("/subscribers", params={"email": "ada@example.com"}).json()["items"][0]
            assert ada["state"] == "unconfirmed" and ada["frequency"] == "daily"
        with client(base, importer) as c:
            _problem(c.post("/subscribers", json={"email": "bo@example.com", "confirmed": True}), 422)
            r = c.post(
                "/subscribers",
                json={"email": "Bo@Example.com", "confirmed": True, "source": "paper form 2026-11-02", "topics": []},
            )
            assert r.status_code == 201, r.text
            bo = r.json()
            assert bo["state"] == "confirmed" and bo["email"] == "bo@example.com"
            _problem(c.post("/subscribers", json={"email": "bo@example.com", "confirmed": True, "source": "x"}), 409)
            detail = c.get(f"/subscribers/{bo['id']}").json()
            kinds = [e["kind"] for e in detail["consent_log"]]
            assert "confirmed" in kinds or "imported" in kinds
            assert any("paper form" in e["source"] for e in detail["consent_log"])
            r = c.patch(f"/subscribers/{bo['id']}", json={"frequency": "weekly", "name": "Bo"})
            assert r.status_code == 200 and r.json()["frequency"] == "weekly" and r.json()["name"] == "Bo"
            _problem(c.patch(f"/subscribers/{bo['id']}", json={"frequency": "hourly"}), 422)
            bad_topic = _problem(c.patch(f"/subscribers/{bo['id']}", json={"topics": ["Food & Drink"]}), 422)
            assert bad_topic["detail"] == "'Food & Drink' is not a topic name (topics are slugs: 'food-drink')"
            r = c.post(f"/subscribers/{bo['id']}/unsubscribe")
            assert r.json() == {"id": bo["id"], "changed": True, "state": "unsubscribed"}
            assert c.post(f"/subscribers/{bo['id']}/unsubscribe").json()["changed"] is False
            erase = {"Idempotency-Key": "erase-ada"}
            assert c.delete(f"/subscribers/{ada['id']}", headers=erase).status_code == 204
            replay = c.delete(f"/subscribers/{ada['id']}", headers=erase)  # a retry after a lost answer
            assert replay.status_code == 204 and replay.headers["idempotent-replayed"] == "true"
            _problem(c.get(f"/subscribers/{ada['id']}"), 404)
            _problem(c.delete(f"/subscribers/{ada['id']}"), 404)
            again = c.post("/subscribers", json={"email": "ada@example.com", "confirmed": True, "source": "crm"})
            _problem(again, 409)
    with app.engine.connect() as conn:
        assert conn.execute(select(subscribers.c.id).where(subscribers.c.email == "ada@example.com")).first() is None
        assert conn.execute(select(suppressions.c.reason).where(suppressions.c.email == "ada@example.com")).scalar()
        events = conn.execute(select(func.count()).where(subscriber_events.c.subscriber_id == ada["id"])).scalar()
        assert events == 0


def test_deliveries_editions_partners_and_jobs(app):
    """API-8: the outbox filtered and retried (only failed/dead ones), editions, partners
    and jobs listed; an unknown job or partner is 404."""
    with app.engine.begin() as conn:
        for i, state in enumerate(("failed", "sent", "failed")):
            outbox.enqueue(
                conn, channel="email", target=f"r{i}@example.com", kind="confirm", key=f"test:{i}", payload={}
            )
            did = conn.execute(select(deliveries.c.id).where(deliveries.c.idempotency_key == f"test:{i}")).scalar_one()
            if state == "failed":
                outbox.mark_failed(conn, did, error="550 no such user")
            else:
                outbox.mark_sent(conn, did, answer="250 ok")
    with_schedule(app)
    reader = token(app, "deliveries:read")
    writer = token(app, "deliveries:write")
    operator = token(app, "ops")
    with running(app) as base:
        with client(base, reader) as c:
            failed = c.get("/deliveries", params={"state": "failed"}).json()
            assert [d["target"] for d in failed["items"]] == ["r2@example.com", "r0@example.com"]
            assert failed["items"][0]["last_error"] == "550 no such user"
            mine = c.get("/deliveries", params={"target": "R1@example.com"}).json()["items"]
            assert [(d["target"], d["state"]) for d in mine] == [("r1@example.com", "sent")]
            page = c.get("/deliveries", params={"limit": 1}).json()
            nxt = c.get("/deliveries", params={"limit": 1, "cursor": page["next_cursor"]}).json()
            assert page["items"][0]["id"] > nxt["items"][0]["id"]
            assert c.get("/editions").json() == {"items": [], "next_cursor": None}
            assert c.get("/partners").status_code == 200
            _problem(c.get("/partners/nobody"), 404)
            _problem(c.get("/deliveries", params={"edition": "daily-1999-01-01"}), 404)
        sent_id = next(d["id"] for d in c_get(base, reader, "/deliveries")["items"] if d["target"] == "r1@example.com")
        with client(base, writer) as c:
            fid = failed["items"][0]["id"]
            assert c.post(f"/deliveries/{fid}/retry").json() == {"id": fid, "requeued": True, "state": "queued"}
            assert _problem(c.post(f"/deliveries/{fid}/retry"), 409)["state"] == "queued"
            _problem(c.post(f"/deliveries/{sent_id}/retry"), 409)
            _problem(c.post("/deliveries/999999/retry"), 404)
        with client(base, operator) as c:
            jobs = c.get("/jobs").json()
            assert [j["id"] for j in jobs["items"]] == ["ingest"]
            run = c.post("/jobs/ingest/run", json={"dry_run": True})
            assert run.status_code == 200 and run.json()["job"] == "ingest" and run.json()["dry_run"], run.text
            _problem(c.post("/jobs/no-such-job/run", json={}), 404)


def c_get(base: str, raw: str, path: str) -> dict:
    with client(base, raw) as c:
        return c.get(path).json()


def test_tokens_cli_create_list_revoke(sqlite_app, tmp_path):
    """API-2: the token is printed once, stored only as its SHA-256, listed by prefix,
    and revoked tokens stop working."""
    from click.testing import CliRunner

    from pipeline.cli import main

    config = str(sqlite_app.settings.source)
    runner = CliRunner()
    r = runner.invoke(
        main, ["--config", config, "tokens", "create", "--name", "CMS", "--scope", "articles:read", "--expires", "90d"]
    )
    assert r.exit_code == 0, r.output
    raw = re.search(r"syn_\S+", r.output).group(0)
    with sqlite_app.engine.connect() as conn:
        stored = api_tokens.list_tokens(conn)[0]
        row = conn.execute(select(api_kit.api_tokens_table())).first()
    assert row.token_hash == api_tokens.hash_token(raw) and raw not in str(tuple(row))
    assert stored.expires_at is not None and stored.scopes == ("articles:read",)
    listed = runner.invoke(main, ["--config", config, "tokens", "list", "--json"])
    assert stored.prefix in listed.output and raw not in listed.output
    assert '"state": "active"' in listed.output
    bad = runner.invoke(main, ["--config", config, "tokens", "create", "--name", "x", "--scope", "root"])
    assert bad.exit_code != 0
    with running(sqlite_app) as base, client(base, raw) as c:
        assert c.get("/articles").status_code == 200
        assert runner.invoke(main, ["--config", config, "tokens", "revoke", str(stored.id)]).exit_code == 0
        _problem(c.get("/articles"), 401)


def test_desk_tokens_page_creates_shows_once_and_revokes(sqlite_app):
    """API-2: an admin creates a token in the desk (CSRF-checked), sees it once, revokes it."""
    from .desk_kit import make_user, signed_in
    from .desk_kit import token as csrf

    make_user(sqlite_app, "admin@example.com", ["admin"])
    make_user(sqlite_app, "ops@example.com", ["operator"])
    desk = signed_in(sqlite_app, "admin@example.com")
    form = {"name": "CRM sync", "scopes": ["subscribers:read", "subscribers:import"], "expires_days": "90"}
    assert desk.post("/desk/tokens", data={**form, "csrf_token": "forged"}).status_code == 403
    r = desk.post("/desk/tokens", data={**form, "csrf_token": csrf(desk, "/desk/tokens")})
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    raw = re.search(r'<code id="token-value">(syn_[^<]+)</code>', r.text).group(1)
    listing = desk.get("/desk/tokens").text
    assert raw not in listing and raw[:12] in listing and "CRM sync" in listing
    bad = desk.post("/desk/tokens", data={"name": "x", "scopes": ["root"], "csrf_token": csrf(desk, "/desk/tokens")})
    assert bad.status_code == 400
    with sqlite_app.engine.connect() as conn:
        tid = api_tokens.list_tokens(conn)[0].id
    with running(sqlite_app) as base, client(base, raw) as c:
        assert c.get("/subscribers").status_code == 200
        r = desk.post(f"/desk/tokens/{tid}/revoke", data={"csrf_token": csrf(desk, "/desk/tokens")})
        assert r.status_code == 303
        _problem(c.get("/subscribers"), 401)
    operator = signed_in(sqlite_app, "ops@example.com")
    assert operator.get("/desk/tokens").status_code == 403


def test_api_can_be_turned_off(make_app, sqlite_url):
    """`[api] enabled = false`: no /api/v1 at all (the public site answers 404)."""
    app = make_app(sqlite_url, "[api]\nenabled = false\n")
    raw = token(app, "articles:read")
    with running(app) as base, client(base, raw) as c:
        assert c.get("/openapi.json").status_code == 404
        assert c.get("/articles").status_code == 404


def test_sign_ups_through_the_api_are_limited_per_token_and_address_not_per_network(make_app, sqlite_url):
    """API-9, DOI-2: many people signed up by one CRM server are not throttled as one
    visitor; one address asked for too often still is; the consent log names the token."""
    app = make_app(sqlite_url, "[subscribers]\nmax_signups_per_client = 2\nmax_signups_per_address = 2\n")
    raw = token(app, "subscribers:write", "subscribers:read", name="crm")
    with running(app) as base, client(base, raw) as c:
        assert [c.post("/subscribers", json={"email": f"n{i}@example.com"}).status_code for i in range(5)] == [202] * 5
        again = [c.post("/subscribers", json={"email": "n0@example.com"}).status_code for _ in range(2)]
        assert again[-1] == 429
        sid = c.get("/subscribers", params={"email": "n1@example.com"}).json()["items"][0]["id"]
        log = c.get(f"/subscribers/{sid}").json()["consent_log"]
    assert log[0]["kind"] == "signup" and log[0]["source"] == "api:crm"


def _wait_for_import(c, location: str) -> dict:
    """Poll until the background import has finished (a wait, not a timed assertion)."""
    import time

    deadline = time.monotonic() + 60
    while True:
        state = c.get(location.removeprefix("/api/v1")).json()
        if state["status"] in ("done", "failed") or time.monotonic() > deadline:
            return state
        time.sleep(0.05)


def test_imports_upload_a_csv_and_report_each_bad_row(app):
    """API-9, IMP-2: a CSV upload runs in the background; its progress and per-row
    errors are read back; confirmed needs a source; the same upload with the same
    Idempotency-Key starts no second import; subscribers:import only."""
    from pipeline.store.schema import subscriber_imports

    csv_text = "email,name,frequency,topics,timezone\nada@example.com,Ada,weekly,,UTC\nnot-an-address,X,daily,,UTC\nbo@example.com,Bo,daily,,UTC\n"
    files = {"file": ("crm.csv", csv_text.encode("utf-8"), "text/csv")}
    importer = token(app, "subscribers:import", "subscribers:read", name="crm")
    with running(app) as base:
        with client(base, token(app, "subscribers:write")) as c:
            _problem(c.post("/imports", files=files, data={"confirmed": "true", "source": "fair"}), 403)
        with client(base, importer) as c:
            no_source = c.post("/imports", files=files, data={"confirmed": "true"})
            assert _problem(no_source, 422)["errors"][0]["field"] == "source"
            key = {"Idempotency-Key": "crm-2026-12-01"}
            r = c.post("/imports", files=files, data={"confirmed": "true", "source": "fair 2026"}, headers=key)
            assert r.status_code == 202, r.text
            assert r.json()["status"] == "queued" and r.headers["location"] == f"/api/v1/imports/{r.json()['id']}"
            done = _wait_for_import(c, r.headers["location"])
            again = c.post("/imports", files=files, data={"confirmed": "true", "source": "fair 2026"}, headers=key)
            assert again.status_code == 202 and again.json()["id"] == r.json()["id"]
            _problem(c.get("/imports/424242"), 404)
            states = {s["email"]: s["state"] for s in c.get("/subscribers").json()["items"]}
    assert done["status"] == "done", done
    assert (done["total"], done["created"], done["bad"], done["confirmed_count"]) == (3, 2, 1, 2)
    assert [(e["line"], e["kind"], e["field"]) for e in done["errors"]] == [(3, "bad", "email")]
    assert states == {"ada@example.com": "confirmed", "bo@example.com": "confirmed"}
    with app.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(subscriber_imports)).scalar() == 1


def test_edition_report_through_the_api(app):
    """The edition report (RPT-1) with deliveries:read; an unknown edition is a 404 problem."""
    from pipeline.store.schema import digest_editions
    from pipeline.timeutil import utcnow

    now = utcnow()
    with app.engine.begin() as conn:
        conn.execute(
            digest_editions.insert().values(
                key="daily-2026-12-01", frequency="daily", cutoff=now, article_ids=[], subject="Daily", created_at=now
            )
        )
    with running(app) as base, client(base, token(app, "deliveries:read")) as c:
        report = c.get("/editions/daily-2026-12-01/report")
        assert report.status_code == 200, report.text
        assert report.json()["clicks"]["total"] == 0 and "bounced" in report.json()
        assert [e["key"] for e in c.get("/editions").json()["items"]] == ["daily-2026-12-01"]
        _problem(c.get("/editions/daily-1999-01-01/report"), 404)
