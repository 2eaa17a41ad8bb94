"""The CLI through click's runner and through the installed console script."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from pipeline.cli import main

from .articles import write_article, write_author
from .test_editorial import POLITICAL


def project(make_app, sqlite_url):
    app = make_app(sqlite_url)
    root = app.settings.root
    write_author(root)
    write_article(root, "rituals")
    write_article(root, "vote-now", title="Vote Now", body=POLITICAL)
    return root


def invoke(root: Path, *args):
    return CliRunner().invoke(main, ["--config", str(root / "syndicate.toml"), *args], catch_exceptions=False)


def test_ingest_review_approve_flow(make_app, sqlite_url):
    root = project(make_app, sqlite_url)
    r = invoke(root, "ingest")
    assert r.exit_code == 0, r.output
    assert "2 new" in r.output and "1 flagged" in r.output
    r = invoke(root, "review", "--no-diff")
    assert "vote-now" in r.output and "no-politics" in r.output
    r = invoke(root, "approve", "--all", "--editor", "eve")
    assert "approved rituals" in r.output and "skipped vote-now" in r.output
    r = invoke(root, "approve", "vote-now", "--editor", "eve")
    assert r.exit_code == 1 and "error:" in r.output and "hint:" in r.output and "Traceback" not in r.output


def test_the_review_queue_reads_whole_in_80_columns_and_as_a_table_when_wide(make_app, sqlite_url):
    """`make run` ends with `syndicate review` in a pipe (80 columns): its seven-column
    table folded the slug an editor has to copy ('vote-agai' / 'nst-the-s' / ...) and
    broke words ('Governmen' / "t's"). Narrow: a few lines per revision; wide: the table,
    the slug whole."""
    root = project(make_app, sqlite_url)
    slug, title = "vote-against-the-surveillance-bill", "This Election, Vote Against the Government's Surveillance Bill"
    write_article(root, slug, title=title, body=POLITICAL)
    assert invoke(root, "ingest").exit_code == 0  # vote-now and this one are flagged, not failed
    narrow = CliRunner(env={"COLUMNS": "80"}).invoke(
        main, ["--config", str(root / "syndicate.toml"), "review", "--no-diff"], catch_exceptions=False
    )
    assert narrow.exit_code == 0, narrow.output
    lines = narrow.output.splitlines()
    assert lines[0] == "3 revision(s) waiting for review"
    assert slug in lines and "vote-now" in lines  # each slug whole, on its own line
    assert f"  {title}" in lines
    assert all(len(line) <= 80 and line == line.rstrip() for line in lines)
    assert lines[-1] == "Approve: syndicate approve SLUG; reject: syndicate reject SLUG --reason TEXT"
    assert any(line.startswith("  policy flags: no-politics (flag: ") for line in lines)
    wide = CliRunner(env={"COLUMNS": "160"}).invoke(
        main, ["--config", str(root / "syndicate.toml"), "review", "--no-diff"], catch_exceptions=False
    )
    assert "┃ slug" in wide.output and f"│ {slug} │" in wide.output


def test_bad_file_exit_status_and_hint(make_app, sqlite_url):
    root = project(make_app, sqlite_url)
    write_article(root, "broken", date="soon")
    r = invoke(root, "ingest")
    assert r.exit_code == 1
    assert "broken.md [date]" in r.output and "2 new" in r.output


def test_every_command_help_has_an_example():
    runner = CliRunner()

    def walk(cmd, path):
        yield path, cmd
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from walk(sub, path + [name])

    for path, _cmd in walk(main, []):
        r = runner.invoke(main, path + ["--help"])
        assert r.exit_code == 0, path
        assert "Example" in r.output, f"`syndicate {' '.join(path)} --help` has no example"


def test_console_script_in_a_subprocess(make_app, sqlite_url):
    root = project(make_app, sqlite_url)
    exe = shutil.which("syndicate", path=str(Path(sys.executable).parent))
    assert exe, "the console script is installed with the package"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNDICATE_")}
    out = subprocess.run(
        [exe, "--config", str(root / "syndicate.toml"), "ingest"], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr
    out = subprocess.run(
        [exe, "--config", str(root / "syndicate.toml"), "approve", "nope"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 1 and "error: no article 'nope'" in out.stderr and "Traceback" not in out.stderr


def test_ingest_says_so_when_the_articles_folder_is_missing(make_app, sqlite_url):
    """`syndicate init` in a new folder, then `syndicate ingest`: it printed "0 new, 0
    changed ..." as if nothing had changed; it now says the folder is missing and what to do."""
    app = make_app(sqlite_url)
    root = app.settings.root
    shutil.rmtree(root / "content")
    r = invoke(root, "ingest")
    assert r.exit_code == 0, r.output
    assert "0 new" in r.output and "content/articles does not exist, so nothing was read" in r.output
    assert "set paths.content" in r.output
    write_author(root)
    write_article(root, "rituals")
    assert "does not exist" not in invoke(root, "ingest").output
