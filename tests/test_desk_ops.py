"""Operators in the desk, through the ASGI client: the dashboard with its SVG charts,
the outbox (retry, pause and resume a channel), jobs (run now, pause), subscribers
(search, consent log, suppress, export)."""

from __future__ import annotations

import shutil

import pytest
from lxml import etree
from sqlalchemy import select, update

from pipeline import subscribers as subs
from pipeline.delivery import channels, outbox
from pipeline.ops import jobstate
from pipeline.store.schema import audit_log, deliveries
from pipeline.subscribers.suppression import suppressed_among

from .conftest import REPO
from .desk_kit import csrf_of, make_user, signed_in

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def ops(app):
    (app.settings.root / "schedules").mkdir(exist_ok=True)
    shutil.copy(REPO / "schedules" / "default.toml", app.settings.root / "schedules")
    make_user(app, "op@example.com", ["operator"])
    with app.engine.begin() as conn:
        sub, _ = subs.add(conn, app.settings, "reader@example.com", name="Rea Der", confirmed=True)
        outbox.enqueue(conn, channel="email", target="reader@example.com", kind="confirm", key="k1", payload={})
        conn.execute(update(deliveries).values(state="failed", attempts=3, last_error="550 mailbox unavailable"))
    return app, signed_in(app, "op@example.com"), sub


def test_dashboard_shows_status_and_three_svg_charts(ops):
    app, op, sub = ops
    page = op.get("/desk/ops")
    assert page.status_code == 200
    svgs = [s for s in page.text.split("<svg")[1:]]
    assert len(svgs) == 3
    for s in svgs:
        etree.fromstring(("<svg" + s.split("</svg>")[0] + "</svg>").encode())  # well-formed
    for title in ("Confirmed subscribers", "Messages sent per day", "Failed deliveries per day"):
        assert title in page.text
    assert "failed 1" in page.text  # the outbox panel


def test_dashboard_says_what_to_do_about_a_panel_it_cannot_show(ops):
    app, op, _sub = ops
    shutil.rmtree(app.settings.root / "schedules")
    page = op.get("/desk/ops")
    assert page.status_code == 200
    assert "ConfigError: schedule folder" in page.text and "Set paths.schedules to a folder" in page.text


def test_operator_retries_a_failed_delivery_and_pauses_a_channel(ops):
    app, op, sub = ops
    page = op.get("/desk/ops/outbox?state=failed")
    assert "550 mailbox unavailable" in page.text
    with app.engine.connect() as conn:
        did = conn.execute(select(deliveries.c.id)).scalar_one()
    r = op.post("/desk/ops/outbox/retry", data={"csrf_token": csrf_of(page.text), "ids": [str(did)]})
    assert r.status_code == 303
    with app.engine.connect() as conn:
        assert outbox.get(conn, did)["state"] == "queued"
    r = op.post("/desk/ops/channels/email/pause", data={"csrf_token": csrf_of(page.text), "reason": "relay down"})
    assert r.status_code == 303 and channels.get_state(app.engine, "email").paused
    assert "Resume (paused: relay down)" in op.get("/desk/ops/outbox").text
    op.post("/desk/ops/channels/email/resume", data={"csrf_token": csrf_of(page.text)})
    assert not channels.get_state(app.engine, "email").paused
    assert op.post("/desk/ops/channels/fax/pause", data={"csrf_token": csrf_of(page.text)}).status_code == 404
    with app.engine.connect() as conn:
        actions = [a for (a,) in conn.execute(select(audit_log.c.action).order_by(audit_log.c.id))]
    assert actions[-3:] == ["delivery.retry", "channel.pause", "channel.resume"]


def test_operator_runs_and_pauses_a_job(ops):
    app, op, sub = ops
    page = op.get("/desk/ops/jobs")
    assert page.status_code == 200 and 'id="pause-ingest"' in page.text
    r = op.post("/desk/ops/jobs/ingest/pause", data={"csrf_token": csrf_of(page.text), "note": "content freeze"})
    assert r.status_code == 303
    assert jobstate.is_paused(app.engine, "ingest")
    assert 'id="resume-ingest"' in op.get("/desk/ops/jobs").text
    r = op.post("/desk/ops/jobs/ingest/run", data={"csrf_token": csrf_of(page.text)})
    assert r.status_code == 303 and "ran" in r.headers["location"]
    assert [h["trigger"] for h in jobstate.history(app.engine, "ingest")] == ["manual"]
    assert op.post("/desk/ops/jobs/nope/run", data={"csrf_token": csrf_of(page.text)}).status_code == 404


def test_operator_finds_a_subscriber_reads_the_consent_log_suppresses_and_exports(ops):
    app, op, sub = ops
    page = op.get("/desk/ops/subscribers?q=rea")
    assert "reader@example.com" in page.text
    assert "reader@example.com" not in op.get("/desk/ops/subscribers?q=zzz").text
    one = op.get(f"/desk/ops/subscribers/{sub['id']}")
    assert 'id="consent-log"' in one.text and "confirmed" in one.text
    r = op.post(
        f"/desk/ops/subscribers/{sub['id']}/suppress",
        data={"csrf_token": csrf_of(one.text), "detail": "asked by phone"},
    )
    assert r.status_code == 303
    with app.engine.connect() as conn:
        assert suppressed_among(conn, ["reader@example.com"]) == {"reader@example.com": "manual"}
    r = op.post("/desk/ops/subscribers/export", data={"csrf_token": csrf_of(one.text)})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert "reader@example.com" in r.text
    assert op.get("/desk/ops/subscribers/999999").status_code == 404


def test_operator_sees_partners_and_resumes_one_and_reads_digest_editions(make_app, sqlite_url):
    app = make_app(
        sqlite_url,
        '[[partners]]\nname = "news"\nkind = "webhook"\nurl = "https://partner.example.org/h"\n'
        'secret_env = "NEWS_SECRET"\n',
    )
    make_user(app, "op@example.com", ["operator"])
    from pipeline.partners import state

    state.disable(app.engine, "news", "410 Gone")
    op = signed_in(app, "op@example.com")
    page = op.get("/desk/ops/partners")
    assert page.status_code == 200 and "news" in page.text and "410 Gone" in page.text
    r = op.post("/desk/ops/partners/news/resume", data={"csrf_token": csrf_of(page.text)})
    assert r.status_code == 303
    with app.engine.connect() as conn:
        assert state.get_state(conn, "news")["state"] == "active"
    assert op.post("/desk/ops/partners/nope/resume", data={"csrf_token": csrf_of(page.text)}).status_code == 404
    assert "No editions yet" in op.get("/desk/ops/editions").text
    from pipeline.store.schema import digest_editions
    from pipeline.timeutil import utcnow

    with app.engine.begin() as conn:
        eid = conn.execute(
            digest_editions.insert()
            .values(
                key="daily-2026-12-05",
                frequency="daily",
                cutoff=utcnow(),
                article_ids=[1, 2],
                subject="Today",
                recipients=2,
                created_at=utcnow(),
            )
            .returning(digest_editions.c.id)
        ).scalar_one()
        for i, st in enumerate(("sent", "failed")):
            outbox.enqueue(
                conn, channel="email", target=f"r{i}@example.com", kind="digest", key=f"d{i}", edition_id=eid
            )
            conn.execute(update(deliveries).where(deliveries.c.idempotency_key == f"d{i}").values(state=st))
    page = op.get("/desk/ops/editions")
    row = page.text.split(">daily-2026-12-05<")[1].split("</tr>")[0]
    assert "Today" in row and "<td>2</td><td>2</td>\n<td>1</td><td>1</td>" in row and "in progress" in row
