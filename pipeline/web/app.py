"""The web service: an HTTP adapter over pipeline.subscribers, plus the built public/ tree.

Routes (GET never changes state; LIST-4, DOI-2):
  GET  /subscribe                    the sign-up form
  POST /subscribe                    form or JSON; the same answer for every address
  GET  /confirm/<token>              a page whose button POSTs (link scanners only GET)
  POST /confirm/<token>              confirm (single use, 48 h)
  POST /confirm/<token>/resend       'send it again' for an expired link
  GET  /preferences/<token>, POST    frequency, topics, name, time zone
  GET  /unsubscribe/<token>          a confirmation page
  POST /unsubscribe/<token>          the page's button, or RFC 8058 one-click
                                     (List-Unsubscribe=One-Click; 200, never a redirect)
  GET  /healthz, /metrics            (healthz: database, signing secret, scheduler)
  /                                  public/ (pipeline.site.serving when present, else static files)

The email a request queues (a confirmation, the "already subscribed" notice) is sent
right after the response, through its outbox row (`send_after`). The client address
comes from pipeline.web.proxy (X-Forwarded-For only from trusted proxies, right-most
untrusted hop). Form bodies must be UTF-8.

Cross-site request forgery: the sign-up form may live on a static page, so it carries
no token; a POST is accepted only when its Origin (or, without one, its Referer) is
ours (site.base_url or web.allowed_origins, never the request's own Host), and
`Sec-Fetch-Site: cross-site` is refused. The forms this service renders
also carry a signed, timed token bound to the link they belong to. The one-click
POST carries neither (RFC 8058: no cookies, no context): its URL token is the
credential.

Only this module and pipeline.cli turn SyndicateError into something a person sees.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.templating import Jinja2Templates

from pipeline import subscribers as subs
from pipeline import templating, tokens
from pipeline.app import App
from pipeline.errors import ConfigError, NotFound, SyndicateError, TokenError
from pipeline.web.errors import BadRequest
from pipeline.web.proxy import ForwardedClientMiddleware

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
CSRF_MAX_AGE = 2 * 24 * 3600
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    # Token URLs must not leak to other sites through Referer. (Not no-referrer: with
    # it, browsers send `Origin: null` on our own form posts.)
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}
CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' https: data:; "
    "form-action 'self' {base}; frame-ancestors 'none'; base-uri 'none'"
)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return ""
    return f"{parts.scheme}://{parts.netloc}".lower()


class Web:
    """The endpoints, bound to one App."""

    def __init__(self, app: App):
        self.app = app
        self.settings = app.settings
        self.templates = self._templates()
        # The sign-up form posts to site.base_url, which may not be the host this page came from.
        self.headers = {
            **PAGE_HEADERS,
            "Content-Security-Policy": CSP.format(base=_origin(self.settings.site.base_url)),
        }

    # --- plumbing -----------------------------------------------------------------

    def _templates(self) -> Jinja2Templates:
        return Jinja2Templates(env=templating.environment(self.settings, html=True, keep_trailing_newline=False))

    def page(
        self, request: Request, name: str, context: dict | None = None, status: int = 200, headers: dict | None = None
    ) -> Response:
        ctx = {"site": self.settings.site, "request": request, **(context or {})}
        return self.templates.TemplateResponse(
            request, f"web/{name}", ctx, status_code=status, headers={**self.headers, **(headers or {})}
        )

    def error_page(
        self,
        request: Request,
        status: int,
        heading: str,
        message: str,
        hint: str | None = None,
        headers: dict | None = None,
    ) -> Response:
        if _wants_json(request):
            body: dict[str, Any] = {"ok": False, "error": message}
            if hint:
                body["hint"] = hint
            return JSONResponse(body, status_code=status, headers={**self.headers, **(headers or {})})
        return self.page(
            request,
            "error.html",
            {"heading": heading, "message": message, "hint": hint},
            status=status,
            headers=headers,
        )

    def client(self, request: Request, source: str, wording: str = "") -> subs.Client:
        return subs.Client(
            source=source,
            ip=request.client.host if request.client else None,
            user_agent=request.headers.get("user-agent"),
            wording_version=wording,
        )

    async def db(self, fn, *args, **kwargs):
        """Run `fn(conn, settings, ...)` in one transaction, off the event loop."""

        def work():
            with self.app.engine.begin() as conn:
                return fn(conn, self.settings, *args, **kwargs)

        return await run_in_threadpool(work)

    async def read(self, fn, *args, **kwargs):
        def work():
            with self.app.engine.connect() as conn:
                return fn(conn, *args, **kwargs)

        return await run_in_threadpool(work)

    def allowed_origins(self) -> set[str]:
        """site.base_url's origin and web.allowed_origins: never the request's own Host,
        which the requester controls (DNS rebinding points a hostile name at us)."""
        allowed = {_origin(self.settings.site.base_url), *(_origin(o) for o in self.settings.web.allowed_origins)}
        allowed.discard("")
        return allowed

    def same_origin(self, request: Request) -> bool:
        origin = request.headers.get("origin")
        fetch_site = request.headers.get("sec-fetch-site", "").lower()
        if origin == "null":  # privacy-sensitive context: trust only the browser's own verdict
            return fetch_site == "same-origin"
        if origin is not None:
            return origin.lower() in self.allowed_origins()
        if fetch_site == "cross-site":
            return False
        referer = request.headers.get("referer")
        if referer:
            return _origin(referer) in self.allowed_origins()
        return True  # not a browser: no ambient credentials to abuse

    def csrf_token(self, link_token: str) -> str:
        return tokens.sign(self.settings, "csrf", link_token, timed=True)

    def csrf_ok(self, form: FormData, link_token: str) -> bool:
        given = form.get("csrf_token")
        if not isinstance(given, str) or len(given) > 1000:
            return False
        try:
            return tokens.verify(self.settings, "csrf", given, max_age=CSRF_MAX_AGE) == link_token
        except TokenError:
            return False

    # --- endpoints ----------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        """The landing page when public/index.html has not been built."""

        def load(conn):
            from pipeline.content.editorial import approved_articles

            try:
                articles = approved_articles(conn, self.settings, limit=10)
            except Exception:  # no content tables yet
                log.debug("no articles for the home page", exc_info=True)
                articles = []
            return articles, subs.form_context(self.settings, conn)

        articles, form = await self.read(load)
        return self.page(request, "home.html", {"articles": articles, "subscribe_form": form})

    async def subscribe_form(self, request: Request) -> Response:
        form = await self.read(lambda conn: subs.form_context(self.settings, conn))
        return self.page(request, "subscribe.html", {"subscribe_form": form})

    async def subscribe(self, request: Request) -> Response:
        as_json = _is_json(request)
        if not self.same_origin(request):
            return self.error_page(
                request,
                403,
                "Not allowed",
                "This form only works from our own pages.",
                "Open the subscribe page on our site and try again.",
            )
        if as_json:
            data = await _json_body(request)
            values = {
                k: data.get(k)
                for k in ("email", "name", "frequency", "topics", "timezone", "consent_version", "website")
            }
        else:
            form = await _form_body(request)
            values = {
                k: _text(form, k) for k in ("email", "name", "frequency", "timezone", "consent_version", "website")
            }
            values["topics"] = _texts(form, "topics")
        for key in ("email", "name", "frequency", "timezone", "consent_version", "website"):
            if values.get(key) is not None and not isinstance(values[key], str):
                return await self._subscribe_invalid(request, as_json, values, {key: f"{key} must be text"})
        if values.get("website"):
            # The honeypot field is filled: a bot. Same answer, nothing done.
            return self._subscribe_accepted(request, as_json)
        wording = subs.clean_wording_version(values.get("consent_version"), self.settings)
        source = "api" if as_json else f"web:{urlsplit(request.headers.get('referer', '')).path or '/subscribe'}"
        client = self.client(request, source[:300], wording)
        try:
            result = await self.db(
                subs.request_subscription,
                values.get("email"),
                name=values.get("name"),
                frequency=values.get("frequency"),
                topics=values.get("topics"),
                timezone=values.get("timezone"),
                client=client,
            )
        except subs.InvalidInput as exc:
            return await self._subscribe_invalid(request, as_json, values, {exc.field: exc.message})
        except subs.RateLimited as exc:
            headers = {"Retry-After": str(exc.retry_after)}
            return self.error_page(
                request,
                429,
                "Too many requests",
                "We have had too many sign-up requests for this address or from your network.",
                exc.hint,
                headers=headers,
            )
        return self.send_after(self._subscribe_accepted(request, as_json), result)

    def _subscribe_accepted(self, request: Request, as_json: bool) -> Response:
        if as_json:
            return JSONResponse(
                {"ok": True, "message": "If the address can receive our digest, a confirmation link is on its way."},
                status_code=202,
                headers=self.headers,
            )
        return self.page(request, "subscribe_sent.html", {"ttl_hours": self.settings.subscribers.confirm_ttl_hours})

    async def _subscribe_invalid(self, request: Request, as_json: bool, values: dict, errors: dict) -> Response:
        if as_json:
            return JSONResponse({"ok": False, "errors": errors}, status_code=400, headers=self.headers)
        shown = {k: v for k, v in values.items() if isinstance(v, str) and k in ("email", "name", "frequency")}
        topics = values.get("topics")
        shown["topics"] = [t for t in topics if isinstance(t, str)] if isinstance(topics, list) else []
        form_ctx = await self.read(lambda conn: subs.form_context(self.settings, conn))
        return self.page(
            request, "subscribe.html", {"subscribe_form": form_ctx, "form": shown, "errors": errors}, status=400
        )

    def _link_problem(self, request: Request, exc: TokenError, token: str | None = None) -> Response:
        if isinstance(exc, subs.LinkExpired):
            return self.page(
                request,
                "link_problem.html",
                {
                    "heading": "This link has expired",
                    "message": exc.message,
                    "hint": "Confirmation links work for a limited time.",
                    "resend_action": f"{request.url.path.rstrip('/')}/resend",
                    "csrf_token": self.csrf_token(token or ""),
                },
                status=410,
            )
        if isinstance(exc, subs.LinkUsed):
            return self.page(
                request,
                "link_problem.html",
                {"heading": "This link was used already", "message": exc.message, "hint": exc.hint},
                status=410,
            )
        return self.page(
            request,
            "link_problem.html",
            {"heading": "This link is not valid", "message": exc.message, "hint": exc.hint},
            status=403,
        )

    async def confirm_page(self, request: Request) -> Response:
        token = request.path_params["token"]
        try:
            sub = await self.read(subs.check_confirm_token, self.settings, token)
        except TokenError as exc:
            return self._link_problem(request, exc, token)
        return self.page(
            request,
            "confirm.html",
            {
                "subscriber": sub,
                "csrf_token": self.csrf_token(token),
                "consent_text": self.settings.subscribers.consent_text,
            },
        )

    async def confirm(self, request: Request) -> Response:
        token = request.path_params["token"]
        form = await _form_body(request)
        if not self.same_origin(request) or not self.csrf_ok(form, token):
            return self._stale_form(request)
        try:
            sub = await self.db(subs.confirm, token, client=self.client(request, "web:/confirm"))
        except TokenError as exc:
            return self._link_problem(request, exc, token)
        response = self.page(
            request,
            "confirmed.html",
            {"subscriber": sub, "preferences_url": subs.preferences_url(self.settings, sub["id"])},
        )
        if self.settings.subscribers.welcome_email and sub["state"] == "confirmed":
            # WEL-1: the welcome follows at once, like the confirmation link did
            from types import SimpleNamespace

            from pipeline.subscribers.emails import welcome_key

            response = self.send_after(response, SimpleNamespace(outbox_key=welcome_key(sub["id"])))
        return response

    async def resend(self, request: Request) -> Response:
        token = request.path_params["token"]
        form = await _form_body(request)
        if not self.same_origin(request) or not self.csrf_ok(form, token):
            return self._stale_form(request)
        try:
            result = await self.db(subs.resend_confirmation, token, client=self.client(request, "web:/confirm/resend"))
        except subs.RateLimited as exc:
            return self.error_page(
                request,
                429,
                "Too many requests",
                "We have sent several links to this address recently.",
                exc.hint,
                headers={"Retry-After": str(exc.retry_after)},
            )
        except TokenError as exc:
            return self._link_problem(request, exc, token)
        return self.send_after(
            self.page(request, "subscribe_sent.html", {"ttl_hours": self.settings.subscribers.confirm_ttl_hours}),
            result,
        )

    def send_after(self, response: Response, result) -> Response:
        """Send the email a request queued right after the response is out (issue 16
        item 22): the reader gets the link in seconds, every requester gets the same
        answer in the same time (DOI-2), and the outbox row keeps it idempotent: if
        this send does not happen, a worker's does."""
        key = getattr(result, "outbox_key", None)
        if key:
            from pipeline.delivery.worker import deliver_now

            response.background = BackgroundTask(run_in_threadpool, deliver_now, self.settings, self.app.engine, [key])
        return response

    def _stale_form(self, request: Request) -> Response:
        return self.error_page(
            request,
            403,
            "Please try again",
            "This form was sent from another site or is too old.",
            "Go back, reload the page and press the button again.",
        )

    def _list_subscriber_id(self, purpose: str, token: str) -> int:
        return subs.verify_list_token(self.settings, purpose, token)

    async def preferences_page(self, request: Request) -> Response:
        token = request.path_params["token"]
        try:
            sid = self._list_subscriber_id("preferences", token)
        except TokenError as exc:
            return self._link_problem(request, exc)
        return await self._preferences(request, token, sid)

    async def _preferences(
        self,
        request: Request,
        token: str,
        sid: int,
        *,
        form: dict | None = None,
        errors: dict | None = None,
        saved: dict | None = None,
    ) -> Response:
        def load(conn):
            return subs.get_by_id(conn, sid), subs.available_topics(conn, self.settings)

        sub, topics = await self.read(load)
        if sub is None:
            return self._not_subscribed(request)
        shown = form or {
            "name": sub["name"],
            "frequency": sub["frequency"],
            "topics": list(sub["topics"] or []),
            "timezone": sub["timezone"],
        }
        topics = list(dict.fromkeys([*topics, *(sub["topics"] or [])]))
        return self.page(
            request,
            "preferences.html",
            {
                "subscriber": sub,
                "form": shown,
                "errors": errors or {},
                "topics": topics,
                "frequencies": list(subs.FREQUENCIES),
                "timezones": subs.timezone_names(),
                "csrf_token": self.csrf_token(token),
                "saved": saved is not None,
                "saved_changes": sorted(saved or {}),
                "unsubscribe_url": subs.unsubscribe_url(self.settings, sid),
            },
            status=400 if errors else 200,
        )

    async def preferences(self, request: Request) -> Response:
        token = request.path_params["token"]
        try:
            sid = self._list_subscriber_id("preferences", token)
        except TokenError as exc:
            return self._link_problem(request, exc)
        form = await _form_body(request)
        if not self.same_origin(request) or not self.csrf_ok(form, token):
            return self._stale_form(request)
        values = {
            "name": _text(form, "name"),
            "frequency": _text(form, "frequency"),
            "timezone": _text(form, "timezone"),
            "topics": _texts(form, "topics"),
        }
        for key, value in values.items():
            if key != "topics" and value is not None and not isinstance(value, str):
                return await self._preferences(
                    request, token, sid, errors={key: f"{key} must be text"}, form=_shown(values)
                )
        try:
            changes = await self.db(
                subs.update_preferences,
                sid,
                name=values["name"],
                frequency=values["frequency"],
                topics=values["topics"],
                timezone=values["timezone"] or None,
                client=self.client(request, "web:/preferences"),
            )
        except subs.InvalidInput as exc:
            return await self._preferences(request, token, sid, errors={exc.field: exc.message}, form=_shown(values))
        except NotFound:
            return self._not_subscribed(request)
        return await self._preferences(request, token, sid, saved=changes)

    def _not_subscribed(self, request: Request) -> Response:
        """A valid link whose subscription was erased: the preferences and the unsubscribe
        pages answer alike (200, nothing to change, nothing will be sent)."""
        return self.page(request, "not_subscribed.html")

    async def unsubscribe_page(self, request: Request) -> Response:
        token = request.path_params["token"]
        try:
            sid = self._list_subscriber_id("unsubscribe", token)
        except TokenError as exc:
            return self._link_problem(request, exc)
        sub = await self.read(subs.get_by_id, sid)
        if sub is None:
            return self._not_subscribed(request)
        return self.page(
            request,
            "unsubscribe.html",
            {
                "subscriber": sub,
                "csrf_token": self.csrf_token(token),
                "preferences_url": subs.preferences_url(self.settings, sid),
            },
        )

    async def unsubscribe(self, request: Request) -> Response:
        """The page's button, or RFC 8058 one-click: 200, no redirect, idempotent (LIST-3)."""
        token = request.path_params["token"]
        try:
            sid = self._list_subscriber_id("unsubscribe", token)
        except TokenError as exc:
            if _is_form(request):
                return PlainTextResponse("This unsubscribe link is not valid.\n", status_code=403, headers=self.headers)
            return self._link_problem(request, exc)
        form = await _form_body(request)
        one_click = _text(form, "List-Unsubscribe") == "One-Click"
        if not one_click and (not self.same_origin(request) or not self.csrf_ok(form, token)):
            return self._stale_form(request)
        client = self.client(request, "one-click" if one_click else "web:/unsubscribe")
        await self.db(subs.unsubscribe, sid, client=client)
        if one_click:
            return PlainTextResponse("Unsubscribed.\n", status_code=200, headers=self.headers)
        sub = await self.read(subs.get_by_id, sid)
        if sub is None:
            return self._not_subscribed(request)
        return self.page(request, "unsubscribed.html", {"subscriber": sub})

    async def click(self, request: Request) -> Response:
        """/r/<token>: count one click on (edition, article) and redirect to the article
        (CLK-1..3). The target is looked up from the signed ids, never read from the
        request, so a tampered or foreign link gets 400 and no Location. A HEAD (link
        checkers, previews) redirects without counting. Counting on GET is the one
        write a GET makes: a counter with no person in it (CLK-5)."""
        from pipeline.digests import clicks

        token = request.path_params["token"]
        try:
            if request.method == "HEAD":
                url = await self.read(lambda conn: clicks.follow(conn, self.settings, token, count=False))
            else:
                url = await self.db(clicks.follow, token)
        except TokenError:
            return self.error_page(
                request, 400, "Link not valid", "This link is not valid.", "Use the link in the email you received."
            )
        except NotFound:
            return self.error_page(request, 404, "Not found", "This article is no longer available.")
        return Response(status_code=302, headers={"Location": url, "Cache-Control": "no-store"})

    async def healthz(self, request: Request) -> Response:
        from pipeline.ops import metrics

        body = await run_in_threadpool(metrics.health, self.app)
        ok = bool(body.get("ok"))
        # Without a key no link can be signed or checked: every sign-up would fail.
        source = tokens.secret_source(self.settings)
        body["secret"] = {"ok": source is not None, "source": source or "none (set SYNDICATE_SECRET_KEY)"}
        ok = ok and source is not None
        body["ok"] = ok
        return JSONResponse(body, status_code=200 if ok else 503, headers={"Cache-Control": "no-store"})

    async def metrics(self, request: Request) -> Response:
        metrics = importlib.import_module("pipeline.ops.metrics")
        body, content_type = await run_in_threadpool(metrics.render_metrics, self.app)
        return Response(body, media_type=content_type, headers={"Cache-Control": "no-store"})


