"""Shared fixtures: a project folder per test, and one test body for every database.

`db_url` is parametrised over SQLite (a file in tmp_path) and PostgreSQL (a fresh
schema per test in the `test` database on 127.0.0.1:5432). Without a reachable
PostgreSQL the PostgreSQL half skips with the reason, except in CI (CI=true), where
it fails: CI must run it.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import tempfile
import textwrap
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis.database import DirectoryBasedExampleDatabase

from pipeline.app import App
from pipeline.config import load_settings
from pipeline.store import dispose_engines

REPO = Path(__file__).resolve().parent.parent
# The environment a test run starts from (TEST-1): nothing from the caller's shell that changes
# what the code under test does (a terminal's COLUMNS re-wraps rich tables; a
# SYNDICATE_* setting would override the test project's syndicate.toml). Kept out for
# the whole session; SYNDICATE_TEST_PG only chooses the PostgreSQL server.
_OUTSIDE_ENV = ("COLUMNS", "LINES", "TZ")
for _name in [n for n in os.environ if n in _OUTSIDE_ENV or n.startswith("SYNDICATE_")]:
    if _name != "SYNDICATE_TEST_PG":
        del os.environ[_name]
PG_DSN = os.environ.get("SYNDICATE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
_pg_state: dict = {}


def worker_id() -> str:
    """The pytest-xdist worker running this process ("gw0", "gw1", ...), or "main"."""
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


# Hypothesis keeps its example database in .hypothesis/ of the working directory, a
# file tree every xdist worker would share inside the repository: one per worker in
# the system temp folder instead (failing examples still replay on the next run).
settings.register_profile(
    "syndicate",
    database=DirectoryBasedExampleDatabase(
        Path(tempfile.gettempdir())
        / f"syndicate-hypothesis-{hashlib.sha256(bytes(REPO)).hexdigest()[:8]}-{worker_id()}"
    ),
)
settings.load_profile("syndicate")


@pytest.fixture(autouse=True)
def _environment_restored():
    """Whatever a test sets in os.environ (SYNDICATE_FROZEN_NOW, plugin lists, ...) is
    gone before the next test on the same worker, even when the test fails half-way."""
    before = dict(os.environ)
    yield
    if os.environ != before:
        os.environ.clear()
        os.environ.update(before)


def postgres_reason() -> str | None:
    """None when PostgreSQL is reachable, else why not."""
    if "reason" not in _pg_state:
        try:
            import psycopg

            with psycopg.connect(PG_DSN.replace("postgresql+psycopg", "postgresql"), connect_timeout=3):
                pass
            _pg_state["reason"] = None
        except Exception as exc:  # any failure means: not usable here
            _pg_state["reason"] = f"PostgreSQL not reachable at {PG_DSN}: {exc}".splitlines()[0]
    return _pg_state["reason"]


def require_postgres() -> None:
    reason = postgres_reason()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the PostgreSQL tests: {reason}")
        pytest.skip(reason)


def new_pg_schema() -> str:
    """A fresh schema; returns a database URL whose connections use it."""
    import psycopg

    name = f"t_{worker_id()}_{secrets.token_hex(6)}"  # the worker in the name: whose schema it was (TEST-1)
    with psycopg.connect(PG_DSN.replace("postgresql+psycopg", "postgresql"), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    _pg_state.setdefault("schemas", []).append(name)
    return f"{PG_DSN}?options=-csearch_path%3D{name}"


def drop_pg_schemas() -> None:
    schemas = _pg_state.pop("schemas", [])
    if not schemas:
        return
    import psycopg

    with psycopg.connect(PG_DSN.replace("postgresql+psycopg", "postgresql"), autocommit=True) as conn:
        for name in schemas:
            conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'var' / 'syndicate.db'}"
    else:
        require_postgres()
        yield new_pg_schema()
    dispose_engines()
    if request.param == "postgres":
        drop_pg_schemas()


@pytest.fixture
def sqlite_url(tmp_path):
    yield f"sqlite:///{tmp_path / 'var' / 'syndicate.db'}"
    dispose_engines()


BASE_TOML = """
[site]
title = "Test Journal"
base_url = "https://news.example.com"
postal_address = "1 Example Street, Springfield 12345, USA"
from_address = "Test Journal <digest@news.example.com>"
transactional_from = "Test Journal <hello@news.example.com>"

[paths]
content = "content"
templates = "{templates}"
public = "public"
var = "var"
"""


def write_project(root: Path, db_url: str, extra_toml: str = "") -> Path:
    """A project folder: syndicate.toml, content/, var/ with a secret. Returns the config path."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "content" / "articles").mkdir(parents=True, exist_ok=True)
    (root / "content" / "authors").mkdir(parents=True, exist_ok=True)
    (root / "var").mkdir(exist_ok=True)
    (root / "var" / "secret_key").write_text("test-secret-key-" + "x" * 32)
    toml = (
        BASE_TOML.format(templates=REPO / "templates")
        + f'\n[database]\nurl = "{db_url}"\n'
        + textwrap.dedent(extra_toml)
    )
    path = root / "syndicate.toml"
    path.write_text(toml)
    return path


@pytest.fixture
def make_app(tmp_path):
    """make_app(db_url, extra_toml="") -> App for a fresh project folder in tmp_path."""

    def factory(db_url: str, extra_toml: str = "", root: Path | None = None) -> App:
        config = write_project(root or tmp_path / "site", db_url, extra_toml)
        return App(load_settings(config, env={}))

    return factory


@pytest.fixture
def app(make_app, db_url):
    """An App on a fresh project, once per database backend."""
    return make_app(db_url)


@pytest.fixture
def sqlite_app(make_app, sqlite_url):
    return make_app(sqlite_url)


@pytest.fixture
def unlistable(monkeypatch):
    """`unlistable(folder)`: from now on, listing `folder` with os.scandir fails with
    PermissionError, as it would for a folder the process may not read (root, which
    runs the suite, reads every folder whatever its mode)."""
    real_scandir = os.scandir
    denied: set[str] = set()

    def scandir(path="."):
        if os.fspath(path) in denied:
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    return lambda folder: denied.add(os.fspath(folder))
