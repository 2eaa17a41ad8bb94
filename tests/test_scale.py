"""Scale-out on PostgreSQL, under faults (issue 9): real `syndicate worker` processes,
a real aiosmtpd server that counts per recipient, a real PostgreSQL on 127.0.0.1.

1. Four workers drain 50,000 deliveries; one is SIGKILLed mid-way (and restarted at
   once, as systemd's Restart=always does: the new process replays the dead one's
   send journal, and the dead one's unsent claims come back when their lease runs
   out), another is stopped with SIGTERM (it finishes and commits the batch in hand,
   exits 0). Every delivery arrives; duplicates are counted (target zero) and the
   whole fleet is visible in `syndicate status`.
2. The shared rate limit: four workers with delivery.rate_per_second = 200 send 2,000
   messages; the server's own arrival times show the fleet kept to the rate (each
   live worker takes rate / live workers), where four unshared buckets would reach
   about 800/s.

Timing-based checks here are upper bounds only (a slow machine only makes them safer).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from pipeline.app import App
from pipeline.config import load_settings
from pipeline.store import dispose_engines
from pipeline.store.schema import deliveries, delivery_workers
from tests.conftest import REPO, drop_pg_schemas, new_pg_schema, require_postgres, write_project
from tests.scale_kit import CountingSMTPServer, enqueue_scale, max_in_window

pytestmark = [pytest.mark.xdist_group("processes"), pytest.mark.postgres, pytest.mark.slow]

# The drain's size: 50,000 by default; `make test` sets TEST_SCALE_MESSAGES=10000, which
# still proves the property: four workers share the outbox, one is SIGKILLed with rows
# claimed and restarted (journal replayed, its claims come back after the lease), one
# is SIGTERMed mid-batch, and nothing is lost or sent twice. The milestones below are
# fractions of it, so every event still lands mid-way.
MESSAGES = int(os.environ.get("TEST_SCALE_MESSAGES", "50000"))
RATE = 200
RATE_MESSAGES = 2_000


class Fleet:
    """`syndicate worker` subprocesses on one project (one host: they share var/)."""

    def __init__(self, root: Path, db_url: str, smtp: CountingSMTPServer, **delivery):
        lines = [
            "[email]",
            'backend = "smtp"',
            f'smtp_host = "{smtp.host}"',
            f"smtp_port = {smtp.port}",
            'smtp_security = "none"',
            "smtp_timeout = 10.0",
            "",
            "[delivery]",
        ]
        lines += [f"{k} = {v}" for k, v in delivery.items()]
        self.root = root
        self.config = write_project(root, db_url, "\n".join(lines) + "\n")
        self.app = App(load_settings(self.config, env={}))
        _ = self.app.engine  # migrate once, before the workers start
        self.env = dict(os.environ, PYTHONPATH=str(REPO), SYNDICATE_DELIVERY_PLUGINS="tests.scale_kit")
        self.procs: list[subprocess.Popen] = []

    def start(self, name: str) -> subprocess.Popen:
        log = open(self.root / f"{name}.log", "wb")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from pipeline.cli import main; main()",
                "--config",
                str(self.config),
                "worker",
                "--poll",
                "0.2",
            ],
            cwd=self.root,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        proc.name = name
        self.procs.append(proc)
        return proc

    def log(self, proc) -> str:
        return (self.root / f"{proc.name}.log").read_text(errors="replace")

    def registered(self) -> dict[int, str]:
        with self.app.engine.connect() as conn:
            return dict(conn.execute(select(delivery_workers.c.pid, delivery_workers.c.state)).all())

    def wait_registered(self, procs, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reg = self.registered()
            if all(p.pid in reg for p in procs):
                return
            dead = [p for p in procs if p.poll() is not None]
            assert not dead, self.log(dead[0])
            time.sleep(0.2)
        raise AssertionError(f"workers did not start within {timeout}s: {self.registered()}")

    def states(self) -> dict[str, int]:
        with self.app.engine.connect() as conn:
            return dict(conn.execute(select(deliveries.c.state, func.count()).group_by(deliveries.c.state)).all())

    def stop(self, proc, sig=signal.SIGTERM, timeout: float = 30) -> int:
        proc.send_signal(sig)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(
                f"worker {proc.name} did not stop within {timeout}s:\n{self.log(proc)[-3000:]}"
            ) from None

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.app.engine.dispose()


@pytest.fixture
def pg_url():
    require_postgres()
    yield new_pg_schema()
    dispose_engines()
    drop_pg_schemas()


def _wait(condition, timeout: float, what: str, fleet: Fleet, poll: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; outbox {fleet.states()}")


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "stepwise"])
def test_four_workers_drain_the_outbox_exactly_once_through_sigkill_and_sigterm(pg_url, tmp_path, pipelining):
    """Item 1 + 4 of issue 9: nothing lost, nothing sent twice, the fleet visible; with
    and without PIPELINING (issue 16, item 16)."""
    with CountingSMTPServer(pipelining=pipelining) as smtp:
        # lease 8 s: the killed worker's unsent claims come back 8 s after its death
        fleet = Fleet(
            tmp_path / "site",
            pg_url,
            smtp,
            smtp_connections=2,
            batch_size=200,
            lease_seconds=8,
            messages_per_connection=1000,
        )
        try:
            workers = [fleet.start(f"w{i}") for i in range(4)]
            fleet.wait_registered(workers)
            t0 = time.monotonic()
            assert enqueue_scale(fleet.app.engine, MESSAGES) == MESSAGES

            # the operator's view while four workers run (issue 9, item 4)
            _wait(lambda: smtp.total() >= MESSAGES // 10, 60, f"{MESSAGES // 10:,} arrivals", fleet)
            from pipeline.ops.status import snapshot

            for _ in range(50):  # a worker between two drains shows as stopped for a moment
                panels = snapshot(fleet.app)
                live = {w["pid"]: w for w in panels["workers"] if w["state"] == "running"}
                if {p.pid for p in workers} <= set(live):
                    break
                time.sleep(0.1)
            assert {p.pid for p in workers} <= set(live), panels["workers"]
            assert all(w["host"] and w["heartbeat_at"] is not None for w in live.values())
            assert sum(w["claimed"] for w in live.values()) > 0  # rows in flight, attributed to their workers
            assert panels["outbox"]["by_channel"]["email"].get("sent", 0) > 0

            # SIGKILL one worker mid-way; systemd (Restart=always) starts it again
            _wait(lambda: smtp.total() >= MESSAGES * 3 // 10, 90, f"{MESSAGES * 3 // 10:,} arrivals", fleet)
            killed = workers[0]
            killed.send_signal(signal.SIGKILL)
            killed.wait()
            sent_at_kill = smtp.total()
            with fleet.app.engine.connect() as conn:
                held = conn.execute(
                    select(func.count())
                    .select_from(deliveries)
                    .where(deliveries.c.claimed_by.like(f"%:{killed.pid}:%"), deliveries.c.state == "sending")
                ).scalar_one()
            restarted = fleet.start("w0-restarted")

            # SIGTERM another: it finishes and commits the batch in hand, exits 0
            _wait(lambda: smtp.total() >= MESSAGES * 6 // 10, 90, f"{MESSAGES * 6 // 10:,} arrivals", fleet)
            stopped = workers[1]
            assert fleet.stop(stopped) == 0, fleet.log(stopped)[-3000:]
            assert fleet.registered()[stopped.pid] == "stopped"
            assert "finishing the batch in hand" in fleet.log(stopped)
            with fleet.app.engine.connect() as conn:
                assert (
                    conn.execute(
                        select(func.count())
                        .select_from(deliveries)
                        .where(deliveries.c.claimed_by.like(f"%:{stopped.pid}:%"), deliveries.c.state == "sending")
                    ).scalar_one()
                    == 0
                )

            _wait(lambda: fleet.states().get("sent", 0) >= MESSAGES, 120, "every delivery sent", fleet, poll=0.5)
            seconds = time.monotonic() - t0
            for proc in (workers[2], workers[3], restarted):
                assert fleet.stop(proc) == 0, fleet.log(proc)[-3000:]
            counts = smtp.counts()
            states = fleet.states()
            recovered = "recovered from a dead worker's journal" in fleet.log(restarted)

            # the operator's command shows the workers (stopped now) and the outbox by state
            out = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    "from pipeline.cli import main; main()",
                    "--config",
                    str(fleet.config),
                    "status",
                    "--json",
                ],
                env=fleet.env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert out.returncode == 0, out.stderr
            status = json.loads(out.stdout)
            assert status["outbox"]["by_channel"]["email"] == {"sent": MESSAGES}
            shown = {w["pid"]: w for w in status["workers"]}
            assert {p.pid for p in (*workers[1:], restarted)} <= set(shown)
            assert shown[stopped.pid]["state"] == "stopped" and shown[stopped.pid]["host"]
        finally:
            fleet.cleanup()
    targets = [f"reader{i}@example.org" for i in range(MESSAGES)]
    lost = [t for t in targets if counts.get(t, 0) == 0]
    duplicates = {t: n for t, n in counts.items() if n > 1}
    print(
        f"\nscale test ({'pipelining' if pipelining else 'stepwise'}): 4 workers, {MESSAGES:,} deliveries in {seconds:.1f}s ({MESSAGES / seconds:,.0f}/s); "
        f"SIGKILL at {sent_at_kill:,} arrivals with {held} rows claimed (journal replayed by the restarted "
        f"worker: {recovered}); SIGTERM at {MESSAGES * 6 // 10:,}; lost {len(lost)}, duplicates {sum(n - 1 for n in duplicates.values())}"
        f" {sorted(duplicates)[:5]}; outbox {states}"
    )
    assert lost == []
    assert states == {"sent": MESSAGES}
    # Target zero. The one window no journal can close is a 250 that the server sent
    # and the killed process never read (at most one per SMTP connection it had open).
    assert sum(n - 1 for n in duplicates.values()) <= 2, duplicates


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "stepwise"])
def test_shared_rate_limit_holds_for_four_workers(pg_url, tmp_path, pipelining):
    """Item 3 of issue 9: delivery.rate_per_second is the fleet's rate, not each worker's."""
    with CountingSMTPServer(pipelining=pipelining) as smtp:
        fleet = Fleet(
            tmp_path / "site",
            pg_url,
            smtp,
            smtp_connections=2,
            batch_size=100,
            lease_seconds=30,
            rate_per_second=float(RATE),
        )
        try:
            workers = [fleet.start(f"w{i}") for i in range(4)]
            fleet.wait_registered(workers)  # all four are up before there is work
            assert enqueue_scale(fleet.app.engine, RATE_MESSAGES) == RATE_MESSAGES
            _wait(lambda: smtp.total() >= RATE_MESSAGES, 60, f"{RATE_MESSAGES:,} arrivals", fleet)
            for proc in workers:
                assert fleet.stop(proc) == 0, fleet.log(proc)[-3000:]
            times = smtp.arrivals()
            counts = smtp.counts()
            with fleet.app.engine.connect() as conn:
                # claimed_by stays on a sent row: who sent it
                per_worker = dict(
                    conn.execute(
                        select(deliveries.c.claimed_by, func.count())
                        .where(deliveries.c.state == "sent")
                        .group_by(deliveries.c.claimed_by)
                    ).all()
                )
        finally:
            fleet.cleanup()
    assert len(times) == RATE_MESSAGES and len(counts) == RATE_MESSAGES
    span = times[-1] - times[0]
    mean = (len(times) - 1) / span
    windows = {w: max_in_window(times, w) for w in (1.0, 2.0, 5.0)}
    print(
        f"\nrate test: {RATE_MESSAGES:,} messages from 4 workers at rate_per_second={RATE}: "
        f"{span:.1f}s, mean {mean:.0f}/s; most in any 1 s {windows[1.0]}, 2 s {windows[2.0]}, "
        f"5 s {windows[5.0]}; sent per worker {sorted(per_worker.values())}; per 0.5 s: "
        f"{[sum(1 for t in times if k * 0.5 <= t - times[0] < (k + 1) * 0.5) for k in range(int(span * 2) + 1)]}"
    )
    assert len(per_worker) == 4 and min(per_worker.values()) > 0  # the work really was shared
    # A token bucket with rate r and burst b lets at most b + r*w through in any w
    # seconds. Shared correctly, the fleet's burst is r (each live worker: r / live).
    # In the first second workers that were idle a moment ago may not yet count each
    # other as live, so the start is allowed a burst of 2r; after it, b = r.
    for w, most in [*windows.items(), (span, len(times))]:
        assert most <= 2 * RATE + RATE * w, (w, most)
    steady = [t for t in times if t >= times[0] + 1.0]
    # Tokens are taken when a message is handed to a connection; the server stamps it on
    # arrival. Up to one message per connection (4 workers x 2) can be in the air across
    # a window's edge: a CI run at load saw 402 in a 1 s window against 400.
    in_air = 4 * 2
    for w in (1.0, 2.0, 5.0):
        assert max_in_window(steady, w) <= RATE + RATE * w + in_air, (w, max_in_window(steady, w))
    steady_span = steady[-1] - steady[0]
    assert (len(steady) - 1) / steady_span <= RATE * 1.05 + RATE / steady_span
    assert windows[5.0] < 2 * RATE * 5  # four unshared buckets would let about 4,000 through
