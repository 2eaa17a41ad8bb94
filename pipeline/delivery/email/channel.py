"""The email channel: build each row's message, check suppression, hand it to a sender.

Senders are chosen by short name in `[email] backend`: `maildir` (the default; real
files in a Maildir) and `smtp` (pipeline.delivery.email.smtp). A sender has
`send(message) -> str` returning the server's answer, and raises `SendFailure` with a
classification when it cannot.

Per batch, `EmailChannel.send(rows)`:
1. releases everything when the channel is paused, and reserves hour/day quota
   (rows beyond it are released until the window has room);
2. checks the suppression list once for the batch, at send time (BULK-4);
3. builds each message with the kind's builder, sets the VERP envelope sender
   (BNC-1), makes line ends CRLF (SMTP-7) and DKIM-signs last (DKIM-4);
4. sends over `delivery.smtp_connections` lanes (threads, one connection each) under
   the token bucket, journalling each 250 at once (pipeline.delivery.journal);
5. turns every answer into an Outcome (pipeline.delivery.email.classify): retry with the
   configured backoff, throttle (no attempt spent, that destination domain slowed),
   hard bounce (address suppressed), recipient policy (5.7.x at RCPT: that recipient
   failed, counted as a soft bounce), policy (sender-level: channel paused, recipient
   not blamed), outage (the server cannot be reached: no sending for a backoff).

Before each message a lane asks `holds_lease(id)` (set by the worker: a dictionary
look-up, pipeline.delivery.lease) and skips a row whose lease this worker lost.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import hashlib
import itertools
import logging
import os
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pipeline.config import Settings
from pipeline.delivery import Outcome, email_backend, email_builder, recipients
from pipeline.errors import ConfigError
from pipeline.timeutil import utcnow

log = logging.getLogger(__name__)


@dataclasses.dataclass
class OutgoingEmail:
    envelope_from: str
    recipients: list[str]
    data: bytes  # the exact bytes to send, CRLF line endings (SMTP-7)
    idempotency_key: str = ""
    # True when the builder knows `data` has CRLF line ends only (its skeleton and values
    # were checked piece by piece): the channel then skips scanning the whole message
    # again. False (the default) means: the channel makes sure (`to_crlf`).
    crlf: bool = False
    # True when the builder knows no line of `data` starts with "." (so the SMTP sender
    # need not scan it for dot-stuffing, RFC 5321 4.5.2). Same default: the sender scans.
    dot_free: bool = False


@dataclasses.dataclass
class SendResult:
    """What a sender's `send_result` returns: the server's final answer, and the
    recipients it refused (address -> (code, text)) while accepting the rest."""

    answer: str
    refused: dict[str, tuple[int, str]]


class SendFailure(Exception):
    """kind: transient | throttle | hard_bounce | recipient_policy | policy | permanent | connection
    stage: connect | auth | mail | rcpt | data (where the answer came)."""

    def __init__(self, kind: str, message: str, code: int | None = None, refused: dict | None = None, stage: str = ""):
        super().__init__(message)
        self.kind = kind
        self.code = code
        self.refused = refused or {}
        self.stage = stage


class MaildirSender:
    """Delivers into a Maildir. The file name derives from the delivery's idempotency
    key, and the write is tmp/ + rename into new/, so a re-send after a crash replaces
    the same file: the Maildir never holds a message twice."""

    name = "maildir"

    def __init__(self, path: Path):
        self.path = Path(path)
        for sub in ("tmp", "new", "cur"):
            (self.path / sub).mkdir(parents=True, exist_ok=True)
        self.host = socket.gethostname().replace("/", "_").replace(":", "_")

    def send(self, message: OutgoingEmail) -> str:
        key = message.idempotency_key or hashlib.sha256(message.data).hexdigest()
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]
        name = f"{digest}.{self.host}"
        if (self.path / "new" / name).exists() or any((self.path / "cur").glob(name + ":*")):
            return f"250 already in maildir as {name}"
        tmp = self.path / "tmp" / f"{name}.{os.getpid()}.{time.monotonic_ns()}"
        with open(tmp, "wb") as fh:
            fh.write(message.data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path / "new" / name)
        return f"250 delivered to maildir as {name}"

    def close(self) -> None:
        pass


_senders: dict[str, type] = {"maildir": MaildirSender}


def register_sender(name: str, cls) -> None:
    _senders[name] = cls


def make_sender(settings: Settings):
    backend = settings.email.backend
    if backend == "maildir":
        return MaildirSender(settings.path("email.maildir"))
    try:
        # the smtp sender is an entry point (syndicate.email_backends), not an import here
        cls = _senders.get(backend) or email_backend(backend)
    except KeyError:
        raise ConfigError(
            f"unknown email backend {backend!r}", hint=f"Set [email] backend to one of: {', '.join(sorted(_senders))}."
        ) from None
    return cls.from_settings(settings) if hasattr(cls, "from_settings") else cls(settings)


_BARE_LF = re.compile(rb"\r?\n")


def to_crlf(data: bytes) -> bytes:
    """Every line ending CRLF (SMTP-7); a no-op (one C-speed count) when it already is."""
    if data.count(b"\n") == data.count(b"\r\n"):
        return data
    return _BARE_LF.sub(b"\r\n", data)


@dataclasses.dataclass
class _Job:
    row: dict
    message: OutgoingEmail


@dataclasses.dataclass
class _Prepared:
    rows: list[dict]
    outcomes: dict = dataclasses.field(default_factory=dict)
    jobs: list = dataclasses.field(default_factory=list)
    granted: int = 0
    state: object = None


# Failures that say something about the channel (count towards pausing it); a hard
# bounce, a recipient's policy refusal or a throttle says something about one
# recipient or the pace.
_CHANNEL_FAILURES = ("connection", "transient", "permanent", "policy")
# Failures that are final for the message: journalled at once, like a 250, so a
# worker killed before its commit does not try the address again (issue 19, item 8).
_FINAL_FAILURES = ("hard_bounce", "permanent", "recipient_policy")


class _Lost:
    """Not sent: this worker's lease on the row ran out (another worker may have it)."""


