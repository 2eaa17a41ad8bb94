"""An SMTP outage is loud (issue 16, item 11): when the server cannot be reached the
email channel stops sending for a backoff, `syndicate deliver` prints the cause and
exits non-zero, `syndicate status` and /metrics show it, no attempt is spent, and
the first successful send after the backoff clears it."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket

from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from pipeline.cli import main
from pipeline.delivery.channels import get_state
from pipeline.delivery.worker import drain
from pipeline.ops.metrics import render_metrics
from pipeline.timeutil import as_utc, utcnow
from tests.delivery_kit import enqueue_test, rows_by_id, smtp_toml
from tests.smtp_server import SMTPTestServer


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket is closed


class _Refusing:
    host = "127.0.0.1"
    ca_file = None

    def __init__(self):
        self.port = _closed_port()


def test_a_refused_connection_pauses_for_a_backoff_and_deliver_exits_non_zero(make_app, db_url):
    app = make_app(db_url, smtp_toml(_Refusing(), outage_backoff_seconds=30))
    ids = enqueue_test(app.engine, [f"o{i}@example.org" for i in range(7)])
    before = utcnow()
    result = CliRunner().invoke(main, ["--config", str(app.settings.source), "deliver", "--no-progress"])
    assert result.exit_code == 1, result.output
    assert "cannot reach its mail server" in result.output and "Connection refused" in result.output
    assert "0 sent" in result.output
    state = get_state(app.engine, "email")
    assert state.in_outage() and state.outage_count == 1 and not state.paused
    assert as_utc(state.outage_until) >= before + dt.timedelta(seconds=29)
    rows = rows_by_id(app.engine, ids)
    assert {r["state"] for r in rows.values()} == {"queued"}
    assert {r["attempts"] for r in rows.values()} == {0}  # nobody's fault: no attempt spent
    assert any("Connection refused" in (r["last_error"] or "") for r in rows.values())
    # while the backoff runs nothing is claimed; a second failure doubles the backoff
    assert drain(app.settings, app.engine).claimed == 0
    # status and metrics say so
    status = json.loads(CliRunner().invoke(main, ["--config", str(app.settings.source), "status", "--json"]).output)
    [email] = [c for c in status["delivery_channels"] if c["channel"] == "email"]
    assert "Connection refused" in email["outage"] and "OUTAGE" in email["line"]
    text = CliRunner().invoke(main, ["--config", str(app.settings.source), "status"]).output
    assert "OUTAGE" in text
    body, _ = render_metrics(app)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(body.decode())
        for s in f.samples
    }
    assert samples[("syndicate_delivery_channel_outage", (("channel", "email"),))] == 1


def test_after_the_backoff_a_reachable_server_clears_the_outage(make_app, sqlite_url):
    with SMTPTestServer() as server:
        app = make_app(sqlite_url, smtp_toml(_Refusing(), outage_backoff_seconds=30))
        ids = enqueue_test(app.engine, ["back@example.org"])
        report = drain(app.settings, app.engine)
        assert "Connection refused" in report.outage
        app.settings.email._values["smtp_port"] = server.port  # the server is back
        later = utcnow() + dt.timedelta(seconds=31)
        os.environ["SYNDICATE_FROZEN_NOW"] = later.isoformat()
        try:
            report = drain(app.settings, app.engine)
        finally:
            del os.environ["SYNDICATE_FROZEN_NOW"]
        assert report.sent == 1 and not report.outage
        assert rows_by_id(app.engine, ids)[ids[0]]["state"] == "sent"
        state = get_state(app.engine, "email")
        assert state.outage_count == 0 and not state.in_outage()


def test_the_deliver_stage_of_a_run_fails_with_the_cause(make_app, sqlite_url):
    """`syndicate run` and the scheduler record the stage as failed, so `status` shows
    the outage as the last failure instead of "none"."""
    import pytest

    from pipeline.delivery.worker import deliver_stage
    from pipeline.errors import DeliveryError

    app = make_app(sqlite_url, smtp_toml(_Refusing()))
    enqueue_test(app.engine, ["stage@example.org"])
    with pytest.raises(DeliveryError, match="cannot reach its mail server"):
        deliver_stage(app)
