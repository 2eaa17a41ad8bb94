"""ingest, review, approve, reject."""

from __future__ import annotations

import getpass
import os

import click
from rich.markup import escape
from rich.table import Table

from pipeline.cli import console, err_console, pass_ctx
from pipeline.errors import ContentError, SyndicateError
from pipeline.timeutil import rfc3339


def register(main: click.Group) -> None:
    main.add_command(ingest)
    main.add_command(review)
    main.add_command(approve)
    main.add_command(reject)


def default_editor() -> str:
    try:
        return os.environ.get("SYNDICATE_EDITOR") or getpass.getuser()
    except Exception:  # no login name in some containers
        return "editor"


@click.command()
@click.argument("names", nargs=-1, metavar="[SOURCE]...")
@click.option(
    "--strict", is_flag=True, help="Any bad file or item, from any source type, is fatal: nothing is written (ING-1)."
)
@click.option("--dry-run", is_flag=True, help="Check every file and report; write nothing.")
@pass_ctx
def ingest(ctx, names: tuple[str, ...], strict: bool, dry_run: bool):
    """Read content/ (or every [[sources]] entry, or the named ones) into the database.

    Unchanged files are skipped without parsing. A bad file is reported with its
    path, the field and the fix; the rest of the batch goes on, and the exit status
    is 1 if any file failed. With --strict, one bad file, feed item or WordPress post
    anywhere means nothing is written at all, every bad one is named, and the exit
    status is 1 (the same for every source type).

    \b
    Examples:
      syndicate ingest
      syndicate ingest --strict      # in CI: fail on the first bad file, write nothing
      syndicate ingest blog          # only the source named blog ([[sources]])
    """
    from pipeline.content.ingest import ingest as run_ingest

    if names or ctx.settings.sources:
        from pipeline.commands.sources import run_and_print

        return run_and_print(ctx, list(names), dry_run, strict=strict or None)

    try:
        report = run_ingest(ctx.app, dry_run=dry_run, strict=strict or None)
    except ContentError as exc:
        if not exc.errors:
            raise
        for err in exc.errors:  # strict (ING-1): name every bad file, not only the first
            err_console.print(f"[red]bad file:[/] {escape(err.message)}", soft_wrap=True)
            if err.hint:
                err_console.print(f"  [yellow]hint:[/] {escape(err.hint)}", soft_wrap=True)
        raise SyndicateError(
            f"{len(exc.errors)} bad file(s); strict mode wrote nothing",
            hint="Fix the files named above and run `syndicate ingest --strict` again.",
        ) from None
    for err in report.errors:
        err_console.print(f"[red]bad file:[/] {escape(err.message)}", soft_wrap=True)
        if err.hint:
            err_console.print(f"  [yellow]hint:[/] {escape(err.hint)}", soft_wrap=True)
    parts = [
        f"{len(report.new)} new",
        f"{len(report.changed)} changed",
        f"{report.unchanged} unchanged",
        f"{len(report.retracted)} retracted",
        f"{len(report.flagged)} flagged by policy",
        f"{len(report.errors)} failed",
        f"{report.authors} authors",
    ]
    console.print(("dry run: " if dry_run else "ingested: ") + ", ".join(parts))
    folder = ctx.settings.path("paths.content") / "articles"
    if not folder.is_dir():  # "0 new" alone reads as "nothing changed"
        err_console.print(
            f"[yellow]note:[/] {escape(str(folder))} does not exist, so nothing was read; create it (one Markdown "
            "file per article, docs/writing.md) or set paths.content",
            soft_wrap=True,
        )
    if report.flagged:
        console.print(f"flagged (see `syndicate review`): {', '.join(report.flagged)}")
    if report.errors:
        raise SyndicateError(
            f"{len(report.errors)} file(s) could not be ingested",
            hint="Fix the files named above and run `syndicate ingest` again; the others were ingested.",
        )


def _flag_text(flag: dict) -> str:
    return f"[red]{escape(flag['rule'])}[/] ({flag['action']}: {escape(', '.join(flag['matches']))})"


