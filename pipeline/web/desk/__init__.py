"""The desk: a signed-in workspace under /desk/ for authors, editors, operators and admins.

`ROUTES` is the one route table: every route names its view and who may use it
(see pipeline.web.desk.core for the rules). tests/test_desk_roles.py requests every
route as every role from this table, so a route added without a rule fails there.
Server-rendered pages (templates/desk/), no JavaScript needed.
"""

from __future__ import annotations

from starlette.routing import Route, Router

from pipeline.app import App

from . import account_views as acc
from . import author_views as auth
from . import editor_views as ed
from . import ops_views as ops
from . import token_views as tok
from .core import PUBLIC, SIGNED_IN, Desk, DeskRoute

AUTHOR = ("author",)
EDITOR = ("editor",)
OPERATOR = ("operator",)
ADMIN = ("admin",)
GET, POST = ("GET",), ("POST",)

ROUTES: list[DeskRoute] = [
    DeskRoute("/", GET, acc.home, SIGNED_IN),
    DeskRoute("/login", GET, acc.login_form, PUBLIC),
    DeskRoute("/login", POST, acc.login, PUBLIC),
    DeskRoute("/logout", POST, acc.logout, SIGNED_IN),
    DeskRoute("/join", GET, acc.join_form, PUBLIC),
    DeskRoute("/join", POST, acc.join, PUBLIC),
    DeskRoute("/join/confirm/{token}", GET, acc.join_confirm_page, PUBLIC),
    DeskRoute("/join/confirm/{token}", POST, acc.join_confirm, PUBLIC),
    DeskRoute("/invite/{token}", GET, acc.invite_page, PUBLIC),
    DeskRoute("/invite/{token}", POST, acc.invite_accept, PUBLIC),
    DeskRoute("/reset", GET, acc.reset_request_form, PUBLIC),
    DeskRoute("/reset", POST, acc.reset_request, PUBLIC),
    DeskRoute("/reset/{token}", GET, acc.reset_page, PUBLIC),
    DeskRoute("/reset/{token}", POST, acc.reset_accept, PUBLIC),
    DeskRoute("/media/{name}", GET, auth.media, SIGNED_IN),
    # authors
    DeskRoute("/articles", GET, auth.articles_list, AUTHOR),
    DeskRoute("/articles/new", GET, auth.article_new_form, AUTHOR),
    DeskRoute("/articles/new", POST, auth.article_create, AUTHOR),
    DeskRoute("/articles/{article_id}", GET, auth.article_edit_form, AUTHOR),
    DeskRoute("/articles/{article_id}", POST, auth.article_update, AUTHOR),
    # editors
    DeskRoute("/review", GET, ed.queue, EDITOR),
    DeskRoute("/review/{slug}", GET, ed.review, EDITOR),
    DeskRoute("/review/{slug}/page", GET, ed.preview_page, EDITOR),
    DeskRoute("/review/{slug}/digest", GET, ed.preview_digest, EDITOR),
    DeskRoute("/review/{slug}/feed", GET, ed.preview_feed, EDITOR),
    DeskRoute("/review/{slug}/history", GET, ed.history, EDITOR),
    DeskRoute("/review/{slug}/approve", POST, ed.approve, EDITOR),
    DeskRoute("/review/{slug}/reject", POST, ed.reject, EDITOR),
    DeskRoute("/review/{slug}/retract", POST, ed.retract, EDITOR),
    DeskRoute("/applicants", GET, acc.applicants, EDITOR),
    DeskRoute("/applicants/{user_id}/accept", POST, acc.applicant_accept, EDITOR),
    # operators
    DeskRoute("/ops", GET, ops.dashboard, OPERATOR),
    DeskRoute("/ops/outbox", GET, ops.outbox_page, OPERATOR),
    DeskRoute("/ops/outbox/retry", POST, ops.outbox_retry, OPERATOR),
    DeskRoute("/ops/channels/{channel}/pause", POST, ops.channel_pause, OPERATOR),
    DeskRoute("/ops/channels/{channel}/resume", POST, ops.channel_resume, OPERATOR),
    DeskRoute("/ops/jobs", GET, ops.jobs_page, OPERATOR),
    DeskRoute("/ops/jobs/{job_id}/run", POST, ops.job_run, OPERATOR),
    DeskRoute("/ops/jobs/{job_id}/pause", POST, ops.job_pause, OPERATOR),
    DeskRoute("/ops/jobs/{job_id}/resume", POST, ops.job_resume, OPERATOR),
    DeskRoute("/ops/partners", GET, ops.partners_page, OPERATOR),
    DeskRoute("/ops/partners/{name}/resume", POST, ops.partner_resume, OPERATOR),
    DeskRoute("/ops/editions", GET, ops.editions_page, OPERATOR),
    DeskRoute("/ops/editions/{key}", GET, ops.edition_report_page, OPERATOR),
    DeskRoute("/ops/subscribers", GET, ops.subscribers_page, OPERATOR),
    DeskRoute("/ops/subscribers/export", POST, ops.subscribers_export, OPERATOR),
    DeskRoute("/ops/subscribers/{subscriber_id}", GET, ops.subscriber_page, OPERATOR),
    DeskRoute("/ops/subscribers/{subscriber_id}/suppress", POST, ops.subscriber_suppress, OPERATOR),
    # admins
    DeskRoute("/users", GET, acc.users_list, ADMIN),
    DeskRoute("/users/invite", POST, acc.users_invite, ADMIN),
    DeskRoute("/users/{user_id}/role", POST, acc.users_role, ADMIN),
    DeskRoute("/users/{user_id}/disable", POST, acc.users_disable, ADMIN),
    DeskRoute("/audit", GET, acc.audit_page, ADMIN),
    DeskRoute("/tokens", GET, tok.tokens_list, ADMIN),
    DeskRoute("/tokens", POST, tok.token_create, ADMIN),
    DeskRoute("/tokens/{token_id}/revoke", POST, tok.token_revoke, ADMIN),
]


def create_desk(app: App) -> Router:
    """The ASGI app mounted at /desk by pipeline.web.app."""
    desk = Desk(app, ROUTES)
    return Router([Route(r.path, desk.endpoint(r), methods=list(r.methods), name=f"desk.{r.name}") for r in ROUTES])


__all__ = ["ROUTES", "create_desk"]
