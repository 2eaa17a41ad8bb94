"""Outgoing events: subscriber and send events to the operator's endpoints (EVT-1..6).

An operator subscribes an endpoint to event types in `[[events.endpoints]]` (name, url,
secret_env, events). When a transition happens - a subscriber confirms, unsubscribes or
bounces, an edition has been queued for everyone - the stage that made it calls
`pipeline.delivery.emit_event` inside its own transaction; that hook (declared as the
`events` entry point in `syndicate.hooks`, so no stage imports this package) lands
here and queues one outbox row per subscribed endpoint. The row is sent by the
`events` channel exactly as a partner push is sent: Standard Webhooks signatures
(webhook-id stable across retries, webhook-timestamp per attempt, `v1` HMAC-SHA256
with the `whsec_` secret), the same timeouts, SSRF guard, retry schedule, circuit
breaker and attempt log (pipeline.partners.channel), because an endpoint *is* a
webhook partner that receives events instead of articles.

Endpoint names are kept apart from partner names in the shared partner state and
attempt log by the prefix `events:`.
"""

from __future__ import annotations

import logging
import uuid

from sqlalchemy.engine import Connection

from pipeline.config import EVENT_TYPES, Settings
from pipeline.delivery import outbox
from pipeline.errors import NotFound
from pipeline.partners.config import Partner, partner_from_config
from pipeline.partners.webhook import WebhookChannel
from pipeline.timeutil import rfc3339, utcnow

log = logging.getLogger(__name__)

CHANNEL = "events"
PREFIX = "events:"

__all__ = ["EVENT_TYPES", "CHANNEL", "endpoints", "get_endpoint", "emit", "build_event", "EventsChannel"]


def _as_partner(settings: Settings, raw: dict) -> Partner:
    fields = {k: v for k, v in raw.items() if k != "events"}
    return partner_from_config(settings, fields | {"name": PREFIX + raw["name"], "kind": CHANNEL})


def endpoints(settings: Settings) -> list[tuple[Partner, tuple[str, ...]]]:
    """(endpoint as a partner, the event types it takes) for every configured endpoint."""
    return [
        (_as_partner(settings, raw), tuple(raw.get("events") or EVENT_TYPES))
        for raw in getattr(settings, "event_endpoints", [])
    ]


def get_endpoint(settings: Settings, name: str) -> Partner:
    for partner, _types in endpoints(settings):
        if partner.name in (name, PREFIX + name):
            return partner
    known = ", ".join(e["name"] for e in getattr(settings, "event_endpoints", [])) or "none configured"
    raise NotFound(f"no event endpoint named {name!r}", hint=f"Endpoints: {known}. Add one as [[events.endpoints]].")


def build_event(settings: Settings, event_type: str, data: dict, *, at=None) -> dict:
    """The body every endpoint gets (Standard Webhooks' suggested shape: type, timestamp, data)."""
    return {
        "type": event_type,
        "timestamp": rfc3339(at or utcnow()),
        "data": data,
        "meta": {"site": settings.site.title, "site_url": settings.site.base_url},
    }


def outbox_key(endpoint: str, event_type: str, key: str) -> str:
    full = f"event:{endpoint}:{event_type}:{key}"
    if len(full) > 255:  # keys are short by construction; a long one is hashed, still stable
        full = f"event:{endpoint}:{event_type}:" + uuid.uuid5(uuid.NAMESPACE_URL, key).hex
    return full


def emit(conn: Connection, settings: Settings, event_type: str, data: dict, *, key: str) -> int:
    """The `events` hook (pipeline.delivery.Events): queue `event_type` for every enabled
    endpoint that takes it, in the caller's transaction. The body is frozen into the
    row, so every retry sends the same bytes; the outbox key (endpoint + type + the
    transition's own key) makes a repeated emit queue nothing (EVT-2)."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}")
    now = utcnow()
    queued = 0
    for partner, types in endpoints(settings):
        if not partner.enabled or event_type not in types:
            continue
        okey = outbox_key(partner.name, event_type, key)
        if outbox.enqueue(
            conn,
            channel=CHANNEL,
            target=partner.name,
            kind=event_type,
            key=okey,
            payload={
                "endpoint": partner.name,
                "message_id": "msg_" + uuid.uuid4().hex,
                "idempotency_key": str(uuid.uuid5(uuid.NAMESPACE_URL, "syndicate:" + okey)),
                "event": build_event(settings, event_type, data, at=now),
            },
        ):
            queued += 1
    if queued:
        log.info("event %s (%s) queued for %d endpoint(s)", event_type, key, queued)
    return queued


class EventsChannel(WebhookChannel):
    """Sends queued events: a webhook push (the same signing and request as
    ``WebhookChannel.push``) to an endpoint instead of a partner."""

    channel = CHANNEL

    def __init__(self, settings, engine):
        super().__init__(settings, engine)
        self.partners = {p.name: p for p, _types in endpoints(settings)}
