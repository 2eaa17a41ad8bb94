"""What the webhook and Micropub pushers share: reading partner state before a push,
turning the answer into an outbox Outcome, the circuit breaker, the attempt log.

Per row: the partner must be configured, enabled, not disabled (410), not paused by
the circuit breaker and not throttled (429) - otherwise the row is released untouched
until then, so nothing is lost and other partners go on. After a failure the rest of
that partner's rows in the batch are released too: a partner that just timed out
costs one timeout per batch, not one per row.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import random
import time

from sqlalchemy import select

from pipeline.delivery import Outcome
from pipeline.errors import SyndicateError
from pipeline.partners import state
from pipeline.partners.config import Partner, partners
from pipeline.partners.http import Answer, Verdict, classify, make_session, retry_delay
from pipeline.store.schema import partner_attempts
from pipeline.timeutil import utcnow

log = logging.getLogger(__name__)

# Test seam for the crash test: sleep this many seconds after a partner's answer has
# arrived and before anything is written, so a test can SIGKILL the worker right there.
PAUSE_AFTER_ANSWER_ENV = "SYNDICATE_TEST_PAUSE_AFTER_PARTNER_ANSWER"


class NotReady(SyndicateError):
    """The partner cannot be pushed to until the operator acts (missing secret, bad secret)."""


class PartnerChannel:
    channel = ""

    def __init__(self, settings, engine):
        self.settings = settings
        self.engine = engine
        self.partners = {p.name: p for p in partners(settings)}
        self.push_settings = settings.partner_push
        self._sessions: dict[str, object] = {}
        self.rng = random.Random()

    # -- subclass API
    def push(self, partner: Partner, row: dict) -> tuple[Answer | None, str]:
        """Send one row. Returns (answer, note); answer None means nothing had to be sent."""
        raise NotImplementedError

    def judge(self, partner: Partner, row: dict, answer: Answer) -> Verdict:
        return classify(answer, now=utcnow(), retry_after_cap=dt.timedelta(seconds=self.push_settings.retry_after_max))

    def after_success(self, partner: Partner, row: dict, answer: Answer) -> str:
        """Bookkeeping after a 2xx (Micropub: keep the Location); returns a note for the answer."""
        return ""

    # -- shared
    def session(self, partner: Partner):
        s = self._sessions.get(partner.name)
        if s is None:
            s = self._sessions[partner.name] = make_session(partner, self.settings.site.base_url)
        return s

    def close(self) -> None:
        for s in self._sessions.values():
            s.close()
        self._sessions.clear()

    @property
    def pause(self) -> dt.timedelta:
        return dt.timedelta(minutes=self.push_settings.pause_minutes)

    def send(self, rows: list[dict]) -> list[Outcome]:
        held: dict[str, dt.datetime] = {}  # partner -> release its remaining rows until
        outcomes = []
        for row in rows:
            try:
                outcomes.append(self._send_one(row, held))
            except Exception as exc:  # a bug must not lose the row or stop the batch
                log.exception("partner push %s (delivery %s) failed unexpectedly", row.get("target"), row["id"])
                outcomes.append(
                    Outcome(
                        row["id"],
                        "retry",
                        error=f"internal error: {exc!r}",
                        next_attempt_at=utcnow() + dt.timedelta(minutes=5),
                    )
                )
        return outcomes

    def _send_one(self, row: dict, held: dict) -> Outcome:
        name, now = row["target"], utcnow()
        partner = self.partners.get(name)
        if partner is None or partner.kind != self.channel:
            return Outcome(
                row["id"],
                "failed",
                error=f"partner {name!r} is not configured as a {self.channel} partner; "
                "add it back to the config and run `syndicate partners retry "
                f"{name}`",
            )
        delivered = self._already_delivered(row)
        if delivered:
            return Outcome(
                row["id"],
                "sent",
                answer=f"already delivered at {delivered:%Y-%m-%d %H:%M:%S} UTC "
                "(found in the attempt log after a worker stopped)",
            )
        if name in held:
            return Outcome(row["id"], "release", next_attempt_at=held[name])
        if not partner.enabled:
            held[name] = now + self.pause
            return Outcome(row["id"], "release", next_attempt_at=held[name])
        with self.engine.connect() as conn:
            st = state.get_state(conn, name)
        why, until = state.gate(st, now)
        if why != "go":
            held[name] = until or now + self.pause
            return Outcome(row["id"], "release", next_attempt_at=held[name])
        try:
            answer, note = self.push(partner, row)
        except NotReady as exc:
            state.alert(self.engine, name, str(exc))
            held[name] = now + self.pause
            return Outcome(row["id"], "release", next_attempt_at=held[name])
        pause_after = os.environ.get(PAUSE_AFTER_ANSWER_ENV)
        if pause_after:
            time.sleep(float(pause_after))
        return self._settle(partner, row, answer, note, held)

    def _already_delivered(self, row: dict):
        """A claim that expired because its worker died after the partner's 2xx was logged
        but before the outbox row was marked sent: do not send it again."""
        message_id = (row.get("payload") or {}).get("message_id", "")
        with self.engine.connect() as conn:
            return conn.execute(
                select(partner_attempts.c.attempted_at)
                .where(
                    partner_attempts.c.delivery_id == row["id"],
                    partner_attempts.c.outcome == "sent",
                    partner_attempts.c.message_id == message_id,
                )
                .limit(1)
            ).scalar()

    def _log(self, partner: Partner, row: dict, outcome: str, answer: Answer | None, error: str = "") -> None:
        payload = row.get("payload") or {}
        state.log_attempt(
            self.engine,
            partner=partner.name,
            kind=row["kind"],
            outcome=outcome,
            answer=answer,
            delivery_id=row["id"],
            message_id=payload.get("message_id", ""),
            article_id=row.get("article_id"),
            error=error,
        )

    def _settle(self, partner: Partner, row: dict, answer: Answer | None, note: str, held: dict) -> Outcome:
        rid, now = row["id"], utcnow()
        if answer is None:  # nothing to send (e.g. delete of something never created)
            self._log(partner, row, "sent", None, note)
            return Outcome(rid, "sent", answer=note)
        verdict = self.judge(partner, row, answer)
        if verdict.kind == "sent":
            # after_success first (Micropub keeps the Location), then the attempt log,
            # which a successor reads to avoid a second send if we die before the outbox
            # row is marked sent.
            extra = self.after_success(partner, row, answer)
            self._log(partner, row, "sent", answer)
            state.record_success(self.engine, partner.name)
            return Outcome(rid, "sent", answer=(answer.saved() + (f"\n{extra}" if extra else ""))[:2000])
        if verdict.kind in ("failed", "refused", "alert"):
            if verdict.kind != "failed":
                state.alert(self.engine, partner.name, verdict.error)
            self._log(partner, row, "failed", answer, verdict.error)
            return Outcome(rid, "failed", error=verdict.error, answer=answer.saved())
        if verdict.kind == "gone":
            state.disable(self.engine, partner.name, f"{verdict.error} (delivery {rid})")
            self._log(partner, row, "disabled", answer, verdict.error)
            held[partner.name] = now + self.pause
            return Outcome(
                rid,
                "retry",
                error=verdict.error,
                answer=answer.saved(),
                next_attempt_at=held[partner.name],
                spend_attempt=False,
            )
        attempts = (row.get("attempts") or 0) + 1
        if verdict.kind == "throttle":
            # no Retry-After: a minute at least (no attempt is spent, so the schedule does not advance)
            wait = verdict.retry_after or max(
                retry_delay(partner.retry_schedule, 1, 0) or dt.timedelta(0), dt.timedelta(minutes=1)
            )
            until = now + wait
            state.record_throttle(self.engine, partner.name, until)
            self._log(partner, row, "throttled", answer, verdict.error)
            held[partner.name] = until
            return Outcome(
                rid, "retry", error=verdict.error, answer=answer.saved(), next_attempt_at=until, spend_attempt=False
            )
        # retry: 5xx, 3xx, timeouts, connection errors
        delay = retry_delay(partner.retry_schedule, attempts, self.push_settings.retry_jitter, self.rng)
        opened = state.record_failure(
            self.engine, partner.name, verdict.error, threshold=partner.max_consecutive_failures, pause=self.pause
        )
        if delay is None:
            self._log(partner, row, "dead", answer, verdict.error)
            log.warning(
                "partner %s: delivery %s dead-lettered after %d attempts: %s; "
                "`syndicate partners retry %s` queues it again",
                partner.name,
                rid,
                attempts,
                verdict.error,
                partner.name,
            )
            outcome = Outcome(
                rid, "dead", error=f"gave up after {attempts} attempts: {verdict.error}", answer=answer.saved()
            )
        else:
            if verdict.retry_after is not None:
                delay = verdict.retry_after  # 503 with Retry-After: the partner said when
            self._log(partner, row, "retry", answer, verdict.error)
            outcome = Outcome(rid, "retry", error=verdict.error, answer=answer.saved(), next_attempt_at=now + delay)
        first_step = partner.retry_schedule[0] if partner.retry_schedule else dt.timedelta(seconds=5)
        held[partner.name] = (now + self.pause) if opened else (now + first_step)
        return outcome
