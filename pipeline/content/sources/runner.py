"""Running the configured sources: `syndicate ingest`, `syndicate sources ...` and the
`ingest` stage all come here.

For each enabled source that is not paused or backing off: fetch from the saved
cursor, localise images, store the items through `ingest.store_source_items` (one
transaction), approve what `approval = "source"` lets through, and save the new cursor
and the counts in the same transaction, so the cursor never moves past what was
stored. Strict mode (`syndicate ingest --strict`, `[ingest] strict`; ING-1) means the
same for every source type: one bad item (a file that does not parse, a feed entry or
WordPress post that cannot be read or stored) or an error part-way through the fetch,
and that source writes nothing in this run (cursor included) and fails naming each
item. A source that fails is recorded (last error, failures in a row); after
`max_failures` in a row it is reported and left alone for `backoff_minutes`, so a
scheduler running every few minutes does not hammer a broken server. One source
failing never stops the others.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from pipeline.content import ingest as ingest_module
from pipeline.content.sources import configured, make_source
from pipeline.content.sources.base import SourceError
from pipeline.errors import ContentError, NotFound
from pipeline.store.schema import articles, revisions, source_state
from pipeline.timeutil import utcnow

log = logging.getLogger(__name__)

COUNT_KEYS = ("seen", "new", "changed", "unchanged", "retracted", "flagged", "approved", "failed")


@dataclasses.dataclass
class SourceRun:
    """What one source did in one run: the counts for the job history, the items that
    failed (named), notes (301 remembered, images left out) and the source's error."""

    name: str
    type: str
    status: str = "ok"  # ok | not-modified | failed | skipped | paused | backing-off | disabled
    counts: dict = dataclasses.field(default_factory=lambda: dict.fromkeys(COUNT_KEYS, 0))
    problems: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    error: str = ""
    hint: str = ""
    requests: int = 0
    retry_after: float | None = None  # the server asked us to wait this long (429/503)
    authors_created: list[str] = dataclasses.field(default_factory=list)
    flagged: list[str] = dataclasses.field(default_factory=list)
    report: object = None  # the IngestReport of the Markdown source


def get_state(conn: Connection, name: str):
    return conn.execute(select(source_state).where(source_state.c.name == name)).first()


def states(conn: Connection) -> dict:
    return {r.name: r for r in conn.execute(select(source_state))}


def _ensure_state(conn: Connection, config: dict):
    row = get_state(conn, config["name"])
    if row is None:
        conn.execute(
            source_state.insert().values(
                name=config["name"], type=config["type"], cursor={}, paused=False, failures=0, last_counts={}
            )
        )
        row = get_state(conn, config["name"])
    return row


def set_paused(engine, name: str, paused: bool, settings) -> None:
    from pipeline.content.sources import find

    config = find(settings, name)
    with engine.begin() as conn:
        _ensure_state(conn, config)
        values = {"paused": paused}
        if not paused:
            values.update(failures=0, next_attempt_at=None)
        conn.execute(update(source_state).where(source_state.c.name == name).values(**values))


def run_sources(
    app, names: list[str] | None = None, *, dry_run: bool = False, force: bool = False, strict: bool | None = None
) -> list[SourceRun]:
    """Every configured source (or the named ones, which also skips the back-off).
    `strict` (default `[ingest] strict`): see the module docstring."""
    settings = app.settings
    configs = configured(settings)
    if names:
        known = {c["name"] for c in configs}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise NotFound(
                f"no source named {', '.join(map(repr, unknown))}",
                hint=f"Configured: {', '.join(sorted(known))}; see [[sources]] in syndicate.toml.",
            )
        configs = [c for c in configs if c["name"] in names]
        force = True
    return [run_source(app, c, dry_run=dry_run, force=force, strict=strict) for c in configs]


def run_source(
    app, config: dict, *, dry_run: bool = False, force: bool = False, strict: bool | None = None
) -> SourceRun:
    run = SourceRun(config["name"], config["type"])
    strict = bool(app.settings.ingest.strict) if strict is None else strict
    now = utcnow()
    if not config.get("enabled", True):
        run.status = "disabled"
        return run
    with app.engine.begin() as conn:
        state = _ensure_state(conn, config)
    if state.paused:
        run.status = "paused"
        return run
    if not force and state.next_attempt_at is not None and state.next_attempt_at > now:
        run.status = "backing-off"
        run.error = f"{state.failures} failures in a row; next try after {state.next_attempt_at:%Y-%m-%d %H:%M} UTC"
        return run
    source = make_source(config, app.settings)
    try:
        if getattr(source, "stores_itself", False):
            _run_markdown(app, source, run, dry_run, strict)
        else:
            _run_fetching(app, source, dict(state.cursor or {}), run, dry_run, strict)
    except SourceError as exc:
        run.status, run.error, run.hint, run.retry_after = "failed", exc.message, exc.hint or "", exc.retry_after
    except ContentError as exc:  # strict mode (ING-1)
        run.status, run.error, run.hint = "failed", exc.message, exc.hint or ""
    except Exception as exc:  # a bug or a surprise in one source must not stop the others
        log.debug("source %s failed", config["name"], exc_info=True)
        run.status, run.error = "failed", f"source {config['name']}: {type(exc).__name__}: {exc}"
    if not dry_run:
        _record(app, config, run)
    return run


