"""`syndicate subscribers ...` and `syndicate serve` through click's runner."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from click.testing import CliRunner

from pipeline import subscribers as subs
from pipeline.cli import main

from .cli_kit import first_column

DEMO_CSV = """email,name,frequency,topics,timezone
ada@example.com,Ada Lovelace,daily,work;wellbeing,Europe/London
bo@example.com,Bo,weekly,,UTC
broken-address,Nobody,weekly,,UTC
cy@example.com,Cy,instant,technology,America/New_York
"""


def invoke(app, *args, input=None):
    root = Path(app.settings.source).parent
    return CliRunner(env={"COLUMNS": "250"}).invoke(
        main, ["--config", str(root / "syndicate.toml"), *args], input=input, catch_exceptions=False
    )


def test_import_list_show_export_remove(app, tmp_path):
    path = tmp_path / "subscribers.csv"
    path.write_text(DEMO_CSV)
    r = invoke(app, "subscribers", "import", str(path), "--confirmed", "--source", "demo")
    assert r.exit_code == 0, r.output
    assert f"{path}:4:" in r.output and "not a valid email" in r.output
    assert "created 3" in r.output and "confirmed 3" in r.output and "bad 1" in r.output

    r = invoke(app, "subscribers", "list")
    assert r.exit_code == 0 and "ada@example.com" in r.output and "confirmed 3" in r.output
    r = invoke(app, "subscribers", "list", "--json", "--frequency", "daily")
    assert '"email": "ada@example.com"' in r.output and "bo@example.com" not in r.output

    r = invoke(app, "subscribers", "remove", "bo@example.com")
    assert r.exit_code == 0 and "unsubscribed" in r.output
    r = invoke(app, "subscribers", "show", "BO@example.com")
    assert r.exit_code == 0, r.output
    for word in ("state: unsubscribed", "imported", "confirmed", "import:demo", "unsubscribed", "operator"):
        assert word in r.output, word

    r = invoke(app, "subscribers", "export")
    rows = list(csv.DictReader(io.StringIO(r.output)))
    assert {row["email"]: row["state"] for row in rows} == {
        "ada@example.com": "confirmed",
        "bo@example.com": "unsubscribed",
        "cy@example.com": "confirmed",
    }
    assert rows[0]["topics"] == "wellbeing;work"
    out = tmp_path / "out.csv"
    r = invoke(app, "subscribers", "export", str(out), "--state", "confirmed")
    assert r.exit_code == 0 and len(out.read_text().splitlines()) == 3

    # Importing again keeps the unsubscribe.
    r = invoke(app, "subscribers", "import", str(path), "--confirmed", "--source", "demo")
    assert "bo@example.com is unsubscribed; kept as it is" in r.output
    r = invoke(app, "subscribers", "import", str(path), "--strict", "--confirmed", "--source", "demo")
    assert r.exit_code == 1 and "bad row" in r.output


def test_import_dry_run_changes_nothing(app, tmp_path):
    path = tmp_path / "s.csv"
    path.write_text(DEMO_CSV)
    r = invoke(app, "subscribers", "import", str(path), "--dry-run")
    assert r.exit_code == 0 and "dry run" in r.output and "confirmations queued 3" in r.output
    with app.engine.connect() as conn:
        assert subs.list_subscribers(conn) == []


def test_import_errors_name_the_fix(app, tmp_path):
    r = invoke(app, "subscribers", "import", str(tmp_path / "missing.csv"))
    assert r.exit_code == 1 and "no such file" in r.output
    path = tmp_path / "s.csv"
    path.write_text(DEMO_CSV)
    r = invoke(app, "subscribers", "import", str(path), "--confirmed")
    assert r.exit_code == 1 and "--source" in r.output
    path.write_bytes(b"email\n\xff\xfe@example.com\n")
    r = invoke(app, "subscribers", "import", str(path))
    assert r.exit_code == 1 and "UTF-8" in r.output


def test_add_queues_a_confirmation_and_remove_erase(app):
    r = invoke(app, "subscribers", "add", "dee@example.com", "--name", "Dee", "--frequency", "daily")
    assert r.exit_code == 0 and "confirmation queued" in r.output
    r = invoke(app, "subscribers", "add", "eve@example.com", "--confirmed")
    assert r.exit_code == 1 and "--source" in r.output
    r = invoke(app, "subscribers", "add", "eve@example.com", "--confirmed", "--source", "phone, 2026-11-20")
    assert r.exit_code == 0 and "state confirmed" in r.output
    r = invoke(app, "subscribers", "add", "nope")
    assert r.exit_code == 1 and "not a valid email" in r.output
    r = invoke(app, "subscribers", "remove", "eve@example.com", "--erase", input="n\n")
    assert r.exit_code == 1
    r = invoke(app, "subscribers", "remove", "eve@example.com", "--erase", "--yes")
    assert r.exit_code == 0 and "erased" in r.output
    r = invoke(app, "subscribers", "show", "eve@example.com")
    assert r.exit_code == 1 and "no subscriber" in r.output


def test_purge_command_and_stage(app):
    from pipeline.ops.stages import run_stage

    invoke(app, "subscribers", "add", "dee@example.com")
    r = invoke(app, "subscribers", "purge", "--days", "1", "--dry-run")
    assert r.exit_code == 0 and "would delete 0" in r.output
    assert run_stage(app, "purge", dry_run=True)["purged_unconfirmed"] == 0
    r = invoke(app, "subscribers", "purge", "--days", "0")
    assert r.exit_code == 1 and "at least 1 day" in r.output


def test_serve_is_a_command(app):
    r = invoke(app, "serve", "--help")
    assert r.exit_code == 0 and "--port" in r.output


def test_show_prints_names_with_brackets_literally(app, tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("email,name\nodd@example.com,[bold]Odd[/bold] [x\n")
    invoke(app, "subscribers", "import", str(path), "--confirmed", "--source", "[test]")
    r = invoke(app, "subscribers", "show", "odd@example.com")
    assert r.exit_code == 0 and "[bold]Odd[/bold] [x" in r.output and "import:[test]" in r.output
    r = invoke(app, "subscribers", "list")
    assert "[bold]Odd[/bold] [x" in r.output


def test_list_shows_whole_addresses_in_an_80_column_terminal(app, tmp_path):
    """An operator's terminal is often 80 columns: every address (the one thing the
    list is for) is folded onto more lines there, never cut to "ana@exa…"."""
    path = tmp_path / "s.csv"
    path.write_text("email,name\nana.ferreira@example.com,Ana Ferreira\nbo@subdomain.example.org,Bo\n")
    invoke(app, "subscribers", "import", str(path), "--confirmed", "--source", "test")
    root = Path(app.settings.source).parent
    r = CliRunner(env={"COLUMNS": "80"}).invoke(
        main, ["--config", str(root / "syndicate.toml"), "subscribers", "list"], catch_exceptions=False
    )
    assert r.exit_code == 0, r.output
    assert "…" not in r.output
    column = first_column(r.output)
    assert "ana.ferreira@example.com" in column and "bo@subdomain.example.org" in column
