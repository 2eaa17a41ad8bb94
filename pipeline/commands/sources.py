"""sources list | show | test | ingest | pause | resume."""

from __future__ import annotations

import json

import click
from rich.markup import escape
from rich.table import Table

from pipeline.cli import console, err_console, pass_ctx
from pipeline.errors import SyndicateError


def register(main: click.Group) -> None:
    main.add_command(sources)


@click.group()
def sources():
    """Where articles come from: [[sources]] in syndicate.toml (default: content/).

    \b
    Examples:
      syndicate sources list
      syndicate sources test blog
      syndicate sources ingest blog
    """


def _when(value) -> str:
    return f"{value:%Y-%m-%d %H:%M}" if value else "never"


@sources.command("list")
@pass_ctx
def list_sources(ctx):
    """Every configured source with its state: last success, last error, paused.

    \b
    Example:
      syndicate sources list
    """
    from pipeline.content.sources import configured, make_source
    from pipeline.content.sources.runner import states

    with ctx.app.engine.connect() as conn:
        state = states(conn)
    table = Table(title="sources")
    for col in ("name", "type", "approval", "where", "state", "last success", "last error"):
        table.add_column(col, overflow="fold")  # a path or URL shown whole, in 80 columns too
    for config in configured(ctx.settings):
        row = state.get(config["name"])
        flags = (
            "disabled" if not config.get("enabled", True) else "paused" if row is not None and row.paused else "active"
        )
        if row is not None and row.failures:
            flags += f", {row.failures} failure(s) in a row"
        table.add_row(
            config["name"],
            config["type"],
            config.get("approval", "review"),
            escape(make_source(config, ctx.settings).describe()),
            flags,
            _when(row.last_success_at if row else None),
            escape((row.last_error or "")[:120]) if row is not None and row.last_error else "",
        )
    console.print(table)


@sources.command()
@click.argument("name")
@pass_ctx
def show(ctx, name: str):
    """One source: its settings (no secrets), cursor, last counts and last error.

    \b
    Example:
      syndicate sources show blog
    """
    from pipeline.content.sources import find
    from pipeline.content.sources.runner import get_state

    config = find(ctx.settings, name)
    with ctx.app.engine.connect() as conn:
        row = get_state(conn, name)
    for key, value in config.items():
        console.print(f"{key}: {escape(str(value))}")
    if row is None:
        console.print("never run")
        return
    console.print(f"paused: {row.paused}")
    console.print(
        f"failures in a row: {row.failures}"
        + (f" (next try after {_when(row.next_attempt_at)})" if row.next_attempt_at else "")
    )
    console.print(f"last run: {_when(row.last_run_at)}; last success: {_when(row.last_success_at)}")
    if row.last_error:
        console.print(f"last error ({_when(row.last_error_at)}): {escape(row.last_error)}", soft_wrap=True)
    console.print(f"last counts: {json.dumps(row.last_counts)}")
    console.print(f"cursor: {escape(json.dumps(row.cursor))}")


@sources.command()
@click.argument("name")
@pass_ctx
def test(ctx, name: str):
    """Fetch a source and show what it would store, writing nothing (not even its state).

    \b
    Example:
      syndicate sources test blog
    """
    from pipeline.content.sources import find
    from pipeline.content.sources.runner import run_source

    run = run_source(ctx.app, find(ctx.settings, name), dry_run=True, force=True)
    print_runs([run], dry_run=True)


@sources.command("ingest")
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option("--dry-run", is_flag=True, help="Fetch and check; write nothing.")
@click.option("--strict", is_flag=True, help="Any bad item is fatal: nothing is written (ING-1).")
@pass_ctx
def ingest_sources(ctx, names: tuple[str, ...], dry_run: bool, strict: bool):
    """Read the sources (all, or the named ones even when backing off) into the database.

    \b
    Examples:
      syndicate sources ingest
      syndicate sources ingest blog partner-feed
      syndicate sources ingest --strict
    """
    run_and_print(ctx, list(names), dry_run, strict=strict or None)


