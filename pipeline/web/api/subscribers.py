"""/api/v1/subscribers: list, read with the consent log, add, change, unsubscribe, erase.

Every change goes through pipeline.subscribers, as the web forms and the CLI do:
a new address gets double opt-in (DOI-1) unless the token holds `subscribers:import`
and the body says `confirmed` with the `source` of that consent (API-9); DELETE is
erasure (GDPR-2) with the address kept on the suppression list so no import or
sign-up brings it back unasked.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, BackgroundTasks, Query, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.engine import Connection

from pipeline import subscribers as subs
from pipeline.accounts import audit
from pipeline.store.schema import subscribers as subscribers_table
from pipeline.web.api.core import ApiProblem, actor, api_of, invalid_state_filter, scoped

router = APIRouter(tags=["subscribers"])

STATES = ("unconfirmed", "confirmed", "unsubscribed", "suppressed")


class Subscriber(BaseModel):
    id: int
    email: str
    name: str
    state: str
    frequency: str
    topics: list[str]
    timezone: str
    source: str
    created_at: dt.datetime
    updated_at: dt.datetime
    confirmed_at: dt.datetime | None
    unsubscribed_at: dt.datetime | None


class ConsentEvent(BaseModel):
    kind: str
    at: dt.datetime
    source: str
    wording_version: str
    detail: dict[str, Any]


class SubscriberDetail(Subscriber):
    consent_log: list[ConsentEvent]


class SubscriberPage(BaseModel):
    items: list[Subscriber]
    next_cursor: str | None


class SubscriberIn(BaseModel):
    email: str = Field(max_length=320)
    name: str | None = Field(None, max_length=200)
    frequency: str | None = Field(None, max_length=20)
    topics: list[str] | None = Field(None, max_length=100)
    timezone: str | None = Field(None, max_length=64)
    confirmed: bool = Field(False, description="Already confirmed elsewhere: needs subscribers:import and `source`.")
    source: str = Field("", max_length=150, description="Where and when the person consented (kept in the log).")


class PreferencesIn(BaseModel):
    name: str | None = Field(None, max_length=200)
    frequency: str | None = Field(None, max_length=20)
    topics: list[str] | None = Field(None, max_length=100)
    timezone: str | None = Field(None, max_length=64)


class Accepted(BaseModel):
    status: str
    message: str


class Changed(BaseModel):
    id: int
    changed: bool
    state: str


def _subscriber(row: dict[str, Any]) -> Subscriber:
    return Subscriber(**{k: row[k] for k in Subscriber.model_fields})


def _client(request: Request, source: str) -> subs.Client:
    """The consent log's `source` names the token. No IP: the caller is the integrator's
    server, not the person, so its address says nothing about the consent, and the
    per-network sign-up limit (DOI-2) would throttle a whole CRM as one visitor; the
    token has its own limit (API-6) and the per-address limit still holds."""
    return subs.Client(
        source=source[:300],
        ip=None,
        user_agent=request.headers.get("user-agent"),
        wording_version="api",
    )


@router.get("/subscribers", response_model=SubscriberPage, **scoped("subscribers:read"))
def list_subscribers(
    request: Request,
    state: str | None = Query(None, description="unconfirmed | confirmed | unsubscribed | suppressed"),
    frequency: str | None = Query(None, max_length=20),
    email: str | None = Query(None, max_length=320, description="Exact address (any case)."),
    limit: int | None = Query(None, description="Page size (default 50; at most api.max_page_size)."),
    cursor: str | None = Query(None, max_length=500),
) -> SubscriberPage:
    """Subscribers in the order they signed up (id), filtered; follow `next_cursor`."""
    api = api_of(request)
    invalid_state_filter(state, STATES)
    size = api.page_size(limit)
    after = api.after("subscribers", cursor)
    q = select(subscribers_table)
    if after is not None:
        q = q.where(subscribers_table.c.id > int(after))
    if state:
        q = q.where(subscribers_table.c.state == state)
    if frequency:
        q = q.where(subscribers_table.c.frequency == frequency)
    if email:
        q = q.where(subscribers_table.c.email == email.strip().lower())
    with api.connect() as conn:
        rows = [dict(r) for r in conn.execute(q.order_by(subscribers_table.c.id).limit(size + 1)).mappings()]
    page = rows[:size]
    more = len(rows) > size
    return SubscriberPage(
        items=[_subscriber(r) for r in page],
        next_cursor=api.cursor("subscribers", page[-1]["id"]) if more else None,
    )


def _require(conn: Connection, subscriber_id: int) -> dict[str, Any]:
    sub: dict[str, Any] | None = subs.get_by_id(conn, subscriber_id)
    if sub is None:
        raise ApiProblem(404, "Not Found", f"no subscriber {subscriber_id}", kind="not-found")
    return sub


@router.get("/subscribers/{subscriber_id}", response_model=SubscriberDetail, **scoped("subscribers:read"))
def get_subscriber(request: Request, subscriber_id: int) -> SubscriberDetail:
    """One subscriber with the consent log (GDPR-1), oldest first."""
    api = api_of(request)
    with api.connect() as conn:
        sub = _require(conn, subscriber_id)
        events = subs.history(conn, subscriber_id)
    log = [
        ConsentEvent(
            kind=e["kind"],
            at=e["at"],
            source=e.get("source") or "",
            wording_version=e.get("wording_version") or "",
            detail=e.get("detail") or {},
        )
        for e in events
    ]
    return SubscriberDetail(**_subscriber(sub).model_dump(), consent_log=log)


@router.post(
    "/subscribers",
    status_code=202,
    response_model=Accepted | Subscriber,
    responses={201: {"model": Subscriber, "description": "Added as confirmed (import)."}},
    **scoped("subscribers:write", idempotent_write=True),
)
def create_subscriber(
    request: Request, body: SubscriberIn, background: BackgroundTasks, response: Response
) -> Accepted | Subscriber:
    """Sign someone up. By default this is double opt-in: 202, a confirmation email goes
    out and the answer is the same whatever the address's state (DOI-2). With
    `confirmed: true` and a `source` (token scope subscribers:import) the subscriber is
    added as confirmed at once: 201 with the subscriber."""
    api = api_of(request)
    token = request.state.token
    who = actor(request)
    if body.confirmed:
        if not token.allows("subscribers:import"):
            raise ApiProblem(
                403,
                "Forbidden",
                "adding confirmed subscribers needs the scope subscribers:import",
                kind="insufficient-scope",
                required_scope="subscribers:import",
            )
        if not body.source.strip():
            raise ApiProblem(
                422,
                "Validation failed",
                "a confirmed subscriber needs `source`: where the person consented",
                kind="validation",
                errors=[{"field": "source", "message": "required with confirmed"}],
            )
        with api.begin() as conn:
            sub, _what = subs.add(
                conn,
                api.settings,
                body.email,
                name=body.name,
                frequency=body.frequency,
                topics=body.topics,
                timezone=body.timezone,
                confirmed=True,
                source=f"api:{body.source.strip()}",
            )
            audit.record(conn, actor=who, action="api.subscriber.import", target=str(sub["id"]), via="api")
        response.status_code = 201
        return _subscriber(sub)
    with api.begin() as conn:
        result = subs.request_subscription(
            conn,
            api.settings,
            body.email,
            name=body.name,
            frequency=body.frequency,
            topics=body.topics,
            timezone=body.timezone,
            client=_client(request, f"api:{token.name}"),
        )
    if result.outbox_key:
        from pipeline.delivery.worker import deliver_now

        background.add_task(deliver_now, api.settings, api.app.engine, [result.outbox_key])
    return Accepted(
        status="accepted",
        message="If the address can receive our digest, a confirmation link is on its way.",
    )


@router.patch(
    "/subscribers/{subscriber_id}", response_model=Subscriber, **scoped("subscribers:write", idempotent_write=True)
)
def update_subscriber(request: Request, subscriber_id: int, body: PreferencesIn) -> Subscriber:
    """Change preferences (only the fields given), recorded in the consent log."""
    api = api_of(request)
    with api.begin() as conn:
        sub = _require(conn, subscriber_id)
        given = body.model_dump(exclude_unset=True)
        subs.update_preferences(
            conn,
            api.settings,
            subscriber_id,
            name=given.get("name", sub["name"]),
            frequency=given.get("frequency", sub["frequency"]),
            topics=given.get("topics", sub["topics"]),
            timezone=given.get("timezone", sub["timezone"]),
            client=_client(request, f"api:{request.state.token.name}"),
        )
        return _subscriber(_require(conn, subscriber_id))


@router.post(
    "/subscribers/{subscriber_id}/unsubscribe",
    response_model=Changed,
    **scoped("subscribers:write", idempotent_write=True),
)
def unsubscribe_subscriber(request: Request, subscriber_id: int) -> Changed:
    """Withdraw consent on the person's behalf (idempotent; history kept)."""
    api = api_of(request)
    with api.begin() as conn:
        _require(conn, subscriber_id)
        changed = subs.unsubscribe(
            conn, api.settings, subscriber_id, client=_client(request, f"api:{request.state.token.name}")
        )
        sub = _require(conn, subscriber_id)
    return Changed(id=subscriber_id, changed=changed, state=sub["state"])


@router.delete("/subscribers/{subscriber_id}", status_code=204, **scoped("subscribers:write", idempotent_write=True))
def erase_subscriber(request: Request, subscriber_id: int) -> Response:
    """Erase (GDPR art. 17): the subscriber and the whole history are deleted; the
    address stays on the suppression list so nothing mails it again."""
    from pipeline.subscribers.suppression import suppress

    api = api_of(request)
    with api.begin() as conn:
        sub = _require(conn, subscriber_id)
        suppress(
            conn, api.settings, sub["email"], reason="unsubscribed", source="api:erase", detail="erased on request"
        )
        subs.remove(conn, api.settings, sub["email"], erase=True)
        audit.record(conn, actor=actor(request), action="api.subscriber.erase", target=str(subscriber_id), via="api")
    return Response(status_code=204)
