"""The CLI's own contract: read-only commands never create or migrate a database
(issue 16 item 12), `-v` works after any command and error text keeps its brackets
(issue 16 item 15)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, inspect

from pipeline.cli import hoist_verbose, main
from pipeline.store import normalise_url

from .conftest import write_project

READ_ONLY = [
    ["status"],
    ["review"],
    ["deliveries", "list"],
    ["subscribers", "list"],
    ["suppressions", "list"],
    ["jobs", "history"],
]


def invoke(config, *args):
    return CliRunner().invoke(main, ["--config", str(config), *args])


def tables(url: str) -> list[str]:
    engine = create_engine(normalise_url(url))
    try:
        return inspect(engine).get_table_names()
    finally:
        engine.dispose()


@pytest.mark.parametrize("args", READ_ONLY, ids=" ".join)
def test_read_only_command_on_a_missing_sqlite_file_creates_nothing_h12(tmp_path, args):
    db = tmp_path / "site" / "var" / "mistyped.db"
    config = write_project(tmp_path / "site", f"sqlite:///{db}")
    r = invoke(config, *args)
    assert r.exit_code == 1, r.output
    assert f"no database at {db}" in r.output and "syndicate init" in r.output and "syndicate db upgrade" in r.output
    assert "Traceback" not in r.output
    assert not db.exists()


def test_read_only_command_never_migrates_an_empty_database_h12(tmp_path, db_url):
    """The PostgreSQL maintenance-database case: `status` used to create 25 tables."""
    if db_url.startswith("sqlite"):
        (tmp_path / "var").mkdir(exist_ok=True)
        create_engine(db_url).connect().close()  # an empty file, as a mistyped path once left behind
    config = write_project(tmp_path / "site", db_url)
    r = invoke(config, "status")
    assert r.exit_code == 1 and "holds no Syndicate schema" in r.output, r.output
    assert tables(db_url) == []


def test_outdated_database_asks_for_db_upgrade_h12(tmp_path, sqlite_url):
    from alembic import command

    from pipeline.store import alembic_config, dispose_engines, make_engine

    config = write_project(tmp_path / "site", sqlite_url)
    assert invoke(config, "init").exit_code == 0
    engine = make_engine(sqlite_url)
    command.downgrade(alembic_config(engine), "0001")
    engine.dispose()
    dispose_engines()
    r = invoke(config, "status")
    assert r.exit_code == 1 and "schema revision 0001" in r.output and "syndicate db upgrade" in r.output
    r = invoke(config, "db", "upgrade", "-v")
    assert r.exit_code == 0, r.output
    dispose_engines()
    assert invoke(config, "status").exit_code == 0


def test_status_after_init_reads_the_database(tmp_path, db_url):
    config = write_project(tmp_path / "site", db_url)
    assert invoke(config, "init").exit_code == 0
    r = invoke(config, "status")
    assert r.exit_code == 0, r.output


def test_config_show_needs_no_database(tmp_path):
    config = write_project(tmp_path / "site", f"sqlite:///{tmp_path / 'nowhere' / 'x.db'}")
    r = invoke(config, "config", "show", "--json")
    assert r.exit_code == 0, r.output
    assert not (tmp_path / "nowhere").exists()


def test_verbose_flag_works_after_any_command_h15(tmp_path):
    config = write_project(tmp_path / "site", f"sqlite:///{tmp_path / 'site' / 'var' / 'x.db'}")
    r = invoke(config, "config", "show", "--json", "-v")
    assert r.exit_code == 0, r.output
    # -v after the command shows the traceback of an error, as -v before it does
    r = invoke(config, "status", "-vv")
    assert r.exit_code == 1 and "Traceback" in r.output


def test_hoist_verbose_leaves_everything_after_double_dash():
    assert hoist_verbose(["db", "upgrade", "-v"]) == ["-v", "db", "upgrade"]
    assert hoist_verbose(["reject", "x", "--verbose", "--", "-v"]) == ["--verbose", "reject", "x", "--", "-v"]


def test_config_error_keeps_bracketed_names_h15(tmp_path):
    config = write_project(tmp_path / "site", "sqlite:///x.db", extra_toml="[emial]\nbackend = 'smtp'\n")
    r = invoke(config, "config", "show")
    assert r.exit_code == 1
    assert "unknown section [emial]" in r.output
