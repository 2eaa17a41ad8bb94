"""The subscription core (pipeline.subscribers) on every database: double opt-in,
tokens, the consent log, rate limits, import/export, purge, the confirmation email."""

from __future__ import annotations

import base64
import datetime as dt
import email
import email.policy
import io
import re
from email.utils import parsedate_to_datetime

import pytest
from sqlalchemy import func, insert, select

from pipeline import subscribers as subs
from pipeline import tokens
from pipeline.app import App
from pipeline.config import load_settings
from pipeline.delivery.worker import drain
from pipeline.errors import SyndicateError, TokenError
from pipeline.store.schema import confirm_tokens, deliveries, subscriber_events, subscribers
from pipeline.timeutil import utcnow

CLIENT = subs.Client(source="web:/", ip="192.0.2.7", user_agent="Mozilla/5.0 (test)", wording_version="v1")


def signup(app, address="ada@example.com", **kw):
    kw.setdefault("client", CLIENT)
    with app.engine.begin() as conn:
        return subs.request_subscription(conn, app.settings, address, **kw)


def outbox_rows(app, kind=None):
    q = select(deliveries).order_by(deliveries.c.id)
    if kind:
        q = q.where(deliveries.c.kind == kind)
    with app.engine.connect() as conn:
        return [dict(r) for r in conn.execute(q).mappings()]


def confirm_link_token(app, row) -> str:
    """The token the email carries, made the way the email builder makes it."""
    return subs.confirm_token(app.settings, row["payload"]["nonce"])


def sub_row(app, address="ada@example.com"):
    with app.engine.connect() as conn:
        return subs.get(conn, address)


def events(app, address="ada@example.com"):
    with app.engine.connect() as conn:
        return subs.history(conn, subs.get(conn, address)["id"])


def test_signup_is_unconfirmed_and_queues_only_a_confirmation_doi1(app):
    result = signup(app, "Ada@Example.COM", name="Ada", frequency="daily", topics=["work"], timezone="Europe/Berlin")
    assert result.action == "confirm_sent"
    sub = sub_row(app)
    assert sub["email"] == "ada@example.com" and sub["state"] == "unconfirmed"
    assert (sub["frequency"], sub["topics"], sub["timezone"], sub["name"]) == (
        "daily",
        ["work"],
        "Europe/Berlin",
        "Ada",
    )
    rows = outbox_rows(app)
    assert [r["kind"] for r in rows] == ["confirm"], "no mail but the confirmation before confirming (DOI-1)"
    assert rows[0]["target"] == "ada@example.com" and rows[0]["subscriber_id"] == sub["id"]
    with app.engine.connect() as conn:
        assert not subs.may_receive(conn, sub["id"])


def test_confirm_token_is_stored_only_as_a_hash_doi1(app):
    signup(app)
    row = outbox_rows(app, "confirm")[0]
    token = confirm_link_token(app, row)
    with app.engine.connect() as conn:
        stored = conn.execute(select(confirm_tokens)).mappings().one()
    assert stored["token_hash"] == tokens.token_hash(token)
    assert token not in str(row["payload"]) and token not in str(dict(stored))
    # The nonce in the outbox is useless without the secret key: a token made with
    # another key does not hash to the stored value.
    other = load_settings(app.settings.source, env={"SYNDICATE_SECRET_KEY": "another-key-" + "y" * 30})
    assert tokens.token_hash(subs.confirm_token(other, row["payload"]["nonce"])) != stored["token_hash"]
    assert len(row["payload"]["nonce"]) >= 43  # 256 bits, url-safe base64


def test_confirm_once_then_reuse_is_rejected_doi1(app):
    signup(app)
    token = confirm_link_token(app, outbox_rows(app, "confirm")[0])
    with app.engine.begin() as conn:
        sub = subs.confirm(conn, app.settings, token, client=CLIENT)
    assert sub["state"] == "confirmed" and sub["confirmed_at"] is not None
    with app.engine.begin() as conn, pytest.raises(subs.LinkUsed):
        subs.confirm(conn, app.settings, token, client=CLIENT)
    with app.engine.connect() as conn:
        assert subs.may_receive(conn, sub["id"])


