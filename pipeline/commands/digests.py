"""digest compose, digest preview."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from pipeline.cli import console, pass_ctx

FREQUENCY = click.Choice(["instant", "daily", "weekly"])


def register(main: click.Group) -> None:
    main.add_command(digest)


@click.group()
def digest():
    """Email digests: compose editions into the outbox, preview what a subscriber gets.

    \b
    Examples:
      syndicate digest compose --frequency weekly --dry-run
      syndicate digest preview --frequency daily --subscriber ana@example.com --out /tmp/daily.html
    """


@digest.command("compose")
@click.option("--frequency", type=FREQUENCY, required=True, help="Which subscribers: instant, daily or weekly.")
@click.option("--dry-run", is_flag=True, help="Print who would get how many articles; write and queue nothing.")
@click.option("--show", default=50, show_default=True, help="With --dry-run: list at most this many recipients.")
@click.option(
    "--chunk",
    default=None,
    metavar="I/N",
    help="Compose only chunk I of N (subscribers with id % N == I-1); run N of them in parallel, "
    "on any machines, for a large edition.",
)
@pass_ctx
def compose(ctx, frequency: str, dry_run: bool, show: int, chunk: str | None):
    """Queue this frequency's digest for every subscriber with something new.

    Selects, per confirmed subscriber, the approved articles they have not had in the
    topics they follow, renders what recipients share once, and queues one outbox
    row per subscriber. Sends nothing (`syndicate deliver` does). Safe to repeat:
    a second run for the same edition adds nothing. With --chunk I/N, N processes
    compose one edition in parallel, each a disjoint share of the subscribers; the
    last to finish marks the edition complete.

    \b
    Examples:
      syndicate digest compose --frequency daily
      syndicate digest compose --frequency weekly --dry-run
      syndicate digest compose --frequency weekly --chunk 1/2 &  syndicate digest compose --frequency weekly --chunk 2/2
    """
    from pipeline.digests.editions import compose as run_compose
    from pipeline.digests.editions import parse_chunk

    plan: list[tuple[str, int]] = []

    def on_plan(email: str, n: int) -> None:
        if len(plan) < show:
            plan.append((email, n))

    report = run_compose(
        ctx.app.engine, ctx.settings, frequency, dry_run=dry_run, on_plan=on_plan, chunk=parse_chunk(chunk)
    )
    if dry_run:
        table = Table(title=f"{frequency} digest (dry run): who would get how many articles")
        table.add_column("subscriber")
        table.add_column("articles", justify="right")
        for email, n in plan:
            table.add_row(escape(email), str(n))
        console.print(table)
        recipients = report.subscribers - report.empty
        if recipients > len(plan):
            console.print(f"... and {recipients - len(plan)} more")
        console.print(
            f"dry run: {recipients} subscriber(s) would get {report.queued} message(s), "
            f"{report.empty} have nothing new; nothing was written",
            soft_wrap=True,
        )
        return
    label = f"{frequency} (chunk {chunk})" if chunk else frequency
    console.print(
        f"{label}: {report.queued} queued for {report.subscribers - report.empty} subscribers, "
        f"{report.empty} with nothing new, {report.parts_rendered} variants rendered"
        + (
            f"; editions: {', '.join(report.editions[:5])}" + (" ..." if len(report.editions) > 5 else "")
            if report.editions
            else ""
        )
    )


@digest.command("preview")
@click.option("--frequency", type=FREQUENCY, default=None, help="Which digest (default: the subscriber's).")
@click.option("--subscriber", "email", default=None, help="Preview what this subscriber gets.")
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the HTML here and the text next to it (FILE.txt); default var/previews/.",
)
@pass_ctx
def preview(ctx, frequency: str | None, email: str | None, out: Path | None):
    """Write the exact HTML and text of a digest, as a subscriber would get it.

    With --subscriber: their next digest, as the next edition of their time-zone slot
    will hold it (articles approved since their last digest included); when nothing
    is new yet, the last one sent to them. Without: the first due subscriber of the
    frequency, or a sample of the next edition with every topic.

    \b
    Examples:
      syndicate digest preview --frequency weekly
      syndicate digest preview --subscriber ana@example.com --out /tmp/ana.html
    """
    from pipeline.digests.editions import preview as make_preview
    from pipeline.errors import SyndicateError

    if not frequency and not email:
        raise SyndicateError("name a frequency or a subscriber", hint="e.g. --frequency weekly")
    result = make_preview(ctx.app.engine, ctx.settings, frequency=frequency, email=email)
    if out is None:
        name = (email or frequency or "digest").replace("@", "_at_").replace("/", "_")
        out = ctx.settings.path("paths.var") / "previews" / f"{name}.html"
    from pipeline.files import write_atomic

    write_atomic(out, result.html)
    text_path = out.with_name(out.name + ".txt") if out.suffix != ".txt" else out.with_suffix(".text")
    write_atomic(text_path, result.text)
    console.print(f"subject: {escape(result.subject)}")
    console.print(f"for {escape(result.recipient)} ({result.source}, {result.articles} articles)")
    console.print(f"html: {out}\ntext: {text_path}")


@digest.command("test")
@click.option("--to", "to", multiple=True, required=True, metavar="ADDRESS", help="A seed address (repeat for more).")
@click.option(
    "--as", "as_subscriber", default=None, metavar="SUBSCRIBER", help="Send the next digest this subscriber gets."
)
@click.option(
    "--frequency", type=FREQUENCY, default=None, help="Without --as: a sample of this frequency's next edition."
)
@click.option("--dry-run", is_flag=True, help="Render and show what would be sent; queue and send nothing.")
@pass_ctx
def test_send(ctx, to: tuple[str, ...], as_subscriber: str | None, frequency: str | None, dry_run: bool):
    """Send the next digest to a seed list, marked [TEST], moving no watermark.

    Renders the digest exactly as `digest preview` does (with --as: that subscriber's
    next digest; without: a sample of the next edition) and sends it at once through
    the outbox to every --to address, Subject prefixed with [TEST]. No edition is
    composed and no subscriber's watermark moves, so the real send is unchanged.
    The subscriber's own unsubscribe and preferences links are replaced in the copy.

    \b
    Examples:
      syndicate digest test --to editor@example.com --as ana@example.com
      syndicate digest test --to a@example.com --to b@example.com --frequency weekly --dry-run
    """
    from pipeline.delivery.worker import deliver_now
    from pipeline.digests.testsend import queue_test_send

    result = queue_test_send(
        ctx.app.engine, ctx.settings, list(to), as_subscriber=as_subscriber, frequency=frequency, dry_run=dry_run
    )
    console.print(f"subject: {escape(result.subject)}")
    console.print(f"as {escape(result.recipient)} ({result.source}, {result.articles} articles)")
    if dry_run:
        console.print(f"dry run: would send to {', '.join(escape(a) for a in result.to)}; nothing was queued")
        return
    report = deliver_now(ctx.settings, ctx.app.engine, result.keys)
    console.print(
        f"sent {report.sent} of {len(result.keys)} to {', '.join(escape(a) for a in result.to)}"
        + (
            f"; {len(result.keys) - report.sent} left in the outbox for `syndicate deliver`"
            if report.sent < len(result.keys)
            else ""
        )
    )
