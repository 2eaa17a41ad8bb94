"""`syndicate users`, `audit`, `export articles`, `users demo`, and the CLI's audit rows."""

from __future__ import annotations

import json

from click.testing import CliRunner
from sqlalchemy import select

from pipeline import accounts
from pipeline.cli import main
from pipeline.content import desk
from pipeline.store.schema import audit_log, deliveries

from .desk_kit import make_user


def invoke(app, *args):
    return CliRunner(env={"COLUMNS": "250"}).invoke(
        main, ["--config", str(app.settings.source), *args], catch_exceptions=False
    )


def test_users_add_list_role_disable_and_their_audit_rows(app):
    r = invoke(app, "users", "add", "ed@example.com", "--role", "editor", "--name", "Ed Itor")
    assert r.exit_code == 0, r.output
    assert "invited ed@example.com as editor" in r.output
    with app.engine.connect() as conn:
        assert conn.execute(select(deliveries.c.kind, deliveries.c.target)).all() == [("desk_invite", "ed@example.com")]
    r = invoke(app, "users", "add", "ed@example.com", "--role", "editor")
    assert r.exit_code == 1 and "already has an account" in r.output
    r = invoke(app, "users", "role", "ed@example.com", "editor", "operator")
    assert r.exit_code == 0 and "editor, operator" in r.output
    r = invoke(app, "users", "list", "--json")
    assert json.loads(r.output)[0]["roles"] == ["editor", "operator"]
    r = invoke(app, "users", "disable", "ed@example.com")
    assert r.exit_code == 0
    assert invoke(app, "users", "disable", "nobody@example.com").exit_code == 1
    with app.engine.connect() as conn:
        rows = conn.execute(
            select(audit_log.c.action, audit_log.c.via, audit_log.c.target).order_by(audit_log.c.id)
        ).all()
    assert rows == [
        ("cli.users add", "cli", "ed@example.com"),
        ("cli.users role", "cli", "ed@example.com"),
        ("cli.users disable", "cli", "ed@example.com"),
    ], "failed and read-only commands leave no row"
    r = invoke(app, "audit", "--json")
    assert [e["action"] for e in json.loads(r.output)] == ["cli.users disable", "cli.users role", "cli.users add"]


def test_users_demo_prints_a_password_once(app):
    r = invoke(app, "users", "demo")
    password = r.output.split("with the password ")[1].split()[0]
    with app.engine.begin() as conn:
        user = accounts.authenticate(conn, app.settings, "editor@demo.invalid", password)
    assert "editor" in user.roles
    again = invoke(app, "users", "demo")
    assert "exists already" in again.output and password not in again.output


def test_export_articles(app, tmp_path):
    user = make_user(app, "ann@example.com", ["author"], name="Ann")
    with app.engine.begin() as conn:
        desk_id = desk.create(
            conn,
            user.id,
            desk.Draft(title="Tea", summary="Short.", tags=["a"], category="", body_markdown="Tea at four.\n"),
        )
        desk.submit(conn, app.settings, desk_id, accounts.ensure_author(conn, user.id))
    r = invoke(app, "export", "articles", str(tmp_path / "out"))
    assert r.exit_code == 0 and "1 article(s)" in r.output
    text = (tmp_path / "out" / "tea.md").read_text()
    assert text.startswith('---\ntitle: "Tea"\nauthor: "ann"\n') and text.endswith("---\nTea at four.\n")


def test_review_slug_shows_the_history(app):
    user = make_user(app, "ann@example.com", ["author"], name="Ann")
    with app.engine.begin() as conn:
        desk_id = desk.create(
            conn,
            user.id,
            desk.Draft(title="Vote", summary="", tags=[], category="", body_markdown="Go vote for the election.\n"),
        )
        desk.submit(conn, app.settings, desk_id, accounts.ensure_author(conn, user.id))
    assert invoke(app, "reject", "vote", "--reason", "No politics, please", "--editor", "ed").exit_code == 0
    r = invoke(app, "review", "vote")
    assert r.exit_code == 0
    assert "revision" in r.output and "rejected" in r.output and "No politics, please" in r.output
    assert "no-politics" in r.output
    with app.engine.connect() as conn:
        assert conn.execute(select(audit_log.c.action, audit_log.c.target)).all() == [("cli.reject", "vote")]
