"""Signing in and out, registration, invitation and reset links, users, applicants, audit."""

from __future__ import annotations

from starlette.responses import RedirectResponse, Response

from pipeline import accounts
from pipeline.accounts import audit
from pipeline.errors import NotFound

from .core import HEADERS, Ctx, db, read


def _safe_next(value: str) -> str:
    # Only our own desk paths: never an open redirect.
    return value if value.startswith("/desk/") and not value.startswith("//") and "\\" not in value else "/desk/"


def home(c: Ctx) -> Response:
    with read(c) as conn:
        waiting = len(accounts.list_users(conn, state="pending")) if c.user.has("editor") else 0
    return c.page("home.html", applicants=waiting)


def login_form(c: Ctx) -> Response:
    if c.user is not None:
        return c.redirect("/")
    return c.page("login.html", email="", error=None, next=_safe_next(c.request.query_params.get("next", "")))


def login(c: Ctx) -> Response:
    email, nxt = c.text("email", 320), _safe_next(c.text("next", 500))
    with db(c) as conn:
        try:
            user = accounts.authenticate(conn, c.settings, email, c.text("password", 2000), ip=c.ip)
        except accounts.Throttled as exc:
            error, status = exc, 429
        except accounts.SignInRefused as exc:
            error, status = exc, 400
        else:
            accounts.end_session(conn, c.request.cookies.get("desk_session"))
            token = accounts.start_session(
                conn, c.settings, user.id, ip=c.ip, user_agent=c.request.headers.get("user-agent")
            )
            audit.record(conn, actor=user.email, action="session.login", ip=c.ip)
            response = RedirectResponse(nxt, status_code=303, headers=HEADERS)
            c.desk.set_session_cookie(response, token)
            return response
    response = c.page("login.html", status, email=email, error=error, next=nxt)
    if status == 429:
        response.headers["Retry-After"] = str(error.retry_after)
    return response


def logout(c: Ctx) -> Response:
    with db(c) as conn:
        accounts.end_session(conn, c.request.cookies.get("desk_session"))
        c.audit(conn, "session.logout")
    response = RedirectResponse("/desk/login?notice=" + "You+are+signed+out.", status_code=303, headers=HEADERS)
    c.desk.clear_session_cookie(response)
    return response


def join_form(c: Ctx) -> Response:
    return c.page("join.html", form={}, error=None, sent=False)


def join(c: Ctx) -> Response:
    form = {"email": c.text("email", 320), "name": c.text("name", 200)}
    try:
        with db(c) as conn:
            accounts.register_author(conn, c.settings, form["email"], form["name"], c.text("password", 2000))
            audit.record(conn, actor=form["email"].strip().lower(), action="user.register", ip=c.ip)
    except accounts.AccountError as exc:
        return c.page("join.html", 400, form=form, error=exc, sent=False)
    return c.page("join.html", form={}, error=None, sent=True)


def join_confirm_page(c: Ctx) -> Response:
    with read(c) as conn:
        user = accounts.check_link(conn, c.settings, "confirm", c.params["token"])
    return c.page(
        "link_button.html",
        heading="Confirm your address",
        who=user,
        text="Press the button to confirm that this address is yours.",
        button="Confirm my address",
    )


def join_confirm(c: Ctx) -> Response:
    with db(c) as conn:
        user = accounts.confirm_registration(conn, c.settings, c.params["token"])
        audit.record(
            conn, actor=user.email, action="user.confirm", target=user.email, ip=c.ip, detail={"state": user.state}
        )
    return c.page("joined.html", who=user)


def _password_page(c: Ctx, purpose: str, error=None, status: int = 200) -> Response:
    with read(c) as conn:
        user = accounts.check_link(conn, c.settings, purpose, c.params["token"])
    heading = "Choose your password" if purpose == "invite" else "Choose a new password"
    return c.page("set_password.html", status, heading=heading, who=user, error=error)


def invite_page(c: Ctx) -> Response:
    return _password_page(c, "invite")


def invite_accept(c: Ctx) -> Response:
    return _set_password(c, "invite", accounts.accept_invitation)


