"""The webhook pusher: Standard Webhooks (SW-1..4) with an Idempotency-Key (IDEM-1).

The body is the event frozen into the outbox row, serialised once per attempt in one
canonical way, and the signature is computed over exactly those bytes, which are the
bytes handed to requests. `webhook-id` is the row's message id (stable across retries),
`webhook-timestamp` is the time of this attempt.
"""

from __future__ import annotations

import json
import time

from pipeline.partners import signing
from pipeline.partners.channel import NotReady, PartnerChannel
from pipeline.partners.config import Partner, secrets_of
from pipeline.partners.http import Answer, request


def event_body(event: dict) -> bytes:
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode("utf-8")


def webhook_headers(
    secrets: list[str], message_id: str, idempotency_key: str, body: bytes, timestamp: int | None = None
) -> dict[str, str]:
    headers = signing.headers(secrets, message_id, body, timestamp)
    headers["Content-Type"] = "application/json"
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    return headers


def webhook_secrets(settings, partner: Partner) -> list[str]:
    secrets = secrets_of(settings, partner)
    if not secrets:
        raise NotReady(
            f"no signing secret: environment variable {partner.secret_env or '(secret_env not set)'} is empty; "
            "set it to the whsec_... secret shared with the partner"
        )
    try:
        for s in secrets:
            signing.secret_key(s)
    except Exception as exc:
        raise NotReady(f"the secret in {partner.secret_env} is not valid: {exc}") from None
    return secrets


def post_event(session, settings, partner: Partner, event: dict, message_id: str, idempotency_key: str) -> Answer:
    body = event_body(event)
    headers = webhook_headers(webhook_secrets(settings, partner), message_id, idempotency_key, body, int(time.time()))
    return request(session, partner, "POST", partner.url, data=body, headers=headers)


class WebhookChannel(PartnerChannel):
    channel = "webhook"

    def push(self, partner: Partner, row: dict):
        payload = row["payload"]
        answer = post_event(
            self.session(partner),
            self.settings,
            partner,
            payload["event"],
            payload["message_id"],
            payload.get("idempotency_key", ""),
        )
        return answer, ""
