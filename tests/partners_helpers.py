"""Shared set-up for the partner tests: a site with a webhook partner on a loopback
server, and helpers to approve, edit and delete articles and to drain the outbox."""

from __future__ import annotations

import base64
import datetime as dt

from sqlalchemy import select, update

from pipeline.content.editorial import approve
from pipeline.content.ingest import ingest
from pipeline.delivery.worker import drain
from pipeline.partners import queue_partner_events
from pipeline.store.schema import deliveries
from pipeline.timeutil import utcnow

from .articles import write_article, write_author

SECRET = "whsec_" + base64.b64encode(b"partner-test-secret-0123456789ab").decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"the-previous-secret-0123456789ab").decode()
SECRET_ENV = "SYNDICATE_TEST_ACME_SECRET"


def webhook_partner_toml(
    url: str,
    name: str = "acme",
    *,
    env: str = SECRET_ENV,
    extra: str = "",
    schedule: str = '["5s", "5m", "30m"]',
    read_timeout: float = 10.0,
) -> str:
    """A webhook partner at `url`. The read timeout is generous: the partner server is a
    thread of the test process, and on a loaded 2-CPU machine (two test workers,
    PostgreSQL) its answer once took longer than the 0.5 s it used to be given; the
    tests of timeouts pass a short one."""
    return f"""
[[partners]]
name = "{name}"
kind = "webhook"
url = "{url}"
secret_env = "{env}"
allow_private = true
connect_timeout = 1.0
read_timeout = {read_timeout}
retry_schedule = {schedule}
{extra}
"""


PUSH_TOML = """
[partner_push]
retry_jitter = 0.0
"""


def publish(app, slug: str, **kwargs) -> None:
    """Write (or rewrite) an article, ingest it and approve it."""
    root = app.settings.root
    write_author(root)
    write_article(root, slug, **kwargs)
    report = ingest(app)
    assert not report.errors, report.errors
    with app.engine.begin() as conn:
        approve(conn, [slug], editor="eve")


def retract(app, slug: str) -> None:
    (app.settings.root / "content" / "articles" / f"{slug}.md").unlink()
    ingest(app)


def push(app, channels=("webhook", "micropub")):
    """The partners stage, then one drain."""
    counts = queue_partner_events(app)
    report = drain(app.settings, app.engine, channels=list(channels))
    return counts, report


def rows(app, **where) -> list[dict]:
    q = select(deliveries).order_by(deliveries.c.id)
    for k, v in where.items():
        q = q.where(getattr(deliveries.c, k) == v)
    with app.engine.connect() as conn:
        return [dict(r) for r in conn.execute(q).mappings()]


def make_due(app) -> None:
    """Time travel for the outbox only: every waiting row is due now."""
    with app.engine.begin() as conn:
        conn.execute(
            update(deliveries)
            .where(deliveries.c.state.in_(("queued", "retry")))
            .values(next_attempt_at=utcnow() - dt.timedelta(seconds=1))
        )
