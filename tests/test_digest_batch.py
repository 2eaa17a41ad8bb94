"""Building a claimed batch of digests at once (issue 15 item 1): `build_many` gives the
same bytes as building one by one, keeps the send-time checks exactly as strict
(BULK-4), and costs a fixed number of SQL statements whatever the batch's size."""

from __future__ import annotations

import contextlib

from sqlalchemy import event, select, update

from pipeline.delivery.email.channel import EmailChannel
from pipeline.digests import builder
from pipeline.digests import editions as digests
from pipeline.store.schema import deliveries, subscribers

from .digest_helpers import add_subscriber, at, by_recipient, drain, suppress
from .test_digests_golden import _site, check_golden

WHEN = at(days=1, hours=3)


def _rows(app, kind: str | None = None) -> list[dict]:
    q = select(deliveries).order_by(deliveries.c.id)
    if kind:
        q = q.where(deliveries.c.kind == kind)
    with app.engine.connect() as conn:
        return [dict(r) for r in conn.execute(q).mappings()]


@contextlib.contextmanager
def _statements(engine):
    """Every SQL statement the engine runs inside the block (executemany counts once;
    the BEGIN the SQLite engine issues itself is not counted)."""
    seen: list[str] = []

    def note(conn, cursor, statement, parameters, context, executemany):
        if not statement.startswith("BEGIN"):
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", note)


def _readers(app, count: int) -> None:
    for i in range(count):
        add_subscriber(app, f"reader{i}@example.com", name=f"Reader {i}", confirmed_at=at(-1))


def test_batch_gives_the_golden_bytes_one_by_one_gives(sqlite_app, monkeypatch):
    """The golden daily digest and instant alert, built in one batch with other readers,
    are byte for byte what building each row alone gives (issue 15 item 1)."""
    monkeypatch.setenv("SYNDICATE_FROZEN_NOW", "2026-11-03T12:00:00Z")
    app = sqlite_app
    _site(app)
    _readers(app, 5)
    digests.compose(app.engine, app.settings, "daily", now=WHEN)
    digests.compose(app.engine, app.settings, "instant", now=WHEN)
    rows = _rows(app)
    assert len(rows) == 7
    with app.engine.connect() as conn:
        builder._skeletons.clear()
        batch = builder.build_many(conn, app.settings, rows)
        builder._skeletons.clear()
        alone = [builder.build_digest_email(conn, app.settings, r) for r in rows]
    assert all(m is not None and not isinstance(m, Exception) for m in batch)
    assert [m.data for m in batch] == [m.data for m in alone]
    assert [m.recipients for m in batch] == [[r["target"]] for r in rows]
    got = {r["target"]: m.data for r, m in zip(rows, batch)}
    check_golden("digest_daily.eml", got["ana@example.com"])
    check_golden("instant.eml", got["chloe@example.com"])


def test_bulk4_unsubscribed_suppressed_or_moved_after_compose_get_nothing(app):
    """BULK-4 in a batch: a subscriber who unsubscribes, is suppressed, or changes
    address between compose and send gets nothing; the others in the batch do."""
    from pipeline import subscribers as subs

    _site(app)
    _readers(app, 4)
    digests.compose(app.engine, app.settings, "daily", now=WHEN)
    rows = {r["target"]: r for r in _rows(app, "digest")}
    assert len(rows) == 5
    with app.engine.begin() as conn:
        subs.unsubscribe(conn, app.settings, rows["reader0@example.com"]["subscriber_id"])
        conn.execute(
            update(subscribers).where(subscribers.c.email == "reader2@example.com").values(email="moved@example.com")
        )
    suppress(app, "reader1@example.com")
    with app.engine.connect() as conn:
        batch = dict(zip(rows, builder.build_many(conn, app.settings, list(rows.values()))))
    assert {t for t, m in batch.items() if m is None} == {
        "reader0@example.com",
        "reader1@example.com",
        "reader2@example.com",
    }
    # and through the worker: only the two who stayed get a digest
    report = drain(app)
    assert report.sent == 2 and report.suppressed == 3
    assert sorted(by_recipient(app)) == ["ana@example.com", "reader3@example.com"]


