"""jobs list|run|history|pause|resume, scheduler, status."""

from __future__ import annotations

import datetime as dt
import json

import click
from rich.markup import escape
from rich.table import Table

from pipeline.cli import console, pass_ctx
from pipeline.errors import SyndicateError
from pipeline.timeutil import utcnow


def register(main: click.Group) -> None:
    main.add_command(jobs)
    main.add_command(scheduler)
    main.add_command(status)


def _when(value: dt.datetime | None, now: dt.datetime | None = None) -> str:
    """'11-25 19:41:53Z (3m ago)': short enough for an 80-column terminal."""
    if value is None:
        return "-"
    now = now or utcnow()
    seconds = (value - now).total_seconds()
    span = abs(seconds)
    if span < 90:
        rel = f"{span:.0f}s"
    elif span < 5400:
        rel = f"{span / 60:.0f}m"
    elif span < 172800:
        rel = f"{span / 3600:.1f}h"
    else:
        rel = f"{span / 86400:.0f}d"
    rel = f"in {rel}" if seconds > 0 else f"{rel} ago"
    fmt = "%m-%d %H:%M:%SZ" if value.year == now.year else "%Y-%m-%d %H:%MZ"
    return f"{value.strftime(fmt)} ({rel})"


def _counts(counts: dict | None, nonzero: bool = False) -> str:
    items = [(k, v) for k, v in (counts or {}).items() if not (nonzero and v in (0, "0", None, ""))]
    return ", ".join(f"{k} {v}" for k, v in items) or ("nothing to do" if nonzero and counts else "")


def _result(row: dict | None) -> str:
    if not row:
        return "never run"
    colour = {"ok": "green", "failed": "red", "missed": "yellow", "skipped": "yellow", "running": "cyan"}.get(
        row["status"], ""
    )
    when = row.get("ended_at") or row.get("started_at")
    text = f"[{colour}]{row['status']}[/]" if colour else row["status"]
    text += f" {_when(when)}" if when else ""
    detail = row.get("error") if row["status"] != "ok" else _counts(row.get("counts"), nonzero=True)
    return text + (f": {detail}" if detail else "")


def _jsonable(obj):
    if isinstance(obj, dt.datetime):
        return obj.isoformat()
    return str(obj)


@click.group()
def jobs():
    """Scheduled jobs: what runs when, what happened, run one now.

    Jobs are defined in schedules/*.toml (see README, "Operating").

    \b
    Examples:
      syndicate jobs list
      syndicate jobs run deliver --dry-run
      syndicate jobs history digest-daily
      syndicate jobs pause partners --note "partner API down"
    """


@jobs.command("list")
@click.option("--stages", "show_stages", is_flag=True, help="List the stage names a schedule can use instead.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def jobs_list(ctx, show_stages: bool, as_json: bool):
    """Every job: stage, schedule, next run and last result.

    \b
    Example:
      syndicate jobs list
    """
    from pipeline.ops.stages import STAGES
    from pipeline.ops.status import jobs_panel

    if show_stages:
        table = Table(title="stages")
        table.add_column("stage")
        table.add_column("what it does")
        for stage in STAGES:
            table.add_row(stage.name, stage.help)
        console.print(table)
        return
    rows = jobs_panel(ctx.app)
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=_jsonable))
        return
    now = utcnow()
    table = Table(title="jobs (schedules: " + str(ctx.settings.path("paths.schedules")) + ")")
    table.add_column("job", no_wrap=True)
    for name in ("stage", "schedule", "next run", "last result"):
        table.add_column(name, overflow="fold")
    from pipeline.ops.schedules import schedules_for

    args = {s.id: s.args for s in schedules_for(ctx.settings)}
    for row in rows:
        stage = row["stage"] + (f" {json.dumps(args[row['id']])}" if args.get(row["id"]) else "")
        next_run = _when(row["next_run"], now) if row["next_run"] else ""
        if row["note"]:
            next_run = (next_run + " " if next_run else "") + f"[yellow]{row['note']}[/]"
        table.add_row(row["id"], stage, row["schedule"], next_run or "-", _result(row["last"]))
    console.print(table)


