"""The REST API for integrators, mounted at /api/v1 inside the web service (issue 14).

FastAPI builds the OpenAPI document (`/api/v1/openapi.json`) from the routes; the
human docs (`/api/v1/docs`) are one server-rendered page made from that document with
our Jinja templates (no CDN, no script). Every error is RFC 9457 problem+json (API-4);
every route needs a bearer token with a scope (API-3); writes take Idempotency-Key
(API-5); each token has its own rate limit (API-6); lists page with signed cursors (API-7).

Modules: `core` (problems, tokens, rate limit, cursors, idempotency), `articles`,
`subscribers`, `operations` (editions and their reports, deliveries, partners, jobs),
`imports` (CSV uploads run by pipeline.subscribers.imports). Adapters only:
the business rules live in the stage packages.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import HTMLResponse, Response

from pipeline.app import App
from pipeline.errors import ConfigError, NotFound, SyndicateError, TokenError
from pipeline.web.api.core import PROBLEM_KINDS, Api, ApiProblem, IdempotencyMiddleware, problem_response

log = logging.getLogger(__name__)

PREFIX = "/api/v1"
VERSION = "1.0.0"
DESCRIPTION = """\
The Syndicate REST API for integrators. Authenticate with `Authorization: Bearer <token>`
(`syndicate tokens create --name N --scope S`). Errors are RFC 9457 problem details
(`application/problem+json`). Lists return `{items, next_cursor}`: pass `next_cursor` as
`cursor` for the next page; `limit` above `api.max_page_size` is refused with 400. Writes
accept an `Idempotency-Key` header. Each token may make `api.rate_limit` requests a
minute; beyond that: 429 with `Retry-After`.
"""
DOCS_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def create_api(app: App) -> FastAPI:
    """The FastAPI application; its paths are relative to the /api/v1 mount."""
    from pipeline.web.api import articles, imports, operations, subscribers

    api = FastAPI(
        title=f"{app.settings.site.title} API",
        version=VERSION,
        description=DESCRIPTION,
        openapi_url="/openapi.json",
        docs_url=None,
        redoc_url=None,
        servers=[{"url": PREFIX}],
    )
    state = Api(app)
    api.state.api = state
    api.include_router(articles.router)
    api.include_router(subscribers.router)
    api.include_router(operations.router)
    api.include_router(imports.router)
    _install_openapi(api)
    _install_errors(api, state)

    @api.get("/docs", include_in_schema=False)
    def docs(request: Request) -> Response:
        return HTMLResponse(render_docs(app, api.openapi()), headers=DOCS_HEADERS)

    return api


def wrap(api: FastAPI) -> IdempotencyMiddleware:
    """The ASGI app to mount: the API behind the Idempotency-Key layer."""
    return IdempotencyMiddleware(api, api.state.api)


def _install_openapi(api: FastAPI) -> None:
    plain = api.openapi

    def openapi() -> dict[str, Any]:
        if api.openapi_schema:
            return api.openapi_schema
        doc = plain()
        doc.setdefault("components", {})["securitySchemes"] = {
            "bearerAuth": {"type": "http", "scheme": "bearer", "description": "An API token (`syn_...`)."}
        }
        problem = {
            "description": "RFC 9457 problem details",
            "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        doc["components"].setdefault("schemas", {})["Problem"] = {
            "type": "object",
            "properties": {
                "type": {"type": "string"},
                "title": {"type": "string"},
                "status": {"type": "integer"},
                "detail": {"type": "string"},
                "instance": {"type": "string"},
            },
            "required": ["type", "title", "status"],
        }
        for path in doc.get("paths", {}).values():
            for op in path.values():
                responses = op.setdefault("responses", {})
                responses.pop("422", None)  # FastAPI's own shape; ours is a problem
                for code in ("400", "401", "403", "404", "422", "429"):
                    responses.setdefault(code, problem)
        api.openapi_schema = doc
        return doc

    api.openapi = openapi  # type: ignore[method-assign]


def _install_errors(api: FastAPI, state: Api) -> None:
    base = state.settings.site.base_url

    async def on_problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiProblem)
        return exc.response(request.url.path, base)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        status = exc.status_code
        detail = exc.detail if isinstance(exc.detail, str) and exc.detail != HTTPStatus(status).phrase else ""
        if status == 404:
            detail = detail or "there is no such route; see /api/v1/docs"
        return problem_response(
            status,
            HTTPStatus(status).phrase,
            detail,
            instance=request.url.path,
            headers=dict(exc.headers or {}),
            base=base,
        )

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        problems = exc.errors()
        if any(e.get("type") == "json_invalid" for e in problems):
            return problem_response(
                400,
                "Invalid JSON",
                "the body is not valid JSON; send a JSON object with Content-Type: application/json",
                kind="invalid-json",
                instance=request.url.path,
                base=base,
            )
        errors = [
            {"field": ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body", "message": e.get("msg", "")}
            for e in problems
        ]
        return problem_response(
            422,
            "Validation failed",
            "; ".join(f"{e['field']}: {e['message']}" for e in errors)[:1000],
            kind="validation",
            instance=request.url.path,
            base=base,
            errors=errors,
        )

    async def on_domain(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SyndicateError)
        from pipeline import subscribers as subs

        hint = exc.hint
        if isinstance(exc, ConfigError):
            log.error("configuration problem on %s: %s", request.url.path, exc.message)
            return problem_response(503, "Service Unavailable", "the service is not set up completely", base=base)
        if isinstance(exc, NotFound):
            return problem_response(
                404, "Not Found", exc.message, kind="not-found", instance=request.url.path, base=base, hint=hint
            )
        if isinstance(exc, subs.InvalidInput):
            errors = [{"field": exc.field, "message": exc.message}]
            return problem_response(
                422,
                "Validation failed",
                exc.message,
                kind="validation",
                instance=request.url.path,
                base=base,
                errors=errors,
            )
        if isinstance(exc, subs.RateLimited):
            return problem_response(
                429,
                "Too many requests",
                exc.message,
                kind="rate-limited",
                instance=request.url.path,
                headers={"Retry-After": str(exc.retry_after)},
                base=base,
            )
        if isinstance(exc, TokenError):
            return problem_response(400, "Bad Request", exc.message, instance=request.url.path, base=base, hint=hint)
        # EditorialError and the rest: the request is fine but the state does not allow it
        return problem_response(
            409, "Conflict", exc.message, kind="conflict", instance=request.url.path, base=base, hint=hint
        )

    async def on_crash(request: Request, exc: Exception) -> Response:
        log.error("unhandled API error on %s %s: %s", request.method, request.url.path, exc)
        log.debug("traceback", exc_info=exc)
        return problem_response(500, "Internal Server Error", "something went wrong on our side", base=base)

    api.add_exception_handler(ApiProblem, on_problem)
    api.add_exception_handler(HTTPException, on_http)
    api.add_exception_handler(RequestValidationError, on_validation)
    api.add_exception_handler(SyndicateError, on_domain)
    api.add_exception_handler(Exception, on_crash)


def render_docs(app: App, doc: dict[str, Any]) -> str:
    """The human docs: every operation of the OpenAPI document, with its scope."""
    from pipeline import templating

    operations = []
    for path, methods in doc.get("paths", {}).items():
        for method, op in methods.items():
            operations.append(
                {
                    "method": method.upper(),
                    "path": PREFIX + path,
                    "summary": op.get("summary", ""),
                    "description": op.get("description", ""),
                    "scope": op.get("x-required-scope", ""),
                    "parameters": op.get("parameters", []),
                    "tag": (op.get("tags") or [""])[0],
                    "anchor": op.get("operationId", f"{method}-{path}"),
                }
            )
    env = templating.environment(app.settings, html=True, keep_trailing_newline=False)
    return env.get_template("web/api_docs.html").render(
        site=app.settings.site,
        doc=doc,
        operations=operations,
        problems=PROBLEM_KINDS,
        prefix=PREFIX,
    )


__all__ = ["PREFIX", "create_api", "render_docs", "wrap"]
