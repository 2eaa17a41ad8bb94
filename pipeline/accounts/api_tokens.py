"""API tokens for integrators: created with scopes, shown once, stored hashed, revocable.

A token is `syn_` + 43 URL-safe characters (256 random bits). The database keeps only
its SHA-256 (API-2): a leaked copy of the database signs nobody in, and a 256-bit
random value needs no slow hash. `prefix` (the first 12 characters) is kept so lists
can tell tokens apart. Checking a token answers one thing, "which live token is this,
or none": missing, unknown, revoked and expired are the same answer (API-3), so a
caller learns nothing about which tokens exist.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import secrets
from collections.abc import Iterable
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection

from pipeline.errors import NotFound, SyndicateError
from pipeline.store.schema import api_tokens
from pipeline.timeutil import utcnow

TOKEN_PREFIX = "syn_"
PREFIX_CHARS = 12
MAX_TOKEN_LENGTH = 200

# scope -> what it allows. `articles:approve` is the editor's scope.
SCOPES: dict[str, str] = {
    "articles:read": "list approved articles and read one",
    "articles:write": "submit a revision from a CMS (it waits for review like ingest)",
    "articles:approve": "approve or reject a waiting revision (the editor's scope)",
    "subscribers:read": "list subscribers and read one with its consent log",
    "subscribers:write": "add (double opt-in), change preferences, unsubscribe, erase",
    "subscribers:import": "add subscribers as confirmed, with the source of their consent",
    "deliveries:read": "list editions, deliveries, partner status and jobs",
    "deliveries:write": "retry a failed delivery or a partner's failed pushes",
    "ops": "run a job now",
}


class TokenInputError(SyndicateError):
    """A token cannot be created as asked (unknown scope, no name)."""


@dataclasses.dataclass(frozen=True)
class ApiToken:
    id: int
    name: str
    prefix: str
    scopes: tuple[str, ...]
    created_by: str
    created_at: dt.datetime
    last_used_at: dt.datetime | None
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None

    def allows(self, scope: str) -> bool:
        return scope in self.scopes

    def state(self, now: dt.datetime | None = None) -> str:
        now = now or utcnow()
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"


def _token(row: Any) -> ApiToken:
    return ApiToken(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        scopes=tuple(row.scopes or ()),
        created_by=row.created_by,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
    )


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def clean_scopes(scopes: Iterable[str] | None) -> list[str]:
    wanted = [s.strip() for s in scopes or [] if isinstance(s, str) and s.strip()]
    unknown = [s for s in wanted if s not in SCOPES]
    if unknown:
        raise TokenInputError(f"unknown scope(s): {', '.join(unknown)}", hint=f"Use any of: {', '.join(SCOPES)}.")
    if not wanted:
        raise TokenInputError("a token needs at least one scope", hint=f"Pass --scope, one of: {', '.join(SCOPES)}.")
    return list(dict.fromkeys(wanted))


def create_token(
    conn: Connection,
    *,
    name: str,
    scopes: Iterable[str],
    created_by: str,
    expires_in: dt.timedelta | None = None,
    now: dt.datetime | None = None,
) -> tuple[ApiToken, str]:
    """A new token; returns (the stored token, the secret value). The value is not
    kept anywhere: show it once."""
    name = " ".join((name or "").split())[:200]
    if not name:
        raise TokenInputError("a token needs a name", hint="Say who uses it, e.g. --name 'CMS sync'.")
    clean = clean_scopes(scopes)
    now = now or utcnow()
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    result = conn.execute(
        insert(api_tokens).values(
            name=name,
            prefix=raw[:PREFIX_CHARS],
            token_hash=hash_token(raw),
            scopes=clean,
            created_by=(created_by or "unknown")[:320],
            created_at=now,
            expires_at=now + expires_in if expires_in else None,
        )
    )
    token_id = int(result.inserted_primary_key[0])  # type: ignore[index]
    return get_token(conn, token_id), raw


def get_token(conn: Connection, token_id: int) -> ApiToken:
    row = conn.execute(select(api_tokens).where(api_tokens.c.id == token_id)).first()
    if row is None:
        raise NotFound(f"no API token {token_id}", hint="`syndicate tokens list` shows the tokens and their ids.")
    return _token(row)


def list_tokens(conn: Connection) -> list[ApiToken]:
    return [_token(r) for r in conn.execute(select(api_tokens).order_by(api_tokens.c.id))]


def revoke_token(conn: Connection, token_id: int, *, now: dt.datetime | None = None) -> bool:
    """Revoke; True if it was live. Revoking twice changes nothing."""
    get_token(conn, token_id)
    done = conn.execute(
        update(api_tokens)
        .where(api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None))
        .values(revoked_at=now or utcnow())
    ).rowcount
    return bool(done)


def authenticate(conn: Connection, raw: str | None, *, now: dt.datetime | None = None) -> ApiToken | None:
    """The live token whose value this is, or None (missing, unknown, revoked, expired
    alike). Marks the token used at most once a minute (no write per request)."""
    if not raw or len(raw) > MAX_TOKEN_LENGTH or not raw.startswith(TOKEN_PREFIX):
        return None
    row = conn.execute(select(api_tokens).where(api_tokens.c.token_hash == hash_token(raw))).first()
    if row is None:
        return None
    token = _token(row)
    now = now or utcnow()
    if token.state(now) != "active":
        return None
    if token.last_used_at is None or now - token.last_used_at > dt.timedelta(minutes=1):
        conn.execute(update(api_tokens).where(api_tokens.c.id == token.id).values(last_used_at=now))
    return token


__all__ = [
    "SCOPES",
    "ApiToken",
    "TokenInputError",
    "authenticate",
    "clean_scopes",
    "create_token",
    "get_token",
    "hash_token",
    "list_tokens",
    "revoke_token",
]
