"""deliver, worker, deliveries, suppressions, bounces."""

from __future__ import annotations

import json
import signal
import threading
import time

import click
from rich.markup import escape
from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from pipeline.cli import console, err_console, pass_ctx
from pipeline.errors import NotFound, SyndicateError


def register(main: click.Group) -> None:
    main.add_command(deliver)
    main.add_command(worker)
    main.add_command(deliveries)
    main.add_command(suppressions)
    main.add_command(bounces)


class _RateColumn(ProgressColumn):
    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} msg/s" if speed else "- msg/s")


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]delivering"),
        BarColumn(),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f}"),
        TextColumn(
            "sent [green]{task.fields[sent]:,}[/] failed [red]{task.fields[failed]:,}[/] "
            "retry [yellow]{task.fields[retry]:,}[/]"
        ),
        _RateColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err_console,
        transient=False,
    )


def _summary(report) -> str:
    rate = report.claimed / report.seconds if report.seconds else 0
    parts = [
        f"{report.sent} sent",
        f"{report.failed} failed",
        f"{report.retry} to retry",
        f"{report.suppressed} suppressed",
        f"{report.dead} dead",
    ]
    if report.released:
        parts.append(f"{report.released} released (channel paused or over its cap)")
    if report.lost:
        parts.append(f"{report.lost} not sent (another worker took over their claim)")
    if report.recovered:
        parts.append(f"{report.recovered} recovered from a dead worker's journal")
    return ", ".join(parts) + f" in {report.seconds:.1f}s ({rate:,.0f}/s)"


@click.command()
@click.option("--limit", type=int, default=None, help="Handle at most this many deliveries.")
@click.option("--dry-run", is_flag=True, help="Show what is due; claim and send nothing.")
@click.option(
    "--channel",
    "channels",
    multiple=True,
    type=click.Choice(["email", "webhook", "micropub", "websub", "events"]),
    help="Only these channels (repeatable).",
)
@click.option(
    "--concurrency",
    type=int,
    default=1,
    show_default=True,
    help="Worker processes draining in parallel (each with delivery.smtp_connections connections).",
)
@click.option("--no-progress", is_flag=True, help="No progress bar (logs and CI).")
@pass_ctx
def deliver(ctx, limit, dry_run, channels, concurrency, no_progress):
    """Drain the outbox once, with a progress bar (sent, failed, rate, ETA).

    Every due delivery is claimed, sent and recorded; failures are retried on the
    schedule in delivery.retry_schedule. Safe to run while workers run, and safe to
    kill: claims come back after delivery.lease_seconds and the journal stops
    re-sends (see the README, Delivery).

    \b
    Examples:
      syndicate deliver
      syndicate deliver --dry-run
      syndicate deliver --limit 1000 --concurrency 2
    """
    from pipeline.delivery.worker import drain, dry_run_report, due_count, run_workers

    app = ctx.app
    if dry_run:
        report = dry_run_report(app.settings, app.engine, channels=channels or None, limit=limit)
        for channel, n in sorted(report["due_by_channel"].items()):
            paused = " (paused)" if channel in report["paused_channels"] else ""
            console.print(f"{channel}: {n} due{paused}")
        console.print(f"dry run: would send {report['would_send']}; nothing claimed or sent")
        return
    total = due_count(app.engine, channels or None)
    if limit:
        total = min(total, limit)
    show = not no_progress and total > 0 and err_console.is_terminal
    progress = _progress() if show else None
    task = progress.add_task("deliver", total=total, sent=0, failed=0, retry=0) if progress else None

    def update(r):
        if progress:
            done = r.finished + r.retry + r.released
            progress.update(task, completed=min(done, total), sent=r.sent, failed=r.failed + r.dead, retry=r.retry)

    if progress:
        progress.start()
    try:
        if concurrency > 1:
            report = run_workers(
                app.settings,
                processes=concurrency,
                continuous=False,
                limit=limit,
                channels=channels or None,
                progress=update,
            )
        else:
            report = drain(app.settings, app.engine, limit=limit, channels=channels or None, progress=update)
    finally:
        if progress:
            progress.stop()
    console.print(_summary(report))
    _warn_paused(app)
    if report.outage:  # issue 16 item 11: an outage is an error, not a quiet "0 sent"
        from pipeline.errors import DeliveryError

        raise DeliveryError(
            report.outage,
            hint="Check email.smtp_host / email.smtp_port and that the server is up; "
            "nothing is lost: the messages stay queued and the next run or worker tries again "
            "after the backoff (see `syndicate status`).",
        )