def _run_markdown(app, source, run: SourceRun, dry_run: bool, strict: bool = False) -> None:
    class _Folder:  # the App interface ingest() needs, with this source's folder
        settings = source.folder_settings()
        engine = app.engine

    try:
        report = ingest_module.ingest(_Folder, dry_run=dry_run, strict=strict)
    except ContentError as exc:
        bad = exc.errors or [exc]  # strict: every bad file, nothing written
        run.counts["failed"] = len(bad)
        run.problems.extend(e.message for e in bad)
        raise _strict_error(run.name, len(bad)) from None
    run.report = report
    c = report.counts()
    run.counts.update(
        seen=c["new"] + c["changed"] + c["unchanged"] + c["failed"],
        new=c["new"],
        changed=c["changed"],
        unchanged=c["unchanged"],
        retracted=c["retracted"],
        flagged=c["flagged"],
        failed=c["failed"],
    )
    run.problems.extend(e.message for e in report.errors)
    run.flagged = list(report.flagged)


def _strict_error(name: str, bad: int) -> ContentError:
    return ContentError(
        f"source {name}",
        f"{bad} bad item(s); strict mode wrote nothing for this source",
        hint="Fix the items named above (or run without --strict to ingest the good ones).",
    )


def _run_fetching(app, source, cursor: dict, run: SourceRun, dry_run: bool, strict: bool = False) -> None:
    from pipeline.content.sources import http, media

    settings = app.settings
    fetched = source.fetch(cursor)
    run.requests = fetched.requests
    run.notes.extend(fetched.notes)
    run.problems.extend(f"{p.key}: {p.message}" for p in fetched.problems)
    run.counts["failed"] += sum(1 for p in fetched.problems if not p.key.startswith("("))
    run.counts["seen"] = len(fetched.items) + run.counts["failed"]
    if fetched.not_modified and not fetched.items:
        run.status = "not-modified"
    now = utcnow()
    with app.engine.connect() as conn:
        trans = conn.begin()
        try:
            # One store per source at a time (a scheduler run and a CLI run on PostgreSQL):
            # the second waits here, then finds the first one's articles unchanged.
            conn.execute(select(source_state.c.name).where(source_state.c.name == source.name).with_for_update())
            sizes: dict[str, tuple] = {}
            left_out: list[tuple[str, str]] = []  # (item key, image problem)
            if not dry_run and fetched.items:
                session = http.make_session(source.config, settings.site.base_url)
                for item in fetched.items:
                    if item.status == "retracted":
                        continue
                    for problem in media.localise(conn, settings, source.config, session, item):
                        left_out.append((item.key, problem))
                    if item.image:
                        row = conn.execute(
                            select(
                                media.media.c.width,
                                media.media.c.height,
                                media.media.c.length,
                                media.media.c.content_type,
                            ).where(media.media.c.sha256 == item.image.rsplit("/", 1)[-1].split(".")[0])
                        ).first()
                        if row:
                            sizes[item.image] = tuple(row)
            report = ingest_module.store_source_items(
                conn, settings, source.name, fetched.items, present_keys=fetched.present_keys, now=now
            )
            run.counts.update(
                new=len(report.new),
                changed=len(report.changed),
                unchanged=report.unchanged,
                retracted=len(report.retracted),
                flagged=len(report.flagged),
            )
            run.counts["failed"] += len(report.errors)
            run.problems.extend(_name_articles(conn, source.name, left_out))
            run.problems.extend(e.message for e in report.errors)
            run.authors_created = list(report.authors_created)
            run.flagged = list(report.flagged)
            _image_sizes(conn, report.new + report.changed, sizes)
            if source.config.get("approval") == "source":
                run.counts["approved"] = _approve_published(conn, source.name, fetched.items, report)
            if not dry_run:
                conn.execute(
                    update(source_state).where(source_state.c.name == source.name).values(cursor=fetched.cursor)
                )
            refused = strict and (run.counts["failed"] > 0 or fetched.error is not None)
            if dry_run or refused:
                trans.rollback()
            else:
                trans.commit()
        except BaseException:
            trans.rollback()
            raise
    if fetched.error is not None:
        raise fetched.error
    if refused:  # nothing was written: say so in the counts too
        run.counts.update(new=0, changed=0, retracted=0, flagged=0, approved=0)
        run.authors_created, run.flagged = [], []
        raise _strict_error(source.name, run.counts["failed"])