# --- request helpers ----------------------------------------------------------------


def _content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _is_json(request: Request) -> bool:
    return _content_type(request) == "application/json"


def _is_form(request: Request) -> bool:
    return _content_type(request) in ("application/x-www-form-urlencoded", "multipart/form-data")


def _wants_json(request: Request) -> bool:
    return _is_json(request) or request.headers.get("accept", "").startswith("application/json")


async def _body(request: Request) -> bytes:
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise BadRequest("bad Content-Length")
        if int(length) > MAX_BODY:
            raise BadRequest("the request is too large", status=413)
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise BadRequest("the request is too large", status=413)
    request._body = body  # later readers (form parsing) use it
    return body


async def _form_body(request: Request) -> FormData:
    body = await _body(request)
    if not _is_form(request):
        if not body.strip():
            return FormData()
        raise BadRequest("send the form as application/x-www-form-urlencoded or multipart/form-data", status=415)
    # Starlette reads undecodable bytes as Latin-1, so `\xff\xfe@example.com` would become
    # another, valid-looking address. A form is UTF-8 (HTML 5 forms, WHATWG URL): what
    # does not decode is refused, not guessed.
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("the form is not valid UTF-8") from None
    if _content_type(request) == "application/x-www-form-urlencoded":
        return _urlencoded(body)
    try:
        return await request.form(max_files=0, max_fields=200, max_part_size=MAX_BODY)
    except HTTPException as exc:
        raise BadRequest(f"the form could not be read: {exc.detail}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the form could not be read: {exc}") from None