def _warn_paused(app) -> None:
    from pipeline.delivery.channels import all_states

    for state in all_states(app.engine):
        if state.paused:
            err_console.print(
                f"[bold red]channel {state.channel} is paused:[/] {escape(state.paused_reason)}", soft_wrap=True
            )
            err_console.print(f"[yellow]hint:[/] fix the cause, then `syndicate deliveries resume {state.channel}`.")


@click.command()
@click.option("--concurrency", type=int, default=1, show_default=True, help="Worker processes.")
@click.option("--poll", type=float, default=1.0, show_default=True, help="Seconds to wait when nothing is due.")
@click.option(
    "--channel",
    "channels",
    multiple=True,
    type=click.Choice(["email", "webhook", "micropub", "websub", "events"]),
    help="Only these channels (repeatable).",
)
@pass_ctx
def worker(ctx, concurrency, poll, channels):
    """Drain the outbox continuously until stopped (SIGTERM or Ctrl-C).

    On SIGTERM the batch in hand is finished and committed, then the worker exits 0.
    Run several (on one or more machines, with PostgreSQL) to scale out: claims use
    FOR UPDATE SKIP LOCKED, and live workers share delivery.rate_per_second.

    \b
    Examples:
      syndicate worker
      syndicate worker --concurrency 4
    """
    from pipeline.delivery.worker import DrainReport, drain, run_workers

    app = ctx.app
    stop = threading.Event()

    def _stop(signum, _frame):
        err_console.print(f"signal {signum}: finishing the batch in hand, then stopping")
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    console.print(f"worker started ({concurrency} process(es)); stop with SIGTERM or Ctrl-C")
    if concurrency > 1:
        total = run_workers(
            app.settings, processes=concurrency, continuous=True, channels=channels or None, poll=poll, stop=stop
        )
    else:
        total = DrainReport()
        started = time.monotonic()
        while not stop.is_set():
            report = drain(app.settings, app.engine, channels=channels or None, should_stop=stop.is_set)
            total.merge(report)
            if report.claimed:
                console.print(_summary(report))
            if not report.claimed or report.released >= report.claimed:
                stop.wait(poll)
        total.seconds = time.monotonic() - started
    console.print("worker stopped: " + _summary(total))


# --- deliveries -----------------------------------------------------------------------


@click.group()
def deliveries():
    """The outbox: list, show, retry; pause and resume a channel.

    \b
    Examples:
      syndicate deliveries list --state failed
      syndicate deliveries retry --failed
      syndicate deliveries resume email
    """