def test_a_bad_row_fails_alone(app):
    """A row whose part is gone is that row's failure; the batch goes on."""
    _site(app)
    _readers(app, 2)
    digests.compose(app.engine, app.settings, "daily", now=WHEN)
    rows = _rows(app, "digest")
    rows[1] = {**rows[1], "payload": {**rows[1]["payload"], "part": 999_999}}
    with app.engine.connect() as conn:
        batch = builder.build_many(conn, app.settings, rows)
    assert isinstance(batch[1], Exception) and "999999 is gone" in str(batch[1])
    assert batch[0] is not None and batch[2] is not None


def test_a_batch_costs_a_fixed_number_of_statements(app):
    """Issue 15 item 1: building 3 or 60 digests, and preparing them in the email
    channel, runs the same number of SQL statements (was one SELECT per message)."""
    _site(app)
    _readers(app, 60)
    digests.compose(app.engine, app.settings, "daily", now=WHEN)
    rows = _rows(app, "digest")
    assert len(rows) == 61
    counts = {}
    for n in (3, 61):
        builder._skeletons.clear()
        with _statements(app.engine) as seen, app.engine.connect() as conn:
            assert all(m is not None for m in builder.build_many(conn, app.settings, rows[:n]))
        counts[n] = len(seen)
    assert counts[3] == counts[61] <= 2, counts  # subscribers + suppressions, the parts
    prepared = {}
    channel = EmailChannel(app.settings, app.engine)
    try:
        for n in (3, 61):
            builder._skeletons.clear()
            with _statements(app.engine) as seen:
                batch = channel.prepare(rows[:n])
            assert len(batch.jobs) == n
            prepared[n] = len(seen)
    finally:
        channel.close()
    assert prepared[3] == prepared[61], prepared


def test_digests_go_out_without_a_whole_message_scan_each_smtp7(make_app, sqlite_url, monkeypatch):
    """Issue 15 item 1 (SMTP-7, SMTP-8): a batch of real digests reaches the SMTP server
    byte for byte as `build_many` builds it, CRLF only and dot-stuffed where needed,
    without the channel's `to_crlf` or the sender's `quote_periods` scanning each whole
    message (they were two thirds of the per-message CPU outside the builder: the
    skeleton's pieces are looked at once, the short personal values per message)."""
    from pipeline.delivery.email import channel as email_channel
    from pipeline.delivery.email import smtp as email_smtp
    from tests.delivery_kit import smtp_toml
    from tests.smtp_server import SMTPTestServer

    scans = {"to_crlf": 0, "quote_periods": 0}

    def counting(name, real):
        def wrapper(data):
            scans[name] += 1
            return real(data)

        return wrapper

    with SMTPTestServer(pipelining=True) as server:
        app = make_app(sqlite_url, smtp_toml(server))
        _site(app)
        _readers(app, 20)
        digests.compose(app.engine, app.settings, "daily", now=WHEN)
        rows = _rows(app, "digest")
        assert len(rows) == 21
        monkeypatch.setattr(email_channel, "to_crlf", counting("to_crlf", email_channel.to_crlf))
        monkeypatch.setattr(email_smtp, "quote_periods", counting("quote_periods", email_smtp.quote_periods))
        report = drain(app)
        assert report.sent == 21
        assert scans == {"to_crlf": 0, "quote_periods": 0}, scans
        got = {m.rcpt_tos[0]: m for m in server.messages}
    monkeypatch.setenv("SYNDICATE_FROZEN_NOW", "2026-11-03T12:00:00Z")  # one Date for the comparison
    with app.engine.connect() as conn:
        built = builder.build_many(conn, app.settings, rows)
    for row, message in zip(rows, built):
        received = got[row["target"]]
        assert not received.has_bare_lf
        # the same bytes but the Date header (sent a moment earlier than built here)
        assert _without_date(received.data) == _without_date(message.data)