def test_expired_confirm_token_is_rejected_and_can_be_sent_again_doi1(app):
    signup(app)
    token = confirm_link_token(app, outbox_rows(app, "confirm")[0])
    later = utcnow() + dt.timedelta(hours=48, seconds=1)
    with app.engine.begin() as conn, pytest.raises(subs.LinkExpired):
        subs.confirm(conn, app.settings, token, now=later)
    with app.engine.begin() as conn:
        again = subs.resend_confirmation(conn, app.settings, token, client=CLIENT, now=later)
    assert again.action == "confirm_sent"
    new_token = confirm_link_token(app, outbox_rows(app, "confirm")[-1])
    assert new_token != token
    with app.engine.begin() as conn:
        assert subs.confirm(conn, app.settings, new_token, now=later)["state"] == "confirmed"


def test_tampered_confirm_token_is_rejected(app):
    signup(app)
    token = confirm_link_token(app, outbox_rows(app, "confirm")[0])
    for bad in (token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1], "x" + token, token.split(".")[0], ""):
        with app.engine.begin() as conn, pytest.raises(TokenError):
            subs.confirm(conn, app.settings, bad)
    assert sub_row(app)["state"] == "unconfirmed"


def test_tokens_are_useless_for_another_purpose(app):
    signup(app)
    confirm_token = confirm_link_token(app, outbox_rows(app, "confirm")[0])
    sid = sub_row(app)["id"]
    unsub = subs.list_token(app.settings, "unsubscribe", sid)
    prefs = subs.list_token(app.settings, "preferences", sid)
    with app.engine.begin() as conn, pytest.raises(TokenError):
        subs.confirm(conn, app.settings, unsub)
    for purpose, token in (("unsubscribe", prefs), ("preferences", unsub), ("unsubscribe", confirm_token)):
        with pytest.raises(TokenError):
            subs.verify_list_token(app.settings, purpose, token)
    assert subs.verify_list_token(app.settings, "unsubscribe", unsub) == sid


def test_consent_log_has_every_mandatory_field_gdpr1(app):
    signup(app, frequency="weekly")
    token = confirm_link_token(app, outbox_rows(app, "confirm")[0])
    with app.engine.begin() as conn:
        subs.confirm(
            conn, app.settings, token, client=subs.Client(source="web:/confirm", ip="192.0.2.8", user_agent="UA2")
        )
    log = events(app)
    kinds = [e["kind"] for e in log]
    assert kinds == ["signup", "confirm_sent", "confirmed"]
    s, sent, conf = log
    assert s["source"] == "web:/" and s["wording_version"] == "v1" and s["privacy_version"] == "1"
    assert s["ip"] == "192.0.2.7" and s["user_agent"] == "Mozilla/5.0 (test)"
    assert s["detail"]["requested"]["frequency"] == "weekly"
    assert sent["token_hash"] == conf["token_hash"] == tokens.token_hash(token)
    assert conf["wording_version"] == "v1" and conf["privacy_version"] == "1"  # what they were told
    assert conf["ip"] == "192.0.2.8" and conf["at"].tzinfo is not None
    # Withdrawal adds an event; nothing is deleted.
    first = sub_row(app)["id"]
    with app.engine.begin() as conn:
        assert subs.unsubscribe(conn, app.settings, first, client=subs.Client(source="one-click"))
    log2 = events(app)
    assert [e["kind"] for e in log2] == kinds + ["unsubscribed"]
    assert log2[-1]["source"] == "one-click" and sub_row(app)["unsubscribed_at"] is not None


def test_consent_log_without_client_details_when_configured(make_app, db_url):
    app = make_app(db_url, "[subscribers]\nrecord_client = false\n")
    signup(app)
    assert all(e["ip"] is None and e["user_agent"] is None for e in events(app))


