"""The desk's plumbing: the route table with one access rule per route, sessions from
the cookie, CSRF, and page rendering. Views are plain functions `view(ctx) -> Response`
run off the event loop; this module checks who may call them before they run.

Access rules (checked on the server for every request, before the view runs):
  PUBLIC      anyone (sign-in, registration, links from emails)
  SIGNED_IN   any active user
  ("editor",) a tuple of roles: the user needs one of them; admin may do everything
Anonymous requests to a protected route are sent to the sign-in page (303); a signed-in
user without the role gets 403. Every POST carries a CSRF token bound to the session
(or, before sign-in, to a random cookie) and must come from our own origin.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlsplit

from markupsafe import Markup
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from pipeline import accounts, templating, tokens
from pipeline.app import App
from pipeline.errors import NotFound, SyndicateError, TokenError
from pipeline.web.errors import BadRequest

log = logging.getLogger(__name__)

PUBLIC = "public"
SIGNED_IN = "signed_in"
SESSION_COOKIE = "desk_session"
PRE_COOKIE = "desk_pre"
CSRF_MAX_AGE = 24 * 3600
FORM_OVERHEAD = 256 * 1024
HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' https: data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
}


@dataclasses.dataclass(frozen=True)
class DeskRoute:
    path: str  # below /desk
    methods: tuple[str, ...]
    view: Callable
    allow: Any  # PUBLIC | SIGNED_IN | tuple of roles

    @property
    def name(self) -> str:
        return self.view.__name__


class Forbidden(SyndicateError):
    """Signed in, but this is not yours to see or do."""


@dataclasses.dataclass
class Ctx:
    """What a view gets: the request, who asks, the form (POST), and the desk."""

    request: Request
    desk: Desk
    user: accounts.User | None
    csrf: str
    form: FormData | None = None
    new_pre_cookie: str | None = None

    @property
    def settings(self):
        return self.desk.app.settings

    @property
    def engine(self):
        return self.desk.app.engine

    @property
    def params(self) -> dict:
        return self.request.path_params

    @property
    def ip(self) -> str | None:
        return self.request.client.host if self.request.client else None

    def text(self, name: str, limit: int = 100_000) -> str:
        value = self.form.get(name) if self.form is not None else None
        return value[:limit] if isinstance(value, str) else ""

    def texts(self, name: str) -> list[str]:
        return [v for v in (self.form.getlist(name) if self.form is not None else []) if isinstance(v, str)]

    def file(self, name: str) -> UploadFile | None:
        value = self.form.get(name) if self.form is not None else None
        return value if isinstance(value, UploadFile) and value.filename else None

    def page(self, template: str, status: int = 200, **context) -> Response:
        return self.desk.render(self, template, status, **context)

    def redirect(self, path: str, notice: str = "") -> Response:
        url = self.desk.url(path) + (("&" if "?" in path else "?") + "notice=" + quote(notice) if notice else "")
        return RedirectResponse(url, status_code=303, headers=HEADERS)

    def audit(self, conn, action: str, target: str = "", **detail) -> None:
        from pipeline.accounts import audit

        audit.record(
            conn,
            actor=self.user.email if self.user else "anonymous",
            action=action,
            target=target,
            detail=detail,
            ip=self.ip,
            via="web",
        )


class Desk:
    def __init__(self, app: App, routes: list[DeskRoute]):
        self.app = app
        self.routes = routes
        self.env = templating.environment(app.settings, html=True, keep_trailing_newline=False)
        self.secure = app.settings.site.base_url.lower().startswith("https:")

    def url(self, path: str = "/") -> str:
        return "/desk" + (path if path.startswith("/") else "/" + path)

    # --- rendering ----------------------------------------------------------------------

    def render(self, ctx: Ctx, template: str, status: int = 200, **context) -> Response:
        notice = ctx.request.query_params.get("notice", "")[:300]
        body = self.env.get_template(f"desk/{template}").render(
            site=self.app.settings.site,
            user=ctx.user,
            csrf=ctx.csrf,
            desk=self.url,
            notice=notice,
            path=ctx.request.url.path,
            Markup=Markup,
            **context,
        )
        return HTMLResponse(body, status_code=status, headers=HEADERS)

    def problem(self, ctx: Ctx, status: int, heading: str, message: str, hint: str | None = None) -> Response:
        return self.render(ctx, "problem.html", status, heading=heading, message=message, hint=hint)

    # --- sessions and CSRF ------------------------------------------------------------------

    def csrf_for(self, binding: str) -> str:
        return tokens.sign(self.app.settings, "desk-csrf", binding, timed=True)

    def csrf_ok(self, form: FormData, binding: str | None) -> bool:
        given = form.get("csrf_token")
        if not binding or not isinstance(given, str) or len(given) > 500:
            return False
        try:
            return tokens.verify(self.app.settings, "desk-csrf", given, max_age=CSRF_MAX_AGE) == binding
        except TokenError:
            return False

    def same_origin(self, request: Request) -> bool:
        def origin(url: str) -> str:
            p = urlsplit(url)
            return f"{p.scheme}://{p.netloc}".lower() if p.scheme and p.netloc else ""

        allowed = {origin(self.app.settings.site.base_url)}
        if request.headers.get("host"):
            allowed.add(f"{request.url.scheme}://{request.headers['host']}".lower())
        given = request.headers.get("origin")
        if given and given != "null":
            return given.lower() in allowed
        if request.headers.get("sec-fetch-site", "").lower() == "cross-site":
            return False
        referer = request.headers.get("referer")
        return not referer or origin(referer) in allowed

    def set_session_cookie(self, response: Response, token: str) -> None:
        response.set_cookie(
            SESSION_COOKIE,
            token,
            max_age=self.app.settings.desk.session_hours * 3600,
            path="/desk",
            httponly=True,
            samesite="lax",
            secure=self.secure,
        )

    def clear_session_cookie(self, response: Response) -> None:
        response.delete_cookie(SESSION_COOKIE, path="/desk", httponly=True, samesite="lax", secure=self.secure)

    # --- the request pipeline ---------------------------------------------------------------

    def endpoint(self, route: DeskRoute):
        async def handle(request: Request) -> Response:
            return await self._handle(route, request)

        handle.__name__ = route.name
        return handle

    async def _handle(self, route: DeskRoute, request: Request) -> Response:
        settings = self.app.settings
        token = request.cookies.get(SESSION_COOKIE)

        def lookup():
            with self.app.engine.connect() as conn:
                return accounts.session_user(conn, token)

        found = await run_in_threadpool(lookup) if token else None
        user, sid = found if found else (None, None)
        pre = request.cookies.get(PRE_COOKIE)
        new_pre = None
        if user is None and not (pre and 20 <= len(pre) <= 100):
            pre = new_pre = tokens.random_token()
        binding = sid or pre
        ctx = Ctx(request=request, desk=self, user=user, csrf=self.csrf_for(binding), new_pre_cookie=new_pre)

        if route.allow != PUBLIC and user is None:
            nxt = request.url.path if request.method == "GET" else "/desk/"
            response: Response = RedirectResponse(f"/desk/login?next={quote(nxt)}", status_code=303, headers=HEADERS)
            if token:
                self.clear_session_cookie(response)  # expired, or the user was disabled
            return response
        if isinstance(route.allow, tuple) and not user.has(*route.allow):
            return self.problem(
                ctx,
                403,
                "Not for your role",
                "This page is for " + " or ".join(route.allow) + "s.",
                "Ask an admin if you need access.",
            )
        if request.method == "POST":
            try:
                ctx.form = await self._read_form(request, settings.desk.max_upload_bytes + FORM_OVERHEAD)
            except SyndicateError as exc:
                return self.problem(
                    ctx, getattr(exc, "status", 400), "This form could not be read", exc.message, exc.hint
                )
            if not self.same_origin(request) or not self.csrf_ok(
                ctx.form, request.cookies.get(PRE_COOKIE) if user is None else sid
            ):
                return self.problem(
                    ctx,
                    403,
                    "Please try again",
                    "This form was sent from another site, or it is too old, or your browser refused our cookie.",
                    "Go back, reload the page and send it again.",
                )
        try:
            response = await run_in_threadpool(route.view, ctx)
        except NotFound as exc:
            response = self.problem(ctx, 404, "Not found", exc.message, exc.hint)
        except Forbidden as exc:
            response = self.problem(ctx, 403, "Not allowed", exc.message, exc.hint)
        except TokenError as exc:
            response = self.problem(
                ctx,
                410 if "used" in exc.message or "expired" in exc.message else 403,
                "This link does not work",
                exc.message,
                exc.hint,
            )
        except SyndicateError as exc:
            response = self.problem(ctx, 400, "That did not work", exc.message, exc.hint)
        finally:
            if ctx.form is not None:
                await ctx.form.close()
        if new_pre:
            response.set_cookie(PRE_COOKIE, new_pre, path="/desk", httponly=True, samesite="lax", secure=self.secure)
        return response

    async def _read_form(self, request: Request, max_bytes: int) -> FormData:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > max_bytes):
            raise BadRequest(
                f"the upload is larger than {max_bytes:,} bytes", status=413, hint="Upload a smaller image."
            )
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_bytes:
                raise BadRequest(
                    f"the upload is larger than {max_bytes:,} bytes", status=413, hint="Upload a smaller image."
                )
        request._body = body
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in ("application/x-www-form-urlencoded", "multipart/form-data"):
            if not body.strip():
                return FormData()
            raise BadRequest("send the form as a web form", status=415)
        try:
            return await request.form(max_files=2, max_fields=200, max_part_size=max_bytes)
        except (HTTPException, ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(f"the form could not be read: {getattr(exc, 'detail', exc)}") from None


def db(ctx: Ctx):
    """One transaction for a view's writes."""
    return ctx.engine.begin()


def read(ctx: Ctx):
    return ctx.engine.connect()