@jobs.command("run")
@click.argument("job_id")
@click.option("--dry-run", is_flag=True, help="Run the stage in dry-run mode: report, send and write nothing.")
@pass_ctx
def jobs_run(ctx, job_id: str, dry_run: bool):
    """Run a job now, recorded in the history like a scheduled run.

    A paused job can still be run by hand. Every stage is idempotent, so running a
    job the scheduler also runs sends nothing twice.

    \b
    Examples:
      syndicate jobs run ingest
      syndicate jobs run digest-daily --dry-run
    """
    from pipeline.ops.scheduler import execute
    from pipeline.ops.schedules import find_job, schedules_for

    spec = find_job(schedules_for(ctx.settings), job_id)
    try:
        counts = execute(ctx.app, spec.id, spec.stage, spec.args, trigger="manual", dry_run=dry_run)
    except SyndicateError as exc:
        raise SyndicateError(
            f"job {spec.id} failed: {exc.message}",
            hint=exc.hint or f"See `syndicate jobs history {spec.id}`; fix and run it again.",
        ) from exc
    except Exception as exc:
        raise SyndicateError(
            f"job {spec.id} failed: {type(exc).__name__}: {exc}",
            hint=f"Run with -v for the traceback; `syndicate jobs history {spec.id}` has the record.",
        ) from exc
    console.print(f"job {spec.id} ok{' (dry run)' if dry_run else ''}: {_counts(counts) or 'nothing to do'}")


@jobs.command("history")
@click.argument("job_id", required=False)
@click.option("--limit", default=20, show_default=True, help="How many runs to show.")
@click.option("--failed", "only_failed", is_flag=True, help="Only failed runs.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def jobs_history(ctx, job_id: str | None, limit: int, only_failed: bool, as_json: bool):
    """Recent runs, newest first: when, how (scheduled/manual), outcome, counts, error.

    \b
    Examples:
      syndicate jobs history
      syndicate jobs history deliver --limit 50
      syndicate jobs history --failed
    """
    from pipeline.ops import jobstate

    rows = jobstate.history(ctx.app.engine, job_id, limit=limit, status="failed" if only_failed else None)
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=_jsonable))
        return
    now = utcnow()
    table = Table(title="job history" + (f": {job_id}" if job_id else ""))
    for name in ("id", "job", "trigger"):
        table.add_column(name, no_wrap=True)
    # Narrow: "started" wraps to three short lines (the last column was 2 wide at 80 columns).
    table.add_column("started", max_width=None if console.width >= 100 else 11)
    for name in ("secs", "status"):
        table.add_column(name, no_wrap=True)
    table.add_column("counts / error", overflow="fold", min_width=16)
    for r in rows:
        seconds = jobstate.duration(r)
        status = r["status"] + (" (dry run)" if r.get("dry_run") else "")
        started = _when(r["started_at"] or r["scheduled_for"], now)
        table.add_row(
            str(r["id"]),
            r["job_id"],
            r["trigger"],
            started,
            f"{seconds:.2f}" if seconds is not None else "-",
            status,
            (r["error"] or "") if r["status"] != "ok" else _counts(r["counts"]),
        )
    console.print(table)
    if not rows:
        console.print("no runs recorded yet")


def _set_paused(ctx, job_id: str, paused: bool, note: str) -> None:
    from pipeline.ops import jobstate
    from pipeline.ops.schedules import find_job, schedules_for

    spec = find_job(schedules_for(ctx.settings), job_id)
    changed = jobstate.set_paused(ctx.app.engine, spec.id, paused, note=note)
    word = "paused" if paused else "resumed"
    if changed:
        console.print(
            f"job {spec.id} {word}; a running scheduler applies this within "
            f"{ctx.settings.scheduler.heartbeat_seconds:g}s"
        )
    else:
        console.print(f"job {spec.id} was already {word}")