@deliveries.command("list")
@click.option(
    "--state",
    type=click.Choice(["queued", "sending", "sent", "retry", "failed", "suppressed", "dead", "cancelled"]),
    default=None,
    help="Only this state.",
)
@click.option("--channel", type=click.Choice(["email", "webhook", "micropub", "websub", "events"]), default=None)
@click.option("--target", default=None, help="Only this recipient address, partner or hub.")
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def deliveries_list(ctx, state, channel, target, limit, as_json):
    """Deliveries, newest first, with counts by channel and state.

    \b
    Examples:
      syndicate deliveries list
      syndicate deliveries list --state failed --channel email
    """
    from sqlalchemy import select

    from pipeline.delivery import outbox
    from pipeline.delivery.channels import all_states
    from pipeline.store.schema import deliveries as table

    engine = ctx.app.engine
    q = (
        select(
            table.c.id,
            table.c.channel,
            table.c.target,
            table.c.kind,
            table.c.state,
            table.c.attempts,
            table.c.next_attempt_at,
            table.c.last_error,
        )
        .order_by(table.c.id.desc())
        .limit(limit)
    )
    if state:
        q = q.where(table.c.state == state)
    if channel:
        q = q.where(table.c.channel == channel)
    if target:
        q = q.where(table.c.target == target)
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(q).mappings()]
        counts = outbox.counts_by_state(conn)
    states = all_states(engine)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "deliveries": rows,
                    "counts": {f"{c}:{s}": n for (c, s), n in counts.items()},
                    "channels": [s.__dict__ for s in states],
                },
                default=str,
                indent=2,
            )
        )
        return
    for st in states:
        if st.paused:
            console.print(
                f"[bold red]channel {st.channel} paused[/] since {st.paused_at:%Y-%m-%d %H:%M}: "
                f"{escape(st.paused_reason)}",
                soft_wrap=True,
            )
    console.print("counts: " + (", ".join(f"{c}/{s} {n}" for (c, s), n in sorted(counts.items())) or "outbox empty"))
    table_out = Table()
    for col in ("id", "channel", "target", "kind", "state", "tries", "next attempt", "last error"):
        table_out.add_column(col, overflow="fold")
    for r in rows:
        table_out.add_row(
            str(r["id"]),
            r["channel"],
            escape(r["target"]),
            r["kind"],
            r["state"],
            str(r["attempts"]),
            f"{r['next_attempt_at']:%Y-%m-%d %H:%M}" if r["state"] in ("queued", "retry") else "",
            escape((r["last_error"] or "")[:120]),
        )
    console.print(table_out)


@deliveries.command("show")
@click.argument("delivery_id", type=int)
@pass_ctx
def deliveries_show(ctx, delivery_id):
    """Everything about one delivery.

    \b
    Example:
      syndicate deliveries show 42
    """
    from pipeline.delivery import outbox

    with ctx.app.engine.connect() as conn:
        row = outbox.get(conn, delivery_id)
    if row is None:
        raise NotFound(f"no delivery {delivery_id}", hint="`syndicate deliveries list` shows the ids.")
    for key, value in row.items():
        console.print(
            f"[bold]{key}[/]: {escape(json.dumps(value) if isinstance(value, dict) else str(value))}", soft_wrap=True
        )


@deliveries.command("retry")
@click.argument("ids", type=int, nargs=-1)
@click.option("--failed", "all_failed", is_flag=True, help="Every failed and dead delivery.")
@click.option("--channel", type=click.Choice(["email", "webhook", "micropub", "websub", "events"]), default=None)
@pass_ctx
def deliveries_retry(ctx, ids, all_failed, channel):
    """Put failed or dead deliveries back in the queue, due now.

    Suppressed addresses stay suppressed: the send-time check still applies.

    \b
    Examples:
      syndicate deliveries retry 42 43
      syndicate deliveries retry --failed --channel email
    """
    from pipeline.delivery import outbox

    if not ids and not all_failed:
        raise SyndicateError(
            "name the deliveries to retry, or pass --failed",
            hint="`syndicate deliveries list --state failed` shows them.",
        )
    retryable = ("failed", "dead", "retry") if ids else ("failed", "dead")
    with ctx.app.engine.begin() as conn:
        named = outbox.states_of(conn, ids) if ids else {}
        n = outbox.requeue(conn, ids=list(ids) if ids else None, channel=channel, states=retryable)
    console.print(f"requeued {n} deliveries")
    # Every named id that was not requeued, and why: a typo must not pass for "nothing to do".
    for delivery_id in dict.fromkeys(ids):
        found = named.get(delivery_id)
        if found is None:
            continue  # named below, in the error
        if channel and found[0] != channel:
            err_console.print(f"[yellow]{delivery_id} is a {found[0]} delivery, not {channel}; left as it is[/]")
        elif found[1] not in retryable:
            err_console.print(
                f"[yellow]{delivery_id} is {found[1]}, not failed, dead or waiting to retry; left as it is[/]"
            )
    missing = [i for i in ids if i not in named]
    if missing:
        raise NotFound(
            f"no delivery {', '.join(map(str, dict.fromkeys(missing)))}",
            hint="`syndicate deliveries list` shows the ids; the others named were handled as above.",
        )


