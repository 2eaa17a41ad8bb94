"""Crash safety, measured: the sender runs as a subprocess (`syndicate deliver`) against
a real aiosmtpd server that records every message; it is killed with SIGKILL at random
points several times and restarted. Per recipient: zero lost; duplicates are reported
(target 0; at most one per kill). See the README, Delivery: "the window"."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy import func, select

from pipeline.store.schema import deliveries
from tests.conftest import REPO
from tests.delivery_kit import enqueue_test, smtp_toml
from tests.smtp_server import SMTPTestServer

# multi-process tests: never two at once on one machine (pytest-xdist --dist loadgroup)
pytestmark = pytest.mark.xdist_group("processes")

KILLS = 6
MESSAGES = 400
CONNECTIONS = 2  # SMTP connections per process: the window is one message per connection per crash


def _deliver(config, env):
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from pipeline.cli import main; main()",
            "--config",
            str(config),
            "deliver",
            "--no-progress",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


@pytest.mark.slow
@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "stepwise"])
def test_sigkill_loses_nothing_and_duplicates_at_most_one_per_connection_per_kill(
    db_url, tmp_path, make_app, pipelining
):
    """Issue 16 items 16-17: both send paths, and every kill lands mid-send: the killed
    process had messages arrive before the kill, and messages still arrived after it."""
    rng = random.Random(os.environ.get("CRASH_SEED", "6"))
    with SMTPTestServer(pipelining=pipelining) as server:
        extra = smtp_toml(server, smtp_connections=CONNECTIONS, rate_per_second=200.0, batch_size=50, lease_seconds=1)
        app = make_app(db_url, extra, root=tmp_path / "site")
        config = tmp_path / "site" / "syndicate.toml"
        # the kit's `test` kind must exist in the subprocess too
        env = dict(os.environ, PYTHONPATH=str(REPO), SYNDICATE_DELIVERY_PLUGINS="tests.delivery_kit")
        targets = [f"reader{i}@example.org" for i in range(MESSAGES)]
        enqueue_test(app.engine, targets)
        windows = []  # (arrivals when the process started, arrivals at its kill)
        for _ in range(KILLS):
            at_start = len(server.messages)
            proc = _deliver(config, env)
            # kill once this process has had a few messages accepted: mid-send, never
            # before its first send (a blind sleep could land in start-up)
            wanted = at_start + rng.randint(5, 40)
            deadline = time.monotonic() + 60
            while len(server.messages) < wanted and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.002)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                windows.append((at_start, len(server.messages)))
            proc.wait()
            time.sleep(1.1)  # the dead worker's leases (1 s) run out
        proc = _deliver(config, env)
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out.decode()
        counts = server.counts()
        arrived = len(server.messages)
    kills = len(windows)
    lost = [t for t in targets if counts.get(t, 0) == 0]
    duplicates = sum(n - 1 for n in counts.values() if n > 1)
    with app.engine.connect() as conn:
        states = dict(conn.execute(select(deliveries.c.state, func.count()).group_by(deliveries.c.state)).all())
    print(
        f"\ncrash test ({'pipelining' if pipelining else 'stepwise'}): {kills} SIGKILLs, {MESSAGES} messages, "
        f"lost {len(lost)}, duplicates {duplicates}, states {states}, arrivals at each kill {windows}"
    )
    assert kills == KILLS  # every run was killed, none finished on its own
    for at_start, at_kill in windows:
        assert at_start < at_kill < arrived  # messages arrived before the kill and after it
    assert lost == []
    assert states == {"sent": MESSAGES}
    # docs/delivery.md, "The window": at most one message per connection per crash. On a
    # quiet machine the run sees 0 to 3; on a busy one (a parallel suite, TEST-2) a
    # killed process is more often descheduled between a 250 and its journal write on
    # both of its connections at once, so the bound is the documented one, not one per kill.
    assert duplicates <= kills * CONNECTIONS
