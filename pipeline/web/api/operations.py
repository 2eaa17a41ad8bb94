"""/api/v1 editions, deliveries, partners, jobs, and the extension points for reports
and imports. Retries and job runs call the same functions as `syndicate deliveries
retry`, `partners retry` and `jobs run`."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import select

from pipeline.accounts import audit
from pipeline.errors import NotFound, SyndicateError
from pipeline.store.schema import deliveries, digest_editions
from pipeline.web.api.core import Api, ApiProblem, actor, api_of, invalid_state_filter, scoped

router = APIRouter()

DELIVERY_STATES = ("queued", "sending", "sent", "retry", "failed", "suppressed", "dead", "cancelled")


def _json(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json(v) for v in value]
    return value


def _page_in_memory(
    api: Api, resource: str, rows: list[dict[str, Any]], key: str, limit: int | None, cursor: str | None
) -> tuple[list[Any], str | None]:
    """Lists built from config (partners, jobs): sorted by `key`, cursor = the last key."""
    size = api.page_size(limit)
    after = api.after(resource, cursor)
    rows = sorted(rows, key=lambda r: r[key])
    if after is not None:
        rows = [r for r in rows if r[key] > after]
    page = rows[:size]
    more = len(rows) > size
    return [_json(r) for r in page], api.cursor(resource, page[-1][key]) if more else None


# --- editions --------------------------------------------------------------------------


class Edition(BaseModel):
    key: str
    frequency: str
    subject: str
    recipients: int
    articles: int
    window_start: dt.datetime | None
    cutoff: dt.datetime
    created_at: dt.datetime
    completed_at: dt.datetime | None


class EditionPage(BaseModel):
    items: list[Edition]
    next_cursor: str | None


@router.get("/editions", response_model=EditionPage, tags=["editions"], **scoped("deliveries:read"))
def list_editions(
    request: Request,
    frequency: str | None = Query(None, max_length=20, description="instant | daily | weekly"),
    limit: int | None = Query(None),
    cursor: str | None = Query(None, max_length=500),
) -> EditionPage:
    """Digest editions and instant sends, newest first."""
    api = api_of(request)
    size = api.page_size(limit)
    after = api.after("editions", cursor)
    q = select(digest_editions)
    if after is not None:
        q = q.where(digest_editions.c.id < int(after))
    if frequency:
        q = q.where(digest_editions.c.frequency == frequency)
    with api.connect() as conn:
        rows = conn.execute(q.order_by(digest_editions.c.id.desc()).limit(size + 1)).all()
    page = rows[:size]
    items = [
        Edition(
            key=r.key,
            frequency=r.frequency,
            subject=r.subject,
            recipients=r.recipients,
            articles=len(r.article_ids or []),
            window_start=r.window_start,
            cutoff=r.cutoff,
            created_at=r.created_at,
            completed_at=r.completed_at,
        )
        for r in page
    ]
    return EditionPage(items=items, next_cursor=api.cursor("editions", page[-1].id) if len(rows) > size else None)


@router.get("/editions/{key}/report", response_model=dict[str, Any], tags=["editions"], **scoped("deliveries:read"))
def edition_report(request: Request, key: str) -> dict[str, Any]:
    """What one edition did (as `syndicate editions report KEY`): recipients, sent,
    failed, bounced (hard/soft), unsubscribed within 7 days, clicks per article (in
    aggregate only)."""
    from pipeline.digests.reports import edition_report as report

    api = api_of(request)
    try:
        with api.connect() as conn:
            found = report(conn, key[:200])
    except NotFound:
        raise ApiProblem(404, "Not Found", f"no edition {key!r}", kind="not-found") from None
    answer: dict[str, Any] = _json(found)
    return answer


# --- deliveries ------------------------------------------------------------------------


class Delivery(BaseModel):
    id: int
    channel: str
    target: str
    kind: str
    state: str
    attempts: int
    next_attempt_at: dt.datetime
    last_error: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    sent_at: dt.datetime | None
    subscriber_id: int | None
    article_id: int | None
    edition_id: int | None


class DeliveryPage(BaseModel):
    items: list[Delivery]
    next_cursor: str | None


@router.get("/deliveries", response_model=DeliveryPage, tags=["deliveries"], **scoped("deliveries:read"))
def list_deliveries(
    request: Request,
    state: str | None = Query(None, description=" | ".join(DELIVERY_STATES)),
    channel: str | None = Query(None, max_length=20, description="email | webhook | micropub | websub"),
    kind: str | None = Query(None, max_length=40),
    target: str | None = Query(None, max_length=2000, description="A recipient address, partner name or hub URL."),
    edition: str | None = Query(None, max_length=200, description="An edition key."),
    limit: int | None = Query(None),
    cursor: str | None = Query(None, max_length=500),
) -> DeliveryPage:
    """The outbox, newest first, filtered."""
    api = api_of(request)
    invalid_state_filter(state, DELIVERY_STATES)
    size = api.page_size(limit)
    after = api.after("deliveries", cursor)
    q = select(*[deliveries.c[name] for name in Delivery.model_fields])
    if after is not None:
        q = q.where(deliveries.c.id < int(after))
    if target and "@" in target:
        target = target.strip().lower()  # addresses are stored lower-case
    for column, value in (("state", state), ("channel", channel), ("kind", kind), ("target", target)):
        if value:
            q = q.where(deliveries.c[column] == value)
    with api.connect() as conn:
        if edition:
            edition_id = conn.execute(select(digest_editions.c.id).where(digest_editions.c.key == edition)).scalar()
            if edition_id is None:
                raise ApiProblem(404, "Not Found", f"no edition {edition!r}", kind="not-found")
            q = q.where(deliveries.c.edition_id == edition_id)
        rows = [dict(r) for r in conn.execute(q.order_by(deliveries.c.id.desc()).limit(size + 1)).mappings()]
    page = rows[:size]
    return DeliveryPage(
        items=[Delivery(**r) for r in page],
        next_cursor=api.cursor("deliveries", page[-1]["id"]) if len(rows) > size else None,
    )


class Requeued(BaseModel):
    id: int
    requeued: bool
    state: str


@router.post(
    "/deliveries/{delivery_id}/retry",
    response_model=Requeued,
    tags=["deliveries"],
    **scoped("deliveries:write", idempotent_write=True),
)
def retry_delivery(request: Request, delivery_id: int) -> Requeued:
    """Put a failed or dead delivery back in the queue, due now (as `syndicate deliveries
    retry ID`). Anything else is left as it is: 409."""
    from pipeline.delivery import outbox

    api = api_of(request)
    with api.begin() as conn:
        row = outbox.get(conn, delivery_id)
        if row is None:
            raise ApiProblem(404, "Not Found", f"no delivery {delivery_id}", kind="not-found")
        n = outbox.requeue(conn, ids=[delivery_id], states=("failed", "dead"))
        if not n:
            raise ApiProblem(
                409,
                "Conflict",
                f"delivery {delivery_id} is {row['state']}; only failed or dead ones are retried",
                kind="conflict",
                state=row["state"],
            )
        audit.record(conn, actor=actor(request), action="api.delivery.retry", target=str(delivery_id), via="api")
    return Requeued(id=delivery_id, requeued=True, state="queued")


# --- partners --------------------------------------------------------------------------


class ItemPage(BaseModel):
    items: list[dict[str, Any]]
    next_cursor: str | None


@router.get("/partners", response_model=ItemPage, tags=["partners"], **scoped("deliveries:read"))
def list_partners(
    request: Request, limit: int | None = Query(None), cursor: str | None = Query(None, max_length=500)
) -> ItemPage:
    """Every configured partner: state, backlog, last success, dead letters (by name)."""
    from pipeline.partners import ops

    api = api_of(request)
    items, nxt = _page_in_memory(api, "partners", ops.overview(api.app), "name", limit, cursor)
    return ItemPage(items=items, next_cursor=nxt)


@router.get("/partners/{name}", response_model=dict[str, Any], tags=["partners"], **scoped("deliveries:read"))
def partner_status(request: Request, name: str) -> dict[str, Any]:
    """One partner: its summary, recent attempts and what waits (as `partners status`)."""
    from pipeline.partners import ops

    api = api_of(request)
    try:
        found = ops.status(api.app, name[:200])
    except (NotFound, StopIteration):
        raise ApiProblem(404, "Not Found", f"no partner {name!r}", kind="not-found") from None
    answer: dict[str, Any] = _json(
        {"summary": found["summary"], "attempts": found["attempts"], "pending": found["pending"]}
    )
    return answer


class PartnerRetryIn(BaseModel):
    include_failed: bool = Field(False, description="Also requeue permanently failed pushes, not only dead ones.")


class PartnerRetried(BaseModel):
    partner: str
    requeued: int


@router.post(
    "/partners/{name}/retry",
    response_model=PartnerRetried,
    tags=["partners"],
    **scoped("deliveries:write", idempotent_write=True),
)
def retry_partner(request: Request, name: str, body: PartnerRetryIn | None = None) -> PartnerRetried:
    """Dead-lettered pushes back to the queue; a circuit-breaker pause is lifted."""
    from pipeline.partners import ops

    api = api_of(request)
    try:
        n = ops.retry(api.app, name[:200], include_failed=bool(body and body.include_failed))
    except NotFound:
        raise ApiProblem(404, "Not Found", f"no partner {name!r}", kind="not-found") from None
    with api.begin() as conn:
        audit.record(conn, actor=actor(request), action="api.partner.retry", target=name[:200], via="api")
    return PartnerRetried(partner=name, requeued=n)


# --- jobs ------------------------------------------------------------------------------


@router.get("/jobs", response_model=ItemPage, tags=["jobs"], **scoped("ops"))
def list_jobs(
    request: Request, limit: int | None = Query(None), cursor: str | None = Query(None, max_length=500)
) -> ItemPage:
    """Every scheduled job: stage, schedule, next run, last result (by id)."""
    from pipeline.ops.status import jobs_panel

    api = api_of(request)
    items, nxt = _page_in_memory(api, "jobs", jobs_panel(api.app), "id", limit, cursor)
    return ItemPage(items=items, next_cursor=nxt)


class JobRunIn(BaseModel):
    dry_run: bool = False


class JobRun(BaseModel):
    job: str
    ok: bool
    dry_run: bool
    counts: dict[str, Any]


@router.post("/jobs/{job_id}/run", response_model=JobRun, tags=["jobs"], **scoped("ops", idempotent_write=True))
def run_job(request: Request, job_id: str, body: JobRunIn | None = None) -> JobRun:
    """Run a job now, recorded in the history as a manual run (as `syndicate jobs run`).
    Every stage is idempotent, so this never sends anything twice. The answer comes
    when the job has finished."""
    from pipeline.ops.scheduler import execute
    from pipeline.ops.schedules import find_job, schedules_for

    api = api_of(request)
    dry_run = bool(body and body.dry_run)
    try:
        spec = find_job(schedules_for(api.settings), job_id[:200])
    except SyndicateError:
        raise ApiProblem(404, "Not Found", f"no job {job_id!r}", kind="not-found") from None
    with api.begin() as conn:
        audit.record(conn, actor=actor(request), action="api.job.run", target=spec.id, via="api")
    counts = execute(api.app, spec.id, spec.stage, spec.args, trigger="manual", dry_run=dry_run)
    return JobRun(job=spec.id, ok=True, dry_run=dry_run, counts=_json(dict(counts or {})))
