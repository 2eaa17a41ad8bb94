"""partners list | status | test | retry | replay | resume."""

from __future__ import annotations

import click
from rich.markup import escape
from rich.table import Table

from pipeline.cli import console, err_console, pass_ctx
from pipeline.errors import SyndicateError
from pipeline.timeutil import parse_datetime


def register(main: click.Group) -> None:
    main.add_command(partners_group)


def _when(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


@click.group("partners")
def partners_group():
    """Partner sites that receive approved articles (webhook, Micropub, WebSub hubs).

    \b
    Example:
      syndicate partners list
    """


@partners_group.command("list")
@pass_ctx
def partners_list(ctx):
    """Every configured partner: state, last success, backlog, dead letters.

    \b
    Example:
      syndicate partners list
    """
    from pipeline.partners.ops import overview

    rows = overview(ctx.app)
    if not rows:
        console.print(  # markup=False: rich read "[partners]" as a style tag and printed "Add a [] table"
            "No partners configured. Add a [[partners]] table to syndicate.toml (docs/partners.md).",
            markup=False,
            soft_wrap=True,
        )
        return
    table = Table(title="partners")
    for col in ("name", "kind", "state", "last success", "backlog", "sent", "dead", "failed"):
        table.add_column(col, overflow="fold", no_wrap=col in ("state", "kind"))
    for r in rows:
        colour = {"active": "green", "paused": "yellow", "throttled": "yellow", "disabled": "red"}.get(r["state"], "")
        state = f"[{colour}]{r['state']}[/]" if colour else r["state"]
        table.add_row(
            r["name"],
            r["kind"],
            state,
            _when(r["last_success_at"]),
            str(r["backlog"]),
            str(r["sent"]),
            str(r["dead"]),
            str(r["failed"]),
        )
    console.print(table)
    console.print("`syndicate partners status NAME` shows a partner's URL and its recent attempts.")
    for r in rows:
        note = r["alert"] or (r["reason"] if r["state"] in ("paused", "disabled") else "")
        if note:
            err_console.print(f"[yellow]{r['name']}:[/] {escape(note)}", soft_wrap=True)


@partners_group.command("status")
@click.argument("name")
@click.option("--limit", default=20, show_default=True, help="How many recent attempts to show.")
@pass_ctx
def partners_status(ctx, name: str, limit: int):
    """One partner: its state and its recent attempts with status codes and errors.

    \b
    Example:
      syndicate partners status example-partner
    """
    from pipeline.partners.ops import status

    info = status(ctx.app, name, limit=limit)
    s, p = info["summary"], info["partner"]
    console.print(f"[bold]{p.name}[/] ({p.kind}) {escape(p.url)}")
    console.print(
        f"state: {s['state']}"
        + (f" - {escape(s['reason'])}" if s["reason"] else "")
        + (f"; failures in a row: {s['consecutive_failures']}" if s["consecutive_failures"] else "")
    )
    if s["alert"]:
        console.print(f"[red]needs attention:[/] {escape(s['alert'])}", soft_wrap=True)
    console.print(
        f"last success: {_when(s['last_success_at'])}; backlog {s['backlog']}, sent {s['sent']}, "
        f"dead {s['dead']}, failed {s['failed']}"
    )
    # One line per attempt (not a table): long errors and ids stay whole and greppable.
    if info["attempts"]:
        console.print(
            "\n[bold]recent attempts[/] (newest first): time, event, article, status, outcome, ms, webhook-id, error"
        )
        for a in info["attempts"]:
            code = f"HTTP {a['status_code']}" if a["status_code"] else "no answer"
            console.print(
                f"  {_when(a['attempted_at'])}  {a['kind']}  {a['slug'] or '-'}  {code}  {a['outcome']}  "
                f"{a['duration_ms']}ms  {a['message_id'] or '-'}  {escape(a['error'][:300])}",
                soft_wrap=True,
            )
    else:
        console.print("No attempts yet.")
    if info["pending"]:
        console.print(
            "\n[bold]waiting or given up[/]: delivery, event, article, state, attempts, next attempt, last error"
        )
        for w in info["pending"]:
            console.print(
                f"  #{w['id']}  {w['kind']}  {w['slug'] or '-'}  {w['state']}  {w['attempts']}  "
                f"{_when(w['next_attempt_at'])}  {escape((w['last_error'] or '')[:300])}",
                soft_wrap=True,
            )


@partners_group.command("test")
@click.argument("name")
@click.option("--dry-run", is_flag=True, help="Show the signed request; send nothing.")
@pass_ctx
def partners_test(ctx, name: str, dry_run: bool):
    """Send a signed `ping` event (Micropub: a q=config query) and report the answer.

    A Standard Webhooks receiver answers 2xx only when the signature verified.

    \b
    Examples:
      syndicate partners test example-partner
      syndicate partners test example-partner --dry-run
    """
    from pipeline.partners.ops import send_test_event

    r = send_test_event(ctx.app, name, dry_run=dry_run)
    if r.dry_run:
        console.print(f"dry run: would POST to {escape(r.url)}")
        for k, v in (r.headers or {}).items():
            console.print(f"  {k}: {escape(v)}")
        if r.body:
            console.print(f"  body: {escape(r.body.decode())}")
        console.print(
            f"our signature checks out with the Standard Webhooks algorithm: {'yes' if r.self_verified else 'NO'}"
        )
        return
    console.print(f"{r.partner}: {escape(r.url)} answered {escape(r.answer)} in {r.duration_ms} ms")
    if r.message_id:
        console.print(f"webhook-id {r.message_id}, {r.signed_with} signature(s)")
    if not r.ok:
        raise SyndicateError(
            f"partner {name} did not accept the test event: {r.answer}",
            hint=f"`syndicate partners status {name}` shows the attempt; check the URL and that "
            "the partner has the same secret.",
        )
    if r.message_id:
        console.print("[green]ok:[/] the partner accepted the ping, so it verified the signature")
    else:
        console.print("[green]ok:[/] the Micropub endpoint accepted the token")


@partners_group.command("retry")
@click.argument("name")
@click.option("--failed", "include_failed", is_flag=True, help="Also requeue permanent failures (4xx answers).")
@pass_ctx
def partners_retry(ctx, name: str, include_failed: bool):
    """Put a partner's dead-lettered pushes back in the queue, due now.

    A circuit-breaker pause is lifted too; a partner disabled by a 410 answer needs
    `syndicate partners resume NAME`.

    \b
    Examples:
      syndicate partners retry example-partner
      syndicate partners retry example-partner --failed && syndicate deliver
    """
    from pipeline.partners.ops import retry

    n = retry(ctx.app, name, include_failed=include_failed)
    console.print(f"{n} delivery(ies) to {name} queued again; `syndicate deliver` sends them")


@partners_group.command("resume")
@click.argument("name")
@pass_ctx
def partners_resume(ctx, name: str):
    """Lift a 410 disabling or a circuit-breaker pause; waiting pushes become due now.

    \b
    Example:
      syndicate partners resume example-partner && syndicate deliver
    """
    from pipeline.partners.ops import resume

    before, n = resume(ctx.app, name)
    console.print(f"{name}: {before['state']} -> active; {n} waiting delivery(ies) due now")


@partners_group.command("replay")
@click.argument("name")
@click.option("--since", required=True, help="Replay what was delivered at or after this date (ISO 8601).")
@click.option("--dry-run", is_flag=True, help="Count what would be replayed; queue nothing.")
@pass_ctx
def partners_replay(ctx, name: str, since: str, dry_run: bool):
    """Re-send what a partner was sent since a date, as new events.

    Each replay has a new webhook-id and the original Idempotency-Key, in the
    original order; use it when a partner lost data.

    \b
    Example:
      syndicate partners replay example-partner --since 2026-11-01 && syndicate deliver
    """
    from pipeline.partners.ops import replay

    try:
        when = parse_datetime(since)
    except ValueError:
        raise SyndicateError(
            f"--since {since!r} is not a date", hint="Use ISO 8601, e.g. 2026-11-01 or 2026-11-01T08:00Z."
        ) from None
    n = replay(ctx.app, name, when, dry_run=dry_run)
    console.print(
        ("dry run: would replay " if dry_run else "replaying ")
        + f"{n} event(s) to {name}"
        + ("" if dry_run else "; `syndicate deliver` sends them")
    )