def run_and_print(ctx, names: list[str], dry_run: bool, *, strict: bool | None = None) -> None:
    """Run the sources and print what each did; exit 1 when any failed. `strict`
    (ING-1; default `[ingest] strict`): one bad item anywhere and nothing is written.
    With several sources, all are checked first (a dry run) so that a bad item in
    the last one keeps the first ones from being written too."""
    from pipeline.content.sources import configured
    from pipeline.content.sources.runner import run_sources

    strict = bool(ctx.settings.ingest.strict) if strict is None else strict
    selected = [c for c in configured(ctx.settings) if not names or c["name"] in names]
    if strict and not dry_run and len(selected) > 1:
        checked = run_sources(ctx.app, names or None, dry_run=True, strict=True)
        bad = [r for r in checked if r.status == "failed" or r.counts.get("failed")]
        if bad:
            print_runs(checked, dry_run=True)
            raise SyndicateError(
                f"strict mode wrote nothing: {len(bad)} source(s) had failures: {', '.join(r.name for r in bad)}",
                hint="Fix the items named above, or run without --strict to ingest the good ones.",
            )
    runs = run_sources(ctx.app, names or None, dry_run=dry_run, strict=strict)
    print_runs(runs, dry_run=dry_run)
    failed = [r for r in runs if r.status == "failed" or r.counts.get("failed")]
    if failed and strict:
        raise SyndicateError(
            f"{len(failed)} source(s) had failures: {', '.join(r.name for r in failed)}; "
            "strict mode wrote nothing for them",
            hint="Fix the items named above, or run without --strict to ingest the good ones.",
        )
    if failed:
        raise SyndicateError(
            f"{len(failed)} source(s) had failures: {', '.join(r.name for r in failed)}",
            hint="See the errors above; the good items were ingested. `syndicate sources show NAME` has details.",
        )


def print_runs(runs, *, dry_run: bool = False) -> None:
    for run in runs:
        counts = ", ".join(f"{v} {k}" for k, v in run.counts.items())
        colour = {"failed": "red", "ok": "green"}.get(run.status, "yellow")
        console.print(
            f"[bold]{run.name}[/] ({run.type}) [{colour}]{run.status}[/]"
            + (" (dry run)" if dry_run else "")
            + (f": {counts}" if run.status in ("ok", "not-modified", "failed") else "")
        )
        if run.error:
            err_console.print(f"  [red]error:[/] {escape(run.error)}", soft_wrap=True)
            if run.hint:
                err_console.print(f"  [yellow]hint:[/] {escape(run.hint)}", soft_wrap=True)
        for problem in run.problems:
            err_console.print(f"  [red]bad item:[/] {escape(problem)}", soft_wrap=True)
        for note in run.notes:
            console.print(f"  note: {escape(note)}", soft_wrap=True)
        if run.authors_created:
            console.print(f"  new authors: {', '.join(run.authors_created)}")
        if run.flagged:
            console.print(f"  flagged (see `syndicate review`): {', '.join(run.flagged)}")


@sources.command()
@click.argument("name")
@pass_ctx
def pause(ctx, name: str):
    """Stop reading a source until `syndicate sources resume NAME`.

    \b
    Example:
      syndicate sources pause blog
    """
    _set_paused(ctx, name, True)


@sources.command()
@click.argument("name")
@pass_ctx
def resume(ctx, name: str):
    """Read a paused (or backed-off) source again from the next run on.

    \b
    Example:
      syndicate sources resume blog
    """
    _set_paused(ctx, name, False)


def _set_paused(ctx, name: str, paused: bool) -> None:
    from pipeline.content.sources.runner import set_paused

    set_paused(ctx.app.engine, name, paused, ctx.settings)
    console.print(f"source {name} {'paused' if paused else 'resumed'}")
