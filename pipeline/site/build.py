"""The `build` stage: approved articles -> feeds, pages and images in public/.

Incremental and deterministic:

- Every output file has a *dependency hash* computed from light metadata (revision
  ids, content hashes, author names, the templates and settings that shape it),
  without loading article bodies (pipeline.site.plan). Only outputs whose hash
  changed, or whose file is missing, are rendered; so a rebuild with nothing changed
  renders nothing, and adding one article renders only the feeds, archives and pages
  it belongs in. After a complete build, the next one plans only the outputs the
  changed articles can touch (pipeline.site.incremental), else every output.
- A file is written only when its bytes differ, through a temporary file and a
  rename, so readers never see half a file. The temporary files of a build are
  flushed to disk with one file-system sync, then renamed (FILE-2): one sync per
  build, not one fsync per file, which was most of a full build's time. Every date in
  the output comes from the content (never "now"), so the same approved content gives
  the same bytes.
- Feed positions are stored (`feed_entries`): an article keeps its place in each feed,
  archive k holds positions ((k-1)*archive_size, k*archive_size], and every archive
  but the newest is sealed: never rewritten, served with a long max-age (PAGE-3).
- What was published is recorded in `build_outputs` (hash of the bytes); a WebSub
  ping is queued, in the same transaction, for every subscription feed whose bytes
  changed, after the file is in place (WS-2, WS-3).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import delete, insert, select
from sqlalchemy.engine import Connection

from pipeline import files, gcpause
from pipeline.files import StagedWrites, write_atomic, write_temporary
from pipeline.site import feeds, pages
from pipeline.site.incremental import plan_changes
from pipeline.site.plan import (
    MANIFEST,
    PLAN_PATH,
    STATE_PATH,
    STATE_ROWS,
    Job,
    Plan,
    RenderContext,
    _stored,
    _up_to_date,
    plan_full,
    plan_key,
    state_digest,
)
from pipeline.store.bulk import IN_CHUNK, insert_batches
from pipeline.store.schema import articles, build_outputs
from pipeline.timeutil import utcnow

log = logging.getLogger(__name__)

_build_lock = threading.Lock()
PARALLEL_MIN_JOBS = 400  # below this, forking costs more than it saves


@dataclasses.dataclass
class BuildReport:
    written: list[str] = dataclasses.field(default_factory=list)
    unchanged: int = 0
    rendered: int = 0
    removed: list[str] = dataclasses.field(default_factory=list)
    changed_topics: list[str] = dataclasses.field(default_factory=list)
    pings: int = 0
    errors: list[str] = dataclasses.field(default_factory=list)
    articles: int = 0
    plan: str = ""  # "full" | "incremental"; "" when nothing changed
    dry_run: bool = False
    seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        return {
            "articles": self.articles,
            "written": len(self.written),
            "unchanged": self.unchanged,
            "removed": len(self.removed),
            "feeds changed": len(self.changed_topics),
            "pings queued": self.pings,
            "failed": len(self.errors),
        }


def _write_atomic(path: Path, data: bytes) -> None:
    """A reader sees the old bytes or the new ones, never half a file (pipeline.files)."""
    write_atomic(path, data)


def _same_bytes(path: Path, data: bytes) -> bool:
    try:
        if path.stat().st_size != len(data):
            return False
        return path.read_bytes() == data
    except FileNotFoundError:
        return False


def _load_articles(conn: Connection, settings, ids: set[int], total: int) -> dict[int, object]:
    from pipeline.content.editorial import approved_articles

    if not ids:
        return {}
    slugs_by_id = (
        {r.id: r.slug for r in conn.execute(select(articles.c.id, articles.c.slug).where(articles.c.id.in_(list(ids))))}
        if len(ids) <= IN_CHUNK
        else None
    )
    if slugs_by_id is None or len(ids) * 2 > total:
        found = approved_articles(conn, settings)
    else:
        found = approved_articles(conn, settings, slugs=list(slugs_by_id.values()))
    return {a.article_id: a for a in found}


def _reuse_entries(public: Path, todo: list[Job], stored: dict, plan: Plan, cache) -> set[int]:
    """Put into `cache` the feed entries of the unchanged articles the feed documents
    in `todo` need, taken from the documents the last complete build wrote (see
    `plan.Plan.changed`): the bytes an entry is spliced as are the same in every
    document, so any stored document that holds it will do. -> the ids taken, whose
    text need not be read. An entry missing from any of the three formats, or that
    `EntryCache.reuse` refuses, is made again from the article.

    A document is read only when none of its three files changed after that build
    finished (`Plan.finished_at`, against each file's change time, which no tool sets
    back): not one edited by hand, even to the same size, nor one a build killed
    before its commit had already renamed into place.

    After one new article at 1,000 articles this replaces reading ~350 articles and
    making their entries (~0.15 s) with reading and splitting 33 files (0.015-0.03 s)."""
    if plan.changed is None or plan.finished_at is None:  # a full plan: nothing known unchanged
        return set()
    changed, settled = plan.changed, plan.finished_at.timestamp()
    wanted: dict[str, object] = {}
    for job in todo:
        if job.kind in ("feed", "archive"):
            for i in job.needs:
                if i not in changed:
                    m = plan.planner.by_id[i]
                    wanted[m.url] = m
    taken: set[int] = set()
    root = os.fspath(public)
    for job in todo:
        if not wanted:
            break
        if job.kind not in ("feed", "archive") or any(stored.get(p) is None for p in job.paths):
            continue
        found = _split_settled(root, job.paths, settled)
        if found is None:
            continue
        for url in [u for u in found["atom"] if u in wanted]:
            if url in found["rss"] and url in found["json"]:
                m = wanted.pop(url)
                if cache.reuse(m, found["atom"][url], found["rss"][url], found["json"][url]):
                    taken.add(m.article_id)
    return taken


def _split_settled(root: str, paths: list[str], settled: float) -> dict[str, dict[str, bytes]] | None:
    """format -> the entries of a feed document's files (`feeds.split`), or None when a
    file is missing or changed after `settled` (seconds since the epoch)."""
    found = {}
    for fmt, path in zip(feeds.FORMATS, paths, strict=True):
        try:
            with open(os.path.join(root, path), "rb") as fh:
                if os.fstat(fh.fileno()).st_ctime > settled:
                    return None
                found[fmt] = feeds.split(fmt, fh.read())
        except OSError:
            return None
    return found


@contextlib.contextmanager
def build_lock(settings):
    """One build at a time: in this process (threads, finding 0.3 / SCHED-3) and on
    this machine (a file lock in var/)."""
    with _build_lock:
        var = settings.path("paths.var")
        var.mkdir(parents=True, exist_ok=True)
        with open(var / "build.lock", "a+") as fh:
            try:
                import fcntl

                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            except ImportError:  # pragma: no cover - not POSIX
                pass
            yield


# --- the build ----------------------------------------------------------------------------


def build(
    app, *, dry_run: bool = False, force: bool = False, progress: Callable[[str], None] | None = None
) -> BuildReport:
    """Bring public/ up to date with the approved articles. See the module docstring.

    `force` renders every output again (files whose bytes are unchanged are still not
    rewritten). `dry_run` renders what changed and reports it; it writes no file, no
    database row and queues no ping.
    """
    from pipeline.site import websub

    settings = app.settings
    public = settings.path("paths.public")
    report = BuildReport(dry_run=dry_run)
    started = time.monotonic()
    with build_lock(settings), app.engine.connect() as conn, contextlib.ExitStack() as stack:
        trans = conn.begin()
        try:
            now = utcnow()
            hubs = feeds.hub_urls(settings)
            fingerprint = pages.template_fingerprint(settings)  # read once: the digest and the plan both hash it
            digest, report.articles = state_digest(conn, settings, hubs, fingerprint)
            if not force:
                outputs = _up_to_date(conn, public, digest)
                if outputs is not None:  # nothing changed since the last complete build
                    report.unchanged = outputs
                    trans.rollback()
                    report.seconds = time.monotonic() - started
                    return report
            with gcpause.paused():  # the plan: ~100,000 objects that live until the build ends
                stored = _stored(conn)
                plan = None if force else plan_changes(conn, settings, hubs, now, stored, public, fingerprint)
                if plan is None:
                    plan = plan_full(conn, settings, hubs, now, fingerprint)
                jobs, planner = plan.jobs, plan.planner
                report.articles, report.plan = plan.articles, plan.how
                report.errors.extend(plan.errors)
                for error in report.errors:  # a bad item is recorded and skipped
                    log.error("build: %s", error)

                public_root = os.fspath(public)
                todo = []
                for job in jobs:
                    if force or any(_stale(public_root, stored.get(p), job.deps) for p in job.paths):
                        todo.append(job)
                    else:
                        report.unchanged += len(job.paths)
                needed = {i for job in todo for i in job.needs}
                entries = feeds.EntryCache(settings)
                needed -= _reuse_entries(public, todo, stored, plan, entries)
                log.debug(
                    "build: %s plan, %d of %d outputs to render, in %.2fs",
                    plan.how,
                    len(todo),
                    len(jobs),
                    time.monotonic() - started,
                )
                ctx = RenderContext(_load_articles(conn, settings, needed, plan.articles), entries)
            stack.enter_context(gcpause.frozen())  # ... and are never garbage: no collection walks them
            loaded = time.monotonic()
            log.debug("build: %d articles read in %.2fs", len(ctx.articles), loaded - started)
            if progress:
                progress(f"{len(todo)} of {len(jobs)} outputs to render")

            changed_rows, pings = [], []
            stack.enter_context(pages.pinned(settings, planner.fingerprint))
            staged = stack.enter_context(StagedWrites(public))
            public_dir = os.fspath(public)
            for job, results, error in _render_all(todo, ctx, public, dry_run, settings):
                if error:  # a bad item is recorded and skipped
                    log.error("build: could not render %s", error)
                    report.errors.append(error)
                    continue
                report.rendered += 1
                for path, sha, size, tmp in results:
                    old = stored.get(path)
                    written = tmp is not None
                    if written:
                        report.written.append(path)
                        if tmp:  # "" in a dry run: nothing was staged
                            staged.adopt(tmp, os.path.join(public_dir, path))
                    else:
                        report.unchanged += 1
                    if path in job.topics and (old is None or old.sha256 != sha):
                        report.changed_topics.append(job.topics[path])
                        pings.extend((hub, job.topics[path], sha) for hub in hubs)
                    changed_rows.append(
                        {
                            "path": path,
                            "kind": job.kind,
                            "deps": job.deps,
                            "sha256": sha,
                            "size": size,
                            "immutable": job.immutable,
                            "updated_at": now,
                        }
                    )

            rendered = time.monotonic()
            log.debug("build: rendered in %.2fs", rendered - loaded)
            staged.publish()  # FILE-2: one sync, then every rename, before the commit (WS-3)
            published = time.monotonic()
            log.debug("build: %d files synced and renamed in %.2fs", len(report.written), published - rendered)
            for path in sorted(set(stored) - plan.keep - set(STATE_ROWS)):
                if not dry_run:
                    _remove(public, path)
                report.removed.append(path)

            if not dry_run:
                paths = [r["path"] for r in changed_rows] + report.removed
                for i in range(0, len(paths), IN_CHUNK):
                    conn.execute(delete(build_outputs).where(build_outputs.c.path.in_(paths[i : i + IN_CHUNK])))
                insert_batches(conn, build_outputs, changed_rows)
                # WS-3: the files are in place before the pings can be claimed (same commit).
                report.pings = websub.queue_pings(conn, pings)
                conn.execute(delete(build_outputs).where(build_outputs.c.path.in_(STATE_ROWS)))
                if not report.errors:  # a failed output is tried again next time, by a full plan
                    # updated_at: when every file of this build was in place (the next
                    # build trusts no feed document changed after it, _reuse_entries)
                    state = {"kind": "state", "sha256": "", "size": 0, "immutable": False, "updated_at": utcnow()}
                    conn.execute(
                        insert(build_outputs),
                        [
                            {"path": STATE_PATH, "deps": digest, **state},
                            {
                                "path": PLAN_PATH,
                                "deps": plan_key(planner.feed_salt, planner.page_salt, planner.labels),
                                **state,
                            },
                        ],
                    )
                _write_manifest(public, conn)
                recorded = time.monotonic()
                trans.commit()
                log.debug(
                    "build: %d outputs recorded in %.2fs, committed in %.2fs",
                    len(changed_rows),
                    recorded - published,
                    time.monotonic() - recorded,
                )
            else:
                trans.rollback()
        except BaseException:
            if trans.is_active:
                trans.rollback()
            raise
    report.seconds = time.monotonic() - started
    return report


def _render_one(job: Job, ctx: RenderContext, public: Path, dry_run: bool):
    """Render one job and stage its files whose bytes changed (FILE-2: the caller
    publishes them all with one sync). -> ([(path, sha256, size, staged)], error
    message or ""); staged is the temporary file's path, "" in a dry run, None when
    the bytes on disk are already these.

    sha256 is that of the bytes for a subscription document (a WebSub topic: a changed
    hash is what queues a ping), "" for every other file: nothing compares those, and
    hashing them was 1.3 GB, about 0.9 s of CPU, in a full build at 10,000 articles."""
    try:
        rendered = job.render(ctx)
    except Exception as exc:
        log.debug("render failure", exc_info=True)
        return [], f"{job.paths[0]}: {type(exc).__name__}: {exc}"
    results = []
    for path, data in rendered.items():
        target = public / path
        tmp = None
        if not _same_bytes(target, data):
            tmp = "" if dry_run else write_temporary(target, data)
        sha = hashlib.sha256(data).hexdigest() if path in job.topics else ""
        results.append((path, sha, len(data), tmp))
    return results, ""


_parallel: tuple | None = None  # what forked workers inherit: (todo, ctx, public, dry_run)


def _render_chunk(indices: list[int]):
    todo, ctx, public, dry_run = _parallel
    return [(i, *_render_one(todo[i], ctx, public, dry_run)) for i in indices]


def _entries_chunk(ids: list[int]):
    """In a worker: the feed entries of these articles, as bytes for the parent's cache."""
    _todo, ctx, _public, _dry_run = _parallel
    out = []
    for i in ids:
        try:
            out.append(ctx.entries.export(ctx.articles[i]))
        except Exception:  # the feed documents that need it fail, named, in the second round
            log.debug("feed entry of article %s", i, exc_info=True)
    return out


