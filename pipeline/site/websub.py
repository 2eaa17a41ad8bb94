"""WebSub publishing: tell the hubs when a feed changed (W3C WebSub §6, WS-2..4).

The build queues one outbox row per changed subscription feed per hub
(`queue_pings`), in the transaction that records the new feed, after the file is in
place (WS-3). The "websub" channel handler (an entry point in pyproject.toml) sends each row as

    POST {hub}    Content-Type: application/x-www-form-urlencoded
    hub.mode=publish&hub.url={topic}

(the topic parameter's name is `feeds.hub_url_param`; some hubs read `hub.topic`),
with explicit connect/read timeouts and no redirects. Any 2xx is success; anything
else, or no answer, is retried on `feeds.hub_retry_schedule` and then marked dead. A
failing hub never blocks a build: the build only inserts rows.

Hubs are `feeds.hubs` plus every enabled `[[partners]]` entry of kind "websub" (its
url is a hub).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable

from sqlalchemy.engine import Connection

from pipeline.delivery import Outcome, outbox
from pipeline.durations import parse_duration
from pipeline.timeutil import utcnow

log = logging.getLogger(__name__)

CHANNEL = "websub"
KIND = "publish"


def ping_key(hub: str, topic: str, content_sha: str) -> str:
    """One ping per (hub, topic, feed bytes): rebuilding the same bytes adds nothing."""
    return "websub:" + hashlib.sha256(f"{hub}\n{topic}\n{content_sha}".encode()).hexdigest()


def queue_pings(conn: Connection, pings: Iterable[tuple[str, str, str]]) -> int:
    """Queue (hub, topic URL, sha256 of the new feed bytes) pings; returns how many were new."""
    rows = [
        dict(
            channel=CHANNEL,
            target=hub,
            kind=KIND,
            key=ping_key(hub, topic, sha),
            payload={"topic": topic, "sha256": sha},
        )
        for hub, topic, sha in pings
    ]
    return outbox.enqueue_many(conn, rows) if rows else 0


class WebSubChannel:
    """The outbox handler for channel "websub": one POST per row."""

    def __init__(self, settings, engine=None):
        import requests  # here, not at the top: every build imports this module to queue pings

        self.settings = settings
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "Syndicate WebSub publisher"
        timeout = float(settings.feeds.hub_timeout)
        self.timeout = (timeout, timeout)
        self.param = settings.feeds.hub_url_param or "hub.url"
        self.schedule = [parse_duration(s) for s in settings.feeds.hub_retry_schedule]

    def _retry(self, row: dict, error: str, answer: str = "") -> Outcome:
        attempts = int(row.get("attempts") or 0)  # attempts before this one
        if attempts >= len(self.schedule):
            return Outcome(row["id"], "dead", error=f"gave up after {attempts + 1} attempts: {error}", answer=answer)
        return Outcome(
            row["id"], "retry", error=error, answer=answer, next_attempt_at=utcnow() + self.schedule[attempts]
        )

    def send(self, rows: list[dict]) -> list[Outcome]:
        import requests

        outcomes = []
        for row in rows:
            hub, topic = row["target"], (row.get("payload") or {}).get("topic", "")
            if not topic:
                outcomes.append(Outcome(row["id"], "failed", error="no topic in the payload"))
                continue
            try:
                resp = self.session.post(
                    hub, data={"hub.mode": "publish", self.param: topic}, timeout=self.timeout, allow_redirects=False
                )
            except requests.RequestException as exc:
                log.warning("websub: hub %s unreachable for %s: %s", hub, topic, exc)
                outcomes.append(self._retry(row, f"{type(exc).__name__}: {exc}"))
                continue
            answer = f"{resp.status_code} {resp.reason or ''}".strip()
            if 200 <= resp.status_code < 300:
                outcomes.append(Outcome(row["id"], "sent", answer=answer))
            else:
                log.warning("websub: hub %s answered %s for %s", hub, answer, topic)
                outcomes.append(self._retry(row, f"hub answered {answer}", answer=answer + " " + resp.text[:200]))
        return outcomes

    def close(self) -> None:
        self.session.close()


__all__ = ["queue_pings", "ping_key", "WebSubChannel", "parse_duration"]