@jobs.command("pause")
@click.argument("job_id")
@click.option("--note", default="", help="Why (shown in `jobs list` and `status`).")
@pass_ctx
def jobs_pause(ctx, job_id: str, note: str):
    """Stop scheduling a job until resumed (persisted; survives restarts).

    \b
    Example:
      syndicate jobs pause partners --note "partner API down until Monday"
    """
    _set_paused(ctx, job_id, True, note)


@jobs.command("resume")
@click.argument("job_id")
@pass_ctx
def jobs_resume(ctx, job_id: str):
    """Schedule a paused job again from its next slot (slots missed while paused are not run).

    \b
    Example:
      syndicate jobs resume partners
    """
    _set_paused(ctx, job_id, False, "")


@click.command()
@pass_ctx
def scheduler(ctx):
    """Run the jobs in schedules/*.toml until stopped (foreground; for systemd or a container).

    One scheduler is active per database; start a second one anywhere as a hot
    standby. SIGTERM lets running jobs finish, then exits 0. SIGHUP re-reads the
    schedule files.

    \b
    Example:
      syndicate scheduler
    """
    from pipeline.ops.scheduler import serve

    code = serve(ctx.app)
    if code:
        raise SyndicateError(
            f"the scheduler stopped with status {code}",
            hint="It lost its leader lock or the database; systemd restarts it (Restart=always).",
        )


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def status(ctx, as_json: bool):
    """One screen: review queue, outbox, failing partners, suppressions, workers, schedulers, next jobs, last failure.

    \b
    Example:
      syndicate status
    """
    from pipeline.ops.status import snapshot

    panels = snapshot(ctx.app)
    if as_json:
        click.echo(json.dumps(panels, indent=2, default=_jsonable))
        return
    _print_status(ctx, panels)


def _unavailable(panel) -> str | None:
    return panel.get("unavailable") if isinstance(panel, dict) else None


