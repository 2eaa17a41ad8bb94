"""The shared helpers issue 17 asks for once: one atomic file writer, one
`transaction(engine, dry_run=...)`, one registry of channels and email kinds
(entry points), one suppression owner behind a declared hook."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading

import pytest
from sqlalchemy import func, insert, select

from pipeline.files import write_atomic
from pipeline.store import discard, get_engine, transaction
from pipeline.store.schema import suppressions
from pipeline.timeutil import utcnow


def test_write_atomic_writes_bytes_and_text_and_makes_the_folder(tmp_path):
    write_atomic(tmp_path / "a" / "b.html", "é\n")
    write_atomic(tmp_path / "a" / "c.bin", b"\x00\x01")
    assert (tmp_path / "a" / "b.html").read_bytes() == "é\n".encode()
    assert (tmp_path / "a" / "c.bin").read_bytes() == b"\x00\x01"
    assert stat.S_IMODE(os.stat(tmp_path / "a" / "b.html").st_mode) == 0o644
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b.html", "c.bin"]


def test_write_atomic_failure_keeps_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "page.html"
    write_atomic(target, "old")
    with pytest.raises(TypeError):
        write_atomic(target, 42)  # type: ignore[arg-type]
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["page.html"]


def test_concurrent_writers_of_one_path_never_collide(tmp_path):
    """Digest web views used a fixed `.tmp` name: two chunks writing the same page at
    once renamed each other's temp file away (FileNotFoundError)."""
    from pipeline.digests.editions import _write

    target = tmp_path / "digests" / "index.html"
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def writer(n: int) -> None:
        start.wait()
        try:
            for i in range(60):
                _write(target, f"writer {n} round {i}\n" * 50)
        except BaseException as exc:  # collected: the assertion below names it
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    lines = set(target.read_text().splitlines())
    assert len(lines) == 1 and [p.name for p in target.parent.iterdir()] == ["index.html"]


def _count(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(suppressions)).scalar_one()


def _add(conn, email: str) -> None:
    conn.execute(insert(suppressions).values(email=email, reason="manual", source="t", created_at=utcnow(), detail=""))


def test_transaction_commits_rolls_back_and_dry_runs(db_url):
    engine = get_engine(db_url)
    with transaction(engine) as conn:
        _add(conn, "a@example.com")
    assert _count(engine) == 1
    with transaction(engine, dry_run=True) as conn:
        _add(conn, "b@example.com")
        assert conn.execute(select(func.count()).select_from(suppressions)).scalar_one() == 2  # seen inside
    assert _count(engine) == 1
    with pytest.raises(RuntimeError):
        with transaction(engine) as conn:
            _add(conn, "c@example.com")
            raise RuntimeError("boom")
    assert _count(engine) == 1
    with transaction(engine) as conn:
        _add(conn, "d@example.com")
        discard(conn)  # strict mode found a bad file: write nothing
    assert _count(engine) == 1