def test_unsubscribed_address_is_never_silently_resubscribed(app):
    signup(app)
    first = confirm_link_token(app, outbox_rows(app, "confirm")[0])
    second = sub_row(app)["id"]
    with app.engine.begin() as conn:
        subs.confirm(conn, app.settings, first)
        subs.unsubscribe(conn, app.settings, second)
    result = signup(app, frequency="daily")
    assert result.action == "confirm_sent"
    assert sub_row(app)["state"] == "unsubscribed", "only a new confirmation re-subscribes"
    first = confirm_link_token(app, outbox_rows(app, "confirm")[-1])
    with app.engine.begin() as conn:
        sub = subs.confirm(conn, app.settings, first)
    assert sub["state"] == "confirmed" and sub["frequency"] == "daily" and sub["unsubscribed_at"] is None


def test_known_confirmed_address_gets_a_notice_not_a_new_state(app):
    signup(app, frequency="weekly")
    first = confirm_link_token(app, outbox_rows(app, "confirm")[0])
    with app.engine.begin() as conn:
        subs.confirm(conn, app.settings, first)
    result = signup(app, frequency="instant", topics=["x"])
    assert result.action == "notice_sent"
    sub = sub_row(app)
    assert sub["frequency"] == "weekly" and sub["topics"] == [], "a stranger cannot change someone's preferences"
    assert [r["kind"] for r in outbox_rows(app)] == ["confirm", "subscribed_notice"]


def test_suppressed_address_gets_nothing(app):
    signup(app)
    first = confirm_link_token(app, outbox_rows(app, "confirm")[0])
    with app.engine.begin() as conn:
        subs.confirm(conn, app.settings, first)
        assert subs.mark_suppressed(conn, app.settings, "ada@example.com", reason="hard_bounce", source="smtp")
    before = len(outbox_rows(app))
    assert signup(app).action == "ignored_suppressed"
    assert len(outbox_rows(app)) == before
    assert sub_row(app)["state"] == "suppressed"
    with app.engine.begin() as conn:
        assert subs.lift_suppression(conn, app.settings, "ada@example.com")
    assert sub_row(app)["state"] == "confirmed"


def test_address_on_the_suppression_list_gets_no_confirmation(app):
    from pipeline.subscribers.suppression import suppress

    with app.engine.begin() as conn:
        suppress(conn, app.settings, "bounced@example.com", reason="hard_bounce", source="test")
    assert signup(app, "bounced@example.com").action == "ignored_suppressed"
    assert outbox_rows(app) == [] and sub_row(app, "bounced@example.com") is None


def test_rate_limit_per_address_doi2(make_app, db_url):
    app = make_app(db_url, "[subscribers]\nmax_signups_per_address = 2\nmax_signups_per_client = 100\n")
    signup(app)
    signup(app)
    with pytest.raises(subs.RateLimited) as info:
        signup(app)
    assert 1 <= info.value.retry_after <= 3601
    assert len(outbox_rows(app, "confirm")) == 2
    # An hour later the address may ask again.
    later = utcnow() + dt.timedelta(hours=1, seconds=5)
    with app.engine.begin() as conn:
        subs.request_subscription(conn, app.settings, "ada@example.com", client=CLIENT, now=later)


def test_rate_limit_per_client_doi2(make_app, db_url):
    app = make_app(db_url, "[subscribers]\nmax_signups_per_address = 100\nmax_signups_per_client = 3\n")
    for i in range(3):
        signup(app, f"p{i}@example.com")
    with pytest.raises(subs.RateLimited):
        signup(app, "p9@example.com")
    signup(app, "p9@example.com", client=subs.Client(source="web", ip="198.51.100.1"))  # another client


def test_invalid_input_names_the_field(app):
    for field, address, kwargs in [
        ("email", "not-an-address", {}),
        ("email", "", {}),
        ("frequency", "ada@example.com", {"frequency": "hourly"}),
        ("timezone", "ada@example.com", {"timezone": "Mars/Olympus"}),
        ("topics", "ada@example.com", {"topics": ["no spaces allowed"]}),
        ("name", "ada@example.com", {"name": "Eve\r\nBcc: x@example.com"}),
    ]:
        with pytest.raises(subs.InvalidInput) as info:
            signup(app, address, **kwargs)
        assert info.value.field == field
    assert outbox_rows(app) == []


