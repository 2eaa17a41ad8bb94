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

KILLS = 6
MESSAGES = 400


def _deliver(config, env):
    return subprocess.Popen([sys.executable, "-c", "from pipeline.cli import main; main()", "--config", str(config), "deliver", "--no-progress"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


@pytest.mark.slow
def test_sigkill_loses_nothing_and_duplicates_at_most_one_per_kill(db_url, tmp_path, make_app):
    rng = random.Random(os.environ.get("CRASH_SEED", "6"))
    with SMTPTestServer() as server:
        extra = smtp_toml(server, smtp_connections=2, rate_per_second=200.0, batch_size=50, lease_seconds=1)
        app = make_app(db_url, extra, root=tmp_path / "site")
        config = tmp_path / "site" / "syndicate.toml"
        # the kit's `test` kind must exist in the subprocess too
        env = dict(os.environ, PYTHONPATH=str(REPO), SYNDICATE_DELIVERY_PLUGINS="tests.delivery_kit")
        targets = [f"reader{i}@example.org" for i in range(MESSAGES)]
        enqueue_test(app.engine, targets)
        kills = 0
        for _ in range(KILLS):
            proc = _deliver(config, env)
            time.sleep(rng.uniform(0.8, 1.6))  # start-up takes about 0.6 s; then it is sending
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            proc.wait()
        time.sleep(1.1)  # the last dead worker's leases (1 s) run out
        proc = _deliver(config, env)
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out.decode()
        counts = server.counts()
    lost = [t for t in targets if counts.get(t, 0) == 0]
    duplicates = sum(n - 1 for n in counts.values() if n > 1)
    with app.engine.connect() as conn:
        states = dict(conn.execute(select(deliveries.c.state, func.count()).group_by(deliveries.c.state)).all())
    print(f"\ncrash test: {kills} SIGKILLs, {MESSAGES} messages, lost {len(lost)}, duplicates {duplicates}, "
          f"states {states}")
    assert lost == []
    assert states == {"sent": MESSAGES}
    assert duplicates <= kills
