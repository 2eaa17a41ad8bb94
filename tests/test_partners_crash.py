"""A pusher killed between the partner's answer and the database write (on every
database): the partner sees the same webhook-id again at most once, dedupes it, and
no event is lost."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import pytest
from sqlalchemy import update

from pipeline.delivery.worker import drain
from pipeline.partners import queue_partner_events
from pipeline.partners.channel import PAUSE_AFTER_ANSWER_ENV
from pipeline.store.schema import deliveries
from pipeline.timeutil import utcnow

from .conftest import REPO
from .partner_server import WebhookPartner
from .partners_helpers import PUSH_TOML, SECRET, SECRET_ENV, publish, rows, webhook_partner_toml

DRAIN_SCRIPT = """
import sys
from pipeline.config import load_settings
from pipeline.delivery.worker import drain
from pipeline.store import get_engine
settings = load_settings(sys.argv[1])
drain(settings, get_engine(settings.database_url), channels=["webhook"])
"""


@pytest.fixture
def partner(monkeypatch):
    monkeypatch.setenv(SECRET_ENV, SECRET)
    with WebhookPartner([SECRET]) as server:
        yield server


def expire_leases(app) -> None:
    """The dead worker's lease runs out (lease_seconds later)."""
    with app.engine.begin() as conn:
        conn.execute(
            update(deliveries)
            .where(deliveries.c.state == "sending")
            .values(lease_until=utcnow() - dt.timedelta(seconds=1))
        )


@pytest.mark.xdist_group("processes")
@pytest.mark.slow
def test_killed_after_the_answer_before_the_write_partner_dedupes_the_resend(make_app, db_url, partner):
    app = make_app(db_url, PUSH_TOML + webhook_partner_toml(partner.url))
    publish(app, "rituals")
    publish(app, "sleep", title="On Sleep")
    assert queue_partner_events(app)["queued"] == 2
    env = dict(os.environ, **{PAUSE_AFTER_ANSWER_ENV: "60", SECRET_ENV: SECRET})
    proc = subprocess.Popen(
        [sys.executable, "-c", DRAIN_SCRIPT, str(app.settings.source)],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert partner.answered.wait(30), proc.stderr.read() if proc.poll() is not None else "no request"
        proc.kill()  # SIGKILL: the 200 arrived, nothing was written
    finally:
        proc.wait(10)
    assert len(partner.requests) == 1
    first_id = partner.requests[0].headers["webhook-id"]
    assert {r["state"] for r in rows(app)} == {"sending"}  # both rows were claimed by the dead worker

    expire_leases(app)
    report = drain(app.settings, app.engine, channels=["webhook"])
    assert report.sent == 2
    ids = [r.headers["webhook-id"] for r in partner.requests]
    assert ids.count(first_id) == 2  # seen again exactly once ...
    assert [r.duplicate for r in partner.requests if r.headers["webhook-id"] == first_id] == [
        False,
        True,
    ]  # ... and deduped
    assert len(partner.events) == 2  # no event lost, none processed twice
    assert {r["state"] for r in rows(app)} == {"sent"}


def test_killed_after_the_attempt_was_logged_nothing_is_sent_again(make_app, db_url, partner):
    """When the 2xx made it into the attempt log before the worker died, its successor
    marks the row sent without a second request."""
    app = make_app(db_url, PUSH_TOML + webhook_partner_toml(partner.url))
    publish(app, "rituals")
    queue_partner_events(app)
    drain(app.settings, app.engine, channels=["webhook"])
    with app.engine.begin() as conn:  # as if the outbox write had not happened
        conn.execute(
            update(deliveries).values(
                state="sending", sent_at=None, claimed_by="dead:1", lease_until=utcnow() - dt.timedelta(seconds=1)
            )
        )
    report = drain(app.settings, app.engine, channels=["webhook"])
    assert report.sent == 1 and len(partner.requests) == 1
    (row,) = rows(app)
    assert row["state"] == "sent" and "attempt log" in row["provider_answer"]