def test_topics_must_be_offered_when_a_list_is_configured(make_app, db_url):
    app = make_app(db_url, '[subscribers]\ntopics = ["work", "wellbeing"]\n')
    with pytest.raises(subs.InvalidInput):
        signup(app, topics=["gardening"])
    signup(app, topics=["Work", "wellbeing", "work"])
    assert sub_row(app)["topics"] == ["wellbeing", "work"]


# --- UNS-1 ------------------------------------------------------------------------


def test_unsubscribe_token_test_vector_uns1(make_app, sqlite_url):
    """A fixed key gives a fixed token: <key id>.<id>.<HMAC-SHA256 tag> (no email, no expiry)."""
    import base64
    import hashlib
    import hmac

    app = make_app(sqlite_url)
    settings = load_settings(app.settings.source, env={"SYNDICATE_SECRET_KEY": "k" * 40})
    token = subs.list_token(settings, "unsubscribe", 42)
    kid = hashlib.sha256(("syndicate.key-id|" + "k" * 40).encode()).hexdigest()[:8]
    tag = hmac.new(b"k" * 40, f"{kid}|42|digest.news.example.com|unsubscribe".encode(), hashlib.sha256).digest()
    expected = f"{kid}.AAAAAAAAACo.{base64.urlsafe_b64encode(tag).rstrip(b'=').decode()}"
    assert token == expected
    assert "@" not in token and subs.verify_list_token(settings, "unsubscribe", token) == 42
    url = subs.unsubscribe_url(settings, 42)
    assert url == f"https://news.example.com/unsubscribe/{expected}"
    assert subs.preferences_url(settings, 42).startswith("https://news.example.com/preferences/")


def test_unsubscribe_token_flipped_byte_and_other_subscriber_rejected_uns1(sqlite_app):
    settings = sqlite_app.settings
    token = subs.list_token(settings, "unsubscribe", 7)
    kid, sid, tag = token.split(".")
    for bad in (
        f"{kid}.{sid}.{tag[:-1]}{'A' if tag[-1] != 'A' else 'B'}",
        f"{kid}.{base64.urlsafe_b64encode((8).to_bytes(8, 'big')).rstrip(b'=').decode()}.{tag}",
        f"{'0' * 8}.{sid}.{tag}",
        token + ".x",
        token.upper(),
    ):
        with pytest.raises(TokenError):
            subs.verify_list_token(settings, "unsubscribe", bad)


def test_unsubscribe_token_survives_key_rotation_uns1(sqlite_app):
    root = sqlite_app.settings.source
    old = load_settings(root, env={"SYNDICATE_SECRET_KEY": "old-key-" + "o" * 32})
    token = subs.list_token(old, "unsubscribe", 5)
    rotated = load_settings(
        root,
        env={
            "SYNDICATE_SECRET_KEY": "new-key-" + "n" * 32,
            "SYNDICATE_SECURITY__PREVIOUS_SECRET_KEYS": "old-key-" + "o" * 32,
        },
    )
    assert subs.verify_list_token(rotated, "unsubscribe", token) == 5
    assert subs.list_token(rotated, "unsubscribe", 5) != token  # new links use the new key
    forgotten = load_settings(root, env={"SYNDICATE_SECRET_KEY": "new-key-" + "n" * 32})
    with pytest.raises(TokenError):
        subs.verify_list_token(forgotten, "unsubscribe", token)


def test_token_for_one_list_does_not_work_for_another_uns1(sqlite_app):
    root = sqlite_app.settings.source
    env = {"SYNDICATE_SECRET_KEY": "k" * 40}
    list_a = load_settings(root, env={**env, "SYNDICATE_SITE__LIST_ID": "A <a.news.example.com>"})
    list_b = load_settings(root, env={**env, "SYNDICATE_SITE__LIST_ID": "B <b.news.example.com>"})
    token = subs.list_token(list_a, "unsubscribe", 3)
    assert subs.verify_list_token(list_a, "unsubscribe", token) == 3
    with pytest.raises(TokenError):
        subs.verify_list_token(list_b, "unsubscribe", token)


