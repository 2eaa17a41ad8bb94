"""The desk's transactional emails (invitation, password reset, registration
confirmation), built at send time from the outbox row like the subscriber emails.

The row holds the link's nonce, not the link: the link is signed again here, and a
link that was used or has expired since it was queued is not sent (None).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.engine import Connection

from pipeline import accounts, tokens
from pipeline.store.schema import account_tokens
from pipeline.timeutil import utcnow

SUBJECTS = {
    "invite": "You are invited to the {title} desk",
    "reset": "Reset your {title} desk password",
    "confirm": "Confirm your address for the {title} desk",
}


def build_link_email(conn: Connection, settings, row: dict):
    from pipeline.subscribers.emails import _message  # the one transactional-mail builder

    payload = row["payload"] or {}
    purpose = payload.get("purpose") or row["kind"].removeprefix("desk_")
    user = accounts.get(conn, int(payload.get("user_id") or 0))
    if user is None or user.state == "disabled":
        return None
    token = accounts.token_from_nonce(settings, purpose, payload["nonce"])
    tok = conn.execute(select(account_tokens).where(account_tokens.c.token_hash == tokens.token_hash(token))).first()
    if tok is None or tok.used_at is not None or tok.expires_at <= utcnow():
        return None
    context = {
        "purpose": purpose,
        "name": user.name,
        "email": user.email,
        "roles": list(user.roles),
        "link": accounts.link_url(settings, purpose, token),
        "ttl_hours": accounts.ttl_hours(settings, purpose),
    }
    return _message(
        settings, row, user.email, SUBJECTS[purpose].format(title=settings.site.title), "desk_link", context
    )
