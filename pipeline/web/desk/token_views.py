"""API tokens in the desk (admins): list, create (the value shown once), revoke.

The new token's value is in the answer to the POST only: never in a URL, a redirect,
a log or the database (API-2). The page is `Cache-Control: no-store` like every desk page.
"""

from __future__ import annotations

from starlette.responses import Response

from pipeline.accounts import api_tokens
from pipeline.errors import NotFound

from .core import Ctx, db, read

EXPIRY_DAYS = {"": None, "30": 30, "90": 90, "365": 365}


def _page(c: Ctx, status: int = 200, **context: object) -> Response:
    with read(c) as conn:
        rows = api_tokens.list_tokens(conn)
    context.setdefault("error", None)
    context.setdefault("created", None)
    context.setdefault("raw", None)
    return c.page("tokens.html", status, tokens=rows, scopes=api_tokens.SCOPES, expiries=EXPIRY_DAYS, **context)


def tokens_list(c: Ctx) -> Response:
    return _page(c)


def token_create(c: Ctx) -> Response:
    import datetime as dt

    days = EXPIRY_DAYS.get(c.text("expires_days", 10), None)
    try:
        with db(c) as conn:
            token, raw = api_tokens.create_token(
                conn,
                name=c.text("name", 200),
                scopes=c.texts("scopes"),
                created_by=c.user.email if c.user else "unknown",
                expires_in=dt.timedelta(days=days) if days else None,
            )
            c.audit(conn, "token.create", str(token.id), name=token.name, scopes=list(token.scopes))
    except api_tokens.TokenInputError as exc:
        return _page(c, 400, error=exc)
    return _page(c, created=token, raw=raw)


def token_revoke(c: Ctx) -> Response:
    token_id = c.params["token_id"]
    if not token_id.isdigit():
        raise NotFound("no such token")
    with db(c) as conn:
        changed = api_tokens.revoke_token(conn, int(token_id))
        c.audit(conn, "token.revoke", token_id)
    return c.redirect("/tokens", f"Token {token_id} {'revoked' if changed else 'was already revoked'}.")
