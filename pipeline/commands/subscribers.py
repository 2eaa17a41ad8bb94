"""subscribers add|list|show|remove|import|export|purge, and serve."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from pipeline.cli import console, err_console, pass_ctx
from pipeline.errors import SyndicateError

FREQUENCIES = ("instant", "daily", "weekly")
STATES = ("unconfirmed", "confirmed", "unsubscribed", "suppressed")


def register(main: click.Group) -> None:
    main.add_command(subscribers)
    main.add_command(serve)


def _when(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else ""


@click.group()
def subscribers():
    """The digest's subscribers: add, list, show (with consent history), remove,
    import and export CSV, purge never-confirmed sign-ups.

    \b
    Example:
      syndicate subscribers list --state confirmed
    """


@subscribers.command("add")
@click.argument("email")
@click.option("--name", default="", help="The person's name.")
@click.option(
    "--frequency",
    type=click.Choice(FREQUENCIES),
    default=None,
    help="Digest frequency (default: subscribers.default_frequency).",
)
@click.option("--topic", "topics", multiple=True, help="A topic (tag or category slug); repeatable; none = everything.")
@click.option("--timezone", default="UTC", show_default=True, help="IANA time zone for daily/weekly digests.")
@click.option(
    "--confirmed", is_flag=True, help="They already confirmed elsewhere: skip the confirmation email (needs --source)."
)
@click.option("--source", default="", help="Where this person gave consent (recorded in the consent log).")
@pass_ctx
def add_cmd(ctx, email, name, frequency, topics, timezone, confirmed, source):
    """Add one address. Without --confirmed a confirmation email is queued (double
    opt-in) and sent by `syndicate deliver`.

    \b
    Examples:
      syndicate subscribers add ada@example.com --name Ada --frequency daily --topic work
      syndicate subscribers add bo@example.com --confirmed --source "signed paper form, 2026-11-02"
    """
    from pipeline import subscribers as subs

    if confirmed and not source.strip():
        raise SyndicateError(
            "--confirmed needs --source: where did this person give consent?",
            hint='e.g. --source "signed paper form, 2026-11-02"',
        )
    with ctx.app.engine.begin() as conn:
        sub, action = subs.add(
            conn,
            ctx.settings,
            email,
            name=name,
            frequency=frequency,
            topics=list(topics),
            timezone=timezone,
            confirmed=confirmed,
            source=source.strip() or "operator",
        )
    console.print(f"{sub['email']}: {action} (state {sub['state']})")


@subscribers.command("list")
@click.option("--state", type=click.Choice(STATES), help="Only subscribers in this state.")
@click.option("--frequency", type=click.Choice(FREQUENCIES), help="Only this digest frequency.")
@click.option("--limit", type=int, default=None, help="At most this many rows.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def list_cmd(ctx, state, frequency, limit, as_json):
    """List subscribers with their state and preferences.

    \b
    Examples:
      syndicate subscribers list
      syndicate subscribers list --state unconfirmed --json
    """
    from pipeline import subscribers as subs

    with ctx.app.engine.connect() as conn:
        rows = subs.list_subscribers(conn, state=state, frequency=frequency, limit=limit)
        counts = subs.counts_by_state(conn)
    if as_json:
        click.echo(json.dumps([_public(r) for r in rows], indent=2, default=str))
        return
    table = Table(title=f"subscribers ({len(rows)} shown)")
    for col in ("email", "name", "state", "frequency", "topics", "timezone", "since"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            escape(r["email"]),
            escape(r["name"]),
            r["state"],
            r["frequency"],
            ", ".join(r["topics"] or []) or "all",
            r["timezone"],
            _when(r["confirmed_at"] or r["created_at"]),
        )
    console.print(table)
    console.print(", ".join(f"{s} {counts.get(s, 0)}" for s in STATES))


def _public(sub: dict) -> dict:
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in sub.items()}


@subscribers.command("show")
@click.argument("email")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def show_cmd(ctx, email, as_json):
    """One subscriber: state, preferences and the whole consent history (GDPR-1).

    \b
    Example:
      syndicate subscribers show ada@example.com
    """
    from pipeline import subscribers as subs

    with ctx.app.engine.connect() as conn:
        sub = subs.require_subscriber(conn, email)
        events = subs.history(conn, sub["id"])
        suppression = subs.is_suppressed_address(conn, sub["email"])
    if as_json:
        click.echo(
            json.dumps(
                {"subscriber": _public(sub), "suppressed": suppression, "events": [_public(e) for e in events]},
                indent=2,
                default=str,
            )
        )
        return
    console.print(f"[bold]{escape(sub['email'])}[/]  {escape(sub['name'])}")
    console.print(f"state: {sub['state']}" + (f" (suppression list: {suppression})" if suppression else ""))
    console.print(
        f"frequency: {sub['frequency']}   topics: {', '.join(sub['topics'] or []) or 'all'}   "
        f"timezone: {sub['timezone']}"
    )
    console.print(
        f"source: {escape(sub['source'])}   created: {_when(sub['created_at'])}   "
        f"confirmed: {_when(sub['confirmed_at']) or '-'}   unsubscribed: {_when(sub['unsubscribed_at']) or '-'}"
    )
    console.print(f"\n[bold]consent history[/] ({len(events)} event(s), oldest first, UTC)")
    for e in events:
        bits = [f"source={e['source'] or '-'}"]
        for key, label in (("wording_version", "wording"), ("privacy_version", "privacy"), ("ip", "ip")):
            if e[key]:
                bits.append(f"{label}={e[key]}")
        if e["token_hash"]:
            bits.append(f"token-sha256={e['token_hash'][:16]}…")
        console.print(
            f"{e['at'].strftime('%Y-%m-%d %H:%M:%S')}  [bold]{escape(e['kind'])}[/]  " + escape("  ".join(bits)),
            soft_wrap=True,
            markup=True,
        )
        if e["user_agent"]:
            console.print(f"    user agent: {e['user_agent']}", soft_wrap=True, markup=False)
        if e["detail"]:
            console.print(
                "    " + json.dumps(e["detail"], default=str, ensure_ascii=False), soft_wrap=True, markup=False
            )


@subscribers.command("remove")
@click.argument("email")
@click.option(
    "--erase",
    is_flag=True,
    help="Delete the subscriber and the whole history (right to erasure) instead of unsubscribing.",
)
@click.option("--yes", is_flag=True, help="Do not ask before --erase.")
@pass_ctx
def remove_cmd(ctx, email, erase, yes):
    """Unsubscribe an address on the person's behalf (recorded as a withdrawal by the
    operator; history kept), or --erase it completely.

    \b
    Examples:
      syndicate subscribers remove ada@example.com
      syndicate subscribers remove ada@example.com --erase --yes
    """
    from pipeline import subscribers as subs

    if erase and not yes:
        click.confirm(f"Delete {email} and its whole consent history? This cannot be undone", abort=True)
    with ctx.app.engine.begin() as conn:
        result = subs.remove(conn, ctx.settings, email, erase=erase)
    console.print(f"{email}: {result}")


@subscribers.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path, allow_dash=True))
@click.option(
    "--confirmed", is_flag=True, help="These people already confirmed (needs --source): no confirmation emails."
)
@click.option("--source", default="", help="Where the consent was given (recorded with every row).")
@click.option("--dry-run", is_flag=True, help="Check the file and report; change nothing, send nothing.")
@click.option("--strict", is_flag=True, help="Exit with status 1 if any row is bad.")
@pass_ctx
def import_cmd(ctx, file, confirmed, source, dry_run, strict):
    """Import subscribers from CSV: columns email,name,frequency,topics,timezone (topics
    separated by ';'). Addresses are checked without DNS lookups; bad rows are reported
    by line number and skipped; unsubscribed and suppressed addresses stay as they are;
    known addresses get their preferences updated. New rows get a confirmation email
    unless --confirmed --source NAME says they already confirmed.

    \b
    Examples:
      syndicate subscribers import content/subscribers.csv --confirmed --source demo
      syndicate subscribers import signups.csv --dry-run
    """
    from pipeline import subscribers as subs

    if confirmed and not source.strip():
        raise SyndicateError(
            "--confirmed needs --source NAME: where these people gave their consent",
            hint="e.g. --source 'paper sign-up sheet, 2026 fair'",
        )
    if str(file) == "-":
        stream, name = sys.stdin, "<stdin>"
    else:
        if not file.exists():
            raise SyndicateError(f"{file}: no such file", hint="Give the path of a CSV file with an 'email' column.")
        stream, name = file.open(encoding="utf-8-sig", newline=""), str(file)
    from pipeline.store import transaction

    try:
        with transaction(ctx.app.engine, dry_run=dry_run) as conn:
            report = subs.import_csv(conn, ctx.settings, stream, confirmed=confirmed, source=source, file_name=name)
    except UnicodeDecodeError as exc:
        raise SyndicateError(
            f"{name}: not UTF-8 text ({exc.reason} at byte {exc.start})", hint="Save the file as UTF-8 CSV."
        ) from None
    finally:
        if stream is not sys.stdin:
            stream.close()
    for line, message in report.bad:
        err_console.print(f"[yellow]{escape(name)}:{line}:[/] {escape(message)} (row skipped)", soft_wrap=True)
    for line, address, state in report.kept:
        console.print(f"{name}:{line}: {address} is {state}; kept as it is", soft_wrap=True, markup=False)
    counts = report.counts()
    console.print(
        ("dry run, nothing changed: " if dry_run else "")
        + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items()),
        soft_wrap=True,
    )
    if strict and report.bad:
        raise SyndicateError(f"{len(report.bad)} bad row(s) in {name}", hint="Fix the lines named above.")


@subscribers.command("export")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path, allow_dash=True))
@click.option("--state", type=click.Choice(STATES), help="Only subscribers in this state.")
@pass_ctx
def export_cmd(ctx, file, state):
    """Write subscribers as CSV with state and preferences (to FILE, or stdout).

    \b
    Examples:
      syndicate subscribers export subscribers.csv
      syndicate subscribers export --state confirmed > confirmed.csv
    """
    from pipeline import subscribers as subs

    with ctx.app.engine.connect() as conn:
        if file is None or str(file) == "-":
            subs.export_csv(conn, sys.stdout, state=state)
            return
        with file.open("w", encoding="utf-8", newline="") as fh:
            n = subs.export_csv(conn, fh, state=state)
    err_console.print(f"wrote {n} subscriber(s) to {file}")


@subscribers.command("purge")
@click.option("--days", type=int, default=None, help="Age in days (default: subscribers.purge_unconfirmed_days).")
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
@pass_ctx
def purge_cmd(ctx, days, dry_run):
    """Delete sign-ups never confirmed within N days, with their tokens and history
    (GDPR-2). The `purge` stage does the same on schedule.

    \b
    Examples:
      syndicate subscribers purge
      syndicate subscribers purge --days 3 --dry-run
    """
    from pipeline import subscribers as subs

    with ctx.app.engine.begin() as conn:
        counts = subs.purge_unconfirmed(conn, ctx.settings, days=days, dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    console.print(
        f"{verb} {counts['purged_unconfirmed']} unconfirmed sign-up(s) and "
        f"{counts['rate_limit_rows']} old rate-limit row(s)"
    )


@click.command()
@click.option("--host", default=None, help="Address to listen on (default: web.host).")
@click.option("--port", type=int, default=None, help="Port to listen on (default: web.port).")
@pass_ctx
def serve(ctx, host, port):
    """The web service: subscribe, confirm, preferences, one-click unsubscribe,
    /healthz, and the built public/ tree (feeds, pages).

    \b
    Example:
      syndicate serve --host 127.0.0.1 --port 8000
    """
    from pipeline.web.app import serve as run_server

    run_server(ctx.app, host=host, port=port)
