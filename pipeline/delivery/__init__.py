"""Draining the outbox: claim due rows, hand each channel's rows to its handler, record.

A channel handler (email, webhook, micropub, websub) is an object with
`send(rows) -> list[Outcome]`, built by `factory(settings, engine)`. The email channel
looks up a *message builder* per delivery kind, so composing stays in
pipeline.digests.builder and pipeline.subscribers.emails while sending stays here.

Both are found by short name through entry points declared in pyproject.toml
(`syndicate.channels`, `syndicate.email_kinds`), as APScheduler finds its job stores:
nothing registers itself as a side effect of being imported, and this package imports
no stage above it. What delivery needs from the subscriber side (the suppression
list, bounce bookkeeping, mailto: unsubscribes) is the `Recipients` hook below, found
the same way (`syndicate.hooks`: `recipients`). Tests and site plugins may add their
own with `register_channel` / `register_email_kind`, or name modules that do in
`SYNDICATE_DELIVERY_PLUGINS=module.a,module.b` (for subprocesses).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import importlib
import logging
import os
from collections.abc import Callable, Iterable
from importlib.metadata import entry_points
from typing import Any, Protocol

from sqlalchemy.engine import Connection, Engine

from pipeline.delivery import outbox
from pipeline.errors import ConfigError

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Outcome:
    """What happened to one claimed row.

    status: sent | retry | failed | suppressed | dead | release | lost
    (release: give the row back untouched, e.g. a paused channel or a dry run;
    lost: not sent because this worker's lease on it ran out, nothing is written).
    `spend_attempt=False` requeues without counting a try (throttling answers).
    """

    delivery_id: int
    status: str
    error: str = ""
    answer: str = ""
    next_attempt_at: dt.datetime | None = None
    spend_attempt: bool = True


class ChannelHandler(Protocol):
    def send(self, rows: list[dict]) -> list[Outcome]: ...

    def close(self) -> None: ...


class Recipients(Protocol):
    """The hook delivery calls for what the subscriber side owns (implemented by
    pipeline.subscribers.suppression, the suppression list's one owner)."""

    def suppressed_among(self, conn: Connection, emails: list[str]) -> dict[str, str]: ...

    def suppress(
        self, conn: Connection, settings: Any, email: str, *, reason: str, source: str, detail: str = ""
    ) -> bool: ...

    def subscriber_id_for(self, conn: Connection, email: str) -> int | None: ...

    def log_subscriber_event(
        self, conn: Connection, subscriber_id: int | None, kind: str, *, source: str, detail: dict
    ) -> bool: ...

    def verify_unsubscribe_token(self, settings: Any, token: str) -> int: ...

    def unsubscribe(self, conn: Connection, settings: Any, subscriber_id: int, *, source: str) -> bool: ...


_channels: dict[str, Callable] = {}
_email_kinds: dict[str, Callable] = {}

CHANNELS_GROUP = "syndicate.channels"
EMAIL_KINDS_GROUP = "syndicate.email_kinds"
HOOKS_GROUP = "syndicate.hooks"
EMAIL_BACKENDS_GROUP = "syndicate.email_backends"
_REINSTALL = "The package metadata is missing or stale: reinstall it (`pip install -e .`, or `make .venv/.installed`)."


def register_channel(name: str, factory: Callable) -> None:
    """Add a channel that is not declared as an entry point (tests, plugins)."""
    _channels[name] = factory


def register_email_kind(kind: str, builder: Callable) -> None:
    """builder(conn, settings, row) -> pipeline.delivery.email.channel.OutgoingEmail | None.
    None means: do not send (the recipient left or was suppressed since composing).
    For kinds not declared as entry points (tests, plugins)."""
    _email_kinds[kind] = builder


def _declared(group: str, name: str) -> Any | None:
    for ep in entry_points(group=group, name=name):
        return ep.load()
    return None


def _load_plugins() -> None:
    # SYNDICATE_DELIVERY_PLUGINS=module.a,module.b: modules that call register_* (tests'
    # subprocesses, benchmarks); explicit, never implied by importing delivery.
    for module in filter(None, (m.strip() for m in os.environ.get("SYNDICATE_DELIVERY_PLUGINS", "").split(","))):
        importlib.import_module(module)


class NotRegistered(ConfigError, KeyError):
    """No channel or email kind by that name (a KeyError too, for callers that skip a row)."""


def _find(group: str, registry: dict[str, Callable], name: str, what: str) -> Callable:
    found = registry.get(name) or _declared(group, name)
    if found is None:
        _load_plugins()
        found = registry.get(name)
    if found is None:
        known = sorted({ep.name for ep in entry_points(group=group)} | set(registry))
        raise NotRegistered(
            f"no {what} {name!r}", hint=f"Known: {', '.join(known) or 'none'}. " + ("" if known else _REINSTALL)
        )
    registry.setdefault(name, found)
    return found


def channel_factory(name: str) -> Callable:
    return _find(CHANNELS_GROUP, _channels, name, "handler for delivery channel")


def email_builder(kind: str) -> Callable:
    return _find(EMAIL_KINDS_GROUP, _email_kinds, kind, "message builder for email kind")


def email_backend(name: str) -> Callable:
    """The sender class for `email.backend` (smtp; maildir is built in)."""
    return _find(EMAIL_BACKENDS_GROUP, {}, name, "email backend")


@functools.cache
def recipients() -> Recipients:
    """The subscriber side's hook (see `Recipients`)."""
    hook = _declared(HOOKS_GROUP, "recipients")
    if hook is None:
        raise ConfigError("no `recipients` hook is installed", hint=_REINSTALL)
    return hook


class Events(Protocol):
    """The hook stages call to announce a transition to outgoing event endpoints
    (implemented by pipeline.partners.outgoing; EVT-2)."""

    def emit(self, conn: Connection, settings: Any, event_type: str, data: dict, *, key: str) -> int: ...


@functools.cache
def events_hook() -> Events:
    hook = _declared(HOOKS_GROUP, "events")
    if hook is None:
        raise ConfigError("no `events` hook is installed", hint=_REINSTALL)
    return hook


def emit_event(conn: Connection, settings: Any, event_type: str, data: dict, *, key: str) -> int:
    """Queue `event_type` for every endpoint subscribed to it, in the caller's
    transaction: the event is queued exactly when the change it reports commits
    (EVT-2). `key` names the transition once (the same transition seen twice queues
    nothing new). Returns how many rows were queued; 0 when no endpoint is configured."""
    if not getattr(settings, "event_endpoints", None):
        return 0
    return events_hook().emit(conn, settings, event_type, data, key=key)


def record(engine: Engine, outcomes: Iterable[Outcome], worker: str) -> dict[str, int]:
    """Write the outcomes of one batch in one transaction; counts by status.

    Every write is conditional on this worker still holding the claim: an outcome
    whose row another worker took over (our lease ran out) changes nothing and is
    counted as `lost`, like the `lost` outcome a handler returns for a row it did not
    send because its lease was gone (issue 19, item 1)."""
    counts: dict[str, int] = {}
    outcomes = list(outcomes)

    def count(status: str, written: bool = True) -> None:
        key = status if written else "lost"
        counts[key] = counts.get(key, 0) + 1

    with engine.begin() as conn:
        # the common case, every message accepted, is one executemany
        sent = [(o.delivery_id, o.answer) for o in outcomes if o.status == "sent"]
        written = outbox.mark_sent_many(conn, sent, worker=worker)
        if sent:
            missing = len(sent) - written if written >= 0 else 0
            if len(sent) > missing:
                counts["sent"] = len(sent) - missing
            if missing:
                counts["lost"] = missing
        for o in outcomes:
            if o.status == "sent":
                continue
            if o.status == "retry":
                ok = outbox.mark_retry(
                    conn,
                    o.delivery_id,
                    error=o.error,
                    answer=o.answer,
                    next_attempt_at=o.next_attempt_at,
                    spend_attempt=o.spend_attempt,
                    worker=worker,
                )
            elif o.status in ("failed", "suppressed", "dead"):
                ok = outbox.mark_failed(
                    conn, o.delivery_id, error=o.error, answer=o.answer, state=o.status, worker=worker
                )
            elif o.status == "release":
                ok = outbox.release(conn, o.delivery_id, worker=worker, not_before=o.next_attempt_at, error=o.error)
            elif o.status == "lost":
                ok = False
            else:
                raise ValueError(f"unknown outcome {o.status!r}")
            count(o.status, ok)
    return counts
