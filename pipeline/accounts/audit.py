"""The audit log: one append-only row per change made in the desk or by the CLI.

Callers write the row in the same transaction as the change, so a change without its
row (or a row without its change) cannot be committed.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.engine import Connection

from pipeline.store.schema import audit_log
from pipeline.timeutil import utcnow


def cli_actor() -> str:
    """Who runs the CLI: login name at host (there is no sign-in in a shell)."""
    return f"{os.environ.get('USER') or os.environ.get('LOGNAME') or 'unknown'}@{socket.gethostname()}"


def record(
    conn: Connection,
    *,
    actor: str,
    action: str,
    target: str = "",
    detail: dict[str, Any] | None = None,
    ip: str | None = None,
    via: str = "web",
) -> None:
    conn.execute(
        insert(audit_log).values(
            at=utcnow(),
            actor=actor[:320],
            via=via,
            action=action[:80],
            target=str(target)[:400],
            detail=detail or {},
            ip=(ip or None) and ip[:64],
        )
    )


def entries(
    conn: Connection, *, limit: int = 100, actor: str | None = None, action: str | None = None, offset: int = 0
) -> list[dict[str, Any]]:
    """Newest first."""
    q = select(audit_log).order_by(audit_log.c.at.desc(), audit_log.c.id.desc()).limit(limit).offset(offset)
    if actor:
        q = q.where(audit_log.c.actor == actor)
    if action:
        q = q.where(audit_log.c.action.startswith(action))
    return [dict(r._mapping) for r in conn.execute(q)]