def _processes(settings, jobs: int) -> int:
    """Worker processes for this build: feeds.build_processes, 0 = one per CPU; only
    for big builds, and only with fork from a single-threaded process (a scheduler's
    threads may hold locks a forked child would inherit): else 1."""
    wanted = settings.feeds.build_processes or (os.cpu_count() or 1)
    if wanted <= 1 or jobs < PARALLEL_MIN_JOBS or threading.active_count() > 1:
        return 1
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods():
        return 1
    return min(wanted, jobs // (PARALLEL_MIN_JOBS // 2) or 1)


def _make_folders(public: Path, todo: list[Job]) -> None:
    """Create every folder the jobs write into. The parent process does this while
    its workers render: on a busy file system a mkdir can take most of a millisecond,
    and a full build has one folder per article page (articles/<slug>/)."""
    root = os.fspath(public)
    folders = sorted({os.path.dirname(path) for job in todo for path in job.paths})
    for folder in folders:
        os.makedirs(os.path.join(root, folder), exist_ok=True)


def _interleave(items: list, parts: int) -> list[list]:
    """`items` dealt round-robin into `parts` chunks, so big and small spread evenly."""
    return [c for c in (items[k::parts] for k in range(parts)) if c]


def _render_all(todo: list[Job], ctx: RenderContext, public: Path, dry_run: bool, settings):
    """Yield (job, results, error) for every job, in order; rendered in forked worker
    processes when the build is big (the database stays in this process).

    In two rounds: first every job but the feed documents, while the same workers
    make the feed entries of every article a feed document needs (each article's
    entries made once, in one worker, and handed back as bytes); then the feed
    documents, forked with those entries in the cache, so they only splice. One
    round would make most articles' entries once in each worker."""
    global _parallel
    n = _processes(settings, len(todo))
    if n <= 1:
        for job in todo:
            yield (job, *_render_one(job, ctx, public, dry_run))
        return
    import multiprocessing

    pages.compile_templates(settings)  # once here, not once in every forked worker
    fork = multiprocessing.get_context("fork")
    docs = {i for i, job in enumerate(todo) if job.kind in ("feed", "archive")}
    first = [i for i in range(len(todo)) if i not in docs]
    wanted = sorted({a for i in docs for a in todo[i].needs if a in ctx.articles})
    done = []
    _parallel = (todo, ctx, public, dry_run)
    try:
        parts = n * 4
        started = time.monotonic()
        with fork.Pool(n) as pool:
            pending = pool.map_async(_entries_chunk, _interleave(wanted, parts))
            rendering = pool.map_async(_render_chunk, _interleave(first, parts))
            if not dry_run:  # meanwhile, the folders the workers will write into
                _make_folders(public, todo)
            done += [r for part in rendering.get() for r in part]
            for part in pending.get():
                for exported in part:
                    ctx.entries.adopt(exported)
        log.debug(
            "build: %d pages and %d articles' entries in %.2fs", len(first), len(wanted), time.monotonic() - started
        )
        if docs:
            started = time.monotonic()
            with fork.Pool(n) as pool:
                rendering = pool.map_async(_render_chunk, _interleave(sorted(docs), parts))
                if not dry_run:  # meanwhile, push what is written to disk (the final sync waits less)
                    while not rendering.ready():
                        files.sync_filesystem(public)  # FILE-2 still syncs once more before any rename
                        rendering.wait(0.05)
                done += [r for part in rendering.get() for r in part]
            log.debug("build: %d feed documents in %.2fs", len(docs), time.monotonic() - started)
    finally:
        _parallel = None
    for i, results, error in sorted(done, key=lambda r: r[0]):
        if error and not dry_run:  # no empty folder left for an output that failed
            for path in todo[i].paths:
                _prune_folders(public, path)
        yield todo[i], results, error


def _stale(public: str, row, deps: str) -> bool:
    if row is None or row.deps != deps:
        return True
    try:
        return os.stat(os.path.join(public, row.path)).st_size != row.size
    except FileNotFoundError:
        return True


def _remove(public: Path, rel: str) -> None:
    path = public / rel
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    _prune_folders(public, rel)


def _prune_folders(public: Path, rel: str) -> None:
    """Remove the folders above `rel` that are empty, up to public/."""
    parent = (public / rel).parent
    while parent != public and parent.is_dir():
        try:
            parent.rmdir()  # only when empty
        except OSError:
            break
        parent = parent.parent


def _write_manifest(public: Path, conn: Connection) -> None:
    immutable = sorted(
        r[0] for r in conn.execute(select(build_outputs.c.path).where(build_outputs.c.immutable.is_(True)))
    )
    data = (json.dumps({"immutable": immutable}, indent=0) + "\n").encode("utf-8")
    target = public / MANIFEST
    if not _same_bytes(target, data):
        _write_atomic(target, data)


def build_stage(app, *, dry_run: bool = False, **_options) -> dict:
    """The `build` stage of `syndicate run` (render failures are logged by build())."""
    return build(app, dry_run=dry_run).counts()


__all__ = ["build", "build_stage", "BuildReport", "MANIFEST", "build_lock"]