@click.command()
@click.argument("slug", required=False)
@click.option("--drafts", is_flag=True, help="Also list drafts.")
@click.option(
    "--diff/--no-diff", default=True, show_default=True, help="Show the change against the last approved revision."
)
@pass_ctx
def review(ctx, slug: str | None, drafts: bool, diff: bool):
    """Revisions waiting for an editor, with policy flags and a diff of every field.

    With a SLUG: that article's current revision in full (every field and the body),
    its policy flags with the text that tripped them, the diff against the approved
    revision, and its history: who approved, overrode or rejected which revision, when.

    \b
    Examples:
      syndicate review
      syndicate review vote-against-the-surveillance-bill
    """
    from pipeline.content.editorial import review_queue

    if slug:
        return _review_one(ctx, slug, diff)
    with ctx.app.engine.connect() as conn:
        queue = review_queue(conn, include_drafts=drafts)
    if not queue:
        console.print("Nothing waits for review.")
        return
    if console.width < WIDE:
        _review_blocks(queue)
    else:
        _review_table(queue)
    if diff:
        for p in queue:
            if p.diff:
                console.print(f"\n[bold]{p.slug}[/]: changes since the approved revision")
                from rich.syntax import Syntax  # Pygments: only when a diff is shown (start-up, issue 15)

                console.print(Syntax(p.diff, "diff", word_wrap=True))
    console.print("\nSee one in full: syndicate review SLUG", highlight=False)
    console.print("Approve: syndicate approve SLUG; reject: syndicate reject SLUG --reason TEXT", highlight=False)


WIDE = 120  # columns from which the queue is a table; below, seven columns broke slugs and words mid-way


def _review_blocks(queue) -> None:
    """The queue for a narrow terminal (80 columns, or `make run` in a pipe): a few lines
    per revision, the slug whole on its own line (it is what `approve` takes), the rest
    wrapped between words, indented, with no trailing spaces."""
    import textwrap

    def say(text: str) -> None:
        for line in textwrap.wrap(
            text,
            width=max(40, console.width - 2),
            subsequent_indent="    ",
            break_long_words=False,
            break_on_hyphens=False,
        ):
            console.print("  " + line, markup=False, highlight=False, soft_wrap=True)

    console.print(f"[bold]{len(queue)} revision(s) waiting for review[/]")
    for p in queue:
        console.print()
        console.print(f"[bold]{escape(p.slug)}[/]", soft_wrap=True, highlight=False)
        say(p.title)
        say(f"r{p.number} {p.state} by {p.author_slug}, hash {p.content_hash[:12]}")
        flags = "; ".join(f"{f['rule']} ({f['action']}: {', '.join(f['matches'])})" for f in p.flags)
        say("policy flags: " + (flags or "none"))


def _review_table(queue) -> None:
    table = Table(title=f"{len(queue)} revision(s) waiting for review")
    slug_width = min(48, max(len(p.slug) for p in queue))  # whole: it is what `approve` takes
    table.add_column("slug", overflow="fold", min_width=slug_width)
    for col in ("rev", "state"):
        table.add_column(col, no_wrap=True)
    for col in ("title", "author"):
        table.add_column(col, overflow="fold")
    table.add_column("hash", no_wrap=True)
    table.add_column("policy flags", overflow="fold")
    for p in queue:
        flags = "; ".join(_flag_text(f) for f in p.flags)
        table.add_row(
            p.slug,
            str(p.number),
            p.state,
            escape(p.title),
            p.author_slug,
            p.content_hash[:12],
            flags or "[green]none[/]",
        )
    console.print(table)


def _review_one(ctx, slug: str, diff: bool) -> None:
    from pipeline.content.editorial import article_review

    with ctx.app.engine.connect() as conn:
        r = article_review(conn, slug)
    p = r.current
    state = p.state + (" (retracted: its file was deleted)" if r.retracted else "")
    approved = f"r{r.approved_number}" if r.approved_number else "never"
    console.print(
        f"[bold]{escape(slug)}[/] r{p.number}: {state}; hash {p.content_hash}; approved revision: {approved}",
        soft_wrap=True,
    )
    if not r.waiting:
        console.print("No revision of this article waits for review.")
    console.print(f"\n[bold]Revision r{p.number}[/]")
    console.print(escape(p.document), soft_wrap=True, highlight=False)
    if p.flags:
        console.print("[bold]Policy flags[/]")
        for f in p.flags:
            console.print("  " + _flag_text(f), soft_wrap=True)
            for excerpt in f.get("excerpts", []):
                console.print(f"    {escape(excerpt)}", soft_wrap=True, highlight=False)
    else:
        console.print("Policy flags: [green]none[/]")
    if diff and p.diff:
        console.print(f"\n[bold]Changes since the approved revision r{r.approved_number}[/]")
        from rich.syntax import Syntax  # Pygments: only when a diff is shown

        console.print(Syntax(p.diff, "diff", word_wrap=True))
    if not r.history:
        console.print("History: no decision yet.")
        return
    console.print("\n[bold]History[/] (oldest first)")
    for h in r.history:  # one line each: readable in a narrow terminal, and greppable
        line = f"{rfc3339(h['decided_at'])}  r{h['number']} {h['decision']} by {h['editor']}"
        if h["override_reason"]:
            line += f", overriding the policy flags: {h['override_reason']}"
        if h["note"]:
            line += f" ({'reason' if h['decision'] == 'rejected' else 'note'}: {h['note']})"
        console.print("  " + escape(line), soft_wrap=True, highlight=False)
    _print_history(ctx, slug)  # every revision, decision and retraction, as the desk shows it