# --- preferences, withdrawal ---------------------------------------------------------


def test_preferences_change_is_logged_with_old_and_new(app):
    signup(app, frequency="weekly")
    sid = sub_row(app)["id"]
    with app.engine.begin() as conn:
        changes = subs.update_preferences(
            conn,
            app.settings,
            sid,
            frequency="daily",
            topics=["work"],
            name="Ada L.",
            client=subs.Client(source="web:/preferences"),
        )
        again = subs.update_preferences(conn, app.settings, sid, frequency="daily")
    assert changes == {"frequency": ["weekly", "daily"], "topics": [[], ["work"]], "name": ["", "Ada L."]}
    assert again == {}
    prefs = [e for e in events(app) if e["kind"] == "preferences"]
    assert len(prefs) == 1 and prefs[0]["detail"]["changes"]["frequency"] == ["weekly", "daily"]


def test_unsubscribe_is_idempotent_and_spends_pending_links(app):
    signup(app)
    token = confirm_link_token(app, outbox_rows(app, "confirm")[0])
    sid = sub_row(app)["id"]
    with app.engine.begin() as conn:
        assert subs.unsubscribe(conn, app.settings, sid) is True
        assert subs.unsubscribe(conn, app.settings, sid) is False
        with pytest.raises(subs.LinkUsed):
            subs.confirm(conn, app.settings, token)
    assert [e["kind"] for e in events(app)].count("unsubscribed") == 1


def test_suppression_reason_unsubscribed_is_a_withdrawal(app):
    signup(app)
    first = confirm_link_token(app, outbox_rows(app, "confirm")[0])
    with app.engine.begin() as conn:
        subs.confirm(conn, app.settings, first)
        subs.mark_suppressed(conn, app.settings, "ada@example.com", reason="unsubscribed", source="mailto")
    assert sub_row(app)["state"] == "unsubscribed"


# --- the confirmation email ---------------------------------------------------------


def test_confirmation_email_is_well_formed_bulk6(app):
    signup(app, name="Ada <script>", frequency="daily")
    report = drain(app.settings, app.engine)
    assert report.sent == 1
    files = list((app.settings.path("email.maildir") / "new").iterdir())
    raw = files[0].read_bytes()
    assert b"\r\n" in raw and not re.search(rb"[^\r]\n", raw), "CRLF line endings only (SMTP-7)"
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["From"] == app.settings.site.transactional_from != app.settings.site.from_address
    assert msg["To"] == "ada@example.com"
    assert msg["Message-ID"].endswith("@news.example.com>")
    assert parsedate_to_datetime(msg["Date"]).tzinfo is not None
    assert msg.get_content_type() == "multipart/alternative"
    parts = [p.get_content_type() for p in msg.iter_parts()]
    assert parts == ["text/plain", "text/html"]
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    token = confirm_link_token(app, outbox_rows(app, "confirm")[0])
    link = f"https://news.example.com/confirm/{token}"
    assert link in text and link in html
    assert "Ada <script>" in text and "&amp;" not in text
    assert "<script>" not in html and "Ada &lt;script&gt;" in html
    assert "48 hours" in text


def test_confirmation_email_not_sent_once_confirmed(app):
    signup(app)
    signup(app)  # two links queued
    rows = outbox_rows(app, "confirm")
    with app.engine.begin() as conn:
        subs.confirm(conn, app.settings, confirm_link_token(app, rows[1]))
    report = drain(app.settings, app.engine)
    assert report.sent == 0 and report.suppressed == 2


def test_notice_email_has_preferences_and_unsubscribe_links(app):
    signup(app)
    first = confirm_link_token(app, outbox_rows(app, "confirm")[0])
    with app.engine.begin() as conn:
        subs.confirm(conn, app.settings, first)
    drain(app.settings, app.engine)
    signup(app)
    assert drain(app.settings, app.engine).sent == 1
    sid = sub_row(app)["id"]
    newest = max((app.settings.path("email.maildir") / "new").iterdir(), key=lambda p: p.stat().st_mtime_ns)
    msg = email.message_from_bytes(newest.read_bytes(), policy=email.policy.default)
    text = msg.get_body(("plain",)).get_content()
    assert "already subscribed" in msg["Subject"]
    assert subs.preferences_url(app.settings, sid) in text and subs.unsubscribe_url(app.settings, sid) in text