def _urlencoded(body: bytes) -> FormData:
    """application/x-www-form-urlencoded, strictly: percent-escapes must decode as UTF-8."""
    from urllib.parse import parse_qsl

    try:
        pairs = parse_qsl(
            body.decode("utf-8"), keep_blank_values=True, encoding="utf-8", errors="strict", max_num_fields=200
        )
    except UnicodeDecodeError:
        raise BadRequest("the form is not valid UTF-8") from None
    except ValueError as exc:
        raise BadRequest(f"the form could not be read: {exc}") from None
    return FormData(pairs)


async def _json_body(request: Request) -> dict:
    import json

    body = await _body(request)
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadRequest('send a JSON object, e.g. {"email": "you@example.com"}')
    try:  # "\ud800" is valid JSON but no text: it could never be stored or mailed
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest("the body is not valid Unicode (a lone surrogate)") from None
    return data


def _text(form: FormData, name: str) -> str | None | object:
    value = form.get(name)
    if isinstance(value, UploadFile):
        raise BadRequest(f"{name} must be text, not a file")
    return value


def _texts(form: FormData, name: str) -> list[str]:
    values = form.getlist(name)
    if any(isinstance(v, UploadFile) for v in values):
        raise BadRequest(f"{name} must be text, not a file")
    return list(values)