@deliveries.command("pause")
@click.argument("channel", type=click.Choice(["email", "webhook", "micropub", "websub", "events"]))
@click.option("--reason", default="paused by the operator", show_default=True)
@pass_ctx
def deliveries_pause(ctx, channel, reason):
    """Stop sending on a channel; its deliveries stay queued.

    \b
    Example:
      syndicate deliveries pause email --reason "DNS change"
    """
    from pipeline.delivery.channels import pause

    pause(ctx.app.engine, channel, reason)
    console.print(f"channel {channel} paused")


@deliveries.command("resume")
@click.argument("channel", type=click.Choice(["email", "webhook", "micropub", "websub", "events"]))
@pass_ctx
def deliveries_resume(ctx, channel):
    """Resume a paused channel (after a 5.7.x answer or too many failures in a row).

    \b
    Example:
      syndicate deliveries resume email
    """
    from pipeline.delivery.channels import resume

    resume(ctx.app.engine, channel)
    console.print(f"channel {channel} resumed")


# --- suppressions ---------------------------------------------------------------------


@click.group()
def suppressions():
    """The suppression list: addresses that get no mail at all.

    \b
    Examples:
      syndicate suppressions list
      syndicate suppressions add someone@example.org --reason manual
      syndicate suppressions remove someone@example.org
    """