# --- import / export / purge --------------------------------------------------------

CSV = """email,name,frequency,topics,timezone
ada@example.com,Ada,daily,work;wellbeing,Europe/Berlin
not-an-address,Bad,weekly,,UTC
bo@example.com,Bo,hourly,,UTC
cy@example.com,"Cy, Jr.",weekly,,Mars/Base
left@example.com,Left,weekly,,UTC
dee@example.com,,,,
ADA@example.com,Ada again,weekly,,UTC
"""


def _import(app, text, **kw):
    with app.engine.begin() as conn:
        return subs.import_csv(conn, app.settings, io.StringIO(text), file_name="list.csv", **kw)


def test_import_reports_bad_rows_by_line_and_keeps_unsubscribes(app):
    signup(app, "left@example.com")
    first = sub_row(app, "left@example.com")["id"]
    with app.engine.begin() as conn:
        subs.unsubscribe(conn, app.settings, first)
    report = _import(app, CSV, confirmed=True, source="paper form 2026")
    bad = dict(report.bad)
    assert sorted(bad) == [3, 4, 5, 8]
    assert "not a valid email" in bad[3] and "frequency" in bad[4] and "time zone" in bad[5]
    assert "more than once" in bad[8]
    assert report.kept == [(6, "left@example.com", "unsubscribed")]
    assert report.added == 2 and report.confirmed == 2
    assert sub_row(app, "left@example.com")["state"] == "unsubscribed"
    ada = sub_row(app)
    assert (ada["state"], ada["frequency"], ada["topics"], ada["timezone"]) == (
        "confirmed",
        "daily",
        ["wellbeing", "work"],
        "Europe/Berlin",
    )
    dee = sub_row(app, "dee@example.com")
    assert dee["frequency"] == "weekly" and dee["timezone"] == "UTC"
    log = events(app)
    assert [e["kind"] for e in log] == ["imported", "confirmed"]
    assert log[1]["source"] == "import:paper form 2026" and log[0]["detail"]["line"] == 2
    assert not outbox_rows(app, "confirm")[1:], "no confirmation emails for rows stated as confirmed"


def test_import_without_confirmed_queues_confirmations_and_upserts(app):
    report = _import(app, "email,name\nada@example.com,Ada\nbo@example.com,Bo\n")
    assert report.added == 2 and report.confirmations_queued == 2
    assert len(outbox_rows(app, "confirm")) == 2
    report = _import(app, "email,name,frequency\nada@example.com,Ada L.,daily\n")
    assert report.updated == 1 and report.added == 0 and report.confirmations_queued == 0
    assert sub_row(app)["name"] == "Ada L."


def test_import_needs_a_source_with_confirmed_and_an_email_column(app):
    with pytest.raises(subs.InvalidInput):
        _import(app, CSV, confirmed=True, source="")
    with pytest.raises(subs.InvalidInput):
        _import(app, "name\nAda\n")


def test_import_keeps_suppressed_addresses(app):
    from pipeline.subscribers.suppression import suppress

    with app.engine.begin() as conn:
        suppress(conn, app.settings, "gone@example.com", reason="complaint", source="fbl")
    report = _import(app, "email\ngone@example.com\n", confirmed=True, source="x")
    assert report.kept == [(2, "gone@example.com", "suppressed (complaint)")]
    assert sub_row(app, "gone@example.com") is None


def test_export_round_trips_through_import(app):
    _import(app, CSV, confirmed=True, source="demo")
    out = io.StringIO()
    with app.engine.connect() as conn:
        n = subs.export_csv(conn, out)
    lines = out.getvalue().splitlines()
    assert n == 3 and lines[0].startswith("email,name,state,frequency,topics,timezone")
    assert any(line.startswith("ada@example.com,Ada,confirmed,daily,wellbeing;work,Europe/Berlin") for line in lines)
    report = _import(app, out.getvalue(), confirmed=True, source="demo")
    assert report.bad == [] and report.added == 0


