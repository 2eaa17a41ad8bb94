"""Draining the outbox: claim due rows, hand each channel's rows to its handler, record.

A channel handler (email, webhook, micropub, websub) is an object with
`send(rows) -> list[Outcome]`; handlers are registered by short name with
`register_channel(name, factory)` where `factory(settings, engine)` builds one.
The email channel looks up a *message builder* per delivery kind
(`register_email_kind("digest", builder)`), so composing stays in pipeline.digests.editions
and pipeline.subscribers.service while sending stays here.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
from typing import Callable, Iterable, Protocol

from sqlalchemy.engine import Engine

from pipeline.delivery import outbox

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


_channels: dict[str, Callable] = {}
_email_kinds: dict[str, Callable] = {}


def register_channel(name: str, factory: Callable) -> None:
    _channels[name] = factory


def channel_factory(name: str) -> Callable:
    _load_builtin_channels()
    try:
        return _channels[name]
    except KeyError:
        from pipeline.errors import ConfigError
        raise ConfigError(f"no handler for delivery channel {name!r}",
                          hint=f"Known channels: {', '.join(sorted(_channels))}.") from None


def register_email_kind(kind: str, builder: Callable) -> None:
    """builder(conn, settings, row) -> pipeline.delivery.email.channel.OutgoingEmail | None.
    None means: do not send (the recipient left or was suppressed since composing)."""
    _email_kinds[kind] = builder


def email_builder(kind: str) -> Callable:
    builder = _email_kinds.get(kind)
    if builder is None:
        _load_builtin_channels()
        builder = _email_kinds[kind]
    return builder


def _load_builtin_channels() -> None:
    # Importing a module registers what it provides; kept lazy so that importing
    # pipeline.delivery stays cheap and cycle-free.
    from pipeline.delivery.email import channel  # noqa: F401
    for module in ("pipeline.subscribers.service", "pipeline.digests.editions", "pipeline.partners"):
        try:
            __import__(module)
        except ImportError as exc:
            if exc.name != module:
                raise
    # Extra modules that register channels or email kinds (tests, benchmarks, site
    # plugins): SYNDICATE_DELIVERY_PLUGINS=module.a,module.b
    for module in filter(None, (m.strip() for m in os.environ.get("SYNDICATE_DELIVERY_PLUGINS", "").split(","))):
        __import__(module)


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
                ok = outbox.mark_retry(conn, o.delivery_id, error=o.error, answer=o.answer,
                                       next_attempt_at=o.next_attempt_at, spend_attempt=o.spend_attempt,
                                       worker=worker)
            elif o.status in ("failed", "suppressed", "dead"):
                ok = outbox.mark_failed(conn, o.delivery_id, error=o.error, answer=o.answer,
                                        state=o.status, worker=worker)
            elif o.status == "release":
                ok = outbox.release(conn, o.delivery_id, worker=worker, not_before=o.next_attempt_at,
                                    error=o.error)
            elif o.status == "lost":
                ok = False
            else:
                raise ValueError(f"unknown outcome {o.status!r}")
            count(o.status, ok)
    return counts
