"""What the operator does with partners: list, status, test, retry, replay, resume.
No click here; pipeline/commands/partners.py is the thin adapter."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
import uuid

from sqlalchemy import func, select

from pipeline.delivery import outbox
from pipeline.errors import SyndicateError
from pipeline.partners import signing, state
from pipeline.partners.config import Partner, get_partner, partners
from pipeline.partners.events import EVENT_TYPES, REPLAY_PREFIX, new_message_id, next_sequence, ping_event
from pipeline.partners.http import make_session, request
from pipeline.partners.webhook import event_body, webhook_headers, webhook_secrets
from pipeline.store.schema import articles, deliveries
from pipeline.timeutil import utcnow

BACKLOG_STATES = ("queued", "retry", "sending")


def _targets(p: Partner) -> tuple[str, list[str]]:
    """(channel, target values) of a partner's deliveries. Hub pings are keyed by hub URL."""
    if p.kind == "websub":
        return "websub", [p.url, p.name]
    return p.kind, [p.name]


def _state_label(p: Partner, st: dict, now: dt.datetime) -> str:
    if not p.enabled:
        return "off (enabled = false)"
    if p.kind == "websub":
        return "hub"
    if st["state"] == "disabled":
        return "disabled"
    if st["state"] == "paused" and st["paused_until"] and st["paused_until"] > now:
        return "paused"
    if st["throttled_until"] and st["throttled_until"] > now:
        return "throttled"
    return "active"


def _everyone(settings) -> list[Partner]:
    """The configured partners, then the outgoing-event endpoints (`events:NAME`)."""
    from pipeline.partners.outgoing import endpoints

    return partners(settings) + [p for p, _types in endpoints(settings)]


def _lookup(settings, name: str) -> Partner:
    if name.startswith("events:"):  # an outgoing-events endpoint (pipeline.partners.outgoing)
        from pipeline.partners.outgoing import get_endpoint

        return get_endpoint(settings, name)
    return get_partner(settings, name)


def overview(app) -> list[dict]:
    """One dict per configured partner and event endpoint: state, last success,
    backlog, dead letters."""
    now = utcnow()
    out = []
    with app.engine.connect() as conn:
        for p in _everyone(app.settings):
            channel, targets = _targets(p)
            counts = dict(
                conn.execute(
                    select(deliveries.c.state, func.count())
                    .where(deliveries.c.channel == channel, deliveries.c.target.in_(targets))
                    .group_by(deliveries.c.state)
                ).all()
            )
            last_sent = conn.execute(
                select(func.max(deliveries.c.sent_at)).where(
                    deliveries.c.channel == channel, deliveries.c.target.in_(targets)
                )
            ).scalar()
            st = state.get_state(conn, p.name)
            out.append(
                {
                    "name": p.name,
                    "kind": p.kind,
                    "url": p.url,
                    "enabled": p.enabled,
                    "state": _state_label(p, st, now),
                    "reason": st["reason"],
                    "alert": st["alert"],
                    "paused_until": st["paused_until"],
                    "consecutive_failures": st["consecutive_failures"],
                    "last_success_at": st["last_success_at"] or last_sent,
                    "backlog": sum(counts.get(s, 0) for s in BACKLOG_STATES),
                    "sent": counts.get("sent", 0),
                    "dead": counts.get("dead", 0),
                    "failed": counts.get("failed", 0),
                }
            )
    return out


def alerts(app) -> list[tuple[str, str]]:
    """(partner, message) for every partner that needs the operator (for `syndicate status`)."""
    return [
        (o["name"], o["alert"] or o["reason"])
        for o in overview(app)
        if o["alert"] or o["state"] in ("disabled", "paused")
    ]


def status(app, name: str, *, limit: int = 20) -> dict:
    p = _lookup(app.settings, name)
    row = next(o for o in overview(app) if o["name"] == name)
    channel, targets = _targets(p)
    with app.engine.connect() as conn:
        attempts = state.recent_attempts(conn, name, limit)
        slugs = dict(
            conn.execute(
                select(articles.c.id, articles.c.slug).where(
                    articles.c.id.in_({a["article_id"] for a in attempts if a["article_id"]})
                )
            ).all()
        )
        waiting = (
            conn.execute(
                select(
                    deliveries.c.id,
                    deliveries.c.kind,
                    deliveries.c.state,
                    deliveries.c.attempts,
                    deliveries.c.next_attempt_at,
                    deliveries.c.last_error,
                    deliveries.c.article_id,
                )
                .where(
                    deliveries.c.channel == channel,
                    deliveries.c.target.in_(targets),
                    deliveries.c.state.in_(BACKLOG_STATES + ("dead", "failed")),
                )
                .order_by(deliveries.c.next_attempt_at, deliveries.c.id)
                .limit(limit)
            )
            .mappings()
            .all()
        )
        waiting_slugs = dict(
            conn.execute(
                select(articles.c.id, articles.c.slug).where(
                    articles.c.id.in_({w["article_id"] for w in waiting if w["article_id"]})
                )
            ).all()
        )
    for a in attempts:
        a["slug"] = slugs.get(a["article_id"], "")
    pending = [dict(w, slug=waiting_slugs.get(w["article_id"], "")) for w in waiting]
    return {"partner": p, "summary": row, "attempts": attempts, "pending": pending}


@dataclasses.dataclass
class PingResult:
    partner: str
    url: str
    message_id: str
    status_code: int | None
    answer: str
    duration_ms: int
    ok: bool
    signed_with: int  # number of signatures sent
    self_verified: bool  # our own signature checks out with the spec's algorithm
    dry_run: bool = False
    body: bytes = b""
    headers: dict | None = None