def test_purge_deletes_only_old_unconfirmed_gdpr2(app):
    old = utcnow() - dt.timedelta(days=8)
    with app.engine.begin() as conn:
        subs.request_subscription(conn, app.settings, "old@example.com", client=CLIENT, now=old)
        subs.request_subscription(conn, app.settings, "oldconfirmed@example.com", client=CLIENT, now=old)
    token = confirm_link_token(app, outbox_rows(app, "confirm")[1])
    with app.engine.begin() as conn:
        subs.confirm(conn, app.settings, token, now=old + dt.timedelta(hours=1))
    signup(app, "new@example.com")
    with app.engine.begin() as conn:
        assert subs.purge_unconfirmed(conn, app.settings, dry_run=True)["purged_unconfirmed"] == 1
    assert sub_row(app, "old@example.com") is not None
    counts = subs.purge_stage(app)
    assert counts["purged_unconfirmed"] == 1
    assert sub_row(app, "old@example.com") is None
    assert sub_row(app, "oldconfirmed@example.com")["state"] == "confirmed"
    assert sub_row(app, "new@example.com")["state"] == "unconfirmed"
    kept = {sub_row(app, "oldconfirmed@example.com")["id"], sub_row(app, "new@example.com")["id"]}
    with app.engine.connect() as conn:
        assert {r[0] for r in conn.execute(select(subscriber_events.c.subscriber_id))} == kept


def test_add_refuses_to_resubscribe_and_needs_consent(app):
    with app.engine.begin() as conn:
        sub, action = subs.add(conn, app.settings, "ada@example.com", confirmed=True, source="phone call")
    assert sub["state"] == "confirmed" and "confirmed" in action
    with app.engine.begin() as conn:
        subs.remove(conn, app.settings, "ada@example.com")
    with app.engine.begin() as conn, pytest.raises(SyndicateError):
        subs.add(conn, app.settings, "ada@example.com", confirmed=True, source="again")
    with app.engine.begin() as conn:
        assert subs.remove(conn, app.settings, "ada@example.com", erase=True) == "erased"
    assert sub_row(app) is None
    with app.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(subscriber_events)).scalar_one() == 0


def test_may_receive_checks_the_suppression_list_at_send_time_bulk4(app):
    from pipeline.store.schema import suppressions

    signup(app)
    first = confirm_link_token(app, outbox_rows(app, "confirm")[0])
    with app.engine.begin() as conn:
        subs.confirm(conn, app.settings, first)
    sid = sub_row(app)["id"]
    with app.engine.begin() as conn:
        assert subs.may_receive(conn, sid)
        conn.execute(
            insert(suppressions).values(
                email="ada@example.com", reason="hard_bounce", source="t", created_at=utcnow(), detail=""
            )
        )
        assert not subs.may_receive(conn, sid)


def test_form_context_offers_topics_of_approved_articles(app):
    from pipeline.content.editorial import approve
    from pipeline.content.ingest import ingest
    from tests.articles import write_article, write_author

    root = app.settings.root
    write_author(root)
    write_article(root, "rituals")
    ingest(app)
    with app.engine.begin() as conn:
        approve(conn, all_pending=True, editor="eve")
        ctx = subs.form_context(app.settings, conn)
    assert ctx["action"] == "https://news.example.com/subscribe"
    assert ctx["topics"] and all(re.fullmatch(r"[a-z0-9][a-z0-9_-]*", t) for t in ctx["topics"])
    assert ctx["consent_version"].startswith("sha256:")


def test_app_fixture_is_isolated(app):
    assert isinstance(app, App)
    with app.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(subscribers)).scalar_one() == 0


# --- golden files -------------------------------------------------------------------

GOLDEN = __import__("pathlib").Path(__file__).resolve().parent / "data" / "golden"


