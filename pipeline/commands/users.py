"""users add|list|disable|role, audit, export articles.

The CLI's own audit rows (one per command that changed something) are written by
pipeline.commands.cli_audit; the desk writes its rows with the signed-in user.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from pipeline.cli import console, pass_ctx

log = logging.getLogger(__name__)


def register(main: click.Group) -> None:
    main.add_command(users)
    main.add_command(audit)
    main.add_command(export)


@click.group()
def users():
    """Desk accounts: invite people, list them, change roles, disable.

    \b
    Examples:
      syndicate users add ed@example.com --role editor
      syndicate users list
    """


@users.command("add")
@click.argument("email")
@click.option(
    "--role",
    "roles",
    multiple=True,
    required=True,
    type=click.Choice(["author", "editor", "operator", "admin"]),
    help="A role; repeat for several.",
)
@click.option("--name", default="", help="The person's name (shown in the desk; an author's byline).")
@pass_ctx
def users_add(ctx, email: str, roles: tuple[str, ...], name: str):
    """Invite someone to the desk: a single-use link to set a password, sent by email.

    The invitation goes through the outbox like every transactional email (`syndicate
    deliver` or a running worker sends it) and expires after desk.invite_ttl_hours.

    \b
    Example:
      syndicate users add ed@example.com --role editor --name "Ed Itor"
    """
    from pipeline import accounts

    with ctx.app.engine.begin() as conn:
        user, token = accounts.invite(conn, ctx.settings, email, list(roles), name=name)
    console.print(
        f"invited {user.email} as {', '.join(user.roles)}; the link is queued as an email "
        f"(valid {ctx.settings.desk.invite_ttl_hours} h)"
    )


@users.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def users_list(ctx, as_json: bool):
    """Every desk account with its roles and state.

    \b
    Example:
      syndicate users list
    """
    from pipeline import accounts

    with ctx.app.engine.connect() as conn:
        rows = accounts.list_users(conn)
    if as_json:
        click.echo(
            json.dumps([{k: r[k] for k in ("email", "name", "roles", "state", "author_slug")} for r in rows], indent=2)
        )
        return
    table = Table(title=f"{len(rows)} desk user(s)")
    for col in ("email", "name", "roles", "state", "last sign-in"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(
            r["email"],
            escape(r["name"]),
            ", ".join(r["roles"]),
            r["state"],
            r["last_login_at"].strftime("%Y-%m-%d %H:%M") if r["last_login_at"] else "-",
        )
    console.print(table)


@users.command("disable")
@click.argument("email")
@pass_ctx
def users_disable(ctx, email: str):
    """Disable an account: it cannot sign in, and every session it has ends now.

    \b
    Example:
      syndicate users disable ed@example.com
    """
    from pipeline import accounts

    with ctx.app.engine.begin() as conn:
        user = accounts.require(conn, email)
        accounts.set_state(conn, user.id, "disabled")
    console.print(f"{user.email} disabled and signed out everywhere")


@users.command("role")
@click.argument("email")
@click.argument("roles", nargs=-1, required=True, type=click.Choice(["author", "editor", "operator", "admin"]))
@pass_ctx
def users_role(ctx, email: str, roles: tuple[str, ...]):
    """Set an account's roles (replaces the old ones).

    \b
    Example:
      syndicate users role ed@example.com editor operator
    """
    from pipeline import accounts

    with ctx.app.engine.begin() as conn:
        user = accounts.require(conn, email)
        user = accounts.set_roles(conn, user.id, list(roles))
    console.print(f"{user.email}: {', '.join(user.roles)}")


@users.command("demo")
@click.option("--email", default="editor@demo.invalid", show_default=True, help="The demo account's address.")
@click.option(
    "--role",
    "roles",
    multiple=True,
    default=("editor", "author", "operator"),
    show_default=True,
    type=click.Choice(["author", "editor", "operator", "admin"]),
    help="A role; repeat for several.",
)
@pass_ctx
def users_demo(ctx, email: str, roles: tuple[str, ...]):
    """A local demo account with a generated password, printed once (`make run`).

    The password is random, shown only now and stored only as its hash; it is in no
    file. Run it again and it says the account exists (use the reset link, or
    `syndicate users disable` and a new address, if the password is lost).

    \b
    Example:
      syndicate users demo
    """
    import secrets

    from pipeline import accounts

    base = ctx.settings.site.base_url.rstrip("/")
    with ctx.app.engine.begin() as conn:
        if accounts.by_email(conn, email) is not None:
            console.print(
                f"desk: the demo account {email} exists already; sign in at {base}/desk/ "
                "(its password was printed when it was made)"
            )
            return
        password = secrets.token_urlsafe(12)
        accounts.create_user(conn, email, roles=list(roles), name="Demo Editor", state="active", password=password)
    console.print(
        f"desk: run `syndicate serve`, open {base}/desk/ and sign in as {email} "
        f"with the password {password} (local demo only; shown once)"
    )


@click.command()
@click.option("--limit", default=50, show_default=True, help="How many rows, newest first.")
@click.option("--actor", default=None, help="Only what this person (email, or login@host for the CLI) did.")
@click.option("--action", default=None, help="Only actions starting with this, e.g. article. or cli.jobs")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def audit(ctx, limit: int, actor: str | None, action: str | None, as_json: bool):
    """Who changed what, when, and from where: the desk's and the CLI's changes.

    \b
    Examples:
      syndicate audit
      syndicate audit --action article. --limit 200
    """
    from pipeline.accounts import audit as audit_log

    with ctx.app.engine.connect() as conn:
        rows = audit_log.entries(conn, limit=limit, actor=actor, action=action)
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    table = Table(title="audit log, newest first")
    for col in ("when (UTC)", "who", "via", "what", "target", "details", "from"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(
            r["at"].strftime("%Y-%m-%d %H:%M:%S"),
            escape(r["actor"]),
            r["via"],
            r["action"],
            escape(r["target"]),
            escape(json.dumps(r["detail"], ensure_ascii=False)),
            r["ip"] or "",
        )
    console.print(table)
    if not rows:
        console.print("nothing recorded yet")


@click.group()
def export():
    """Export content from the database.

    \b
    Example:
      syndicate export articles exported/
    """


@export.command("articles")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@pass_ctx
def export_articles(ctx, folder: Path):
    """Write every desk article as Markdown with front matter (`<slug>.md`).

    The files have the fields ingest reads (title, author, date, tags, category,
    summary, image, image_alt), so they can move into a Markdown source.

    \b
    Example:
      syndicate export articles exported/
    """
    from pipeline.content import desk

    with ctx.app.engine.connect() as conn:
        paths = desk.export(conn, ctx.settings, folder)
    console.print(f"{len(paths)} article(s) written to {folder}")
