"""The delivery commands: deliver, deliveries, suppressions, bounces; the `deliver`
stage is the last stage of `syndicate run` and delivers into var/mail by default."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.delivery.email import verp
from pipeline.ops.stages import STAGES
from pipeline.store.schema import deliveries
from tests.conftest import REPO
from tests.delivery_kit import enqueue_test, rows_by_id, smtp_toml
from tests.smtp_server import SMTPTestServer
from tests.test_delivery_bounces import fixture


def invoke(app, *args):
    return CliRunner().invoke(main, ["--config", str(app.settings.source), *args], catch_exceptions=False)


def test_deliver_into_the_maildir_and_list_show_retry(sqlite_app):
    app = sqlite_app
    ids = enqueue_test(app.engine, ["a@example.org", "b@example.org"])
    r = invoke(app, "deliver", "--dry-run")
    assert r.exit_code == 0 and "would send 2" in r.output
    assert {row["state"] for row in rows_by_id(app.engine, ids).values()} == {"queued"}
    r = invoke(app, "deliver")
    assert r.exit_code == 0, r.output
    assert "2 sent" in r.output
    maildir = app.settings.path("email.maildir") / "new"
    assert len(list(maildir.iterdir())) == 2
    r = invoke(app, "deliveries", "list", "--state", "sent")
    assert "email/sent 2" in r.output
    listed = json.loads(invoke(app, "deliveries", "list", "--state", "sent", "--json").output)
    assert sorted(d["target"] for d in listed["deliveries"]) == ["a@example.org", "b@example.org"]
    r = invoke(app, "deliveries", "show", str(ids[0]))
    assert "state" in r.output and "sent" in r.output
    r = invoke(app, "deliveries", "show", "999999")
    assert r.exit_code == 1 and "no delivery 999999" in r.output
    with app.engine.begin() as conn:
        conn.execute(deliveries.update().where(deliveries.c.id == ids[1]).values(state="failed"))
    r = invoke(app, "deliveries", "retry", "--failed")
    assert "requeued 1" in r.output
    r = invoke(app, "deliver")
    assert "1 sent" in r.output
    assert len(list(maildir.iterdir())) == 2  # same idempotency key: the same file, not a second one


def test_retry_by_id_says_what_it_left_and_which_ids_do_not_exist(sqlite_app):
    """`deliveries retry ID..` requeues the failed ones it names, says why each other one
    was left, and exits 1 naming any id with no delivery: a mistyped id is an error, not
    "1 were not failed" as if it existed."""
    app = sqlite_app
    sent, failed, webhook = enqueue_test(app.engine, ["a@example.org", "b@example.org", "c@example.org"])
    with app.engine.begin() as conn:
        conn.execute(deliveries.update().where(deliveries.c.id == sent).values(state="sent"))
        conn.execute(deliveries.update().where(deliveries.c.id.in_([failed, webhook])).values(state="failed"))
        conn.execute(deliveries.update().where(deliveries.c.id == webhook).values(channel="webhook"))
    r = invoke(app, "deliveries", "retry", str(sent), str(failed), "999999", str(webhook), "--channel", "email")
    assert r.exit_code == 1, r.output
    assert "requeued 1 deliveries" in r.output
    assert f"{sent} is sent, not failed, dead or waiting to retry" in r.output
    assert f"{webhook} is a webhook delivery, not email" in r.output
    assert "no delivery 999999" in r.output and "were not failed" not in r.output
    states = {i: row["state"] for i, row in rows_by_id(app.engine, [sent, failed, webhook]).items()}
    assert states == {sent: "sent", failed: "queued", webhook: "failed"}
    r = invoke(app, "deliveries", "retry", str(webhook))
    assert r.exit_code == 0 and "requeued 1 deliveries" in r.output


def test_suppressions_add_list_remove(sqlite_app):
    app = sqlite_app
    r = invoke(app, "suppressions", "add", "Someone@Example.org", "--detail", "asked by phone")
    assert r.exit_code == 0 and "someone@example.org suppressed" in r.output
    listed = json.loads(invoke(app, "suppressions", "list", "--json").output)
    assert [(x["email"], x["reason"], x["detail"]) for x in listed] == [
        ("someone@example.org", "manual", "asked by phone")
    ]
    [rid] = enqueue_test(app.engine, ["someone@example.org"])
    invoke(app, "deliver")
    assert rows_by_id(app.engine, [rid])[rid]["state"] == "suppressed"
    r = invoke(app, "suppressions", "remove", "someone@example.org")
    assert r.exit_code == 0
    r = invoke(app, "suppressions", "remove", "someone@example.org")
    assert r.exit_code == 1 and "not on the suppression list" in r.output
    r = invoke(app, "suppressions", "add", "not-an-address")
    assert r.exit_code == 1 and "hint:" in r.output


def test_bounces_process_command(sqlite_app, tmp_path):
    app = sqlite_app
    [rid] = enqueue_test(app.engine, ["hard@example.org"])
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "1.eml").write_bytes(
        fixture("dsn-hard.eml", verp_address=verp.encode(app.settings, rid), rcpt="hard@example.org")
    )
    r = invoke(app, "bounces", "process", str(folder))
    assert r.exit_code == 0, r.output
    assert "1 suppressed" in r.output
    listed = json.loads(invoke(app, "suppressions", "list", "--json").output)
    assert [(x["email"], x["reason"]) for x in listed] == [("hard@example.org", "hard_bounce")]


def test_pause_and_resume_a_channel(sqlite_app):
    app = sqlite_app
    enqueue_test(app.engine, ["p@example.org"])
    invoke(app, "deliveries", "pause", "email", "--reason", "DNS change")
    r = invoke(app, "deliver")
    assert "0 sent" in r.output and "paused" in r.output
    r = invoke(app, "deliveries", "list")
    assert "channel email paused" in r.output and "DNS change" in r.output
    invoke(app, "deliveries", "resume", "email")
    assert "1 sent" in invoke(app, "deliver").output


def test_deliver_is_the_last_stage_of_run():
    assert STAGES[-1].name == "deliver"
    assert STAGES[-1].target == "pipeline.delivery.worker:deliver_stage"


def test_deliver_stage_dry_run_sends_nothing(sqlite_app):
    from pipeline.ops.stages import run_stage

    app = sqlite_app
    ids = enqueue_test(app.engine, ["x@example.org"])
    assert run_stage(app, "deliver", dry_run=True) == {"would_send": 1}
    assert rows_by_id(app.engine, ids)[ids[0]]["state"] == "queued"
    assert run_stage(app, "deliver")["sent"] == 1


@pytest.mark.xdist_group("processes")
def test_deliver_with_several_processes_into_smtp(make_app, sqlite_url):
    with SMTPTestServer() as server:
        app = make_app(sqlite_url, smtp_toml(server))
        targets = [f"c{i}@example.org" for i in range(40)]
        enqueue_test(app.engine, targets)
        import os

        os.environ["SYNDICATE_DELIVERY_PLUGINS"] = "tests.delivery_kit"
        try:
            r = invoke(app, "deliver", "--concurrency", "2", "--no-progress")
        finally:
            del os.environ["SYNDICATE_DELIVERY_PLUGINS"]
        assert r.exit_code == 0, r.output
        assert "40 sent" in r.output
        assert server.counts() == {t: 1 for t in targets}


@pytest.mark.xdist_group("processes")
def test_worker_drains_continuously_and_stops_on_sigterm(make_app, sqlite_url):
    import os

    with SMTPTestServer() as server:
        app = make_app(sqlite_url, smtp_toml(server))
        enqueue_test(app.engine, ["w1@example.org"])
        env = dict(os.environ, PYTHONPATH=str(REPO), SYNDICATE_DELIVERY_PLUGINS="tests.delivery_kit")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from pipeline.cli import main; main()",
                "--config",
                str(app.settings.source),
                "worker",
                "--poll",
                "0.2",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 20
            while server.counts().get("w1@example.org") != 1 and time.monotonic() < deadline:
                time.sleep(0.1)
            enqueue_test(app.engine, ["w2@example.org"])  # arrives while it runs
            while server.counts().get("w2@example.org") != 1 and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0, out.decode()
        assert b"worker stopped" in out
        assert server.counts() == {"w1@example.org": 1, "w2@example.org": 1}