def send_test_event(app, name: str, *, dry_run: bool = False) -> PingResult:
    """Send a signed `ping` event (webhook) or ask for `q=config` (Micropub); report the answer.

    A Standard Webhooks receiver answers 2xx only after verifying the signature, so a
    2xx means the partner verified it."""
    p = _lookup(app.settings, name)
    settings = app.settings
    if p.kind == "websub":
        raise SyndicateError(
            f"partner {name!r} is a WebSub hub; it gets publish pings, not test events",
            hint="Run `syndicate build`: changed feeds are pinged; `syndicate partners status "
            f"{name}` shows the pings.",
        )
    session = make_session(p, settings.site.base_url)
    try:
        if p.kind == "micropub":
            from pipeline.partners.micropub import MicropubChannel, micropub_token

            token = micropub_token(settings, p)
            channel = MicropubChannel(settings, app.engine)
            endpoint, failed = channel.endpoint(p)
            channel.close()
            if endpoint is None:
                answer = failed
            elif dry_run:
                return PingResult(name, endpoint, "", None, "dry run: nothing sent", 0, True, 0, True, True)
            else:
                sep = "&" if "?" in endpoint else "?"
                answer = request(
                    session,
                    p,
                    "GET",
                    endpoint + sep + "q=config",
                    headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
                )
            state.log_attempt(
                app.engine, partner=name, kind="ping", outcome="sent" if answer.ok else "failed", answer=answer
            )
            return PingResult(
                name,
                endpoint or p.url,
                "",
                answer.status_code,
                answer.summary(),
                answer.duration_ms,
                answer.ok,
                0,
                True,
            )
        secrets = webhook_secrets(settings, p)
        msg_id = new_message_id()
        body = event_body(ping_event(settings))
        ts = int(time.time())
        headers = webhook_headers(secrets, msg_id, "", body, ts)
        self_ok = True
        try:
            signing.verify(secrets, {k.lower(): v for k, v in headers.items()}, body, now=ts)
        except signing.VerificationError:
            self_ok = False
        if dry_run:
            return PingResult(
                name, p.url, msg_id, None, "dry run: nothing sent", 0, True, len(secrets), self_ok, True, body, headers
            )
        answer = request(session, p, "POST", p.url, data=body, headers=headers)
        state.log_attempt(
            app.engine,
            partner=name,
            kind="ping",
            outcome="sent" if answer.ok else "failed",
            answer=answer,
            message_id=msg_id,
        )
        return PingResult(
            name,
            p.url,
            msg_id,
            answer.status_code,
            answer.summary(),
            answer.duration_ms,
            answer.ok,
            len(secrets),
            self_ok,
            False,
            body,
            headers,
        )
    finally:
        session.close()


def _pusher(app, name: str) -> Partner:
    p = _lookup(app.settings, name)
    if p.kind == "events":
        return p
    if not p.pushes_articles:
        raise SyndicateError(
            f"partner {name!r} is a {p.kind} partner; its pings are deliveries of the feed build",
            hint="Use `syndicate deliveries retry` for hub pings.",
        )
    return p


def retry(app, name: str, *, include_failed: bool = False) -> int:
    """Dead-lettered rows (and with include_failed, permanently failed ones) back to the
    queue, due now; a circuit-breaker pause is lifted (a 410 disabling is not: resume)."""
    p = _pusher(app, name)
    states = ("dead", "failed") if include_failed else ("dead",)
    with app.engine.begin() as conn:
        n = outbox.requeue(conn, states=states, channel=p.kind, target=p.name)
        st = state.get_state(conn, name)
        if st["state"] == "paused":
            state.resume(conn, name)
    return n


def resume(app, name: str) -> tuple[dict, int]:
    """Lift a 410 disabling or a pause; the partner's waiting rows become due now."""
    p = _pusher(app, name)
    with app.engine.begin() as conn:
        before = state.resume(conn, name)
        n = outbox.requeue(conn, states=("queued", "retry"), channel=p.kind, target=p.name)
    return before, n


def replay(app, name: str, since: dt.datetime, *, dry_run: bool = False) -> int:
    """Re-send what was delivered since `since` as new events: new webhook ids, the same
    Idempotency-Key (so a partner that keeps keys can tell), in the original order."""
    p = _pusher(app, name)
    with app.engine.begin() as conn:
        rows = (
            conn.execute(
                select(deliveries)
                .where(
                    deliveries.c.channel == p.kind,
                    deliveries.c.target == p.name,
                    deliveries.c.state == "sent",
                    deliveries.c.sent_at >= since,
                    deliveries.c.kind.in_(EVENT_TYPES),
                )
                .order_by(deliveries.c.sent_at, deliveries.c.id)
            )
            .mappings()
            .all()
        )
        latest: dict[str, dict] = {}
        for r in rows:  # a replayed replay is the same logical push: send it once
            latest[(r["payload"] or {}).get("idempotency_key") or r["idempotency_key"]] = dict(r)
        todo = sorted(latest.values(), key=lambda r: (r["sent_at"], r["id"]))
        if dry_run:
            return len(todo)
        for r in todo:
            payload = dict(r["payload"])
            original = payload.get("replay_of") or r["id"]
            payload.update(message_id=new_message_id(), replay_of=original)
            key = f"{REPLAY_PREFIX}{uuid.uuid4().hex}:{original}"
            outbox.enqueue(
                conn,
                channel=p.kind,
                target=p.name,
                kind=r["kind"],
                key=key,
                payload=payload,
                article_id=r["article_id"],
                revision_id=r["revision_id"],
                ordering_key=r["ordering_key"],
                sequence=next_sequence(conn, r["ordering_key"]) if r["ordering_key"] else 0,
            )
    return len(todo)