def _print_history(ctx, slug: str) -> None:
    from pipeline.content.editorial import timeline

    with ctx.app.engine.connect() as conn:
        events = timeline(conn, slug)
    table = Table(title=f"history of {slug}")
    for col in ("when (UTC)", "what", "rev", "who", "note"):
        table.add_column(col, overflow="fold")
    for e in events:
        flags = " ".join(f"[red]{escape(f['rule'])}[/]" for f in e["flags"])
        table.add_row(
            e["at"].strftime("%Y-%m-%d %H:%M:%S"),
            e["what"],
            f"r{e['revision']}",
            escape(e["who"]),
            escape(e["text"]) + (f" {flags}" if flags else ""),
        )
    console.print(table)


@click.command()
@click.argument("slugs", nargs=-1)
@click.option("--all", "all_pending", is_flag=True, help="Every waiting revision that no policy rule flags.")
@click.option("--note", default="", help="A note stored with the approval.")
@click.option(
    "--override", default="", metavar="REASON", help="Approve flagged revisions anyway; the reason is recorded."
)
@click.option("--editor", default=default_editor, show_default="$SYNDICATE_EDITOR or your login", help="Who approves.")
@click.option(
    "--hash",
    "expected_hash",
    default=None,
    help="Only approve if the content hash still starts with this (what you reviewed).",
)
@pass_ctx
def approve(ctx, slugs, all_pending: bool, note: str, override: str, editor: str, expected_hash: str | None):
    """Approve the current revision of articles; it is syndicated from then on.

    The approval is pinned to the revision's content hash: a later edit waits for
    review again while this revision stays the one syndicated.

    \b
    Examples:
      syndicate approve why-small-rituals-matter
      syndicate approve --all --note "Monday batch"
      syndicate approve some-slug --override "quotes a law, not a political statement"
    """
    from pipeline.content.editorial import approve as do_approve

    if not slugs and not all_pending:
        raise SyndicateError("name the articles to approve, or pass --all", hint="`syndicate review` lists what waits.")
    if expected_hash and len(slugs) != 1:
        raise SyndicateError("--hash goes with exactly one slug", hint="Approve the articles one at a time.")
    with ctx.app.engine.begin() as conn:
        if expected_hash:
            from pipeline.content.editorial import _current

            row = _current(conn, slugs[0])
            if not row.content_hash.startswith(expected_hash):
                raise SyndicateError(
                    f"{slugs[0]} changed since you reviewed it (hash now {row.content_hash[:12]})",
                    hint="Run `syndicate review` again and approve what you read.",
                )
        decisions = do_approve(conn, slugs, editor=editor, note=note, override=override, all_pending=all_pending)
    if not decisions:
        console.print("Nothing waits for review.")
    for d in decisions:
        colour = {"approved": "green", "skipped": "yellow"}.get(d.outcome, "red")
        console.print(
            f"[{colour}]{d.outcome}[/] {d.slug} r{d.revision}" + (f": {escape(d.reason)}" if d.reason else "")
        )


@click.command()
@click.argument("slug")
@click.option("--reason", required=True, help="Why; stored with the decision for the author.")
@click.option("--editor", default=default_editor, show_default="$SYNDICATE_EDITOR or your login", help="Who rejects.")
@pass_ctx
def reject(ctx, slug: str, reason: str, editor: str):
    """Reject the waiting revision of an article.

    \b
    Example:
      syndicate reject vote-this-time --reason "Statements involving politics are not approved."
    """
    from pipeline.content.editorial import reject as do_reject

    with ctx.app.engine.begin() as conn:
        d = do_reject(conn, slug, editor=editor, reason=reason)
    console.print(f"[red]rejected[/] {d.slug} r{d.revision}: {escape(d.reason)}")
