"""tokens create|list|revoke: API tokens for integrators (issue 14 item 1)."""

from __future__ import annotations

import json

import click
from rich.markup import escape
from rich.table import Table

from pipeline.cli import console, err_console, pass_ctx

SCOPE_NAMES = [
    "articles:read",
    "articles:write",
    "articles:approve",
    "subscribers:read",
    "subscribers:write",
    "subscribers:import",
    "deliveries:read",
    "deliveries:write",
    "ops",
]


def register(main: click.Group) -> None:
    main.add_command(tokens)


@click.group()
def tokens():
    """API tokens for /api/v1: create (shown once), list, revoke.

    \b
    Examples:
      syndicate tokens create --name "CMS sync" --scope articles:write --expires 90d
      syndicate tokens list
      syndicate tokens revoke 3
    """


def _expires(value: str | None):
    if not value:
        return None
    from pipeline.durations import parse_duration

    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--expires") from None


@tokens.command("create")
@click.option("--name", required=True, help="Who or what uses the token (shown in lists and the audit log).")
@click.option(
    "--scope", "scopes", multiple=True, required=True, type=click.Choice(SCOPE_NAMES), help="Repeat for several."
)
@click.option("--expires", default=None, help="Lifetime, e.g. 90d or 12h (at most 366d); default: no expiry.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (includes the token once).")
@pass_ctx
def tokens_create(ctx, name: str, scopes: tuple[str, ...], expires: str | None, as_json: bool):
    """Create a token. Its value is printed once and stored only as a SHA-256 hash:
    copy it now; a lost token is revoked and replaced, never shown again.

    \b
    Example:
      syndicate tokens create --name "newsletter form" --scope subscribers:write --expires 90d
    """
    from pipeline.accounts import api_tokens
    from pipeline.accounts.audit import cli_actor

    lifetime = _expires(expires)
    with ctx.app.engine.begin() as conn:
        token, raw = api_tokens.create_token(
            conn, name=name, scopes=scopes, created_by=cli_actor(), expires_in=lifetime
        )
    if as_json:
        click.echo(json.dumps({"id": token.id, "name": token.name, "scopes": list(token.scopes), "token": raw}))
        return
    console.print(f"token {token.id} ({escape(token.name)}): {', '.join(token.scopes)}")
    if token.expires_at:
        console.print(f"expires {token.expires_at:%Y-%m-%d %H:%M} UTC")
    err_console.print("[yellow]copy it now; it is not stored and will not be shown again:[/]")
    click.echo(raw)


@tokens.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def tokens_list(ctx, as_json: bool):
    """Every token: id, name, prefix, scopes, state, last use (never the token itself).

    \b
    Example:
      syndicate tokens list
    """
    from pipeline.accounts import api_tokens

    with ctx.app.engine.connect() as conn:
        rows = api_tokens.list_tokens(conn)

    def when(value):
        return value.strftime("%Y-%m-%d %H:%M") if value else "-"

    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "id": t.id,
                        "name": t.name,
                        "prefix": t.prefix,
                        "scopes": list(t.scopes),
                        "state": t.state(),
                        "created_by": t.created_by,
                        "created_at": t.created_at.isoformat(),
                        "last_used_at": t.last_used_at.isoformat() if t.last_used_at else None,
                        "expires_at": t.expires_at.isoformat() if t.expires_at else None,
                    }
                    for t in rows
                ],
                indent=2,
            )
        )
        return
    table = Table(title=f"{len(rows)} API token(s)")
    for col in ("id", "name", "prefix", "scopes", "state", "created", "last used", "expires"):
        table.add_column(col, overflow="fold")
    for t in rows:
        table.add_row(
            str(t.id),
            escape(t.name),
            t.prefix + "…",
            ", ".join(t.scopes),
            t.state(),
            f"{when(t.created_at)} by {escape(t.created_by)}",
            when(t.last_used_at),
            when(t.expires_at),
        )
    console.print(table)


@tokens.command("revoke")
@click.argument("token_id", type=int)
@pass_ctx
def tokens_revoke(ctx, token_id: int):
    """Revoke a token now: its next request gets 401.

    \b
    Example:
      syndicate tokens revoke 3
    """
    from pipeline.accounts import api_tokens

    with ctx.app.engine.begin() as conn:
        changed = api_tokens.revoke_token(conn, token_id)
    console.print(f"token {token_id} {'revoked' if changed else 'was already revoked'}")