def test_channels_email_kinds_and_hook_come_from_entry_points():
    """A fresh interpreter: importing pipeline.delivery imports no stage; the registry
    finds every built-in channel and email kind by its declared name."""
    code = (
        "import sys\n"
        "import pipeline.delivery as d\n"
        "assert not any(m.startswith(('pipeline.subscribers', 'pipeline.digests', 'pipeline.partners',"
        " 'pipeline.site')) for m in sys.modules), sorted(sys.modules)\n"
        "from pipeline.delivery.email.channel import EmailChannel\n"
        "from pipeline.partners.webhook import WebhookChannel\n"
        "from pipeline.partners.micropub import MicropubChannel\n"
        "from pipeline.site.websub import WebSubChannel\n"
        "from pipeline.digests.editions import build_digest_email\n"
        "from pipeline.subscribers import emails, suppression\n"
        "from pipeline.delivery.email.smtp import SMTPSender\n"
        "assert d.channel_factory('email') is EmailChannel and d.channel_factory('webhook') is WebhookChannel\n"
        "assert d.channel_factory('micropub') is MicropubChannel and d.channel_factory('websub') is WebSubChannel\n"
        "assert d.email_builder('digest') is build_digest_email is d.email_builder('instant')\n"
        "assert d.email_builder('confirm') is emails.build_confirm_email\n"
        "assert d.email_builder('subscribed_notice') is emails.build_notice_email\n"
        "assert d.email_backend('smtp') is SMTPSender\n"
        "assert d.recipients() is suppression\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_unknown_channel_is_named_with_the_known_ones():
    from pipeline.delivery import channel_factory
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        channel_factory("pigeon")
    assert "'pigeon'" in info.value.message and "email" in info.value.hint and "webhook" in info.value.hint


def test_suppression_keeps_the_subscriber_in_step_and_confirming_lifts_only_a_withdrawal(app):
    """One owner: the list and the subscriber's state change together, no
    `settings=None` 'do not call back' flag (issue 17)."""
    from pipeline import subscribers as subs
    from pipeline.subscribers import suppression

    with app.engine.begin() as conn:
        subs.add(conn, app.settings, "ada@example.com", confirmed=True)
        assert suppression.suppress(conn, app.settings, "Ada@example.com", reason="hard_bounce", source="smtp")
        assert subs.get(conn, "ada@example.com")["state"] == "suppressed"
        assert suppression.reason_for(conn, "ada@example.com") == "hard_bounce"
        assert not suppression.drop_withdrawal(conn, "ada@example.com")  # a bounce is not a withdrawal
        assert suppression.unsuppress(conn, app.settings, "ada@example.com", source="cli")
        assert subs.get(conn, "ada@example.com")["state"] == "confirmed"
        suppression.suppress(conn, app.settings, "ada@example.com", reason="unsubscribed", source="mailto")
        assert subs.get(conn, "ada@example.com")["state"] == "unsubscribed"
        assert suppression.drop_withdrawal(conn, "ada@example.com")
        assert suppression.reason_for(conn, "ada@example.com") is None


def test_the_local_secret_is_written_private(tmp_path):
    from pipeline import tokens
    from pipeline.config import load_settings

    (tmp_path / "syndicate.toml").write_text("")
    settings = load_settings(tmp_path / "syndicate.toml", env={})
    assert tokens.create_local_secret(settings)
    path = tokens.local_secret_path(settings)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and len(path.read_text().strip()) >= 48
    assert not tokens.create_local_secret(settings)  # idempotent: the first secret stays


def test_insert_batches_writes_every_row_in_statements_of_the_batch_size(db_url):
    from sqlalchemy import event

    from pipeline.store.bulk import insert_batches

    engine = get_engine(db_url)
    now = utcnow()
    rows = [
        {"email": f"b{i}@example.com", "reason": "manual", "source": "test", "created_at": now, "detail": ""}
        for i in range(12)
    ]
    statements: list[str] = []
    with transaction(engine) as conn:
        event.listen(conn, "before_cursor_execute", lambda *args: statements.append(args[2]))
        assert insert_batches(conn, suppressions, rows, size=5) == 12
        assert insert_batches(conn, suppressions, []) == 0
    assert len(statements) == 3  # 5 + 5 + 2, nothing for the empty list
    assert _count(engine) == 12


def test_select_in_asks_in_lists_of_the_chunk_size_and_returns_every_row(db_url):
    from sqlalchemy import event, select

    from pipeline.store.bulk import insert_batches, select_in

    engine = get_engine(db_url)
    now = utcnow()
    emails = [f"c{i}@example.com" for i in range(12)]
    rows = [{"email": e, "reason": "manual", "source": "test", "created_at": now, "detail": ""} for e in emails]
    statements: list[str] = []
    with transaction(engine) as conn:
        insert_batches(conn, suppressions, rows)
        event.listen(conn, "before_cursor_execute", lambda *args: statements.append(args[2]))
        wanted = {*emails[:11], "nobody@example.com"}
        found = select_in(conn, select(suppressions.c.email), suppressions.c.email, wanted, size=5)
        assert select_in(conn, select(suppressions.c.email), suppressions.c.email, []) == []
    assert sorted(r.email for r in found) == sorted(emails[:11])
    assert len(statements) == 3  # 12 values: 5 + 5 + 2, nothing for the empty list