@suppressions.command("list")
@click.option("--limit", type=int, default=1000, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def suppressions_list(ctx, limit, as_json):
    """Suppressed addresses, newest first.

    \b
    Example:
      syndicate suppressions list
    """
    from pipeline.subscribers.suppression import list_suppressions

    with ctx.app.engine.connect() as conn:
        rows = list_suppressions(conn, limit=limit)
    if as_json:
        click.echo(json.dumps(rows, default=str, indent=2))
        return
    table = Table()
    for col in ("email", "reason", "source", "since", "detail"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(
            escape(r["email"]),
            r["reason"],
            escape(r["source"]),
            f"{r['created_at']:%Y-%m-%d %H:%M}",
            escape((r["detail"] or "")[:100]),
        )
    console.print(table)
    console.print(f"{len(rows)} suppressed")


@suppressions.command("add")
@click.argument("email")
@click.option(
    "--reason",
    type=click.Choice(["manual", "complaint", "hard_bounce", "unsubscribed"]),
    default="manual",
    show_default=True,
)
@click.option("--detail", default="", help="A note kept with the entry.")
@pass_ctx
def suppressions_add(ctx, email, reason, detail):
    """Suppress an address: nothing more is sent to it, from now on (checked at send time).

    \b
    Example:
      syndicate suppressions add someone@example.org --detail "asked by phone"
    """
    from pipeline.subscribers.suppression import suppress

    if "@" not in email or any(c in email for c in "\r\n <>"):
        raise SyndicateError(f"{email!r} is not an email address", hint="Give one address, like someone@example.org.")
    with ctx.app.engine.begin() as conn:
        added = suppress(conn, ctx.settings, email, reason=reason, source="cli", detail=detail)
    console.print(f"{email.lower()} suppressed" if added else f"{email.lower()} was already suppressed")


@suppressions.command("remove")
@click.argument("email")
@pass_ctx
def suppressions_remove(ctx, email):
    """Lift a suppression (the address gets mail again only if it is still subscribed).

    \b
    Example:
      syndicate suppressions remove someone@example.org
    """
    from pipeline.subscribers.suppression import unsuppress

    with ctx.app.engine.begin() as conn:
        removed = unsuppress(conn, ctx.settings, email, source="cli")
    if not removed:
        raise NotFound(
            f"{email.lower()} is not on the suppression list", hint="`syndicate suppressions list` shows it."
        )
    console.print(f"{email.lower()} removed from the suppression list")


# --- bounces ----------------------------------------------------------------------------


@click.group()
def bounces():
    """Bounces and auto-replies that came back to the VERP address.

    \b
    Example:
      syndicate bounces process /var/mail/bounces
    """


@bounces.command("process")
@click.argument("path", type=click.Path(exists=True))
@click.option("--dry-run", is_flag=True, help="Show the decisions; change nothing.")
@click.option("-q", "--quiet", is_flag=True, help="Only the summary.")
@pass_ctx
def bounces_process(ctx, path, dry_run, quiet):
    """Read a Maildir, an mbox or .eml files of bounces (DSNs and other formats) and auto-replies.

    DSNs (RFC 3464) and plain-text or vendor-format reports (Exim, Postfix, qmail,
    Yahoo, Hotmail/Exchange) are both read. Hard bounces suppress the address; soft
    bounces are counted and delivery.soft_bounce_limit of them within
    delivery.soft_bounce_days suppress it; auto-replies are ignored; mail that cannot
    be read is recorded as unclassified and left in the mailbox (`syndicate bounces
    list --kind unclassified`). Only bounces to a valid VERP address are acted on.
    Running it twice on the same mailbox changes nothing more.

    \b
    Examples:
      syndicate bounces process var/bounces
      syndicate bounces process bounces.mbox --dry-run
    """
    from pipeline.delivery.inbound.bounces import process_mailbox

    report = process_mailbox(ctx.settings, ctx.app.engine, path, dry_run=dry_run)
    if not quiet:
        table = Table()
        for col in ("address", "kind", "status", "decision", "detail"):
            table.add_column(col, overflow="fold")
        for d in report.decisions:
            table.add_row(escape(d.email or "-"), d.kind, d.status or "", d.decision, escape(d.detail[:160]))
        console.print(table)
    c = report.counts()
    console.print(("dry run: " if dry_run else "") + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in c.items()))


BOUNCE_KINDS = ("hard", "soft", "policy", "auto_reply", "unclassified", "delivered")


@bounces.command("list")
@click.option("--kind", type=click.Choice(BOUNCE_KINDS), help="Only this kind (unclassified: mail kept for you).")
@click.option("--limit", type=int, default=50, show_default=True, help="At most this many, newest first.")
@pass_ctx
def bounces_list(ctx, kind, limit):
    """Recorded bounce decisions, newest first, with counts by kind (BNC-3).

    An `unclassified` message could not be read as a bounce; it is still in the
    inbound mailbox under the name shown in its detail: read it there, and suppress
    the address by hand if it is one (`syndicate suppressions add`).

    \b
    Examples:
      syndicate bounces list
      syndicate bounces list --kind unclassified
    """
    from sqlalchemy import func, select

    from pipeline.store.schema import bounce_events

    with ctx.app.engine.connect() as conn:
        counts = dict(conn.execute(select(bounce_events.c.kind, func.count()).group_by(bounce_events.c.kind)).all())
        query = select(bounce_events).order_by(bounce_events.c.id.desc()).limit(limit)
        if kind:
            query = query.where(bounce_events.c.kind == kind)
        rows = conn.execute(query).all()
    for r in rows:
        console.print(
            f"{r.created_at:%Y-%m-%d %H:%M}  {r.kind}/{r.decision}  {escape(r.email or '-')}  {r.status or ''}".rstrip()
            + f"\n    {escape(r.detail)}",
            soft_wrap=True,
        )
    console.print(", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "no bounces recorded")
