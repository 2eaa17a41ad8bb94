"""The suppression list (`suppressions`) as a table: who is on it and why, and the one
change that needs no subscriber bookkeeping (a confirmed opt-in ending a withdrawal).

Split from pipeline.subscribers.suppression so that the state machine
(pipeline.subscribers.state) can read the list without importing the module that
calls back into it: suppression -> state -> suppression_list, no cycle. Everything
else (adding, removing, bounces, mailto: unsubscribes) goes through
pipeline.subscribers.suppression, which re-exports these names.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.engine import Connection

from pipeline.states import SuppressionReason
from pipeline.store.schema import suppressions


def reason_for(conn: Connection, email: str) -> str | None:
    """Why `email` must not get mail now, or None."""
    return conn.execute(select(suppressions.c.reason).where(suppressions.c.email == email.strip().lower())).scalar()


def suppressed_among(conn: Connection, emails: list[str]) -> dict[str, str]:
    """{lower-case email: reason} for those of `emails` on the list (one query per 500)."""
    wanted = sorted({e.lower() for e in emails})
    out: dict[str, str] = {}
    for i in range(0, len(wanted), 500):
        chunk = wanted[i : i + 500]
        out.update(
            conn.execute(
                select(suppressions.c.email, suppressions.c.reason).where(suppressions.c.email.in_(chunk))
            ).all()
        )
    return out


def drop_withdrawal(conn: Connection, email: str) -> bool:
    """A confirmed opt-in ends an earlier withdrawal: remove an `unsubscribed` entry
    (never a bounce or complaint). The caller, the subscriber's own confirmation, has
    already set the subscriber's state, so nothing is called back."""
    return (
        conn.execute(
            delete(suppressions).where(
                suppressions.c.email == email.strip().lower(), suppressions.c.reason == SuppressionReason.UNSUBSCRIBED
            )
        ).rowcount
        == 1
    )


def list_suppressions(conn: Connection, *, limit: int = 1000) -> list[dict[str, Any]]:
    rows = (
        conn.execute(
            select(suppressions).order_by(suppressions.c.created_at.desc(), suppressions.c.id.desc()).limit(limit)
        )
        .mappings()
        .all()
    )
    return [dict(r) for r in rows]