def _print_status(ctx, panels: dict) -> None:
    now = utcnow()
    c = console

    def heading(title: str, panel) -> bool:
        reason = _unavailable(panel)
        c.print(f"\n[bold]{title}[/]" + (f"  [dim]({escape(reason)})[/]" if reason else ""))
        if reason and panel.get("hint"):
            c.print(f"  [yellow]hint:[/] {escape(panel['hint'])}", soft_wrap=True)
        return reason is None

    review = panels["review"]
    if heading("Review queue", review):
        c.print(f"{review['waiting']} revision(s) waiting for an editor" + (":" if review["oldest"] else ""))
        for r in review["oldest"]:
            flags = f" [red]flagged: {', '.join(r['flags'])}[/]" if r["flags"] else ""
            c.print(f"  {r['slug']} r{r['revision']}  {r['title']}{flags}")

    srcs = panels.get("sources", [])
    if heading("Sources", srcs):
        for s in srcs:
            state = "disabled" if not s["enabled"] else "paused" if s["paused"] else "active"
            if s["failures"]:
                state = f"[red]{s['failures']} failure(s) in a row[/]" + (
                    f", backing off until {s['backing_off_until']:%Y-%m-%d %H:%M}" if s["backing_off_until"] else ""
                )
            c.print(
                f"  {s['name']} ({s['type']}) {state}; last success {_when(s['last_success_at'], now)}"
                + (f"\n    last error {_when(s['last_error_at'], now)}: {s['last_error']}" if s["last_error"] else "")
            )

    outbox = panels["outbox"]
    if heading("Outbox", outbox):
        by = outbox["by_channel"]
        states = sorted({s for per in by.values() for s in per})
        if by:
            table = Table(show_edge=False)
            table.add_column("channel")
            for s in states:
                table.add_column(s, justify="right")
            for channel in sorted(by):
                table.add_row(channel, *[str(by[channel].get(s, "")) for s in states])
            c.print(table)
        else:
            c.print("empty")
        c.print(f"{outbox['due_now']} due now")
        for ch in panels.get("delivery_channels") if isinstance(panels.get("delivery_channels"), list) else []:
            colour = "red" if ch["paused"] or ch["outage"] else "yellow" if ch["throttled_domains"] else "green"
            c.print(f"[{colour}]{escape(ch['line'])}[/]", soft_wrap=True)

    partners = panels["partners"]
    if heading("Failing partners", partners):
        if not partners:
            c.print("none")
        for p in partners:
            states = ", ".join(f"{k} {v}" for k, v in sorted(p["states"].items()))
            c.print(
                f"  [red]{p['partner']}[/] ({p['channel']}): {states}; last {_when(p['last_at'], now)}"
                + (f"\n    {p['last_error']}" if p.get("last_error") else "")
            )
        if partners:
            c.print("  retry: syndicate deliveries retry (or syndicate partners retry NAME)")

    sup = panels["suppressions"]
    if heading("Suppressions added today", sup):
        reasons = ", ".join(f"{k or 'unspecified'} {v}" for k, v in sorted(sup["by_reason"].items()))
        c.print(f"{sup['today']}" + (f" ({reasons})" if reasons else ""))

    bnc = panels.get("bounces", {})
    if heading("Bounces", bnc):
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(bnc["by_kind"].items()))
        recent = sum(bnc["recent"].values())
        c.print((kinds or "none") + (f" ({recent} in the last {bnc['days']} days)" if kinds else ""))
        if bnc["by_kind"].get("unclassified"):
            c.print("  [yellow]unclassified mail kept for you:[/] syndicate bounces list --kind unclassified")

    workers = panels["workers"]
    if heading("Workers", workers):
        if not workers:
            c.print("none active")
        for w in workers:
            colour = {"running": "green", "stale": "red", "unregistered": "yellow"}.get(w["state"], "")
            state = f"[{colour}]{w['state']}[/]" if colour else w["state"]
            totals = f"  sent {w['sent']} failed {w['failed']}" if w.get("sent") is not None else ""
            c.print(
                f"  {w['worker']} {state}  host {w['host']} pid {w['pid']}  heartbeat "
                f"{_when(w['heartbeat_at'], now)}  claimed {w['claimed']}{totals}"
            )

    scheds = panels["schedulers"]
    if heading("Schedulers", scheds):
        if not scheds:
            c.print("[yellow]no scheduler running[/] (start one: syndicate scheduler)")
        stale = ctx.settings.scheduler.stale_after_seconds
        for s in scheds:
            mark = "[red]stale[/]" if s["age"] > stale else "[green]alive[/]"
            c.print(f"  {s['role']:8} {s['host']} pid {s['pid']}  heartbeat {s['age']:.0f}s ago {mark}")

    jobs_rows = panels["jobs"]
    if heading("Next jobs", jobs_rows):
        table = Table(show_edge=False)
        for name in ("job", "next run", "last result"):
            table.add_column(name, overflow="fold")
        for j in jobs_rows[:10]:
            nxt = _when(j["next_run"], now) if j["next_run"] else "-"
            if j["note"]:
                nxt += f" [yellow]{j['note']}[/]"
            table.add_row(j["id"], nxt, _result(j["last"]))
        c.print(table)

    failure = panels["last_failure"]
    if heading("Last failure", failure):
        if not failure:
            c.print("none")
        else:
            c.print(
                f"  [red]{failure['job_id']}[/] {_when(failure.get('ended_at') or failure.get('started_at'), now)}: "
                f"{failure['error']}\n  details: syndicate jobs history {failure['job_id']} --failed; "
                f"retry: syndicate jobs run {failure['job_id']}"
            )
