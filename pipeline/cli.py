"""The operator's command, `syndicate`: a thin click adapter over the core.

This is the only place that turns errors into exit codes and prints them: a
`SyndicateError` becomes `error: ...` plus its hint and exit status 1, with no
traceback unless `-v` was given. Commands are grouped by area in
`pipeline/commands/*.py`; each module has `register(main)`.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
import sys
import warnings
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.markup import escape

from pipeline.config import load_settings
from pipeline.errors import SyndicateError

if TYPE_CHECKING:  # the app (SQLAlchemy and all) is imported by the commands that open it (issue 15 item 4)
    from pipeline.app import App

COMMAND_MODULES = [
    "pipeline.commands.core",
    "pipeline.commands.editorial",
    "pipeline.commands.jobs",
    "pipeline.commands.subscribers",
    "pipeline.commands.delivery",
    "pipeline.commands.digests",
    "pipeline.commands.partners",
    "pipeline.commands.feeds",
    "pipeline.commands.sources",
    "pipeline.commands.users",
    "pipeline.commands.tokens",
    "pipeline.commands.editions",
]

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("job_id", "counts", "status", "duration"):
            if hasattr(record, key):
                data[key] = getattr(record, key)
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


# Long-running commands log one line per job run / batch by default; one-shot
# commands print their own summary and log only warnings unless -v.
DAEMON_COMMANDS = {"scheduler", "worker", "serve"}


def setup_logging(verbose: int, log_format: str, daemon: bool = False) -> None:
    level = logging.DEBUG if verbose >= 2 else logging.INFO if verbose == 1 else logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    pipeline_level = logging.DEBUG if verbose >= 1 else logging.INFO if daemon else logging.WARNING
    logging.getLogger("pipeline").setLevel(pipeline_level)


# Commands that only read: they open the database as it is and never create or
# migrate one (issue 16 item 12); a missing or outdated database is an error whose
# hint names `syndicate init` / `syndicate db upgrade`. Others migrate on first use.
READ_ONLY_COMMANDS = {
    "status",
    "review",
    "config show",
    "deliveries list",
    "deliveries show",
    "jobs history",
    "jobs list",
    "partners list",
    "partners status",
    "subscribers export",
    "subscribers list",
    "subscribers show",
    "suppressions list",
    "bounces list",
    "editions list",
    "editions report",
}


def command_name(ctx: click.Context) -> str:
    """'deliveries list' for `syndicate --config x deliveries list`."""
    return " ".join(ctx.command_path.split()[1:])


class Context:
    """What every command gets: the settings (loaded once) and the app."""

    def __init__(self, config_path: str, verbose: int, log_format: str):
        self.config_path = config_path
        self.verbose = verbose
        self.log_format = log_format
        self._app: App | None = None
        self._settings = None

    @property
    def app(self) -> App:
        if self._app is None:
            from pipeline.app import App

            settings = self.settings
            current = click.get_current_context(silent=True)
            if current is not None and command_name(current) in READ_ONLY_COMMANDS:
                from pipeline.store import open_existing

                self._app = App(settings, engine=open_existing(settings.database_url))
            else:
                self._app = App(settings)
        return self._app

    @property
    def settings(self):
        """Loaded once; commands that need no database (`config show`) open none."""
        if self._settings is None:
            self._settings = load_settings(self.config_path)
        return self._settings


pass_ctx = click.make_pass_decorator(Context)


VERBOSE_FLAG = re.compile(r"^(-v+|--verbose)$")


def hoist_verbose(args: list[str]) -> list[str]:
    """`-v` (and `-vv`, `--verbose`) wherever it stands, moved before the subcommand,
    so `syndicate db upgrade -v` works as the README and every error hint say. Nothing
    after `--` is touched, and no subcommand has a `-v` of its own."""
    args = list(args)
    end = args.index("--") if "--" in args else len(args)
    flags = [a for a in args[:end] if VERBOSE_FLAG.match(a)]
    rest = [a for a in args[:end] if not VERBOSE_FLAG.match(a)]
    return flags + rest + args[end:]


class SyndicateGroup(click.Group):
    """Turns SyndicateError into `error: ...` + hint + exit 1 for every subcommand."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist_verbose(args))

    def invoke(self, ctx: click.Context):
        with warnings.catch_warnings():  # Click 8.2 deprecates protected_args; 9 puts them in args
            warnings.simplefilter("ignore", DeprecationWarning)
            args = [*getattr(ctx, "protected_args", ()), *ctx.args]
        try:
            result = super().invoke(ctx)
            from pipeline.commands.cli_audit import record_cli_change  # the audit log (issue 13)

            record_cli_change(ctx, args)
            return result
        except SyndicateError as exc:
            verbose = ctx.obj.verbose if isinstance(ctx.obj, Context) else 0
            if verbose:
                err_console.print_exception()
            # escaped: messages name things in brackets ("unknown section [emial]")
            err_console.print(f"[bold red]error:[/] {escape(exc.message)}", markup=True, soft_wrap=True)
            if exc.hint:
                err_console.print(f"[yellow]hint:[/] {escape(exc.hint)}", markup=True, soft_wrap=True)
            ctx.exit(exc.exit_code)


@click.group(cls=SyndicateGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--config",
    "config_path",
    default=lambda: os.environ.get("SYNDICATE_CONFIG", "syndicate.toml"),
    show_default="./syndicate.toml or $SYNDICATE_CONFIG",
    help="The operator's config file.",
)
@click.option("-v", "--verbose", count=True, help="More output; -v shows tracebacks on errors, -vv debug logs.")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: one JSON object per log line, for log shippers.",
)
@click.version_option(package_name="syndicate")
@click.pass_context
def main(ctx: click.Context, config_path: str, verbose: int, log_format: str):
    """Syndicate: approved articles -> feeds, email digests and partner pushes.

    \b
    Example, the whole pipeline on the sample content:
      syndicate init && syndicate run
    """
    setup_logging(verbose, log_format, daemon=ctx.invoked_subcommand in DAEMON_COMMANDS or log_format == "json")
    ctx.obj = Context(config_path, verbose, log_format)


for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(main)


if __name__ == "__main__":  # pragma: no cover
    main()
