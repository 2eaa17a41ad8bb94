"""The reader's side under attack (issue 18 items 1, 2, 3, 6; issue 19 item 7's sign-up half)
and the web service's own promises (issue 16 items 13 and 22), through the ASGI client
and real SMTP servers on 127.0.0.1, on every database where state is involved."""

from __future__ import annotations

import email
import email.policy
import io
import warnings

import pytest
from sqlalchemy import select

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from pipeline import subscribers as subs
from pipeline.errors import ConfigError
from pipeline.store.schema import deliveries, subscriber_events
from pipeline.web.app import create_app, serve

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
BASE = "https://news.example.com"
UTF8 = "[email]\nsmtputf8 = true\n"


def client_for(app, **kwargs) -> TestClient:
    return TestClient(create_app(app), base_url=BASE, follow_redirects=False, **kwargs)


def maildir_messages(app) -> list[email.message.EmailMessage]:
    """Every message in the Maildir, parsed strictly (RFC 6532 aware: raw UTF-8 headers)."""
    new = app.settings.path("email.maildir") / "new"
    files = sorted(new.iterdir()) if new.is_dir() else []
    return [
        email.message_from_bytes(p.read_bytes(), policy=email.policy.SMTPUTF8.clone(raise_on_defect=True))
        for p in files
    ]