def _without_date(data: bytes) -> bytes:
    head, sep, body = data.partition(b"\r\n\r\n")
    return b"\r\n".join(line for line in head.split(b"\r\n") if not line.startswith(b"Date: ")) + sep + body


def test_what_the_pieces_say_matches_a_whole_message_scan_smtp7():
    """`Skeleton.fill` never says "CRLF only" (SMTP-7) or "no line starts with '.'"
    (RFC 5321 4.5.2) of a message a whole scan would change, whatever the values hold
    and wherever they sit; says both of CRLF pieces exactly as a scan would; and gives
    `re.sub`'s bytes."""
    import itertools

    from pipeline.delivery.email.channel import to_crlf
    from pipeline.delivery.email.smtp import quote_periods
    from pipeline.digests import render

    name, unsub = render.MARKERS["name_t"], render.MARKERS["unsub_t"]
    skeletons = [
        f"To: x\r\n\r\nHi {name}\r\n{unsub}\r\nend\r\n",
        f"{name}\r\n.dot line\r\n{unsub}",
        f"a\r\n{name}{unsub}\r\n",
        f"bare\nlf {name}\r\n",
        f"{name}",
    ]
    values = ["", "Ana", ".leading", "mid\r\n.dot", "bare\nlf", "ends\r\n", "\n.", "cr\r", "Zoë"]
    for text, (a, b) in itertools.product(skeletons, itertools.product(values, repeat=2)):
        values_now = {name: a, unsub: b}
        filled = render.Skeleton(text).fill(values_now)
        expected = render._MARKER_RE.sub(lambda m, v=values_now: v[m.group(0)], text).encode("utf-8")
        assert filled.data == expected, (text, a, b)
        # never a wrong "yes" (a "no" only costs the channel a scan); "yes" whenever
        # the skeleton and the values are CRLF-only each, as pipeline.digests makes them
        used = [v for marker, v in ((name, a), (unsub, b)) if marker in text]
        crlf_pieces = all(render._crlf_only(x) for x in (text, *used))
        assert filled.crlf == crlf_pieces or (not filled.crlf and to_crlf(expected) is expected), (text, a, b)
        if filled.crlf:
            assert to_crlf(expected) is expected
            assert filled.dot_free == (quote_periods(expected) == expected), (text, a, b)
        else:  # the channel makes it CRLF and then scans it for dots as well
            assert not filled.dot_free or quote_periods(to_crlf(expected)) == to_crlf(expected), (text, a, b)


def test_per_batch_work_is_done_once_per_batch_not_per_message(app, monkeypatch):
    """Issue 15 item 1 (SMTP-8): building 3 or 40 digests reads the clock for the Date
    header and keys the UNS-1 link HMAC the same number of times (was once and twice
    per message); the bytes are those built one by one (the golden test above)."""
    import hmac

    from pipeline.digests import render

    _site(app)
    _readers(app, 40)
    digests.compose(app.engine, app.settings, "daily", now=WHEN)
    rows = _rows(app, "digest")
    assert len(rows) == 41
    calls = {"clock": 0, "hmac": 0}
    real_now, real_new = render._now, hmac.new

    def now():
        calls["clock"] += 1
        return real_now()

    def new(*args, **kwargs):
        calls["hmac"] += 1
        return real_new(*args, **kwargs)

    monkeypatch.setattr(render, "_now", now)
    monkeypatch.setattr(hmac, "new", new)
    counts = {}
    for n in (3, 41):
        calls.update(clock=0, hmac=0)
        with app.engine.connect() as conn:
            built = builder.build_many(conn, app.settings, rows[:n])
        assert all(m is not None and not isinstance(m, Exception) for m in built)
        counts[n] = dict(calls)
    assert counts[3] == counts[41], counts
    assert counts[41]["clock"] <= 1 and counts[41]["hmac"] <= 2, counts