def _name_articles(conn: Connection, name: str, left_out: list[tuple[str, str]]) -> list[str]:
    """Images left out, each reported with its item and the article it belongs to."""
    if not left_out:
        return []
    paths = {ingest_module.source_path(name, key): key for key, _ in left_out}
    slugs = {
        paths[path]: slug
        for slug, path in conn.execute(
            select(articles.c.slug, articles.c.source_path).where(articles.c.source_path.in_(sorted(paths)))
        )
    }
    return [
        f"{key}" + (f" (article {slugs[key]})" if key in slugs else "") + f": {problem}" for key, problem in left_out
    ]


def _image_sizes(conn: Connection, slugs: list[str], sizes: dict) -> None:
    if not slugs or not sizes:
        return
    rows = conn.execute(
        select(revisions.c.id, revisions.c.image)
        .join(articles, articles.c.current_revision_id == revisions.c.id)
        .where(articles.c.slug.in_(slugs))
    ).all()
    for rev_id, image in rows:
        if image in sizes:  # known from the stored bytes: complete enclosures (RSS-9), sized <img>s
            width, height, length, content_type = sizes[image]
            conn.execute(
                update(revisions)
                .where(revisions.c.id == rev_id)
                .values(image_width=width, image_height=height, image_length=length, image_type=content_type)
            )


def _approve_published(conn: Connection, name: str, items: list, report) -> int:
    """approval = "source": a revision published upstream is approved by `source:<name>`,
    pinned to its content hash. Pending posts and any policy-flagged revision wait for an
    editor, whatever the source says."""
    from pipeline.content.editorial import approve

    published = {ingest_module.source_path(name, i.key) for i in items if i.status == "publish"}
    candidates = set(report.new + report.changed) - set(report.flagged)
    if not candidates:
        return 0
    rows = conn.execute(select(articles.c.slug, articles.c.source_path).where(articles.c.slug.in_(candidates))).all()
    slugs = sorted(slug for slug, path in rows if path in published)
    decisions = approve(conn, slugs, editor=f"source:{name}", note="published upstream (approval = source)")
    return sum(1 for d in decisions if d.outcome == "approved")


def _record(app, config: dict, run: SourceRun) -> None:
    """Save how the run went: success resets the failure count; a failure counts, and
    max_failures in a row backs the source off for backoff_minutes."""
    now = utcnow()
    with app.engine.begin() as conn:
        state = _ensure_state(conn, config)
        values: dict = {"last_run_at": now, "last_counts": run.counts}
        if run.status in ("ok", "not-modified"):
            values.update(failures=0, next_attempt_at=None, last_success_at=now)
        elif run.status == "failed":
            failures = (state.failures or 0) + 1
            values.update(failures=failures, last_error=run.error, last_error_at=now)
            limit = int(config.get("max_failures") or 5)
            if run.retry_after:  # the server said when: not before then, even below max_failures
                values["next_attempt_at"] = now + dt.timedelta(seconds=run.retry_after)
            if failures >= limit:
                values["next_attempt_at"] = max(
                    values.get("next_attempt_at") or now,
                    now + dt.timedelta(minutes=int(config.get("backoff_minutes") or 60)),
                )
                log.error(
                    "source %s failed %d times in a row; backing off for %s minutes: %s",
                    config["name"],
                    failures,
                    config.get("backoff_minutes") or 60,
                    run.error,
                )
        conn.execute(update(source_state).where(source_state.c.name == config["name"]).values(**values))


def totals(runs: list[SourceRun]) -> dict:
    """Counts for the job history: totals, then `<source>.<count>` per source."""
    out = dict.fromkeys(COUNT_KEYS, 0)
    out["sources_failed"] = 0
    for run in runs:
        for key in COUNT_KEYS:
            out[key] += run.counts.get(key, 0)
        out["sources_failed"] += run.status == "failed"
        for key, value in run.counts.items():
            if value and len(runs) > 1:  # one source: the totals are its counts
                out[f"{run.name}.{key}"] = value
    return out


def ingest_stage(app, *, dry_run: bool = False, **_options) -> dict:
    """The `ingest` stage: every configured source (the Markdown folder by default)."""
    runs = run_sources(app, dry_run=dry_run)
    for run in runs:
        if run.error:
            log.error("%s%s", run.error, f" (hint: {run.hint})" if run.hint else "")
        for problem in run.problems:
            log.warning("source %s: %s", run.name, problem)
    return totals(runs)
