"""build: feeds and pages into public/, and the WebSub ping queue."""

from __future__ import annotations

import click
from rich.markup import escape

from pipeline.cli import console, err_console, pass_ctx
from pipeline.errors import SyndicateError


def register(main: click.Group) -> None:
    main.add_command(build)


@click.command()
@click.option("--dry-run", is_flag=True, help="Render and report what would change; write nothing, queue no ping.")
@click.option(
    "--force", is_flag=True, help="Render every output again (files whose bytes are the same are still not rewritten)."
)
@click.option("--list", "show", is_flag=True, help="List every file written or removed.")
@pass_ctx
def build(ctx, dry_run: bool, force: bool, show: bool):
    """Build the feeds and pages in public/ from the approved articles.

    Only files whose bytes change are written (temporary file, then rename); a
    WebSub publish ping is queued for every subscription feed that changed, once
    per hub (sent by `syndicate deliver` or `syndicate worker`). A page or feed that
    cannot be rendered is reported and skipped; the exit status is then 1.

    \b
    Examples:
      syndicate build
      syndicate build --dry-run --list
    """
    from pipeline.site.build import build as run_build

    report = run_build(ctx.app, dry_run=dry_run, force=force)
    if show:
        for path in report.written:
            console.print(f"{'would write' if dry_run else 'wrote'} {escape(path)}", soft_wrap=True)
        for path in report.removed:
            console.print(f"{'would remove' if dry_run else 'removed'} {escape(path)}", soft_wrap=True)
    for err in report.errors:
        err_console.print(f"[red]failed:[/] {escape(err)}", soft_wrap=True)
    prefix = "dry run: would write" if dry_run else "built: wrote"
    console.print(
        f"{prefix} {len(report.written)} files, {report.unchanged} unchanged, "
        f"{len(report.removed)} removed; {len(report.changed_topics)} feeds changed, "
        f"{report.pings} hub pings queued ({report.articles} articles, {report.seconds:.2f}s)"
    )
    if report.errors:
        raise SyndicateError(
            f"{len(report.errors)} output(s) could not be rendered",
            hint="Fix the template or article named above, then run `syndicate build` again.",
        )