@dataclasses.dataclass
class _Deferred:
    """Not sent now: its destination domain is slowed down; due again in `seconds`."""

    seconds: float


def recipient_domain(address: str) -> str:
    return address.rpartition("@")[2].strip().lower()


def _build_batches(conn, settings: Settings, rows: list[dict]) -> dict:
    """{row id: message | None | exception} for the kinds whose builder has `many`
    (builds a whole batch at once, issue 15 item 1); the other rows build one by one."""
    by_kind: dict[str, list[dict]] = {}
    for row in rows:
        by_kind.setdefault(row["kind"], []).append(row)
    built: dict = {}
    for kind, group in by_kind.items():
        try:
            many = getattr(email_builder(kind), "many", None)
        except KeyError:
            continue
        if many is None:
            continue
        try:
            built.update(zip([r["id"] for r in group], many(conn, settings, group), strict=True))
        except Exception:  # the rows then build one by one, each failing on its own
            log.warning(
                "building %d %r messages at once failed; building them one by one",
                len(group),
                kind,
                exc_info=log.isEnabledFor(logging.DEBUG),
            )
    return built


class EmailChannel:
    channel = "email"

    def __init__(self, settings: Settings, engine, sender=None):
        from pipeline.delivery.email.dkim import signer_from_settings
        from pipeline.delivery.journal import journal_dir
        from pipeline.delivery.ratelimit import TokenBucket

        self.settings = settings
        self.engine = engine
        d = settings.delivery
        if sender is not None:
            self.lanes = [sender]
        else:
            n = max(1, d.smtp_connections) if settings.email.backend != "maildir" else 1
            self.lanes = [make_sender(settings) for _ in range(n)]
        self.sender = self.lanes[0]
        self.signer = signer_from_settings(settings)
        self.bucket = TokenBucket(d.rate_per_second)
        # one journal file per delivered batch, removed once its outcomes are committed
        self.journal_folder = journal_dir(settings) if d.journal else None
        self._journals: collections.deque = collections.deque()
        self.pool = ThreadPoolExecutor(len(self.lanes), thread_name_prefix="smtp-lane") if len(self.lanes) > 1 else None
        self.lock = threading.Lock()
        self.live_workers = 1
        self._bounce_domain: str | None = None
        self._sent_in_batch = 0
        self._batch_started = time.monotonic()
        self.holds_lease = lambda delivery_id: True  # the worker sets its LeaseKeeper's check
        self.outage = ""  # set when the server could not be reached (read by the worker)
        self.domain_buckets: dict[str, object] = {}  # slowed-down destination domains
        self._policy_run: list[str] = []  # domains of 5.7.x RCPT refusals in a row

    # --- the batch -------------------------------------------------------------------

    def send(self, rows: list[dict]) -> list[Outcome]:
        return self.deliver(self.prepare(rows))

    def prepare(self, rows: list[dict]) -> _Prepared:
        """Steps 1-3: quota, suppression, building. The worker prepares the next batch
        while the lanes still send the previous one."""
        from pipeline.delivery import channels, ratelimit

        batch = _Prepared(rows)
        if not rows:
            return batch
        batch.state = channels.get_state(self.engine, self.channel)
        if batch.state.paused:
            return batch
        d = self.settings.delivery
        batch.granted, retry_at = ratelimit.reserve(
            self.engine, self.channel, len(rows), per_hour=d.max_per_hour, per_day=d.max_per_day
        )
        for r in rows[batch.granted :]:
            batch.outcomes[r["id"]] = Outcome(
                r["id"], "release", next_attempt_at=retry_at, error="hourly or daily cap reached"
            )
        batch.jobs = self._prepare(rows[: batch.granted], batch.outcomes)
        return batch

    def deliver(self, batch: _Prepared) -> list[Outcome]:
        """Steps 4-5: send the prepared batch and judge every answer."""
        from pipeline.delivery import channels, ratelimit
        from pipeline.delivery.journal import Journal

        if not batch.rows:
            return []
        state = channels.get_state(self.engine, self.channel) if batch.jobs else batch.state
        if state is None or state.paused:  # paused since it was prepared: give it all back
            with self.lock:
                self._journals.append(None)  # committed() pops one entry per delivered batch
            if batch.granted and (self.settings.delivery.max_per_hour or self.settings.delivery.max_per_day):
                ratelimit.refund(self.engine, self.channel, batch.granted)
            return [Outcome(r["id"], "release") for r in batch.rows]
        self._tune_rate(state)
        self._tune_domains()
        journal = Journal(self.journal_folder) if self.journal_folder is not None else None
        with self.lock:
            self._journals.append(journal)
        results = self._dispatch(batch.jobs, journal)
        attempted = sum(1 for r in results if r is not None)
        d = self.settings.delivery
        if batch.granted - attempted > 0 and (d.max_per_hour > 0 or d.max_per_day > 0):
            ratelimit.refund(self.engine, self.channel, batch.granted - attempted)
        try:
            self._judge(batch.jobs, results, batch.outcomes, state)
        except Exception as exc:  # judging must never leave rows in `sending` (issue 18, item 7)
            log.error("judging the answers of a batch failed: %s", exc)
            log.debug("judging failed", exc_info=True)
            self._judge_fallback(batch.jobs, results, batch.outcomes, exc)
        return [batch.outcomes[r["id"]] for r in batch.rows]

    def send_one(self, row: dict) -> Outcome:
        return self.send([row])[0]

    def committed(self) -> None:
        """The worker committed the oldest delivered batch's outcomes: its journal can go."""
        with self.lock:
            journal = self._journals.popleft() if self._journals else None
        if journal is not None:
            journal.committed()
            journal.close()

    def _tune_rate(self, state) -> None:
        from pipeline.delivery.workers import live_worker_count

        configured = self.settings.delivery.rate_per_second
        factor = state.effective_rate_factor()
        if configured > 0:
            try:
                self.live_workers = max(1, live_worker_count(self.engine))
            except Exception:  # the share is an optimisation; never fail a batch on it
                self.live_workers = 1
            self.bucket.set_rate(configured / self.live_workers)
        elif factor == 1:
            self.bucket.set_rate(0)  # unlimited again once the throttle window is over
        elif self.bucket.base_rate <= 0 and state.throttle_base_per_minute:
            self.bucket.set_rate(state.throttle_base_per_minute / 60.0)  # another worker was throttled
        self.bucket.slow_down(factor)

    def _base_rate(self) -> float:
        """Messages per second this worker may send to one domain at full pace."""
        configured = self.settings.delivery.rate_per_second
        if configured > 0:
            return configured / max(1, self.live_workers)
        elapsed = max(time.monotonic() - self._batch_started, 0.001)
        return max(10.0, self._sent_in_batch / elapsed) if self._sent_in_batch else 10.0

    def _tune_domains(self) -> None:
        """One token bucket per slowed-down destination domain, from the shared state."""
        from pipeline.delivery import channels
        from pipeline.delivery.ratelimit import TokenBucket

        throttles = channels.domain_throttles(self.engine, self.channel)
        with self.lock:
            for domain in list(self.domain_buckets):
                if domain not in throttles:
                    del self.domain_buckets[domain]
            for domain, t in throttles.items():
                bucket = self.domain_buckets.get(domain)
                if bucket is None:
                    base = (
                        (t.base_per_minute / 60.0)
                        if t.base_per_minute and self.settings.delivery.rate_per_second <= 0
                        else self._base_rate()
                    )
                    bucket = self.domain_buckets[domain] = TokenBucket(base, burst=1)
                bucket.slow_down(t.factor())

    def _domain_turn(self, address: str) -> float:
        """0 when a message to `address` may go now (after waiting for its domain's
        token, at most a second); else the seconds until it may (the row is deferred
        rather than holding a lane that other domains' messages could use)."""
        bucket = self.domain_buckets.get(recipient_domain(address))
        if bucket is None:
            return 0.0
        wait = bucket.wait_time()
        if wait > 1.0:
            return wait
        bucket.take()
        return 0.0

    def _slow_domain_now(self, address: str) -> None:
        from pipeline.delivery.ratelimit import TokenBucket

        domain = recipient_domain(address)
        with self.lock:
            bucket = self.domain_buckets.get(domain)
            if bucket is None:
                bucket = self.domain_buckets[domain] = TokenBucket(self._base_rate(), burst=1)
            bucket.slow_down(min(16, bucket.factor * 2))

    # --- building --------------------------------------------------------------------

    def _prepare(self, rows: list[dict], outcomes: dict[int, Outcome]) -> list[_Job]:
        jobs: list[_Job] = []
        if not rows:
            return jobs
        with self.engine.connect() as conn:
            suppressed = recipients().suppressed_among(conn, [r["target"] for r in rows if r["kind"] != "confirm"])
            built = _build_batches(conn, self.settings, [r for r in rows if not suppressed.get(r["target"].lower())])
            for row in rows:
                if conn.in_transaction():
                    # a read-only transaction; ending it between builds lets other writers in
                    # (SQLite begins every transaction IMMEDIATE: a lease renewal would wait)
                    conn.rollback()
                rid = row["id"]
                reason = suppressed.get(row["target"].lower()) if row["kind"] != "confirm" else None
                if reason:
                    outcomes[rid] = Outcome(rid, "suppressed", error=f"{row['target']} is suppressed: {reason}")
                    continue
                try:
                    builder = email_builder(row["kind"])
                except KeyError:
                    outcomes[rid] = Outcome(rid, "failed", error=f"no message builder for kind {row['kind']!r}")
                    continue
                try:
                    message = built[rid] if rid in built else builder(conn, self.settings, row)
                    if isinstance(message, Exception):
                        raise message
                    if message is not None:
                        self._finalise(row, message)
                except Exception as exc:  # a bad row must not stop the batch
                    log.debug("building delivery %s failed", rid, exc_info=True)
                    outcomes[rid] = Outcome(
                        rid, "failed", error=f"could not build the message for {row['target']} (delivery {rid}): {exc}"
                    )
                    continue
                if message is None:
                    outcomes[rid] = Outcome(rid, "suppressed", error="recipient no longer subscribed")
                    continue
                jobs.append(_Job(row, message))
        return jobs

    def _finalise(self, row: dict, message: OutgoingEmail) -> None:
        from pipeline.delivery.email import verp

        message.idempotency_key = row["idempotency_key"]
        if not message.recipients:
            message.recipients = [row["target"]]
        for address in [message.envelope_from, *message.recipients]:
            if "\r" in address or "\n" in address:  # MSG-5: never let an address add a line
                raise ValueError(f"address {address!r} contains a line break")
        if self._bounce_domain is None:
            self._bounce_domain = verp.bounce_domain(self.settings)
        bounce_address = verp.encode(self.settings, row["id"], self._bounce_domain) if self._bounce_domain else ""
        if bounce_address:
            message.envelope_from = bounce_address
        if not message.crlf:
            message.data = to_crlf(message.data)
            message.crlf, message.dot_free = True, False
        if self.signer is not None:
            message.data = self.signer.sign(message.data)  # last: nothing changes after this
            message.dot_free = False  # a new header on top: the sender scans it all

    # --- sending ---------------------------------------------------------------------

    def _dispatch(self, jobs: list[_Job], journal=None) -> list:
        """Send every job over the lanes; per job: SendResult, SendFailure, or None
        when it was not attempted (channel paused mid-batch, lane lost its server)."""
        results: list = [None] * len(jobs)
        if not jobs:
            return results
        stop = threading.Event()
        counter = itertools.count()
        self._sent_in_batch = 0
        self._batch_started = time.monotonic()

        def lane(sender) -> None:
            while not stop.is_set():
                i = next(counter)
                if i >= len(jobs):
                    return
                job = jobs[i]
                rid = job.row["id"]
                if not self.holds_lease(rid):  # checked before every message: cheap
                    results[i] = _Lost()
                    continue
                wait = self._domain_turn(job.row["target"])
                if wait:
                    results[i] = _Deferred(wait)
                    continue
                self.bucket.take()
                if stop.is_set():
                    return
                if not self.holds_lease(rid):  # the token may have taken a while
                    results[i] = _Lost()
                    continue
                try:
                    result = self._send_on(sender, job.message)
                except SendFailure as exc:
                    results[i] = exc
                    if exc.kind == "policy":
                        stop.set()
                    elif exc.kind == "throttle":
                        if exc.stage == "connect":
                            self._slow_down_now()  # the server itself: the whole channel
                        else:
                            self._slow_domain_now(job.row["target"])
                    elif exc.kind == "connection" and exc.stage == "connect":
                        return  # this lane cannot reach the server; leave the rest be
                    elif exc.kind in _FINAL_FAILURES and journal is not None:
                        journal.failed(rid, exc.kind, str(exc))
                    continue
                except Exception as exc:  # an unexpected error is one message's failure
                    log.debug("sending delivery %s failed", rid, exc_info=True)
                    results[i] = SendFailure("transient", f"unexpected error while sending: {exc!r}")
                    continue
                if journal is not None:
                    journal.sent(rid, result.answer)
                results[i] = result
                self._sent_in_batch += 1

        if self.pool is None:
            lane(self.lanes[0])
        else:
            for future in [self.pool.submit(lane, s) for s in self.lanes]:
                future.result()
        return results

    @staticmethod
    def _send_on(sender, message: OutgoingEmail):
        if hasattr(sender, "send_result"):
            return sender.send_result(message)
        return SendResult(sender.send(message), {})

    def _slow_down_now(self) -> None:
        with self.lock:
            if self.bucket.base_rate <= 0:
                elapsed = max(time.monotonic() - self._batch_started, 0.001)
                # no configured rate: slow down from the pace we had (at least 10/s)
                self.bucket.set_rate(max(10.0, self._sent_in_batch / elapsed))
            self.bucket.slow_down(min(16, self.bucket.factor * 2))

    # --- judging the answers ---------------------------------------------------------

    def _judge(self, jobs: list[_Job], results: list, outcomes: dict[int, Outcome], state) -> None:
        from pipeline.delivery import channels
        from pipeline.delivery.email.classify import classify, retry_delay

        d = self.settings.delivery
        now = utcnow()
        later = now + dt.timedelta(seconds=d.throttle_seconds)
        bounced: dict[str, tuple[str, int | None]] = {}  # address -> (answer, delivery id)
        refused_by_policy: list[tuple[str, str, int]] = []  # (address, answer, delivery id)
        policy_error = ""
        channel_throttled = False
        throttled_domains: set[str] = set()
        successes = 0
        run_of_failures = 0
        attempted = [r for r in results if r is not None and not isinstance(r, (_Lost, _Deferred))]
        unreachable = [
            r for r in attempted if isinstance(r, SendFailure) and r.kind == "connection" and r.stage == "connect"
        ]
        outage = None
        if unreachable and len(unreachable) == len(attempted):
            # not one lane reached the server: an outage, not these messages' failure
            outage = channels.outage(
                self.engine, self.channel, str(unreachable[0]), backoff_seconds=d.outage_backoff_seconds
            )
            self.outage = (
                f"the email channel cannot reach its mail server: {unreachable[0]}; sending is paused "
                f"until {outage.outage_until:%H:%M:%S} UTC (try {outage.outage_count}), then tried again"
            )
        # not attempted: right away when the channel paused (it gates them), else after a
        # short wait (the lanes lost the server)
        paused = any(isinstance(r, SendFailure) and r.kind == "policy" for r in results)
        release_at = now if paused else outage.outage_until if outage else now + dt.timedelta(seconds=30)
        for job, result in zip(jobs, results):
            row, rid = job.row, job.row["id"]
            target = row["target"].lower()
            if isinstance(result, _Lost):
                outcomes[rid] = Outcome(rid, "lost")
                continue
            if isinstance(result, _Deferred):
                outcomes[rid] = Outcome(rid, "release", next_attempt_at=now + dt.timedelta(seconds=result.seconds))
                continue
            if result is None or (outage and result in unreachable):
                outcomes[rid] = Outcome(
                    rid, "release", next_attempt_at=release_at, error=f"not sent: {self.outage}" if outage else ""
                )
                continue
            if isinstance(result, SendFailure):
                failure = result
            else:
                refused = {k.lower(): v for k, v in result.refused.items()}
                for address, (code, text) in refused.items():
                    if classify(code, text, "rcpt") == "hard_bounce":
                        bounced[address] = (f"{code} {text}", rid)
                if target not in refused:
                    successes += 1
                    run_of_failures = 0
                    self._policy_run.clear()
                    note = f" (refused: {', '.join(f'{a} {c}' for a, (c, _) in refused.items())})" if refused else ""
                    outcomes[rid] = Outcome(rid, "sent", answer=result.answer + note)
                    continue
                code, text = refused[target]
                failure = SendFailure(
                    classify(code, text, "rcpt"), f"{row['target']} refused: {code} {text}", code=code, stage="rcpt"
                )
            answer = str(failure.code or "")
            kind = failure.kind
            if kind in _CHANNEL_FAILURES:
                run_of_failures += 1
            if kind == "throttle":
                if failure.stage == "connect":
                    channel_throttled = True
                else:
                    throttled_domains.add(recipient_domain(target))
                outcomes[rid] = Outcome(
                    rid,
                    "retry",
                    error=f"throttled: {failure}",
                    answer=answer,
                    next_attempt_at=later,
                    spend_attempt=False,
                )
            elif kind == "policy":
                policy_error = policy_error or str(failure)
                outcomes[rid] = Outcome(
                    rid,
                    "retry",
                    error=f"not sent, channel paused: {failure}",
                    answer=answer,
                    next_attempt_at=now,
                    spend_attempt=False,
                )
            elif kind == "recipient_policy":
                refused_by_policy.append((target, str(failure), rid))
                self._policy_run.append(recipient_domain(target))
                outcomes[rid] = Outcome(
                    rid,
                    "failed",
                    answer=answer,
                    error=f"refused for this recipient on policy grounds (5.7.x at RCPT), "
                    f"counted as a soft bounce: {failure}",
                )
            elif kind == "hard_bounce":
                bounced[target] = (str(failure), rid)
                outcomes[rid] = Outcome(
                    rid, "failed", answer=answer, error=f"hard bounce, address suppressed: {failure}"
                )
            elif kind == "permanent":
                outcomes[rid] = Outcome(rid, "failed", error=str(failure), answer=answer)
            else:  # transient, connection
                delay = retry_delay(d.retry_schedule, (row.get("attempts") or 0) + 1)
                if delay is None:
                    outcomes[rid] = Outcome(
                        rid,
                        "dead",
                        answer=answer,
                        error=f"gave up after {(row.get('attempts') or 0) + 1} attempts: {failure}",
                    )
                else:
                    outcomes[rid] = Outcome(
                        rid, "retry", error=str(failure), answer=answer, next_attempt_at=now + delay
                    )
        if bounced:
            self._suppress_bounced(bounced)
        if refused_by_policy:
            self._count_policy_refusals(refused_by_policy)
        for domain in sorted(throttled_domains):
            bucket = self.domain_buckets.get(domain)
            base = bucket.base_rate if bucket is not None and d.rate_per_second <= 0 else 0
            channels.throttle_domain(
                self.engine,
                self.channel,
                domain,
                d.throttle_seconds,
                base_per_minute=int(base * 60) if base > 0 else None,
            )
        if channel_throttled:
            base = self.bucket.base_rate if d.rate_per_second <= 0 else 0
            channels.throttle(
                self.engine, self.channel, d.throttle_seconds, base_per_minute=int(base * 60) if base > 0 else None
            )
        domains_in_run = set(self._policy_run)
        if d.policy_pause_domains > 0 and len(domains_in_run) >= d.policy_pause_domains and not policy_error:
            policy_error = (
                f"{len(self._policy_run)} recipients at {len(domains_in_run)} different domains in a row "
                f"refused our mail on policy grounds (5.7.x at RCPT), e.g. {refused_by_policy[-1][1]}"
                if refused_by_policy
                else "5.7.x refusals from many domains in a row"
            )
            self._policy_run.clear()
        if policy_error:
            channels.pause(
                self.engine,
                self.channel,
                f"the mail server refused us on policy grounds: {policy_error}. "
                "This is about our sending (authentication, DKIM/SPF/DMARC, reputation), "
                "not the recipients; their messages stay queued",
            )
        if run_of_failures or (successes and (state.consecutive_failures or state.outage_count)):
            channels.note_results(
                self.engine,
                self.channel,
                successes=successes,
                failures_in_a_row=run_of_failures,
                pause_after=d.max_consecutive_failures,
            )

    def _judge_fallback(self, jobs: list[_Job], results: list, outcomes: dict[int, Outcome], exc: Exception) -> None:
        """When judging raised: a row the server accepted is sent; every other row is
        failed with the error, visible in `deliveries list` (issue 18, item 7)."""
        for job, result in zip(jobs, results):
            rid = job.row["id"]
            if isinstance(result, _Lost):
                outcomes[rid] = Outcome(rid, "lost")
            elif result is not None and not isinstance(result, (SendFailure, _Deferred)):
                outcomes[rid] = Outcome(rid, "sent", answer=result.answer)
            elif result is None or isinstance(result, _Deferred):
                outcomes[rid] = Outcome(rid, "release")
            else:
                outcomes[rid] = Outcome(
                    rid,
                    "failed",
                    answer=str(result.code or ""),
                    error=f"could not judge the answer ({result}): {exc!r}; fix the cause, "
                    f"then `syndicate deliveries retry {rid}`",
                )

    def _count_policy_refusals(self, refused: list[tuple[str, str, int]]) -> None:
        from pipeline.delivery.inbound.bounces import count_soft_bounce

        for address, text, rid in refused:
            count_soft_bounce(self.settings, self.engine, address, delivery_id=rid, detail=text, source="smtp")

    def _suppress_bounced(self, bounced: dict[str, tuple[str, int | None]]) -> None:
        hook = recipients()
        with self.engine.begin() as conn:
            for address, (text, rid) in bounced.items():
                hook.suppress(conn, self.settings, address, reason="hard_bounce", source="smtp", detail=text)
                hook.log_subscriber_event(
                    conn,
                    hook.subscriber_id_for(conn, address),
                    "bounce_hard",
                    source="smtp",
                    detail={"answer": text[:500], "delivery_id": rid},
                )

    def close(self) -> None:
        for lane in self.lanes:
            try:
                lane.close()
            except Exception:  # closing must not hide the batch's result
                log.debug("closing a sender failed", exc_info=True)
        if self.pool is not None:
            self.pool.shutdown(wait=True)
        # journals never committed keep their lines: the next drain's recover() reads them
        with self.lock:
            while self._journals:
                journal = self._journals.popleft()
                if journal is not None:
                    journal.close()
