"""Golden emails and previews: the exact bytes a subscriber gets, with the volatile
headers (Date, Message-ID) and the MIME boundary normalised.

Regenerate after a deliberate change with `make goldens` (SYNDICATE_REGENERATE_GOLDENS=1)
and review the diff.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from click.testing import CliRunner

from pipeline.cli import main
from pipeline.digests import editions as digests

from .digest_helpers import add_articles, add_subscriber, at, body, by_recipient, check_strict, drain, maildir_messages

GOLDEN = Path(__file__).resolve().parent / "data" / "golden"
SUMMARY = "Short nights add up. Here is what a week of them does, and the two habits that pay it back."


def normalise(data: bytes) -> str:
    text = data.decode("ascii").replace("\r\n", "\n")
    text = re.sub(r"^Date: .*$", "Date: <DATE>", text, flags=re.M)
    text = re.sub(r"^Message-ID: .*$", "Message-ID: <MESSAGE-ID>", text, flags=re.M)
    boundary = re.search(r'boundary="([^"]+)"', text).group(1)
    return text.replace(boundary, "BOUNDARY")


def check_golden(name: str, data: bytes) -> None:
    """The message passes the strict check, and equals its golden file. A missing
    golden fails: goldens are written only by `make goldens`, then reviewed."""
    check_strict(data)
    path = GOLDEN / name
    actual = normalise(data)
    if os.environ.get("SYNDICATE_REGENERATE_GOLDENS"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual, encoding="utf-8", newline="\n")
    assert path.exists(), f"no golden file {path}; run `make goldens` and review it"
    assert actual == path.read_text(encoding="utf-8"), f"{name} changed; `make goldens` if deliberate"


def _site(app):
    add_articles(
        app,
        [
            {
                "slug": "sleep-debt",
                "title": "Sleep Debt Is Real",
                "tags": "[sleep]",
                "category": "wellbeing",
                "summary": SUMMARY,
                "approved_at": at(days=1, hours=1),
                "date": "2026-11-03T07:00:00Z",
            },
            {
                "slug": "fair-fights",
                "title": "Fair Fights & Kind Words",
                "tags": "[relationships]",
                "category": "relationships",
                "approved_at": at(days=1, hours=2),
                "date": "2026-11-03T09:30:00Z",
            },
        ],
    )
    add_subscriber(app, "ana@example.com", name="Ana Ferreira", confirmed_at=at(-1))
    add_subscriber(
        app, "chloe@example.com", name="Chloé Martin", frequency="instant", topics=["sleep"], confirmed_at=at(-1)
    )


def test_golden_daily_digest_and_instant_alert(sqlite_app, monkeypatch):
    monkeypatch.setenv("SYNDICATE_FROZEN_NOW", "2026-11-03T12:00:00Z")
    _site(sqlite_app)
    digests.compose(sqlite_app.engine, sqlite_app.settings, "daily", now=at(days=1, hours=3))
    digests.compose(sqlite_app.engine, sqlite_app.settings, "instant", now=at(days=1, hours=3))
    drain(sqlite_app)
    got = {m["To"].addresses[0].addr_spec: data for data, m in maildir_messages(sqlite_app)}
    check_golden("digest_daily.eml", got["ana@example.com"])
    check_golden("instant.eml", got["chloe@example.com"])


def _cli(app, *args):
    return CliRunner().invoke(
        main, ["--config", str(app.settings.root / "syndicate.toml"), *args], catch_exceptions=False
    )


def test_preview_is_exactly_what_the_subscriber_gets(sqlite_app, monkeypatch, tmp_path):
    """`digest preview` before composing shows the next digest; after sending, the last
    one; both equal the HTML and text of the delivered message."""
    monkeypatch.setenv("SYNDICATE_FROZEN_NOW", at(days=1, hours=3).isoformat())
    _site(sqlite_app)
    before = _cli(sqlite_app, "digest", "preview", "--subscriber", "ana@example.com", "--out", str(tmp_path / "b.html"))
    assert before.exit_code == 0, before.output
    assert "next digest" in before.output
    r = _cli(sqlite_app, "digest", "compose", "--frequency", "daily")
    assert r.exit_code == 0 and "1 queued" in r.output, r.output
    drain(sqlite_app)
    after = _cli(
        sqlite_app,
        "digest",
        "preview",
        "--frequency",
        "daily",
        "--subscriber",
        "ana@example.com",
        "--out",
        str(tmp_path / "a.html"),
    )
    assert after.exit_code == 0 and "last digest sent" in after.output, after.output
    (msg,) = by_recipient(sqlite_app)["ana@example.com"]
    html, text = body(msg, "html"), body(msg, "plain")
    for name in ("b", "a"):
        assert (tmp_path / f"{name}.html").read_text() == html
        assert (tmp_path / f"{name}.html.txt").read_text() == text


def test_cli_compose_dry_run_prints_who_gets_how_many(sqlite_app, monkeypatch):
    monkeypatch.setenv("SYNDICATE_FROZEN_NOW", at(days=1, hours=3).isoformat())
    _site(sqlite_app)
    r = _cli(sqlite_app, "digest", "compose", "--frequency", "daily", "--dry-run")
    assert r.exit_code == 0, r.output
    (line,) = [ln for ln in r.output.splitlines() if "ana@example.com" in ln]
    assert re.search(r"\b2\b", line)
    assert "1 subscriber(s) would get 1 message(s), 0 have nothing new; nothing was written" in r.output
    r = _cli(sqlite_app, "digest", "compose", "--frequency", "instant", "--dry-run")
    assert "chloe@example.com" in r.output
    assert maildir_messages(sqlite_app) == []
    r = _cli(sqlite_app, "run", "--stage", "digest", "--dry-run")
    assert r.exit_code == 0, r.output


def test_cli_preview_sample_without_subscribers(make_app, sqlite_url, tmp_path, monkeypatch):
    monkeypatch.setenv("SYNDICATE_FROZEN_NOW", at(days=1, hours=3).isoformat())
    app = make_app(sqlite_url)
    add_articles(app, [{"slug": "only-one", "approved_at": at(days=1)}])
    r = _cli(app, "digest", "preview", "--frequency", "weekly", "--out", str(tmp_path / "w.html"))
    assert r.exit_code == 0 and "sample" in r.output, r.output
    assert "Only One" in (tmp_path / "w.html").read_text()
    r = _cli(app, "digest", "preview")
    assert r.exit_code == 1 and "name a frequency or a subscriber" in r.output


def test_preview_shows_the_next_edition_with_approvals_since_the_last_send(sqlite_app, monkeypatch, tmp_path):
    """Issue 16 item 20: after today's digest went out, `digest preview --subscriber`
    showed that digest again; it shows what the NEXT edition will hold for them: the
    article approved since, in tomorrow's edition, and not what they already got."""
    monkeypatch.setenv("SYNDICATE_FROZEN_NOW", at(days=1, hours=3).isoformat())  # Tuesday 12:00 UTC
    _site(sqlite_app)
    r = _cli(sqlite_app, "digest", "compose", "--frequency", "daily")
    assert r.exit_code == 0 and "1 queued" in r.output, r.output
    drain(sqlite_app)
    monkeypatch.setenv("SYNDICATE_FROZEN_NOW", at(days=1, hours=6).isoformat())
    add_articles(
        sqlite_app,
        [{"slug": "after-the-send", "title": "After The Send", "tags": "[sleep]", "approved_at": at(days=1, hours=5)}],
    )
    out = tmp_path / "next.html"
    r = _cli(sqlite_app, "digest", "preview", "--subscriber", "ana@example.com", "--out", str(out))
    assert r.exit_code == 0, r.output
    assert "next digest, edition daily-2026-11-04" in r.output and "1 articles" in r.output, r.output
    html = out.read_text()
    assert "After The Send" in html and "Daily digest, Wednesday 4 November 2026" in html
    assert "Sleep Debt Is Real" not in html and "Fair Fights" not in html
    # what compose then sends tomorrow is exactly that preview
    monkeypatch.setenv("SYNDICATE_FROZEN_NOW", at(days=2, hours=1).isoformat())
    digests.compose(sqlite_app.engine, sqlite_app.settings, "daily", now=at(days=2, hours=1))
    drain(sqlite_app)
    latest = [m for m in by_recipient(sqlite_app)["ana@example.com"] if "After The Send" in body(m, "html")]
    assert len(latest) == 1 and body(latest[0], "html") == html