def _golden_message(raw: bytes) -> str:
    """Headers a person sees and both decoded parts, with the link token pinned."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    head = [f"{name}: {msg[name]}" for name in ("From", "To", "Subject", "Date", "Auto-Submitted", "MIME-Version")]
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    out = ("\n".join(head) + "\n\n--- text/plain ---\n" + text + "\n--- text/html ---\n" + html).replace("\r\n", "\n")
    return re.sub(r"/(confirm|preferences|unsubscribe)/[A-Za-z0-9_.\-]+", r"/\1/<TOKEN>", out)


def _check_golden(name: str, actual: str) -> None:
    import os

    path = GOLDEN / name
    if os.environ.get("SYNDICATE_REGENERATE_GOLDENS") or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual, encoding="utf-8", newline="\n")
    assert actual == path.read_text(encoding="utf-8"), f"{name} changed; `make goldens` if deliberate"


def test_golden_confirmation_and_notice_emails(sqlite_app, monkeypatch):
    monkeypatch.setenv("SYNDICATE_FROZEN_NOW", "2026-11-03T12:00:00Z")
    app = sqlite_app
    signup(app, "chloe@example.com", name="Chloé Martin", frequency="daily", topics=["sleep", "work"])
    drain(app.settings, app.engine)
    (confirm_file,) = list((app.settings.path("email.maildir") / "new").iterdir())
    _check_golden("confirm_email.txt", _golden_message(confirm_file.read_bytes()))
    first = confirm_link_token(app, outbox_rows(app, "confirm")[0])
    with app.engine.begin() as conn:
        subs.confirm(conn, app.settings, first)
    signup(app, "chloe@example.com")
    drain(app.settings, app.engine)
    notice = [p for p in (app.settings.path("email.maildir") / "new").iterdir() if p != confirm_file]
    _check_golden("subscribed_notice_email.txt", _golden_message(notice[0].read_bytes()))


def test_import_of_a_known_address_changes_only_the_stated_columns(app):
    _import(
        app,
        "email,name,frequency,topics,timezone\nada@example.com,Ada,daily,work,Europe/Berlin\n",
        confirmed=True,
        source="demo",
    )
    report = _import(app, "email,frequency,topics\nada@example.com,instant,\n")
    assert report.updated == 1
    sub = sub_row(app)
    assert (sub["name"], sub["frequency"], sub["topics"], sub["timezone"]) == (
        "Ada",
        "instant",
        ["work"],
        "Europe/Berlin",
    )


def test_add_does_not_overwrite_a_known_subscriber(app):
    with app.engine.begin() as conn:
        subs.add(conn, app.settings, "ada@example.com", frequency="daily", topics=["work"])
        sub, action = subs.add(conn, app.settings, "ada@example.com", confirmed=True, source="phone")
    assert sub["state"] == "confirmed" and sub["frequency"] == "daily" and "confirmed" in action
    with app.engine.begin() as conn, pytest.raises(SyndicateError, match="already on the list"):
        subs.add(conn, app.settings, "ada@example.com", frequency="weekly")


def test_concurrent_sign_ups_for_one_new_address_make_one_row(app):
    import threading

    barrier = threading.Barrier(4)
    errors = []

    def one(i):
        barrier.wait()
        try:
            signup(app, "race@example.com", client=subs.Client(source="web", ip=f"192.0.2.{i}"))
        except Exception as exc:  # any failure is the bug under test
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] or all(isinstance(e, subs.RateLimited) for e in errors)
    with app.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(subscribers)).scalar_one() == 1


def test_a_topic_no_longer_offered_can_be_kept(make_app, db_url):
    app = make_app(db_url, '[subscribers]\ntopics = ["work"]\n')
    _import(app, "email,topics\nada@example.com,legacy\n", confirmed=True, source="old list")
    sid = sub_row(app)["id"]
    with app.engine.begin() as conn:
        assert subs.update_preferences(conn, app.settings, sid, topics=["legacy", "work"])
        with pytest.raises(subs.InvalidInput):
            subs.update_preferences(conn, app.settings, sid, topics=["other"])
    assert sub_row(app)["topics"] == ["legacy", "work"]