def raw_header(data: bytes, name: str) -> str:
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8")
    for line in head.split("\r\n"):
        if line.lower().startswith(name.lower() + ":"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {name} header")


def rows(app, kind=None) -> list[dict]:
    with app.engine.connect() as conn:
        q = select(deliveries).order_by(deliveries.c.id)
        if kind:
            q = q.where(deliveries.c.kind == kind)
        return [dict(r) for r in conn.execute(q).mappings()]


def subscribe(client, address, **headers):
    return client.post("/subscribe", data={"email": address}, headers={"Origin": BASE, **headers})


# --- 1: internationalised addresses (issue 18 item 1, issue 19 item 7) ------------------


def test_idn_domain_is_stored_and_mailed_in_idna_form(app):
    """The confirmation goes out at once (issue 16 item 22) with `To: joe@xn--bcher-kva.example`:
    no RFC 2047 encoded-word inside the addr-spec (MSG-5's header rules)."""
    with client_for(app) as c:
        assert subscribe(c, "Joe@Bücher.example").status_code == 200
    with app.engine.connect() as conn:
        assert subs.get(conn, "joe@xn--bcher-kva.example")["email"] == "joe@xn--bcher-kva.example"
        assert subs.require_subscriber(conn, "joe@bücher.example")["email"] == "joe@xn--bcher-kva.example"
    [message] = maildir_messages(app)
    assert message["To"] == "joe@xn--bcher-kva.example" and "=?" not in str(message["To"])
    assert message["To"].addresses[0].domain == "xn--bcher-kva.example"


@pytest.mark.parametrize("how", ["form", "json"])
def test_non_ascii_local_part_is_refused_at_subscribe_without_smtputf8(sqlite_app, how):
    app = sqlite_app
    with client_for(app) as c:
        if how == "form":
            r = subscribe(c, "jörg@bücher.example")
            assert r.status_code == 400 and "non-ASCII characters before the @" in r.text
        else:
            r = c.post("/subscribe", json={"email": "jörg@bücher.example"})
            assert r.status_code == 400 and "non-ASCII characters before the @" in r.json()["errors"]["email"]
    assert rows(app) == [] and maildir_messages(app) == []


def test_the_same_rule_for_operator_add_and_csv_import(sqlite_app):
    app = sqlite_app
    with app.engine.begin() as conn:
        with pytest.raises(subs.InvalidInput, match="non-ASCII characters before the @"):
            subs.add(conn, app.settings, "jörg@bücher.example")
        report = subs.import_csv(
            conn,
            app.settings,
            io.StringIO("email\njörg@bücher.example\nann@bücher.example\n"),
            confirmed=True,
            source="fair",
        )
    assert report.added == 1 and len(report.bad) == 1 and "non-ASCII" in report.bad[0][1]
    with app.engine.connect() as conn:
        assert [s["email"] for s in subs.list_subscribers(conn)] == ["ann@xn--bcher-kva.example"]


def test_non_ascii_local_part_with_smtputf8_is_sent_raw_rfc6532(make_app, db_url):
    app = make_app(db_url, UTF8)
    with client_for(app) as c:
        assert subscribe(c, "Jörg@Bücher.example").status_code == 200
    with app.engine.connect() as conn:
        assert subs.get(conn, "jörg@xn--bcher-kva.example") is not None
    [message] = maildir_messages(app)
    assert message["To"] == "jörg@xn--bcher-kva.example"
    data = next((app.settings.path("email.maildir") / "new").iterdir()).read_bytes()
    assert raw_header(data, "To") == "jörg@xn--bcher-kva.example"


def test_digest_to_header_never_encodes_the_address(sqlite_app):
    """The digest's personal To (pipeline/digests/render.py): name encoded, address not."""
    from pipeline.digests import render

    def to(name, address):
        p = render.Personal(
            email=address, name=name, unsubscribe_url="https://x/u", preferences_url="https://x/p", message_id="<m@x>"
        )
        return render.personal_values(p)[render.MARKERS["to"]]

    assert to("", "joe@bücher.example") == "joe@xn--bcher-kva.example"
    assert to("Jörg Ä", "joe@bücher.example") == "=?utf-8?b?SsO2cmcgw4Q=?= <joe@xn--bcher-kva.example>"
    assert to("Jörg", "jörg@bücher.example") == "=?utf-8?b?SsO2cmc=?= <jörg@xn--bcher-kva.example>"
    assert to('Ann "A" Lee', "ann@example.com") == '"Ann \\"A\\" Lee" <ann@example.com>'


def _smtputf8_server(enable: bool):
    from aiosmtpd.controller import Controller

    class Handler:
        def __init__(self):
            self.received = []

        async def handle_DATA(self, server, session, envelope):
            self.received.append(
                (envelope.mail_from, list(envelope.rcpt_tos), list(envelope.mail_options), envelope.original_content)
            )
            return "250 OK"

    class PortZero(Controller):
        def _trigger_server(self):
            self.port = self.server.sockets[0].getsockname()[1]  # bound to port 0: learn the real one
            super()._trigger_server()

    handler = Handler()
    controller = PortZero(handler, hostname="127.0.0.1", port=0, enable_SMTPUTF8=enable, decode_data=False)
    return controller, handler


def _signup_through_smtp(make_app, url, *, offers_smtputf8: bool, pipelining: bool = True):
    """Sign up jörg@bücher.example with email.smtputf8 on, the mail going to a real
    aiosmtpd that does (or does not) offer SMTPUTF8; returns (app, what it received)."""
    controller, handler = _smtputf8_server(offers_smtputf8)
    controller.start()
    try:
        app = make_app(
            url,
            f"[email]\nsmtputf8 = true\nbackend = 'smtp'\nsmtp_host = '127.0.0.1'\n"
            f"smtp_port = {controller.port}\nsmtp_security = 'none'\n"
            f"[delivery]\npipelining = {str(pipelining).lower()}\n",
        )
        with client_for(app) as c:
            assert subscribe(c, "jörg@bücher.example").status_code == 200
    finally:
        controller.stop()
    return app, handler.received


@pytest.mark.parametrize("pipelining", [True, False])
def test_smtputf8_address_over_smtp_rfc6531(make_app, sqlite_url, pipelining):
    """A relay that offers SMTPUTF8 gets `MAIL FROM:<...> SMTPUTF8` and the raw address."""
    app, received = _signup_through_smtp(make_app, sqlite_url, offers_smtputf8=True, pipelining=pipelining)
    [(mail_from, rcpts, options, data)] = received
    assert rcpts == ["jörg@xn--bcher-kva.example"] and "SMTPUTF8" in options
    assert raw_header(data, "To") == "jörg@xn--bcher-kva.example"
    assert [r["state"] for r in rows(app)] == ["sent"]


def test_smtputf8_address_to_a_relay_without_it_fails_permanently(make_app, sqlite_url):
    app, received = _signup_through_smtp(make_app, sqlite_url, offers_smtputf8=False)
    assert received == []
    [row] = rows(app)
    assert row["state"] == "failed" and "SMTPUTF8" in row["last_error"]


# --- 2: undecodable form bodies (issue 18 item 2) -------------------------------------


@pytest.mark.parametrize(
    "body,content_type",
    [
        (b"email=\xff\xfe%40example.com", "application/x-www-form-urlencoded"),
        (b"email=%FF%FE%40example.com", "application/x-www-form-urlencoded"),
        (b"email=ok%40example.com&name=%C3", "application/x-www-form-urlencoded"),
        (
            b'--b\r\nContent-Disposition: form-data; name="email"\r\n\r\n\xff\xfe@example.com\r\n--b--\r\n',
            "multipart/form-data; boundary=b",
        ),
    ],
)
def test_invalid_utf8_in_a_form_is_a_400_not_another_address(sqlite_app, body, content_type):
    app = sqlite_app
    with client_for(app) as c:
        r = c.post("/subscribe", content=body, headers={"Content-Type": content_type, "Origin": BASE})
    assert r.status_code == 400 and "UTF-8" in r.text
    assert rows(app) == []


def test_lone_surrogate_in_json_is_a_400(sqlite_app):
    with client_for(sqlite_app) as c:
        r = c.post(
            "/subscribe",
            content=b'{"email": "a@example.com", "name": "\\ud800"}',
            headers={"Content-Type": "application/json"},
        )
    assert r.status_code == 400 and rows(sqlite_app) == []


def test_valid_utf8_form_still_works(sqlite_app):
    with client_for(sqlite_app) as c:
        r = c.post(
            "/subscribe",
            content=b"email=ann%40example.com&name=J%C3%B6rg",
            headers={"Content-Type": "application/x-www-form-urlencoded", "Origin": BASE},
        )
    assert r.status_code == 200
    with sqlite_app.engine.connect() as conn:
        assert subs.get(conn, "ann@example.com")["name"] == "Jörg"


# --- 3: X-Forwarded-For (issue 18 item 3, DOI-2) -----------------------------------------


def test_spoofed_forwarded_for_from_loopback_does_not_reset_the_limit_doi2(make_app, db_url):
    """Default: no proxy trusted, so a local process cannot claim a new address per request."""
    app = make_app(db_url, "[subscribers]\nmax_signups_per_client = 5\n")
    with client_for(app, client=("127.0.0.1", 40000)) as c:
        answers = [
            subscribe(c, f"a{i}@example.com", **{"X-Forwarded-For": f"198.51.100.{i}"}).status_code for i in range(7)
        ]
    assert answers == [200] * 5 + [429] * 2


def test_behind_a_trusted_proxy_the_rightmost_untrusted_hop_is_the_client_doi2(make_app, sqlite_url):
    app = make_app(
        sqlite_url, "[subscribers]\nmax_signups_per_client = 5\n[web]\nforwarded_allow_ips = '127.0.0.1, 10.0.0.0/8'\n"
    )
    with client_for(app, client=("127.0.0.1", 40000)) as c:
        # The client sends its own X-Forwarded-For; the proxies append the real hops.
        spoofed = [
            subscribe(
                c, f"b{i}@example.com", **{"X-Forwarded-For": f"198.51.100.{i}, 203.0.113.9, 10.1.2.3"}
            ).status_code
            for i in range(6)
        ]
        other = subscribe(c, "c@example.com", **{"X-Forwarded-For": "203.0.113.10"}).status_code
    assert spoofed == [200] * 5 + [429] and other == 200
    with app.engine.connect() as conn:
        ips = {r[0] for r in conn.execute(select(subscriber_events.c.ip).where(subscriber_events.c.kind == "signup"))}
    assert ips == {"203.0.113.9", "203.0.113.10"}


def test_untrusted_peer_forwarded_for_is_ignored(make_app, sqlite_url):
    app = make_app(sqlite_url, "[web]\nforwarded_allow_ips = '10.0.0.1'\n")
    with client_for(app, client=("192.0.2.7", 40000)) as c:
        assert subscribe(c, "d@example.com", **{"X-Forwarded-For": "203.0.113.1"}).status_code == 200
    with app.engine.connect() as conn:
        assert (
            conn.execute(select(subscriber_events.c.ip).where(subscriber_events.c.kind == "signup")).scalar_one()
            == "192.0.2.7"
        )


def test_trusted_proxies_rule():
    from pipeline.web.proxy import TrustedProxies

    t = TrustedProxies("127.0.0.1, 10.0.0.0/8, ::1")
    assert t.client("127.0.0.1", ["1.1.1.1, 2.2.2.2"]) == "2.2.2.2"
    assert t.client("127.0.0.1", ["1.1.1.1", "2.2.2.2, 10.0.0.5"]) == "2.2.2.2"
    assert t.client("192.0.2.1", ["1.1.1.1"]) == "192.0.2.1"
    assert t.client("::1", ["[2001:db8::1]:443"]) == "2001:db8::1"
    assert t.client("127.0.0.1", ["not-an-ip, 2.2.2.2"]) == "2.2.2.2"
    assert t.client("127.0.0.1", ["2.2.2.2, garbage"]) == "127.0.0.1"
    assert t.client("127.0.0.1", ["10.0.0.1, 10.0.0.2"]) == "10.0.0.1"
    assert TrustedProxies("*").client("192.0.2.1", ["6.6.6.6, 7.7.7.7"]) == "7.7.7.7"
    assert not TrustedProxies("")


# --- 6: Origin against site.base_url, never Host (issue 18 item 6) -------------------------


def test_origin_matching_a_forged_host_is_refused_dns_rebinding(sqlite_app):
    with client_for(sqlite_app) as c:
        r = c.post(
            "/subscribe",
            data={"email": "ada@example.com"},
            headers={"Host": "rebind.evil.example", "Origin": "https://rebind.evil.example"},
        )
        assert r.status_code == 403
        r = c.post(
            "/subscribe",
            data={"email": "ada@example.com"},
            headers={"Host": "rebind.evil.example", "Referer": "https://rebind.evil.example/x"},
        )
        assert r.status_code == 403
        assert subscribe(c, "ada@example.com").status_code == 200


# --- 13: no secret, no service (issue 16 item 13) ------------------------------------------


def test_healthz_names_the_demo_secret_and_fails_without_one(sqlite_app):
    app = sqlite_app
    with client_for(app) as c:
        r = c.get("/healthz")
        assert r.status_code == 200 and r.json()["secret"] == {"ok": True, "source": "demo secret file"}
        (app.settings.path("paths.var") / "secret_key").unlink()
        r = c.get("/healthz")
        assert r.status_code == 503 and r.json()["ok"] is False and r.json()["secret"]["ok"] is False


def test_serve_refuses_to_start_without_a_secret(sqlite_app):
    (sqlite_app.settings.path("paths.var") / "secret_key").unlink()
    with pytest.raises(ConfigError, match="no secret key") as info:
        serve(sqlite_app, port=0)
    assert "SYNDICATE_SECRET_KEY" in info.value.hint


def test_healthz_with_the_environment_secret(make_app, sqlite_url, tmp_path):
    from pipeline.app import App
    from pipeline.config import load_settings
    from tests.conftest import write_project

    config = write_project(tmp_path / "envsite", sqlite_url)
    (tmp_path / "envsite" / "var" / "secret_key").unlink()
    app = App(load_settings(config, env={"SYNDICATE_SECRET_KEY": "k" * 48}))
    with client_for(app) as c:
        assert c.get("/healthz").json()["secret"] == {"ok": True, "source": "environment"}


# --- 22: transactional email at once (issue 16 item 22) ------------------------------------


def test_confirmation_is_sent_at_once_through_the_outbox(app):
    with client_for(app) as c:
        assert subscribe(c, "ada@example.com").status_code == 200
        [row] = rows(app, "confirm")
        assert row["state"] == "sent" and row["attempts"] == 1
        [message] = maildir_messages(app)
        assert message["To"] == "ada@example.com" and "Confirm" in message["Subject"]
        # a drain afterwards has nothing to send again (the row and its key stay: idempotent)
        from pipeline.delivery.worker import drain

        assert drain(app.settings, app.engine).sent == 0
        assert len(maildir_messages(app)) == 1


def test_notice_to_a_confirmed_address_is_sent_at_once(sqlite_app):
    app = sqlite_app
    with app.engine.begin() as conn:
        subs.add(conn, app.settings, "ann@example.com", confirmed=True, source="test")
    with client_for(app) as c:
        assert subscribe(c, "ann@example.com").status_code == 200
    assert [r["state"] for r in rows(app, "subscribed_notice")] == ["sent"]
    assert "already subscribed" in maildir_messages(app)[0]["Subject"]


def test_paused_channel_leaves_the_confirmation_queued(sqlite_app):
    from pipeline.delivery import channels

    app = sqlite_app
    channels.pause(app.engine, "email", reason="test")
    with client_for(app) as c:
        assert subscribe(c, "ada@example.com").status_code == 200
    [row] = rows(app, "confirm")
    assert row["state"] == "queued" and row["claimed_by"] is None and maildir_messages(app) == []
