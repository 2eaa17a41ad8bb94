"""The transactional outbox: a row per (channel, target, thing sent).

Composing a digest or a partner push only *inserts* rows (`enqueue`, `enqueue_many`);
a row's idempotency key is unique, so composing twice adds nothing. Senders *claim*
due rows (`claim_due`), send, and record the outcome (`mark_sent`, `mark_retry`,
`mark_failed`). A claim carries a lease: if the claiming process dies, the row becomes
due again when the lease runs out. That is what makes a crash, a retry or a second
worker harmless: nothing is lost, nothing is sent twice (beyond the window between a
server's acceptance and our commit, documented in the README).

States: queued -> sending -> sent
                          -> retry (-> sending ...) -> dead (gave up after the schedule)
                          -> failed (permanent answer) | suppressed (checked at send time)
        any -> cancelled (operator)
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import socket
from collections.abc import Iterable
from typing import Any

from sqlalchemy import and_, bindparam, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from pipeline.store.schema import deliveries
from pipeline.timeutil import as_utc, utcnow

STATES = ("queued", "sending", "sent", "retry", "failed", "suppressed", "dead", "cancelled")
DUE_STATES = ("queued", "retry")
FINAL_STATES = ("sent", "failed", "suppressed", "dead", "cancelled")
CHANNELS = ("email", "webhook", "micropub", "websub", "events")


_PROCESS_TOKEN: dict[int, str] = {}


def worker_id() -> str:
    """host:pid:random. The random part differs per process start, so a restarted
    worker that got the same pid (containers) is not mistaken for the dead one."""
    pid = os.getpid()
    token = _PROCESS_TOKEN.get(pid)
    if token is None:
        token = _PROCESS_TOKEN[pid] = secrets.token_hex(3)
    return f"{socket.gethostname()}:{pid}:{token}"


def _insert(conn: Connection):
    if conn.dialect.name == "postgresql":
        return postgresql.insert(deliveries)
    return sqlite.insert(deliveries)


def _row(
    *,
    channel: str,
    target: str,
    kind: str,
    key: str,
    payload: dict | None = None,
    now: dt.datetime,
    not_before: dt.datetime | None = None,
    **refs: Any,
) -> dict:
    if channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r}")
    if len(key) > 255:
        raise ValueError("idempotency key longer than 255 characters")
    row = {
        "channel": channel,
        "target": target,
        "kind": kind,
        "idempotency_key": key,
        "payload": payload or {},
        "state": "queued",
        "attempts": 0,
        "next_attempt_at": not_before or now,
        "created_at": now,
        "updated_at": now,
        "subscriber_id": None,
        "article_id": None,
        "revision_id": None,
        "edition_id": None,
        "ordering_key": None,
        "sequence": 0,
    }
    unknown = set(refs) - set(row)
    if unknown:
        raise ValueError(f"unknown outbox fields: {', '.join(sorted(unknown))}")
    row.update(refs)
    return row


def enqueue(
    conn: Connection,
    *,
    channel: str,
    target: str,
    kind: str,
    key: str,
    payload: dict | None = None,
    not_before: dt.datetime | None = None,
    **refs: Any,
) -> bool:
    """Queue one delivery; False when a row with this idempotency key already exists."""
    row = _row(
        channel=channel, target=target, kind=kind, key=key, payload=payload, now=utcnow(), not_before=not_before, **refs
    )
    # RETURNING, not rowcount: psycopg reports -1 for an INSERT .. ON CONFLICT DO NOTHING
    result = conn.execute(
        _insert(conn)
        .values(**row)
        .on_conflict_do_nothing(index_elements=["idempotency_key"])
        .returning(deliveries.c.id)
    )
    return result.first() is not None


def enqueue_many(conn: Connection, rows: Iterable[dict]) -> int:
    """Queue many deliveries in one statement (each dict: the keyword arguments of
    `enqueue`); returns how many were new."""
    now = utcnow()
    values = [_row(now=now, **r) for r in rows]
    if not values:
        return 0
    stmt = _insert(conn).on_conflict_do_nothing(index_elements=["idempotency_key"]).returning(deliveries.c.id)
    return len(conn.execute(stmt, values).all())


def claim_due(
    engine: Engine,
    *,
    worker: str | None = None,
    channels: Iterable[str] | None = None,
    limit: int = 100,
    lease_seconds: int = 300,
    now: dt.datetime | None = None,
    include_own: bool = False,
) -> list[dict]:
    """Claim up to `limit` due rows for this worker, in one short transaction.

    Due means: queued or retry with next_attempt_at <= now, or sending with an expired
    lease (its worker died). PostgreSQL uses FOR UPDATE SKIP LOCKED so that workers
    never wait on each other; SQLite serialises writers with BEGIN IMMEDIATE.
    Rows that share an ordering key are claimed only when no earlier row of that key is
    still unfinished, so an update never overtakes its publish.
    """
    now = now or utcnow()
    worker = worker or worker_id()
    lease_until = now + dt.timedelta(seconds=lease_seconds)
    # One indexed query per kind of due row, each in (next_attempt_at, id) order: a
    # single query with OR made SQLite sort every due row (O(queue) per claim).
    # Expired claims first (their worker died), then retries that are due, then new rows.
    expired = and_(deliveries.c.state == "sending", deliveries.c.lease_until < now)
    kinds = [
        # never our own (it may still be in flight), unless the caller has nothing in the
        # air: then an expired claim of ours is one we gave up, and it is ours to take back
        expired if include_own else and_(expired, deliveries.c.claimed_by != worker),
        and_(deliveries.c.state == "retry", deliveries.c.next_attempt_at <= now),
        and_(deliveries.c.state == "queued", deliveries.c.next_attempt_at <= now),
    ]
    earlier = deliveries.alias("earlier")
    blocked_by_earlier = (
        select(earlier.c.id)
        .where(
            earlier.c.ordering_key == deliveries.c.ordering_key,
            earlier.c.sequence < deliveries.c.sequence,
            earlier.c.state.notin_(FINAL_STATES),
        )
        .exists()
    )
    base = (
        select(deliveries.c.id)
        .where(or_(deliveries.c.ordering_key.is_(None), ~blocked_by_earlier))
        .order_by(deliveries.c.next_attempt_at, deliveries.c.id)
    )
    if channels:
        base = base.where(deliveries.c.channel.in_(list(channels)))
    with engine.begin() as conn:
        ids: list[int] = []
        for kind in kinds:
            if len(ids) >= limit:
                break
            query = base.where(kind).limit(limit - len(ids))
            if conn.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True, of=deliveries)
            ids += [r[0] for r in conn.execute(query)]
        if not ids:
            return []
        conn.execute(
            update(deliveries)
            .where(deliveries.c.id.in_(ids))
            .values(state="sending", claimed_by=worker, lease_until=lease_until, updated_at=now)
        )
        rows = (
            conn.execute(
                select(deliveries)
                .where(deliveries.c.id.in_(ids))
                .order_by(deliveries.c.next_attempt_at, deliveries.c.id)
            )
            .mappings()
            .all()
        )
    return [dict(r) for r in rows]


def own_claims_free_at(engine: Engine, worker: str) -> dt.datetime | None:
    """When the first row this worker still holds in `sending` becomes claimable (its
    lease_until), or None when it holds none. Asked only with nothing in the air."""
    with engine.connect() as conn:
        first = conn.execute(
            select(func.min(deliveries.c.lease_until)).where(
                deliveries.c.state == "sending", deliveries.c.claimed_by == worker
            )
        ).scalar()
    return as_utc(first) if first is not None else None


def claim_keys(
    engine: Engine,
    keys: Iterable[str],
    *,
    worker: str | None = None,
    lease_seconds: int = 300,
    now: dt.datetime | None = None,
) -> list[dict]:
    """Claim the rows with these idempotency keys that are still due, in one short
    transaction: what `deliver_now` sends at once (a confirmation email the web service
    just queued). A row that a worker claimed first is left to it; the conditional
    UPDATE is the claim, so two claimants never both get a row."""
    keys = [k for k in keys if k]
    if not keys:
        return []
    now = now or utcnow()
    worker = worker or worker_id()
    with engine.begin() as conn:
        ids = [
            r[0]
            for r in conn.execute(
                update(deliveries)
                .where(
                    deliveries.c.idempotency_key.in_(keys),
                    deliveries.c.state.in_(DUE_STATES),
                    deliveries.c.next_attempt_at <= now,
                )
                .values(
                    state="sending",
                    claimed_by=worker,
                    lease_until=now + dt.timedelta(seconds=lease_seconds),
                    updated_at=now,
                )
                .returning(deliveries.c.id)
            )
        ]
        if not ids:
            return []
        rows = conn.execute(select(deliveries).where(deliveries.c.id.in_(ids)).order_by(deliveries.c.id)).mappings()
        return [dict(r) for r in rows]


def renew_leases(engine: Engine, *, worker: str, lease_seconds: int, now: dt.datetime | None = None) -> int:
    """Extend the leases of every row this worker still has in flight."""
    now = now or utcnow()
    with engine.begin() as conn:
        return conn.execute(
            update(deliveries)
            .where(deliveries.c.claimed_by == worker, deliveries.c.state == "sending")
            .values(lease_until=now + dt.timedelta(seconds=lease_seconds))
        ).rowcount


def renew_held(
    engine: Engine, *, worker: str, ids: Iterable[int], lease_seconds: int, now: dt.datetime | None = None
) -> set[int]:
    """Extend the leases of `ids` that this worker still holds; returns those ids.
    An id missing from the answer was claimed by another worker (our lease ran out)
    or finished: the caller must not send it."""
    ids = list(ids)
    if not ids:
        return set()
    now = now or utcnow()
    held: set[int] = set()
    with engine.begin() as conn:
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            result = conn.execute(
                update(deliveries)
                .where(deliveries.c.id.in_(chunk), deliveries.c.claimed_by == worker, deliveries.c.state == "sending")
                .values(lease_until=now + dt.timedelta(seconds=lease_seconds))
                .returning(deliveries.c.id)
            )
            held.update(r[0] for r in result)
    return held


def _finish(conn: Connection, delivery_id: int, worker: str | None, **values) -> bool:
    """Record an outcome; only the claimant may (a row whose lease expired and that was
    claimed again belongs to the new claimant). False when the claim was lost."""
    values.setdefault("updated_at", utcnow())
    stmt = update(deliveries).where(deliveries.c.id == delivery_id)
    if worker is not None:
        stmt = stmt.where(deliveries.c.claimed_by == worker, deliveries.c.state == "sending")
    return conn.execute(stmt.values(**values)).rowcount == 1


def mark_sent(conn: Connection, delivery_id: int, *, answer: str = "", worker: str | None = None) -> bool:
    now = utcnow()
    return _finish(
        conn,
        delivery_id,
        worker,
        state="sent",
        sent_at=now,
        lease_until=None,
        provider_answer=answer[:2000],
        last_error=None,
        attempts=deliveries.c.attempts + 1,
    )


def mark_sent_many(conn: Connection, sent: list[tuple[int, str]], *, worker: str | None = None) -> int:
    """mark_sent for a batch in one executemany: (delivery id, answer) pairs."""
    if not sent:
        return 0
    now = utcnow()
    stmt = update(deliveries).where(deliveries.c.id == bindparam("b_id"), deliveries.c.state == "sending")
    if worker is not None:
        stmt = stmt.where(deliveries.c.claimed_by == worker)
    stmt = stmt.values(
        state="sent",
        sent_at=now,
        lease_until=None,
        provider_answer=bindparam("b_answer"),
        last_error=None,
        attempts=deliveries.c.attempts + 1,
        updated_at=now,
    )
    result = conn.execute(stmt, [{"b_id": i, "b_answer": (a or "")[:2000]} for i, a in sent])
    return result.rowcount


def mark_retry(
    conn: Connection,
    delivery_id: int,
    *,
    error: str,
    next_attempt_at: dt.datetime,
    answer: str = "",
    spend_attempt: bool = True,
    worker: str | None = None,
) -> bool:
    values: dict[str, Any] = dict(
        state="retry",
        next_attempt_at=next_attempt_at,
        lease_until=None,
        last_error=error[:4000],
        provider_answer=answer[:2000],
    )
    if spend_attempt:
        values["attempts"] = deliveries.c.attempts + 1
    return _finish(conn, delivery_id, worker, **values)


def mark_failed(
    conn: Connection,
    delivery_id: int,
    *,
    error: str,
    state: str = "failed",
    answer: str = "",
    worker: str | None = None,
) -> bool:
    if state not in ("failed", "suppressed", "dead", "cancelled"):
        raise ValueError(state)
    return _finish(
        conn,
        delivery_id,
        worker,
        state=state,
        lease_until=None,
        last_error=error[:4000],
        provider_answer=answer[:2000],
        attempts=deliveries.c.attempts + 1,
    )


def release(
    conn: Connection,
    delivery_id: int,
    *,
    worker: str | None = None,
    not_before: dt.datetime | None = None,
    error: str = "",
) -> bool:
    """Give a claimed row back untouched (dry runs, a paused channel, shutting down);
    `error` says why when it is worth showing (an outage)."""
    values: dict[str, Any] = dict(
        state="queued", lease_until=None, claimed_by=None, next_attempt_at=not_before or utcnow()
    )
    if error:
        values["last_error"] = error[:4000]
    return _finish(conn, delivery_id, worker, **values)


def requeue(
    conn: Connection,
    *,
    ids: Iterable[int] | None = None,
    states: Iterable[str] = ("failed", "dead"),
    channel: str | None = None,
    target: str | None = None,
) -> int:
    """Operator retry: put failed/dead rows back in the queue, due now."""
    stmt = update(deliveries).where(deliveries.c.state.in_(list(states)))
    if ids is not None:
        stmt = stmt.where(deliveries.c.id.in_(list(ids)))
    if channel:
        stmt = stmt.where(deliveries.c.channel == channel)
    if target:
        stmt = stmt.where(deliveries.c.target == target)
    now = utcnow()
    return conn.execute(
        stmt.values(state="queued", next_attempt_at=now, lease_until=None, claimed_by=None, updated_at=now)
    ).rowcount


def states_of(conn: Connection, ids: Iterable[int]) -> dict[int, tuple[str, str]]:
    """id -> (channel, state) of these deliveries; an id with no row is left out."""
    rows = conn.execute(
        select(deliveries.c.id, deliveries.c.channel, deliveries.c.state).where(deliveries.c.id.in_(list(ids)))
    )
    return {i: (channel, state) for i, channel, state in rows}


def counts_by_state(conn: Connection) -> dict[tuple[str, str], int]:
    rows = conn.execute(
        select(deliveries.c.channel, deliveries.c.state, func.count()).group_by(
            deliveries.c.channel, deliveries.c.state
        )
    )
    return {(channel, state): n for channel, state, n in rows}


def get(conn: Connection, delivery_id: int) -> dict | None:
    row = conn.execute(select(deliveries).where(deliveries.c.id == delivery_id)).mappings().first()
    return dict(row) if row else None


def enqueue_batch(conn: Connection, rows: Iterable[dict]) -> int:
    """`enqueue_many` for big batches: one statement whatever the batch's size, through
    pipeline.store.bulk (no per-row parameter work); returns how many were new."""
    from pipeline.store.bulk import insert_rows

    now = utcnow()
    values = [_row(now=now, **r) for r in rows]
    [(count,)] = insert_rows(conn, deliveries, values, conflict="idempotency_key")
    return count
