"""Shared fixtures: a project folder per test, and one test body for every database.

`db_url` is parametrised over SQLite (a file in tmp_path) and PostgreSQL (a fresh
schema per test in the `test` database on 127.0.0.1:5432). Without a reachable
PostgreSQL the PostgreSQL half skips with the reason, except in CI (CI=true), where
it fails: CI must run it.
"""

from __future__ import annotations

import os
import secrets
import textwrap
from pathlib import Path

import pytest

from pipeline.app import App
from pipeline.config import load_settings
from pipeline.store import dispose_engines

REPO = Path(__file__).resolve().parent.parent
PG_DSN = os.environ.get("SYNDICATE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
_pg_state: dict = {}


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

    name = "t_" + secrets.token_hex(6)
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
