"""init, run, config show, db upgrade."""

from __future__ import annotations

import json
import logging
import time

import click
from rich.markup import escape
from rich.table import Table

from pipeline.cli import console, err_console, pass_ctx
from pipeline.errors import SyndicateError

log = logging.getLogger(__name__)


def register(main: click.Group) -> None:
    main.add_command(init)
    main.add_command(run)
    main.add_command(config)
    main.add_command(db)


@click.command()
@pass_ctx
def init(ctx):
    """Create var/, the database and a local secret (idempotent).

    \b
    Example:
      syndicate init
    """
    from pipeline import tokens
    from pipeline.store import get_engine, upgrade

    settings = ctx.settings
    var = settings.path("paths.var")
    var.mkdir(parents=True, exist_ok=True)
    settings.path("paths.public").mkdir(parents=True, exist_ok=True)
    if settings.email.backend == "maildir":
        for sub in ("tmp", "new", "cur"):
            (settings.path("email.maildir") / sub).mkdir(parents=True, exist_ok=True)
    engine = get_engine(settings.database_url, migrate=False)
    upgrade(engine)
    console.print(f"database ready: {engine.url.render_as_string(hide_password=True)}")
    if settings.security.secret_key:
        console.print("secret key: from the environment")
    elif tokens.create_local_secret(settings):
        err_console.print(
            f"[yellow]warning:[/] wrote a local demo secret to {tokens.local_secret_path(settings)}; "
            "set SYNDICATE_SECRET_KEY in production"
        )
    else:
        console.print(f"secret key: local demo secret in {tokens.local_secret_path(settings)}")


@click.command()
@click.option("--dry-run", is_flag=True, help="Show what each stage would do; send and write nothing.")
@click.option("--stage", "only", multiple=True, help="Run only these stages (repeatable).")
@pass_ctx
def run(ctx, dry_run: bool, only: tuple[str, ...]):
    """The main job: every stage once, in order, with a summary.

    A stage that fails is reported and the next stages still run (their own
    queues may hold work); the exit status is 1 if any stage failed.

    \b
    Examples:
      syndicate run
      syndicate run --dry-run
      syndicate run --stage ingest --stage build
    """
    from pipeline.ops.runs import record_run
    from pipeline.ops.stages import STAGES, run_stage

    app = ctx.app
    table = Table(title="syndicate run" + (" (dry run)" if dry_run else ""))
    table.add_column("stage")
    table.add_column("result")
    table.add_column("seconds", justify="right")
    failed = []
    for stage in STAGES:
        if only and stage.name not in only:
            continue
        if not only and not stage.in_run:
            continue
        started = time.monotonic()
        try:
            with record_run(app, f"run:{stage.name}", trigger="cli", dry_run=dry_run) as counts:
                counts.update(run_stage(app, stage.name, dry_run=dry_run))
            result = ", ".join(f"{k} {v}" for k, v in counts.items()) or "nothing to do"
        except SyndicateError as exc:
            failed.append(stage.name)
            result = f"[red]failed:[/] {escape(exc.message)}" + (f" ({escape(exc.hint)})" if exc.hint else "")
        table.add_row(stage.name, result, f"{time.monotonic() - started:.2f}")
    console.print(table)
    if failed:
        raise SyndicateError(
            f"stage(s) failed: {', '.join(failed)}",
            hint="Run the stage alone with -v for details; fix, then `syndicate run` again (it is safe to repeat).",
        )


@click.group()
def config():
    """The effective settings.

    \b
    Example:
      syndicate config show
    """


@config.command("show")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def config_show(ctx, as_json: bool):
    """Print the effective settings (defaults, file, environment), secrets masked.

    \b
    Examples:
      syndicate config show
      SYNDICATE_SITE__BASE_URL=https://news.example.com syndicate config show --json
    """
    settings = ctx.settings
    effective = settings.effective(mask_secrets=True)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "settings": effective,
                    "policy_rules": settings.policy_rules,
                    "partners": settings.partners,
                    "sources": settings.sources,
                },
                indent=2,
                default=str,
            )
        )
        return
    table = Table(title=f"settings ({settings.source or 'defaults'})")
    table.add_column("setting")
    table.add_column("value", overflow="fold")
    table.add_column("from")
    for section, values in effective.items():
        for key, value in values.items():
            table.add_row(f"{section}.{key}", repr(value), settings.origins[f"{section}.{key}"])
    console.print(table)
    console.print(f"policy rules: {', '.join(r['name'] for r in settings.policy_rules) or 'none'}")
    console.print(f"partners: {', '.join(p['name'] for p in settings.partners) or 'none'}")
    console.print(
        f"sources: {', '.join(s['name'] + ' (' + s['type'] + ')' for s in settings.sources) or 'content/ (default)'}"
    )


@config.command("docs")
@click.option(
    "--write",
    "targets",
    type=click.Path(dir_okay=False),
    multiple=True,
    help="Replace the generated blocks this Markdown file holds instead of printing (repeatable).",
)
def config_docs(targets: tuple[str, ...]):
    """The settings and command references as Markdown, generated from the declarations.

    Settings come from the one declaration table in pipeline/config.py, commands from
    the CLI itself; a test fails when the copies in docs/ are out of date.

    \b
    Examples:
      syndicate config docs
      syndicate config docs --write docs/configuration.md --write docs/commands.md
    """
    from pipeline.config import settings_markdown

    blocks = {"settings": settings_markdown(), "commands": commands_markdown()}
    if not targets:
        click.echo(blocks["commands"] + "\n\n" + blocks["settings"])
        return
    from pathlib import Path

    from pipeline.files import write_atomic

    for target in targets:
        path = Path(target)
        doc = path.read_text(encoding="utf-8")
        found = [name for name in blocks if f"<!-- {name}:start -->" in doc and f"<!-- {name}:end -->" in doc]
        if not found:
            raise SyndicateError(
                f"{target} has no generated block (<!-- settings:start --> ... <!-- settings:end -->"
                " or the same for commands)",
                hint="Add the two marker lines where the reference belongs.",
            )
        for name in found:
            start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
            head, rest = doc.split(start, 1)
            _, tail = rest.split(end, 1)
            doc = head + start + "\n" + blocks[name] + "\n" + end + tail
        write_atomic(path, doc)
        console.print(f"updated the {' and '.join(found)} reference in {target}")


def commands_markdown() -> str:
    """Every command with the first line of its help, from the CLI itself."""
    from pipeline.cli import main

    lines = ["| command | what it does |", "|---|---|"]

    def walk(cmd, path):
        for name in sorted(getattr(cmd, "commands", {})):
            sub = cmd.commands[name]
            full = path + [name]
            summary = " ".join((sub.help or "").strip().split("\n\n")[0].split())
            lines.append(f"| `syndicate {' '.join(full)}` | {summary.replace('|', '/')} |")
            walk(sub, full)

    walk(main, [])
    return "\n".join(lines)


@click.group()
def db():
    """Database maintenance.

    \b
    Example:
      syndicate db upgrade
    """


@db.command("upgrade")
@pass_ctx
def db_upgrade(ctx):
    """Apply pending migrations (they also run automatically on first use).

    \b
    Example:
      syndicate db upgrade
    """
    from pipeline.store import current_revision, get_engine, upgrade

    engine = get_engine(ctx.settings.database_url, migrate=False)
    upgrade(engine)
    console.print(f"database at revision {current_revision(engine)}")
