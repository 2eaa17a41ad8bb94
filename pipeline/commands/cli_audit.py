"""The CLI's audit rows (issue 13).

Every CLI command that changes something (the MUTATING list) leaves one audit row
after it succeeds: who ran it (login@host), the command and its arguments. The desk
writes its own rows with the signed-in user and the client address.

Called by pipeline.cli after each command; this module imports nothing from the CLI
(the command modules do), so there is no cycle between the two.
"""

from __future__ import annotations

import logging

import click

log = logging.getLogger(__name__)

# Command paths whose successful run is a change worth an audit row.
MUTATING = {
    "approve",
    "reject",
    "ingest",
    "run",
    "build",
    "deliver",
    "init",
    "users add",
    "users disable",
    "users role",
    "users demo",
    "jobs run",
    "jobs pause",
    "jobs resume",
    "deliveries retry",
    "deliveries pause",
    "deliveries resume",
    "deliveries cancel",
    "subscribers add",
    "subscribers remove",
    "subscribers import",
    "subscribers purge",
    "suppressions add",
    "suppressions remove",
    "partners retry",
    "partners replay",
    "partners resume",
    "partners pause",
    "digest compose",
    "digest test",
    "bounces process",
    "tokens create",
    "tokens revoke",
}


def _command_path(main: click.Command, args: list[str]) -> tuple[list[str], list[str]]:
    cmd, path, rest = main, [], list(args)
    while rest and isinstance(cmd, click.Group) and rest[0] in cmd.commands:
        cmd = cmd.commands[rest[0]]
        path.append(rest.pop(0))
    return path, rest


def record_cli_change(ctx: click.Context, args: list[str]) -> None:
    """Called by the CLI after a command succeeded: one audit row if it changed something."""
    from pipeline.accounts import audit as audit_log

    path, rest = _command_path(ctx.command, args)
    name = " ".join(path)
    if name not in MUTATING or ctx.obj is None:
        return
    target = next((a for a in rest if not a.startswith("-")), "")
    try:
        with ctx.obj.app.engine.begin() as conn:
            audit_log.record(
                conn,
                actor=audit_log.cli_actor(),
                action=f"cli.{name}",
                target=target,
                detail={"args": rest[:40]},
                via="cli",
            )
    except Exception as exc:  # the change is done; a missing audit row must not turn it into a failure
        log.warning("could not write the audit row for `syndicate %s`: %s", name, exc)
