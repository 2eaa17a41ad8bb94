"""editions list, editions report: what each digest edition and instant send did."""

from __future__ import annotations

import json

import click
from rich.markup import escape
from rich.table import Table

from pipeline.cli import console, pass_ctx


def register(main: click.Group) -> None:
    main.add_command(editions)


@click.group()
def editions():
    """Edition reports: recipients, sent, failed, bounces, unsubscribes, clicks.

    \b
    Examples:
      syndicate editions list --limit 20
      syndicate editions report daily-2026-11-25
    """


@editions.command("list")
@click.option("--limit", default=20, show_default=True, help="How many editions, newest first (at most 500).")
@click.option("--before", default=None, metavar="KEY", help="Only editions older than this one (the next page).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_ctx
def list_cmd(ctx, limit: int, before: str | None, as_json: bool):
    """The newest editions with their outbox counts.

    \b
    Examples:
      syndicate editions list
      syndicate editions list --before weekly-2026-11-23 --limit 50
    """
    from pipeline.digests.reports import list_editions

    with ctx.app.engine.connect() as conn:
        rows = list_editions(conn, limit=limit, before=before)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="editions (newest first)")
    for col, justify in (
        ("edition", "left"),
        ("subject", "left"),
        ("completed", "left"),
        ("recipients", "right"),
        ("sent", "right"),
        ("failed", "right"),
        ("pending", "right"),
    ):
        table.add_column(col, justify=justify, overflow="fold")  # type: ignore[arg-type]  # keys shown whole
    for r in rows:
        table.add_row(
            escape(r["key"]),
            escape(r["subject"][:60]),
            (r["completed_at"] or "composing")[:16],
            str(r["recipients"]),
            str(r["sent"]),
            str(r["failed"]),
            str(r["pending"]),
        )
    console.print(table)
    if not rows:
        console.print("no editions yet: `syndicate digest compose --frequency daily` makes one")
    elif len(rows) == limit:
        console.print(f"more: syndicate editions list --before {rows[-1]['key']}")


@editions.command("report")
@click.argument("key")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@pass_ctx
def report_cmd(ctx, key: str, as_json: bool):
    """What one edition did: recipients, sent, failed, bounced (hard/soft),
    unsubscribed within 7 days, and clicks per article (counted in aggregate only).

    \b
    Examples:
      syndicate editions report daily-2026-11-25
      syndicate editions report instant-42 --json
    """
    from pipeline.digests.reports import edition_report

    with ctx.app.engine.connect() as conn:
        r = edition_report(conn, key)
    if as_json:
        click.echo(json.dumps(r, indent=2))
        return
    summary = Table(title=f"edition {escape(r['key'])}: {escape(r['subject'])}", show_header=False)
    summary.add_column("what")
    summary.add_column("value", justify="right")
    for label, value in (
        ("recipients", r["recipients"]),
        ("sent", r["sent"]),
        ("failed", r["failed"]),
        ("suppressed at send time", r["suppressed"]),
        ("still pending", r["pending"]),
        ("bounced (hard)", r["bounced"]["hard"]),
        ("bounced (soft)", r["bounced"]["soft"]),
        ("unsubscribed within 7 days", r["unsubscribed_7d"]),
        ("clicks", r["clicks"]["total"]),
    ):
        summary.add_row(label, str(value))
    console.print(summary)
    clicks = Table(title="clicks per article")
    clicks.add_column("article", overflow="fold")
    clicks.add_column("clicks", justify="right")
    clicks.add_column("")
    top = max((a["clicks"] for a in r["clicks"]["per_article"]), default=0) or 1
    for a in r["clicks"]["per_article"]:
        clicks.add_row(escape(a["title"][:60]), str(a["clicks"]), "█" * round(20 * a["clicks"] / top))
    console.print(clicks)
    if not ctx.settings.digests.track_clicks:
        console.print("clicks are not tracked: set [digests] track_clicks = true to count them")