def reset_page(c: Ctx) -> Response:
    return _password_page(c, "reset")


def reset_accept(c: Ctx) -> Response:
    return _set_password(c, "reset", accounts.reset_password)


def _set_password(c: Ctx, purpose: str, action) -> Response:
    password = c.text("password", 2000)
    if password != c.text("password2", 2000):
        return _password_page(c, purpose, accounts.AccountError("the two passwords differ", field="password2"), 400)
    try:
        with db(c) as conn:
            user = action(conn, c.settings, c.params["token"], password)
            audit.record(conn, actor=user.email, action=f"user.password.{purpose}", target=user.email, ip=c.ip)
    except accounts.AccountError as exc:
        return _password_page(c, purpose, exc, 400)
    return RedirectResponse(
        "/desk/login?notice=Your+password+is+set.+Sign+in+with+it.", status_code=303, headers=HEADERS
    )


def reset_request_form(c: Ctx) -> Response:
    return c.page("reset_request.html", sent=False)


def reset_request(c: Ctx) -> Response:
    with db(c) as conn:
        accounts.request_reset(conn, c.settings, c.text("email", 320))
    return c.page("reset_request.html", sent=True)  # the same page for every address


# --- admin: users, audit; editors: applicants ----------------------------------------------


def users_list(c: Ctx) -> Response:
    with read(c) as conn:
        people = accounts.list_users(conn)
    return c.page("users.html", people=people, roles=accounts.ROLES, error=None)


def users_invite(c: Ctx) -> Response:
    try:
        with db(c) as conn:
            user, _ = accounts.invite(
                conn, c.settings, c.text("email", 320), c.texts("roles"), name=c.text("name", 200)
            )
            c.audit(conn, "user.add", user.email, roles=list(user.roles))
    except accounts.AccountError as exc:
        with read(c) as conn:
            people = accounts.list_users(conn)
        return c.page("users.html", 400, people=people, roles=accounts.ROLES, error=exc)
    return c.redirect("/users", f"Invitation sent to {user.email}.")


def _user_or_404(conn, user_id: str) -> accounts.User:
    user = accounts.get(conn, int(user_id)) if user_id.isdigit() else None
    if user is None:
        raise NotFound("no such user")
    return user


def users_role(c: Ctx) -> Response:
    with db(c) as conn:
        user = _user_or_404(conn, c.params["user_id"])
        updated = accounts.set_roles(conn, user.id, c.texts("roles"))
        c.audit(conn, "user.role", user.email, before=list(user.roles), after=list(updated.roles))
    return c.redirect("/users", f"Roles of {user.email} saved.")


def users_disable(c: Ctx) -> Response:
    with db(c) as conn:
        user = _user_or_404(conn, c.params["user_id"])
        if user.id == c.user.id:
            raise accounts.AccountError("you cannot disable yourself", hint="Ask another admin.")
        accounts.set_state(conn, user.id, "disabled")
        c.audit(conn, "user.disable", user.email)
    return c.redirect("/users", f"{user.email} is disabled and signed out everywhere.")


def applicants(c: Ctx) -> Response:
    with read(c) as conn:
        people = accounts.list_users(conn, state="pending")
    return c.page("applicants.html", people=people)


def applicant_accept(c: Ctx) -> Response:
    with db(c) as conn:
        user = accounts.accept_applicant(conn, _user_or_404(conn, c.params["user_id"]).id)
        c.audit(conn, "user.accept", user.email)
    return c.redirect("/applicants", f"{user.name} can now sign in and write.")


def audit_page(c: Ctx) -> Response:
    page = (
        max(0, int(c.request.query_params.get("page", "0") or 0))
        if c.request.query_params.get("page", "0").isdigit()
        else 0
    )
    with read(c) as conn:
        rows = audit.entries(
            conn,
            limit=100,
            offset=page * 100,
            actor=c.request.query_params.get("actor") or None,
            action=c.request.query_params.get("action") or None,
        )
    return c.page("audit.html", rows=rows, page=page)
