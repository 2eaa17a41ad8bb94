"""subscribers add|list|show|remove|import|export|purge, and serve."""

from __future__ import annotations

import csv
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
        table.add_column(col, overflow="fold")  # in 80 columns too, an address is shown whole, never cut to "ana@exa…"
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
@click.option("--dry-run", is_flag=True, help="Check the file and report; change no subscriber, send nothing.")
@click.option("--strict", is_flag=True, help="Exit with status 1 if any row is bad.")
@click.option("--batch-rows", type=click.IntRange(1, 10_000), default=1000, show_default=True, hidden=True)
@click.option("--no-progress", is_flag=True, help="No progress bar (logs and CI).")
@pass_ctx
def import_cmd(ctx, file, confirmed, source, dry_run, strict, batch_rows, no_progress):
    """Import subscribers from CSV: columns email,name,frequency,topics,timezone (topics
    separated by ';'). The file is streamed and written in batches (IMP-1..5):
    addresses are checked without DNS lookups; bad rows are reported by line number,
    field and why, and skipped; unsubscribed and suppressed addresses stay as they
    are; known addresses get their preferences updated; importing the same file again
    changes nothing. New rows get a confirmation email unless --confirmed --source NAME
    says they already confirmed. Every import gets an id: `syndicate subscribers
    import-status ID --errors` lists all its row notes.

    Exports of Syndicate, listmonk, Ghost and Mailchimp import as they are (IMP-7):
    whoever the file says is not subscribed (unsubscribed, blocklisted, cleaned,
    deleted; never confirmed, with --confirmed) is left out and reported, and the
    columns nothing reads are named.

    \b
    Examples:
      syndicate subscribers import content/subscribers.csv --confirmed --source demo
      syndicate subscribers import ghost-members.csv --confirmed --source Ghost
      syndicate subscribers import signups.csv --dry-run
      syndicate subscribers import-status 3 --errors > fix-these.csv
    """
    from pipeline.accounts.audit import cli_actor
    from pipeline.subscribers import imports

    if confirmed and not source.strip():
        raise SyndicateError(
            "--confirmed needs --source NAME: where these people gave their consent",
            hint="e.g. --source 'paper sign-up sheet, 2026 fair'",
        )
    if str(file) == "-":
        target, name = sys.stdin, "<stdin>"
    else:
        if not file.exists():
            raise SyndicateError(f"{file}: no such file", hint="Give the path of a CSV file with an 'email' column.")
        target, name = file, str(file)
    with ctx.app.engine.begin() as conn:
        import_id = imports.create_import(
            conn, filename=name, source=source, confirmed=confirmed, created_by=cli_actor()
        )
    bar = _import_progress() if not no_progress and err_console.is_terminal else None
    task = bar.add_task("import", total=None, rows=0) if bar else None

    def progress(report) -> None:
        if bar is not None and task is not None:
            bar.update(task, total=report.bytes_total, completed=report.bytes_read, rows=report.total)

    try:
        if bar is not None:
            bar.start()
        report = imports.run_import(
            ctx.app.engine, ctx.settings, import_id, target, progress=progress, dry_run=dry_run, batch_rows=batch_rows
        )
    except UnicodeDecodeError as exc:
        raise SyndicateError(
            f"{name}: not UTF-8 text ({exc.reason} at byte {exc.start})",
            hint=f"Save the file as UTF-8 CSV; `syndicate subscribers import-status {import_id}` shows what was done.",
        ) from None
    except csv.Error as exc:
        raise SyndicateError(
            f"{name}: not a CSV file this import can read ({exc})",
            hint=f"Check the line the error names; `syndicate subscribers import-status {import_id}` shows "
            "what was imported before it (importing the fixed file again completes the rest).",
        ) from None
    finally:
        if bar is not None:
            bar.stop()
    if report.consent_columns:
        console.print(
            "rows left out where these columns say the person is not subscribed: " + ", ".join(report.consent_columns),
            soft_wrap=True,
            markup=False,
        )
    if report.ignored_columns:
        console.print("columns not imported: " + ", ".join(report.ignored_columns), soft_wrap=True, markup=False)
    shown = 0
    for note in report.notes[:IMPORT_NOTES_SHOWN]:
        shown += 1
        if note.kind == "bad":
            err_console.print(
                f"[yellow]{escape(name)}:{note.line}:[/] {escape(note.field)}: {escape(note.message)} (row skipped)",
                soft_wrap=True,
            )
        else:
            console.print(f"{name}:{note.line}: {note.message}", soft_wrap=True, markup=False)
    more = report.bad + report.skipped - shown
    if more > 0:
        err_console.print(
            f"... and {more} more row note(s): syndicate subscribers import-status {import_id} --errors",
            soft_wrap=True,
            markup=False,
        )
    console.print(
        f"import {import_id}: "
        + ("dry run, no subscriber changed: " if dry_run else "")
        + ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in report.counts().items()),
        soft_wrap=True,
    )
    if strict and report.bad:
        raise SyndicateError(f"{report.bad} bad row(s) in {name}", hint="Fix the lines named above.")


IMPORT_NOTES_SHOWN = 50


def _import_progress():
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]importing"),
        BarColumn(),
        DownloadColumn(),
        TextColumn("{task.fields[rows]:,} rows"),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
    )


@subscribers.command("import-status")
@click.argument("import_id", type=int)
@click.option("--errors", is_flag=True, help="Print every row note (line,kind,field,message) as CSV.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def import_status_cmd(ctx, import_id, errors, as_json):
    """An import's status and counts; --errors: its bad and skipped rows as CSV.

    \b
    Examples:
      syndicate subscribers import-status 3
      syndicate subscribers import-status 3 --errors > fix-these.csv
    """
    from pipeline.subscribers import imports

    with ctx.app.engine.connect() as conn:
        job = imports.get_import(conn, import_id, errors_limit=0)
        if errors:
            click.echo(imports.errors_csv(conn, import_id), nl=False)
            return
    if as_json:
        click.echo(json.dumps(_public(job), indent=2, default=str))
        return
    console.print(
        f"import {job['id']}: {job['status']}"
        + (" (dry run)" if job["dry_run"] else "")
        + f"   file {escape(job['filename'])}   by {escape(job['created_by'])}",
        soft_wrap=True,
    )
    console.print(
        f"confirmed: {'yes, source ' + escape(job['source']) if job['confirmed'] else 'no'}   "
        f"started {_when(job['started_at']) or '-'}   finished {_when(job['finished_at']) or '-'}",
        soft_wrap=True,
    )
    names = ("total", "created", "updated", "unchanged", "skipped", "bad", "confirmed_count", "confirmations_queued")
    console.print(", ".join(f"{n.replace('_count', '').replace('_', ' ')} {job[n]:,}" for n in names), soft_wrap=True)
    if job["error"]:
        err_console.print(f"error: {escape(job['error'])}", soft_wrap=True)
    if job["bad"] or job["skipped"]:
        console.print(f"row notes: syndicate subscribers import-status {job['id']} --errors", markup=False)


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
    """Delete sign-ups never confirmed within N days, with their tokens and history,
    and the row notes of imports older than 30 days (GDPR-2). The `purge` stage does
    the same on schedule.

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
        f"{verb} {counts['purged_unconfirmed']} unconfirmed sign-up(s), "
        f"{counts['rate_limit_rows']} old rate-limit row(s) and {counts['import_notes']} old import row note(s)"
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
