"""Desk accounts: people, roles, passwords, sessions, single-use links, sign-in throttles.

No HTTP here: the web adapter (pipeline.web.desk) and the CLI (pipeline.commands.users)
call these functions with a Connection and turn the errors into statuses or exit codes.

- Passwords are hashed with Argon2id (OWASP's minimum parameters, see `_hasher`); a
  hash made with other parameters is upgraded at sign-in.
- Sign-in answers the same for an unknown account and a wrong password, and spends
  the same work on both (a dummy hash is verified), so neither the text nor the timing
  says which addresses have accounts.
- Failed sign-ins are counted per account and per client address; over the limit the
  answer is "too many attempts" whether or not the password was right.
- Sessions live in the database; the cookie holds a 256-bit random value and the table
  only its SHA-256. Disabling a user or changing a password ends all their sessions.
- Invitation, reset and confirmation links are signed per purpose, single use (the
  stored hash is marked used) and expire.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import re

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection

from pipeline import tokens
from pipeline.errors import NotFound, SyndicateError, TokenError
from pipeline.store.schema import account_tokens, authors, login_failures, user_sessions, users
from pipeline.timeutil import utcnow

log = logging.getLogger(__name__)

ROLES = ("author", "editor", "operator", "admin")
STATES = ("unconfirmed", "pending", "invited", "active", "disabled")
PURPOSES = ("invite", "reset", "confirm")
MIN_PASSWORD = 10
MAX_PASSWORD = 1024
EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]{2,}$")

# OWASP's Argon2id minimum (19 MiB, 2 passes, 1 lane): a sign-in costs tens of
# milliseconds on a small shared machine, not hundreds; hashes made with other
# parameters still verify and are re-hashed at the next sign-in.
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
# Verified when the account does not exist, so both answers cost the same (see module doc).
# A fixed hash of a random password nobody kept, made with _hasher's parameters (a test
# holds them equal): hashing one here cost every CLI command that imports this package
# (each mutating one does, for its audit row) about 60 ms of Argon2 at start-up.
_DUMMY_HASH = "$argon2id$v=19$m=19456,t=2,p=1$pLDRAHWtVvrGFjylB+qn5w$0BBfuBWbY9lSzMVxiNg0AXCcf/nTbiCiNJhn1gLteXo"


class AccountError(SyndicateError):
    """An account action is not possible (bad input, wrong state); `field` names the form field."""

    def __init__(self, message: str, hint: str | None = None, field: str | None = None):
        super().__init__(message, hint)
        self.field = field


class SignInRefused(AccountError):
    """Wrong address or password, or the account cannot sign in: one message for all."""

    def __init__(self):
        super().__init__(
            "that address and password do not match an active account",
            hint="Check both, or ask for a new password with 'Forgot your password?'.",
        )


class Throttled(AccountError):
    def __init__(self, retry_after: int):
        super().__init__("too many sign-in attempts", hint=f"Wait {max(1, retry_after // 60)} minute(s) and try again.")
        self.retry_after = retry_after


@dataclasses.dataclass(frozen=True)
class User:
    id: int
    email: str
    name: str
    roles: tuple[str, ...]
    state: str
    author_slug: str | None

    def has(self, *roles: str) -> bool:
        """Admins may do everything; others what their roles say."""
        return "admin" in self.roles or any(r in self.roles for r in roles)


def _user(row) -> User:
    m = row._mapping if hasattr(row, "_mapping") else row
    return User(
        id=m["id"],
        email=m["email"],
        name=m["name"],
        roles=tuple(m["roles"] or ()),
        state=m["state"],
        author_slug=m["author_slug"],
    )


# --- hashing -------------------------------------------------------------------------


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    try:
        return _hasher.verify(stored or _DUMMY_HASH, password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def check_password_rules(password: str, email: str = "") -> None:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise AccountError(
            f"the password needs at least {MIN_PASSWORD} characters",
            field="password",
            hint="A few unrelated words make a long password that is easy to remember.",
        )
    if len(password) > MAX_PASSWORD:
        raise AccountError(f"the password is longer than {MAX_PASSWORD} characters", field="password")
    if email and password.lower() == email.lower():
        raise AccountError("the password must not be your email address", field="password")


# --- users ---------------------------------------------------------------------------


def normalise_email(raw) -> str:
    email = (raw or "").strip().lower() if isinstance(raw, str) else ""
    if not EMAIL_RE.match(email) or len(email) > 320:
        raise AccountError("that is not an email address", field="email", hint="e.g. name@example.com")
    return email


def clean_roles(roles) -> list[str]:
    out = []
    for r in roles or []:
        r = str(r).strip().lower()
        if r not in ROLES:
            raise AccountError(f"unknown role {r!r}", field="role", hint=f"Roles: {', '.join(ROLES)}.")
        if r not in out:
            out.append(r)
    if not out:
        raise AccountError("a user needs at least one role", field="role", hint=f"Roles: {', '.join(ROLES)}.")
    return out


def clean_name(raw, email: str = "") -> str:
    name = " ".join(str(raw or "").split())[:200]
    return name or email.split("@")[0]


def get(conn: Connection, user_id: int) -> User | None:
    row = conn.execute(select(users).where(users.c.id == user_id)).first()
    return _user(row) if row else None


def by_email(conn: Connection, email: str) -> User | None:
    row = conn.execute(select(users).where(users.c.email == email.strip().lower())).first()
    return _user(row) if row else None


def require(conn: Connection, email: str) -> User:
    user = by_email(conn, email)
    if user is None:
        raise NotFound(f"no desk user {email!r}", hint="`syndicate users list` shows them.")
    return user


def list_users(conn: Connection, *, state: str | None = None) -> list[dict]:
    q = select(users).order_by(users.c.created_at, users.c.id)
    if state:
        q = q.where(users.c.state == state)
    return [dict(r._mapping) for r in conn.execute(q)]


def create_user(
    conn: Connection, email: str, *, roles, name: str = "", state: str = "invited", password: str | None = None
) -> User:
    email = normalise_email(email)
    roles = clean_roles(roles)
    if by_email(conn, email) is not None:
        raise AccountError(
            f"{email} already has an account", field="email", hint="`syndicate users role` changes its roles."
        )
    if password is not None:
        check_password_rules(password, email)
    now = utcnow()
    name = clean_name(name, email)
    uid = conn.execute(
        insert(users)
        .values(
            email=email,
            name=name,
            roles=roles,
            state=state,
            password_hash=hash_password(password) if password is not None else None,
            author_slug=None,
            created_at=now,
            updated_at=now,
        )
        .returning(users.c.id)
    ).scalar_one()
    if "author" in roles and state == "active":
        ensure_author(conn, uid)
    return get(conn, uid)


def ensure_author(conn: Connection, user_id: int) -> str:
    """The authors row a desk author writes as (made from their name on first need)."""
    user = get(conn, user_id)
    if user.author_slug:
        return user.author_slug
    from pipeline.content.ingest import slugify

    base = slugify(user.name)[:180]
    slug, n = base, 1
    while conn.execute(select(authors.c.id).where(authors.c.slug == slug)).first() is not None:
        n += 1
        slug = f"{base}-{n}"
    conn.execute(
        insert(authors).values(
            slug=slug, name=user.name, bio="", url="", email=user.email, content_hash="desk", updated_at=utcnow()
        )
    )
    conn.execute(update(users).where(users.c.id == user_id).values(author_slug=slug, updated_at=utcnow()))
    return slug


def set_roles(conn: Connection, user_id: int, roles) -> User:
    roles = clean_roles(roles)
    conn.execute(update(users).where(users.c.id == user_id).values(roles=roles, updated_at=utcnow()))
    user = get(conn, user_id)
    if "author" in roles and user.state == "active":
        ensure_author(conn, user_id)
    return get(conn, user_id)


def set_state(conn: Connection, user_id: int, state: str) -> User:
    if state not in STATES:
        raise AccountError(f"unknown state {state!r}")
    conn.execute(update(users).where(users.c.id == user_id).values(state=state, updated_at=utcnow()))
    if state != "active":
        end_sessions(conn, user_id)
    user = get(conn, user_id)
    if state == "active" and "author" in user.roles:
        ensure_author(conn, user_id)
    return get(conn, user_id)


def set_password(conn: Connection, user_id: int, password: str) -> None:
    user = get(conn, user_id)
    check_password_rules(password, user.email)
    conn.execute(
        update(users).where(users.c.id == user_id).values(password_hash=hash_password(password), updated_at=utcnow())
    )
    end_sessions(conn, user_id)


# --- sign-in and throttles ---------------------------------------------------------------


def _failure_keys(email: str, ip: str | None) -> list[str]:
    keys = ["acct:" + hashlib.sha256(email.encode()).hexdigest()[:64]]
    if ip:
        keys.append("ip:" + hashlib.sha256(ip.encode()).hexdigest()[:64])
    return keys


def _check_throttle(conn: Connection, settings, email: str, ip: str | None, now: dt.datetime) -> None:
    window = dt.timedelta(minutes=settings.desk.throttle_minutes)
    limits = [settings.desk.max_failures_per_account, settings.desk.max_failures_per_address]
    for key, limit in zip(_failure_keys(email, ip), limits):
        n, oldest = conn.execute(
            select(func.count(), func.min(login_failures.c.at)).where(
                login_failures.c.key == key, login_failures.c.at > now - window
            )
        ).one()
        if limit and n >= limit:
            raise Throttled(int((oldest + window - now).total_seconds()) + 1)


def authenticate(
    conn: Connection, settings, email: str, password: str, *, ip: str | None = None, now: dt.datetime | None = None
) -> User:
    """The active user with this address and password, or SignInRefused / Throttled.

    Failures are recorded by the caller's transaction; callers must commit even when
    this raises SignInRefused (the web adapter does), or the throttle never fills."""
    now = now or utcnow()
    email = (email or "").strip().lower()[:320] if isinstance(email, str) else ""
    password = password if isinstance(password, str) else ""
    _check_throttle(conn, settings, email, ip, now)
    row = conn.execute(select(users).where(users.c.email == email)).first() if email else None
    ok = verify_password(row.password_hash if row is not None else None, password[:MAX_PASSWORD])
    if not ok or row is None or row.state != "active":
        conn.execute(insert(login_failures), [{"key": k, "at": now} for k in _failure_keys(email, ip)])
        conn.execute(delete(login_failures).where(login_failures.c.at < now - dt.timedelta(days=1)))
        raise SignInRefused()
    if _hasher.check_needs_rehash(row.password_hash):
        conn.execute(update(users).where(users.c.id == row.id).values(password_hash=hash_password(password)))
    conn.execute(update(users).where(users.c.id == row.id).values(last_login_at=now))
    return _user(row)


# --- sessions ---------------------------------------------------------------------------


def start_session(
    conn: Connection,
    settings,
    user_id: int,
    *,
    ip: str | None = None,
    user_agent: str | None = None,
    now: dt.datetime | None = None,
) -> str:
    """A new session; returns the cookie value (only its hash is stored)."""
    now = now or utcnow()
    token = tokens.random_token()
    conn.execute(
        insert(user_sessions).values(
            id=tokens.token_hash(token),
            user_id=user_id,
            created_at=now,
            expires_at=now + dt.timedelta(hours=settings.desk.session_hours),
            last_seen_at=now,
            ip=(ip or None) and ip[:64],
            user_agent=(user_agent or None) and user_agent[:400],
        )
    )
    return token


def session_user(conn: Connection, token: str | None, *, now: dt.datetime | None = None) -> tuple[User, str] | None:
    """(user, session id) for a cookie value, or None: unknown, expired, or the user is not active."""
    if not token or not isinstance(token, str) or len(token) > 200:
        return None
    now = now or utcnow()
    sid = tokens.token_hash(token)
    row = conn.execute(
        select(users, user_sessions.c.expires_at)
        .join(user_sessions, user_sessions.c.user_id == users.c.id)
        .where(user_sessions.c.id == sid)
    ).first()
    if row is None or row.expires_at <= now or row.state != "active":
        return None
    return _user(row), sid


def end_session(conn: Connection, token: str | None) -> None:
    if token:
        conn.execute(delete(user_sessions).where(user_sessions.c.id == tokens.token_hash(token)))


def end_sessions(conn: Connection, user_id: int) -> int:
    return conn.execute(delete(user_sessions).where(user_sessions.c.user_id == user_id)).rowcount


# --- single-use links -------------------------------------------------------------------


def _link_token(settings, purpose: str, nonce: str) -> str:
    return tokens.sign(settings, f"desk-{purpose}", nonce)


def link_url(settings, purpose: str, token: str) -> str:
    path = {"invite": "invite", "reset": "reset", "confirm": "join/confirm"}[purpose]
    return f"{settings.site.base_url.rstrip('/')}/desk/{path}/{token}"


def ttl_hours(settings, purpose: str) -> int:
    return settings.desk.invite_ttl_hours if purpose == "invite" else settings.desk.reset_ttl_hours


def issue_link(conn: Connection, settings, user: User, purpose: str, *, now: dt.datetime | None = None) -> str:
    """A new single-use link for `purpose`, queued as an email through the outbox.
    Returns the token (the CLI and tests use it; the email carries the same link)."""
    from pipeline.delivery import outbox

    if purpose not in PURPOSES:
        raise ValueError(purpose)
    now = now or utcnow()
    nonce = tokens.random_token()
    token = _link_token(settings, purpose, nonce)
    token_h = tokens.token_hash(token)
    expires = now + dt.timedelta(hours=ttl_hours(settings, purpose))
    conn.execute(
        insert(account_tokens).values(
            user_id=user.id, purpose=purpose, token_hash=token_h, created_at=now, expires_at=expires, used_at=None
        )
    )
    outbox.enqueue(
        conn,
        channel="email",
        target=user.email,
        kind=f"desk_{purpose}",
        key=f"desk_{purpose}:{user.id}:{token_h[:32]}",
        payload={"user_id": user.id, "nonce": nonce, "purpose": purpose},
    )
    return token


def token_from_nonce(settings, purpose: str, nonce: str) -> str:
    return _link_token(settings, purpose, nonce)


def check_link(conn: Connection, settings, purpose: str, token: str, *, now: dt.datetime | None = None) -> User:
    """The user a link is for, or TokenError: tampered, another purpose, used, expired."""
    now = now or utcnow()
    if not isinstance(token, str) or len(token) > 500:
        raise TokenError("this link is not valid", hint="Check that the whole link was copied.")
    tokens.verify(settings, f"desk-{purpose}", token)  # tampering and the purpose
    row = conn.execute(
        select(account_tokens).where(
            account_tokens.c.token_hash == tokens.token_hash(token), account_tokens.c.purpose == purpose
        )
    ).first()
    if row is None:
        raise TokenError("this link is not valid", hint="Ask for a new one.")
    if row.used_at is not None:
        raise TokenError("this link was used already", hint="Each link works once; ask for a new one.")
    if row.expires_at <= now:
        raise TokenError("this link has expired", hint="Ask for a new one.")
    user = get(conn, row.user_id)
    if user is None or user.state == "disabled":
        raise TokenError("this link is not valid", hint="The account is closed.")
    return user


def use_link(conn: Connection, settings, purpose: str, token: str, *, now: dt.datetime | None = None) -> User:
    """check_link, then mark it used; a second use (even concurrent) fails."""
    now = now or utcnow()
    user = check_link(conn, settings, purpose, token, now=now)
    done = conn.execute(
        update(account_tokens)
        .where(account_tokens.c.token_hash == tokens.token_hash(token), account_tokens.c.used_at.is_(None))
        .values(used_at=now)
    ).rowcount
    if done != 1:
        raise TokenError("this link was used already", hint="Each link works once; ask for a new one.")
    return user


# --- flows ----------------------------------------------------------------------------


def invite(conn: Connection, settings, email: str, roles, *, name: str = "") -> tuple[User, str]:
    """`syndicate users add`: an invited user and the link, queued as email."""
    user = create_user(conn, email, roles=roles, name=name, state="invited")
    return user, issue_link(conn, settings, user, "invite")


def accept_invitation(conn: Connection, settings, token: str, password: str) -> User:
    user = check_link(conn, settings, "invite", token)
    check_password_rules(password, user.email)
    user = use_link(conn, settings, "invite", token)
    set_password(conn, user.id, password)
    return set_state(conn, user.id, "active")


def request_reset(conn: Connection, settings, email: str) -> None:
    """Queue a reset link when the address has an active account; silent otherwise
    (the page says the same either way)."""
    try:
        email = normalise_email(email)
    except AccountError:
        return
    user = by_email(conn, email)
    if user is None or user.state != "active":
        return
    recent = conn.execute(
        select(func.count())
        .select_from(account_tokens)
        .where(
            account_tokens.c.user_id == user.id,
            account_tokens.c.purpose == "reset",
            account_tokens.c.created_at > utcnow() - dt.timedelta(hours=1),
        )
    ).scalar()
    if recent >= 3:  # stop a reset-mail flood to one inbox
        return
    issue_link(conn, settings, user, "reset")


def reset_password(conn: Connection, settings, token: str, password: str) -> User:
    user = check_link(conn, settings, "reset", token)
    check_password_rules(password, user.email)
    user = use_link(conn, settings, "reset", token)
    set_password(conn, user.id, password)
    return get(conn, user.id)


def register_author(conn: Connection, settings, email: str, name: str, password: str) -> None:
    """/desk/join: an unconfirmed author and a confirmation link. An address that has an
    account already gets nothing, and the page says the same (no account discovery)."""
    email = normalise_email(email)
    check_password_rules(password, email)
    if not " ".join(str(name or "").split()):
        raise AccountError("tell us your name as readers will see it", field="name")
    if by_email(conn, email) is not None:
        return
    user = create_user(conn, email, roles=["author"], name=name, state="unconfirmed", password=password)
    issue_link(conn, settings, user, "confirm")


def confirm_registration(conn: Connection, settings, token: str) -> User:
    user = use_link(conn, settings, "confirm", token)
    if user.state != "unconfirmed":
        return user
    return set_state(conn, user.id, "active" if settings.desk.open_registration else "pending")


def accept_applicant(conn: Connection, user_id: int) -> User:
    user = get(conn, user_id)
    if user is None:
        raise NotFound("no such applicant")
    if user.state != "pending":
        raise AccountError(f"{user.email} is {user.state}, not waiting to be accepted")
    return set_state(conn, user_id, "active")


__all__ = [
    "ROLES",
    "STATES",
    "User",
    "AccountError",
    "SignInRefused",
    "Throttled",
    "hash_password",
    "verify_password",
    "create_user",
    "invite",
    "accept_invitation",
    "authenticate",
    "start_session",
    "session_user",
    "end_session",
    "end_sessions",
    "issue_link",
    "check_link",
    "use_link",
    "request_reset",
    "reset_password",
    "register_author",
    "confirm_registration",
    "accept_applicant",
    "set_roles",
    "set_state",
    "set_password",
    "list_users",
    "by_email",
    "get",
    "require",
]