def _shown(values: dict) -> dict:
    return {
        "name": values.get("name") or "",
        "frequency": values.get("frequency") or "",
        "timezone": values.get("timezone") or "UTC",
        "topics": [t for t in values.get("topics") or [] if isinstance(t, str)],
    }


# --- the application ----------------------------------------------------------------


class _PublicOrHome:
    """public/ at '/', with the web service's own landing page while no index.html is built."""

    def __init__(self, web: Web, public_app):
        self.web = web
        self.public_app = public_app
        self.index = web.settings.path("paths.public") / "index.html"

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] in ("", "/") and not self.index.exists():
            request = Request(scope, receive)
            if request.method not in ("GET", "HEAD"):
                response = PlainTextResponse("Method Not Allowed", status_code=405, headers={"Allow": "GET, HEAD"})
            else:
                response = await self.web.home(request)
            await response(scope, receive, send)
            return
        await self.public_app(scope, receive, send)


def _public_app(settings):
    from pipeline.site import serving

    return serving.make_public_app(settings)


def create_app(app: App) -> Starlette:
    """The ASGI application for `syndicate serve` (and for tests, through its client)."""
    web = Web(app)
    routes = [
        Route("/subscribe", web.subscribe_form, methods=["GET"]),
        Route("/subscribe", web.subscribe, methods=["POST"]),
        Route("/confirm/{token}", web.confirm_page, methods=["GET"]),
        Route("/confirm/{token}", web.confirm, methods=["POST"]),
        Route("/confirm/{token}/resend", web.resend, methods=["POST"]),
        Route("/preferences/{token}", web.preferences_page, methods=["GET"]),
        Route("/preferences/{token}", web.preferences, methods=["POST"]),
        Route("/unsubscribe/{token}", web.unsubscribe_page, methods=["GET"]),
        Route("/unsubscribe/{token}", web.unsubscribe, methods=["POST"]),
        Route("/healthz", web.healthz, methods=["GET", "HEAD"]),
        Route("/r/{token}", web.click, methods=["GET", "HEAD"]),
    ]
    routes.append(Route("/metrics", web.metrics, methods=["GET"]))
    from pipeline.web.desk import create_desk  # the signed-in workspace (issue 13)

    routes.append(Mount("/desk", app=create_desk(app)))
    if app.settings.api.enabled:  # the REST API for integrators (issue 14)
        from pipeline.web.api import PREFIX, create_api, wrap

        routes.append(Mount(PREFIX, app=wrap(create_api(app))))
    routes.append(Mount("/", app=_PublicOrHome(web, _public_app(app.settings))))

    async def syndicate_error(request: Request, exc: SyndicateError) -> Response:
        if isinstance(exc, ConfigError):  # ours to fix, not the visitor's; details stay in the log
            log.error("configuration problem on %s: %s (%s)", request.url.path, exc.message, exc.hint)
            return web.error_page(
                request,
                503,
                "Temporarily unavailable",
                "This service is not set up completely yet.",
                "Please try again later.",
            )
        status = getattr(exc, "status", None) or (
            403 if isinstance(exc, TokenError) else 404 if isinstance(exc, NotFound) else 400
        )
        return web.error_page(request, status, "Something is wrong with this request", exc.message, exc.hint)

    async def http_error(request: Request, exc: HTTPException) -> Response:
        headers = dict(exc.headers or {})
        if exc.status_code == 404:
            return web.error_page(request, 404, "Page not found", "There is no page at this address.", headers=headers)
        if exc.status_code == 304 or exc.status_code < 400:
            return Response(status_code=exc.status_code, headers=headers)
        return web.error_page(request, exc.status_code, "This did not work", str(exc.detail), headers=headers)

    async def server_error(request: Request, exc: Exception) -> Response:
        log.error("unhandled error on %s %s: %s", request.method, request.url.path, exc)
        log.debug("traceback", exc_info=exc)
        return HTMLResponse(
            "<!DOCTYPE html><title>Error</title><h1>Something went wrong on our side</h1>"
            "<p>Please try again in a few minutes.</p>",
            status_code=500,
            headers=PAGE_HEADERS,
        )

    middleware = [Middleware(ForwardedClientMiddleware, trusted=app.settings.web.forwarded_allow_ips)]
    starlette = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={SyndicateError: syndicate_error, HTTPException: http_error, Exception: server_error},
    )
    starlette.state.syndicate = app
    return starlette


