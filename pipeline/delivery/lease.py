"""Keeping the leases of the rows in the air (issue 19, item 1).

A claim carries a lease (`delivery.lease_seconds`); when it runs out, another worker
may claim the row again. A batch that takes longer than the lease (slow recipients,
a throttled server, a slow partner) must therefore renew its leases *while* it is
being sent, not only between batches, or a second worker sends the same rows.

`LeaseKeeper` does three things:

- a heartbeat thread renews the leases of every row this worker holds, every
  lease/4 seconds, and learns from the answer which rows it still holds;
- `holds(id)`, the check before each message, is a dictionary look-up against a
  deadline on the monotonic clock: cheap enough to run before every send. The local
  deadline is taken *before* the renewing UPDATE and shortened by a margin, so it
  always runs out before the lease in the database does;
- rows whose renewal came back empty (another worker claimed them) are forgotten at
  once: they are never sent by this worker, and its completion write (conditional on
  `claimed_by`, pipeline.delivery.outbox) would not count anyway.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

from pipeline.delivery import outbox

log = logging.getLogger(__name__)


class LeaseKeeper:
    def __init__(self, engine, *, worker: str, lease_seconds: int, interval: float | None = None, clock=time.monotonic):
        self.engine = engine
        self.worker = worker
        self.lease_seconds = lease_seconds
        # renew four times per lease: a renewal that waits for a busy database (SQLite
        # serialises writers) still commits well before the lease runs out
        self.interval = interval if interval is not None else max(0.1, lease_seconds / 4)
        # give up a lease this long before it runs out in the database (clock skew
        # between hosts, the time a renewal takes to commit, a message still in the air)
        self.margin = min(30.0, lease_seconds / 4)
        self.clock = clock
        self._held: dict[int, float] = {}
        self._lock = threading.Lock()
        # held while renewing and while the worker records outcomes: two transactions of
        # one worker updating the same rows in different orders deadlock on PostgreSQL
        self.writing = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost: set[int] = set()
        self.renewals = 0

    # --- what the worker tells it ------------------------------------------------------

    def claimed(self, ids: Iterable[int], since: float) -> None:
        """Rows just claimed; `since` is the monotonic time taken before the claim."""
        deadline = since + self.lease_seconds - self.margin
        with self._lock:
            for i in ids:
                self._held[i] = deadline

    def release(self, ids: Iterable[int]) -> None:
        """Rows recorded (or handed back): no longer ours to renew."""
        with self._lock:
            for i in ids:
                self._held.pop(i, None)

    def holds(self, delivery_id: int) -> bool:
        """May this worker still send `delivery_id`? No database round trip."""
        deadline = self._held.get(delivery_id)
        return deadline is not None and self.clock() < deadline

    # --- the heartbeat -------------------------------------------------------------------

    def renew(self) -> None:
        with self._lock:
            ids = list(self._held)
        if not ids:
            return
        with self.writing:
            started = self.clock()
            held = outbox.renew_held(self.engine, worker=self.worker, ids=sorted(ids), lease_seconds=self.lease_seconds)
        deadline = started + self.lease_seconds - self.margin
        lost = []
        with self._lock:
            for i in ids:
                if i not in self._held:
                    continue  # recorded meanwhile
                if i in held:
                    self._held[i] = deadline
                else:
                    del self._held[i]
                    lost.append(i)
            self.lost.update(lost)
        self.renewals += 1
        log.debug("renewed %d of %d leases in %.3fs", len(held), len(ids), self.clock() - started)
        if lost:
            log.warning(
                "%d claimed deliveries were taken over by another worker (their lease ran out "
                "before it could be renewed); this worker will not send them",
                len(lost),
            )

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.renew()
            except Exception:  # a failed renewal lets the local deadlines run out: sends stop
                log.warning("renewing the leases of the batch in the air failed", exc_info=True)

    def start(self) -> LeaseKeeper:
        self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
