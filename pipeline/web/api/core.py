"""The API's plumbing: problem details, token checks, rate limits, cursors, idempotency.

Adapters only: nothing here knows a business rule; the resources call the stage
functions and this module turns what they raise into RFC 9457 answers (API-4).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import Depends, Request
from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipeline import tokens
from pipeline.accounts import api_tokens
from pipeline.app import App
from pipeline.errors import TokenError
from pipeline.store.schema import api_idempotency

log = logging.getLogger(__name__)

PROBLEM_TYPE = "application/problem+json"
DEFAULT_PAGE = 50
REALM = 'Bearer realm="syndicate-api"'


# --- problem details (RFC 9457) ------------------------------------------------------------


class ApiProblem(Exception):
    """An answer in RFC 9457 form. `kind` is the slug of the problem type (documented at
    /api/v1/docs#problems); without one the type is about:blank and the title the status phrase."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str = "",
        *,
        kind: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ):
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.kind = kind
        self.headers = headers or {}
        self.extra = extra

    def response(self, instance: str, base: str) -> JSONResponse:
        """This problem as the problem+json answer to a request for `instance`."""
        return problem_response(
            self.status,
            self.title,
            self.detail,
            kind=self.kind,
            instance=instance,
            headers=self.headers,
            base=base,
            **self.extra,
        )


def invalid_state_filter(value: str | None, allowed: tuple[str, ...] | list[str]) -> None:
    """422 when a list's `state` filter names no state the resource has."""
    if value is not None and value not in allowed:
        raise ApiProblem(
            422,
            "Invalid filter",
            f"state must be one of {', '.join(allowed)}",
            kind="validation",
            errors=[{"field": "state", "message": "unknown state"}],
        )


PROBLEM_KINDS: dict[str, str] = {
    "invalid-json": "The body is not a JSON document (or not UTF-8).",
    "validation": "The request is well-formed but a field is wrong; `errors` names each field.",
    "unauthorized": "No valid token: missing, unknown, revoked and expired tokens get the same answer.",
    "insufficient-scope": "The token is valid but lacks the scope this route needs (`required_scope`).",
    "rate-limited": "Too many requests from this token; wait `Retry-After` seconds.",
    "page-too-large": "`limit` is larger than the server's max_page_size (`max_page_size`).",
    "bad-cursor": "The `cursor` was not issued by this server for this list.",
    "idempotency-key-reused": "The Idempotency-Key was used before with a different request.",
    "idempotency-key-in-flight": "A request with this Idempotency-Key is still being processed.",
    "conflict": "The request conflicts with the current state of the resource.",
    "not-found": "The resource does not exist.",
}


def problem_type(kind: str | None, base: str = "") -> str:
    if not kind:
        return "about:blank"
    return f"{base.rstrip('/')}/api/v1/docs#problem-{kind}"