def serve(app: App, *, host: str | None = None, port: int | None = None) -> None:
    """Run the web service with uvicorn until interrupted (`syndicate serve`)."""
    import uvicorn

    settings = app.settings
    require_secret(settings)
    host = host or settings.web.host
    port = settings.web.port if port is None else port
    asgi = create_app(app)
    log.info("serving %s on http://%s:%s/", settings.site.title, host, port)
    # X-Forwarded-For is read by ForwardedClientMiddleware (pipeline.web.proxy), not uvicorn.
    uvicorn.run(asgi, host=host, port=port, proxy_headers=False, log_level="info", server_header=False, access_log=True)


def require_secret(settings) -> str:
    """Refuse to serve without a signing key (every link would fail); name the demo's
    file secret as such. Returns where the key comes from."""
    source = tokens.secret_source(settings)
    if source is None:
        raise ConfigError(
            "no secret key: the web service cannot sign or check any confirmation, preferences or unsubscribe link",
            hint="Set SYNDICATE_SECRET_KEY (e.g. `python -c 'import secrets; "
            "print(secrets.token_urlsafe(48))'`), or run `syndicate init` for the local demo secret.",
        )
    if source == "demo secret file":
        log.warning(
            "signing links with the demo secret file %s (written by `syndicate init`); a public site sets "
            "SYNDICATE_SECRET_KEY",
            tokens.local_secret_path(settings),
        )
    return source


__all__ = ["create_app", "serve"]