def problem_response(
    status: int,
    title: str,
    detail: str = "",
    *,
    kind: str | None = None,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    base: str = "",
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {"type": problem_type(kind, base), "title": title, "status": status}
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    body.update({k: v for k, v in extra.items() if v is not None})
    return JSONResponse(
        body,
        status_code=status,
        media_type=PROBLEM_TYPE,
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


# --- the token bucket (API-6) --------------------------------------------------------------


class TokenBuckets:
    """One bucket per API token: `per_minute` requests, refilled evenly. In memory, per
    serving process; a bucket is touched only by its own token, so one busy token never
    slows another (the lock is held for a few arithmetic operations)."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic):
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.clock = clock
        self._buckets: dict[int, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: int) -> float:
        """0 if the request may go on, else the seconds until one more is allowed."""
        now = self.clock()
        with self._lock:
            level, at = self._buckets.get(key, (self.capacity, now))
            level = min(self.capacity, level + (now - at) * self.rate)
            if level >= 1.0:
                self._buckets[key] = (level - 1.0, now)
                return 0.0
            self._buckets[key] = (level, now)
            return (1.0 - level) / self.rate


# --- request context ----------------------------------------------------------------------


class Api:
    """What every route needs, bound to one App."""

    def __init__(self, app: App):
        self.app = app
        self.settings = app.settings
        self.buckets = TokenBuckets(int(app.settings.api.rate_limit))

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        with self.app.engine.begin() as conn:
            yield conn

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        with self.app.engine.connect() as conn:
            yield conn

    # cursors: signed, so a client cannot forge a position nor use one list's cursor on another
    def cursor(self, resource: str, position: Any) -> str:
        return tokens.sign(self.settings, "api-cursor", [resource, position])

    def after(self, resource: str, cursor: str | None) -> Any:
        if not cursor:
            return None
        try:
            value = tokens.verify(self.settings, "api-cursor", cursor[:500])
        except TokenError:
            value = None
        if not isinstance(value, list) or len(value) != 2 or value[0] != resource:
            raise ApiProblem(
                400, "Bad cursor", "pass the `next_cursor` of the previous page unchanged", kind="bad-cursor"
            )
        return value[1]

    def page_size(self, limit: int | None) -> int:
        maximum = int(self.settings.api.max_page_size)
        if limit is None:
            return min(DEFAULT_PAGE, maximum)
        if limit < 1 or limit > maximum:
            raise ApiProblem(
                400,
                "Page size out of range",
                f"limit must be between 1 and {maximum}; follow next_cursor for more",
                kind="page-too-large",
                max_page_size=maximum,
            )
        return limit


def api_of(request: Request) -> Api:
    api: Api = request.app.state.api
    return api


def _bearer_value(header: str) -> str | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


def _bearer(request: Request) -> str | None:
    return _bearer_value(request.headers.get("authorization", ""))


def unauthorized() -> ApiProblem:
    return ApiProblem(
        401,
        "Unauthorized",
        "send a valid API token as `Authorization: Bearer <token>`",
        kind="unauthorized",
        headers={"WWW-Authenticate": REALM},
    )


def rate_limited(api: Api, wait: float) -> ApiProblem:
    return ApiProblem(
        429,
        "Too many requests",
        f"this token may make {api.settings.api.rate_limit} requests a minute",
        kind="rate-limited",
        headers={"Retry-After": str(max(1, math.ceil(wait)))},
    )


def require(scope: str) -> Callable[[Request], api_tokens.ApiToken]:
    """A dependency: a live token (401), within its rate (429), holding `scope` (403)."""

    def check(request: Request) -> api_tokens.ApiToken:
        api = api_of(request)
        token = getattr(request.state, "api_token", None)  # a write: checked by IdempotencyMiddleware
        if token is None:
            with api.begin() as conn:
                token = api_tokens.authenticate(conn, _bearer(request))
        if token is None:
            raise unauthorized()
        wait = 0.0 if getattr(request.state, "api_rate_counted", False) else api.buckets.take(token.id)
        if wait > 0:
            raise rate_limited(api, wait)
        if not token.allows(scope):
            raise ApiProblem(
                403,
                "Forbidden",
                f"this token lacks the scope {scope}",
                kind="insufficient-scope",
                headers={"WWW-Authenticate": f'{REALM}, error="insufficient_scope", scope="{scope}"'},
                required_scope=scope,
            )
        request.state.token = token
        return token

    return check


def scoped(scope: str, *, idempotent_write: bool = False) -> dict[str, Any]:
    """Route keyword arguments: the scope check, and the scope in the OpenAPI document
    (`x-required-scope`, read by the scope-matrix test and the docs page)."""
    extra: dict[str, Any] = {"x-required-scope": scope, "security": [{"bearerAuth": []}]}
    if idempotent_write:
        extra["parameters"] = [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "maxLength": 255},
                "description": "Repeat a write safely: same key and body -> the stored answer, one effect.",
            }
        ]
    return {"dependencies": [Depends(require(scope))], "openapi_extra": extra}


def actor(request: Request) -> str:
    token = getattr(request.state, "token", None)
    return f"api:{token.name}#{token.id}" if token else "api"


# --- idempotency (API-5) -------------------------------------------------------------------

IDEMPOTENT_METHODS = {"POST", "PATCH", "PUT", "DELETE"}
KEY_RETENTION = dt.timedelta(hours=24)  # a key older than this starts afresh (as Stripe's do)
MAX_WRITE_BODY = 4 * 1024 * 1024  # a CMS revision's HTML fits; a stored answer stays small
MAX_IMPORT_BODY = 64 * 1024 * 1024  # POST /imports: a CSV of about a million subscribers


class IdempotencyMiddleware:
    """Every write's body is read here first (at most MAX_WRITE_BODY bytes, else 413)
    and every write is authenticated here (the one 401 before the body is looked at;
    the token's bucket is charged once; the routes check scopes).

    A write with an `Idempotency-Key` header (draft-ietf-httpapi-idempotency-key-header):
    the first answer is stored per (token, key) with a hash of method, path and body; the
    same request again gets the stored answer and causes no second effect; another
    request with the same key gets 422; one still running gets 409. Answers 401, 403,
    429 and 5xx are not stored (nothing happened; the client may try again)."""

    def __init__(self, asgi: ASGIApp, api: Api):
        self.asgi = asgi
        self.api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in IDEMPOTENT_METHODS:
            await self.asgi(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        key = headers.get("idempotency-key")
        body = b""
        more = True
        base = self.api.settings.site.base_url
        limit = MAX_IMPORT_BODY if scope["path"].rstrip("/").endswith("/imports") else MAX_WRITE_BODY
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > limit:
                response = problem_response(
                    413, "Content Too Large", f"a request body here may have at most {limit} bytes", base=base
                )
                await response(scope, receive, send)
                return
        # Every write needs a token: without a live one the answer is the one 401, before
        # the body is parsed (an anonymous caller learns nothing, not even what is valid).
        token = await run_in_threadpool(self._authenticate, _bearer_value(headers.get("authorization", "")))
        if token is None:
            await unauthorized().response(scope["path"], base)(scope, receive, send)
            return
        wait = self.api.buckets.take(token.id)  # replays count too
        if wait > 0:
            await rate_limited(self.api, wait).response(scope["path"], base)(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state["api_token"] = token
        state["api_rate_counted"] = True
        if key is None:
            await self.asgi(scope, _replay(body, receive), send)
            return
        if not key or len(key) > 255:
            response = problem_response(
                400, "Bad Idempotency-Key", "use 1 to 255 characters", kind="validation", base=base
            )
            await response(scope, receive, send)
            return
        fingerprint = hashlib.sha256(
            b"\0".join(
                [
                    scope["method"].encode(),
                    scope["path"].encode(),
                    scope.get("query_string", b""),
                    _canonical(body, headers),
                ]
            )
        ).hexdigest()
        token_id = token.id
        stored = await run_in_threadpool(self._claim, token_id, key, fingerprint)
        if stored is not None:
            await self._answer_stored(stored, fingerprint, scope, receive, send)
            return
        captured: dict[str, Any] = {"status": 500, "headers": [], "body": b"", "stored": False}

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                captured["status"] = message["status"]
                captured["headers"] = message.get("headers", [])
            elif message["type"] == "http.response.body":
                captured["body"] += message.get("body", b"")
                if not message.get("more_body", False):
                    # Stored before the client has the answer: a repeat sent the moment
                    # it arrives finds it (background work may still be running).
                    await run_in_threadpool(self._finish, token_id, key, captured)
                    captured["stored"] = True
            await send(message)

        try:
            await self.asgi(scope, _replay(body, receive), capture)
        finally:
            if not captured["stored"]:
                captured["status"] = 500  # no complete answer: forget the key, nothing to replay
                await run_in_threadpool(self._finish, token_id, key, captured)

    def _authenticate(self, raw: str | None) -> api_tokens.ApiToken | None:
        with self.api.begin() as conn:
            return api_tokens.authenticate(conn, raw)

    def _claim(self, token_id: int, key: str, fingerprint: str) -> Any:
        """None when this request goes ahead (the key is now taken); the stored row when
        a request with this key came before."""
        try:
            with self.api.begin() as conn:
                conn.execute(delete(api_idempotency).where(api_idempotency.c.created_at < _now() - KEY_RETENTION))
                conn.execute(
                    insert(api_idempotency).values(
                        token_id=token_id, key=key, request_hash=fingerprint, created_at=_now()
                    )
                )
            return None
        except IntegrityError:
            with self.api.connect() as conn:
                row = conn.execute(
                    select(api_idempotency).where(api_idempotency.c.token_id == token_id, api_idempotency.c.key == key)
                ).first()
            return row

    def _finish(self, token_id: int, key: str, captured: dict[str, Any]) -> None:
        status = captured["status"]
        where = (api_idempotency.c.token_id == token_id) & (api_idempotency.c.key == key)
        with self.api.begin() as conn:
            if status >= 500 or status in (401, 403, 429):
                conn.execute(delete(api_idempotency).where(where))
                return
            content_type = next(
                (v.decode("latin-1") for k, v in captured["headers"] if k.lower() == b"content-type"),
                "application/json",
            )
            stored = json.dumps(
                {"content_type": content_type, "body": base64.b64encode(captured["body"]).decode("ascii")}
            )
            conn.execute(update(api_idempotency).where(where).values(status=status, response=stored))

    async def _answer_stored(self, row: Any, fingerprint: str, scope: Scope, receive: Receive, send: Send) -> None:
        base = self.api.settings.site.base_url
        if row.request_hash != fingerprint:
            response: Response = problem_response(
                422,
                "Idempotency-Key reused",
                "this key was used with a different request; use a new key for a new request",
                kind="idempotency-key-reused",
                base=base,
            )
        elif row.status is None:
            response = problem_response(
                409,
                "Request in progress",
                "a request with this key is still running; try again shortly",
                kind="idempotency-key-in-flight",
                headers={"Retry-After": "1"},
                base=base,
            )
        else:
            stored = json.loads(row.response)
            response = Response(
                base64.b64decode(stored["body"]),
                status_code=row.status,
                media_type=stored["content_type"],
                headers={"Idempotent-Replayed": "true", "Cache-Control": "no-store"},
            )
        await response(scope, receive, send)


def _canonical(body: bytes, headers: dict[str, str]) -> bytes:
    """The body as compared for Idempotency-Key: a multipart body with its random
    boundary replaced, so the same upload sent again is the same request."""
    content_type = headers.get("content-type", "")
    if content_type.lower().startswith("multipart/"):
        for part in content_type.split(";")[1:]:
            name, _, value = part.strip().partition("=")
            if name.lower() == "boundary" and value:
                return body.replace(value.strip('"').encode("latin-1"), b"<boundary>")
    return body


def _replay(body: bytes, original: Receive) -> Receive:
    """The body already read, then the client's own messages (a disconnect)."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await original()

    return receive


def _now() -> dt.datetime:
    from pipeline.timeutil import utcnow

    return utcnow()
